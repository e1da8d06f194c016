// A QMP client over a unix socket: greeting and negotiation, commands correlated by id so that
// many can be in flight at once, events, per-command timeouts and cancellation, and a clean,
// typed failure of everything pending when the connection goes away.
import { connect as netConnect, type Socket } from 'node:net';
import { isSandboxVmmError, OperationTimeoutError } from '../errors.ts';
import { abortError, Deadline, sleep, type OperationOptions } from '../util/deadline.ts';
import { silentLogger, type Logger } from '../util/logger.ts';
import { QmpCommandError, QmpConnectError, QmpDisconnectedError, QmpProtocolError, QmpTimeoutError } from './errors.ts';
import { EventHub, type ArmedEvent, type QmpEventListener, type WaitForEventOptions } from './events.ts';
import { DEFAULT_MAX_LINE_BYTES, LineSplitter } from './framing.ts';
import type { QmpArgs, QmpCommandName, QmpEvent, QmpGreeting, QmpReturn } from './types.ts';

export interface QmpConnectOptions extends OperationOptions {
  /** Silent by default. Commands are logged at debug with their duration. */
  logger?: Logger;
  /**
   * Settles when the QEMU behind the socket has exited: connecting then fails at once instead of
   * polling a socket nobody will ever open.
   */
  exited?: Promise<unknown>;
  /** Timeout of commands that are given none. Default 30 s. */
  commandTimeoutMs?: number;
  /** A line longer than this is a protocol error. Default 4 MiB. */
  maxLineBytes?: number;
  /** Default 10 s when neither timeoutMs nor signal bounds the connect. */
  defaultConnectTimeoutMs?: number;
}

export interface QmpExecuteOptions {
  signal?: AbortSignal;
  /** Overrides the client's command timeout; Infinity waits for as long as the connection lives. */
  timeoutMs?: number;
}

type ExecuteRest<C extends QmpCommandName> = undefined extends QmpArgs<C>
  ? [args?: QmpArgs<C>, options?: QmpExecuteOptions]
  : [args: QmpArgs<C>, options?: QmpExecuteOptions];

interface PendingCommand {
  command: string;
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
  startedAt: number;
  timer: NodeJS.Timeout | undefined;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

const DEFAULT_COMMAND_TIMEOUT_MS = 30_000;
const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
/** Errors that mean "QEMU is not listening yet": keep polling. */
const NOT_YET = new Set(['ENOENT', 'ECONNREFUSED', 'EAGAIN']);

export class QmpClient {
  readonly socketPath: string;
  readonly #socket: Socket;
  readonly #splitter: LineSplitter;
  readonly #logger: Logger;
  readonly #events: EventHub;
  readonly #pending = new Map<number, PendingCommand>();
  readonly #commandTimeoutMs: number;
  readonly #closeListeners = new Set<(reason: QmpDisconnectedError) => void>();
  #nextId = 1;
  #greeting: QmpGreeting | undefined;
  #onGreeting: ((greeting: QmpGreeting) => void) | undefined;
  #disconnected: QmpDisconnectedError | undefined;
  #socketError: Error | undefined;
  readonly #closedPromise: Promise<void>;
  /** Lines waiting for the socket to drain (backpressure): written in order once it does. */
  #backlog: string[] = [];
  #blocked = false;

  private constructor(socketPath: string, socket: Socket, options: QmpConnectOptions) {
    this.socketPath = socketPath;
    this.#socket = socket;
    this.#logger = options.logger ?? silentLogger;
    this.#splitter = new LineSplitter(options.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES);
    this.#events = new EventHub(this.#logger);
    this.#commandTimeoutMs = options.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
    this.#closedPromise = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    // ECONNRESET after `quit` is QEMU's normal goodbye: record it as the cause, never throw it.
    socket.on('error', (error) => {
      this.#socketError ??= error;
    });
    socket.once('close', () => {
      const cause = this.#socketError;
      this.#teardown(new QmpDisconnectedError(cause ? `the QMP connection was lost (${cause.message})` : 'the QMP connection was closed by the peer', { cause }));
    });
  }

  /**
   * Connects to QEMU's QMP socket, polling until it accepts (QEMU creates it a moment after it
   * starts), then reads and checks the greeting and negotiates capabilities.
   */
  static async connect(socketPath: string, options: QmpConnectOptions = {}): Promise<QmpClient> {
    const timeoutMs = options.timeoutMs ?? (options.signal ? undefined : (options.defaultConnectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS));
    const deadline = new Deadline(`QMP connect to ${socketPath}`, { ...options, ...(timeoutMs === undefined ? {} : { timeoutMs }) });
    let exited = false;
    void options.exited?.then(() => {
      exited = true;
    });
    let client: QmpClient | undefined;
    try {
      const socket = await openSocket(socketPath, deadline, () => exited, options.exited);
      client = new QmpClient(socketPath, socket, options);
      const greeting = await deadline.race(client.#waitForGreeting(options.exited));
      client.#logger.debug({ version: greeting.version.qemu, capabilities: greeting.capabilities }, 'QMP greeting');
      await client.execute('qmp_capabilities', undefined, { signal: deadline.signal });
      return client;
    } catch (error) {
      await client?.close();
      throw explainConnectFailure(socketPath, error, options.signal);
    } finally {
      deadline.dispose();
    }
  }

  /** QEMU's greeting: its version and the capabilities it offered. */
  get greeting(): QmpGreeting {
    if (!this.#greeting) throw new QmpProtocolError('no greeting received yet');
    return this.#greeting;
  }

  /** True once the connection is gone; every later command rejects with QmpDisconnectedError. */
  get closed(): boolean {
    return this.#disconnected !== undefined;
  }

  /** Commands sent and not yet answered. */
  get pendingCount(): number {
    return this.#pending.size;
  }

  /** Sends a command and resolves with its `return` value. Many may be in flight at once. */
  execute<C extends QmpCommandName>(command: C, ...rest: ExecuteRest<C>): Promise<QmpReturn<C>>;
  execute(command: string, args?: Record<string, unknown>, options?: QmpExecuteOptions): Promise<unknown>;
  execute(command: string, args?: object, options: QmpExecuteOptions = {}): Promise<unknown> {
    if (this.#disconnected) {
      return Promise.reject(new QmpDisconnectedError(this.#disconnected.message, { command, cause: this.#disconnected }));
    }
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(abortError(`QMP command ${command}`, signal));
    const id = this.#nextId++;
    const line = `${JSON.stringify(args === undefined ? { execute: command, id } : { execute: command, arguments: args, id })}\n`;
    return new Promise((resolve, reject) => {
      const entry: PendingCommand = { command, resolve, reject, startedAt: performance.now(), timer: undefined, signal, onAbort: undefined };
      const timeoutMs = options.timeoutMs ?? this.#commandTimeoutMs;
      if (Number.isFinite(timeoutMs)) {
        entry.timer = setTimeout(() => this.#settle(id, undefined, new QmpTimeoutError(command, timeoutMs)), timeoutMs);
        entry.timer.unref();
      }
      if (signal) {
        entry.onAbort = () => this.#settle(id, undefined, abortError(`QMP command ${command}`, signal));
        signal.addEventListener('abort', entry.onAbort, { once: true });
      }
      this.#pending.set(id, entry);
      this.#write(line);
    });
  }

  /** Calls `listener` for each event named `name` ('*' for all). Returns the unsubscribe function. */
  on(name: string, listener: QmpEventListener): () => void {
    return this.#events.on(name, listener);
  }

  /**
   * Starts listening at once for the first matching event; arm it *before* sending the command
   * that causes the event, then await `promise`. Rejects on timeout, abort, cancel() or disconnect.
   */
  armEvent(name: string, predicate?: (event: QmpEvent) => boolean, options?: WaitForEventOptions): ArmedEvent {
    return this.#events.arm(name, predicate, options);
  }

  /** `armEvent(...).promise`: the wait is armed when this is called, not when it is awaited. */
  waitForEvent(name: string, predicate?: (event: QmpEvent) => boolean, options?: WaitForEventOptions): Promise<QmpEvent> {
    return this.#events.arm(name, predicate, options).promise;
  }

  /** Every event from now on, until the connection closes or `signal` aborts. */
  events(options: { signal?: AbortSignal } = {}): AsyncGenerator<QmpEvent, void, undefined> {
    return this.#events.iterate(options);
  }

  /** Called once when the connection goes away, for whatever reason. */
  onClose(listener: (reason: QmpDisconnectedError) => void): () => void {
    if (this.#disconnected) {
      listener(this.#disconnected);
      return () => {};
    }
    this.#closeListeners.add(listener);
    return () => this.#closeListeners.delete(listener);
  }

  /** Closes the connection; pending commands reject with QmpDisconnectedError. Idempotent. */
  close(): Promise<void> {
    this.#teardown(new QmpDisconnectedError('the QMP client was closed'));
    this.#socket.destroy();
    return this.#closedPromise;
  }

  // ------------------------------------------------------------------ wire

  #write(line: string): void {
    if (this.#blocked) {
      this.#backlog.push(line);
      return;
    }
    if (!this.#socket.write(line)) this.#waitForDrain();
  }

  #waitForDrain(): void {
    this.#blocked = true;
    this.#socket.once('drain', () => {
      this.#blocked = false;
      const backlog = this.#backlog;
      this.#backlog = [];
      for (let i = 0; i < backlog.length; i++) {
        if (!this.#socket.write(backlog[i] as string)) {
          this.#backlog = backlog.slice(i + 1);
          this.#waitForDrain();
          return;
        }
      }
    });
  }

  #onData(chunk: Buffer): void {
    if (this.#disconnected) return;
    let lines: string[];
    try {
      lines = this.#splitter.push(chunk);
    } catch (error) {
      this.#fail(error as QmpProtocolError);
      return;
    }
    for (const line of lines) {
      let message: unknown;
      try {
        message = JSON.parse(line);
      } catch (error) {
        this.#fail(new QmpProtocolError(`QEMU sent a line that is not JSON: ${preview(line)}`, { cause: error }));
        return;
      }
      this.#dispatch(message, line);
      if (this.#disconnected) return;
    }
  }

  #dispatch(message: unknown, line: string): void {
    if (typeof message !== 'object' || message === null || Array.isArray(message)) {
      this.#fail(new QmpProtocolError(`QEMU sent a line that is not a JSON object: ${preview(line)}`));
      return;
    }
    const m = message as Record<string, unknown>;
    if (typeof m['event'] === 'string') {
      this.#events.emit(toEvent(m));
    } else if ('return' in m || 'error' in m) {
      this.#onReply(m, line);
    } else if ('QMP' in m) {
      this.#onGreetingMessage(m['QMP'], line);
    } else {
      this.#logger.warn({ line: preview(line) }, 'ignoring a QMP message of unknown shape');
    }
  }

  #onReply(m: Record<string, unknown>, line: string): void {
    const id = m['id'];
    const entry = typeof id === 'number' ? this.#pending.get(id) : undefined;
    if (!entry) {
      // A reply to a command that timed out or was cancelled, or one QEMU could not attribute.
      this.#logger.debug({ line: preview(line) }, 'dropping a QMP reply no command is waiting for');
      return;
    }
    if ('error' in m) {
      const error = (typeof m['error'] === 'object' && m['error'] !== null ? m['error'] : {}) as Record<string, unknown>;
      const errorClass = typeof error['class'] === 'string' ? error['class'] : 'GenericError';
      const desc = typeof error['desc'] === 'string' ? error['desc'] : JSON.stringify(m['error']);
      this.#settle(id as number, undefined, new QmpCommandError(entry.command, errorClass, desc));
    } else {
      this.#settle(id as number, m['return'], undefined);
    }
  }

  #onGreetingMessage(qmp: unknown, line: string): void {
    if (this.#greeting) {
      this.#fail(new QmpProtocolError(`QEMU sent a second greeting: ${preview(line)}`));
      return;
    }
    const greeting = parseGreeting(qmp);
    if (!greeting) {
      this.#fail(new QmpProtocolError(`QEMU sent a malformed greeting: ${preview(line)}`));
      return;
    }
    this.#greeting = greeting;
    this.#onGreeting?.(greeting);
  }

  #waitForGreeting(exited: Promise<unknown> | undefined): Promise<QmpGreeting> {
    return new Promise((resolve, reject) => {
      if (this.#greeting) return resolve(this.#greeting);
      if (this.#disconnected) return reject(this.#disconnected);
      this.#onGreeting = resolve;
      this.onClose(reject);
      void exited?.then(() => reject(new QmpConnectError(this.socketPath, 'QEMU exited before sending the QMP greeting')));
    });
  }

  #settle(id: number, value: unknown, error: Error | undefined): void {
    const entry = this.#pending.get(id);
    if (!entry) return;
    this.#pending.delete(id);
    if (entry.timer) clearTimeout(entry.timer);
    if (entry.onAbort) entry.signal?.removeEventListener('abort', entry.onAbort);
    if (this.#logger.isLevelEnabled('debug')) {
      const ms = Math.round((performance.now() - entry.startedAt) * 1000) / 1000;
      this.#logger.debug({ command: entry.command, ms, ok: error === undefined, ...(error ? { error: error.message } : {}) }, 'QMP command');
    }
    if (error) entry.reject(error);
    else entry.resolve(value);
  }

  /** A protocol violation: the stream cannot be trusted any more, so the connection is dropped. */
  #fail(error: QmpProtocolError): void {
    this.#logger.error({ err: error }, 'QMP protocol error: closing the connection');
    this.#teardown(new QmpDisconnectedError(`the QMP connection was dropped: ${error.message}`, { cause: error }), error);
    this.#socket.destroy();
  }

  #teardown(reason: QmpDisconnectedError, pendingError?: Error): void {
    if (this.#disconnected) return;
    this.#disconnected = reason;
    this.#backlog = [];
    for (const [id, entry] of this.#pending) {
      // QEMU answers `quit` by closing the socket, sometimes before the reply: that is success.
      if (entry.command === 'quit' && pendingError === undefined) this.#settle(id, {}, undefined);
      else this.#settle(id, undefined, pendingError ?? new QmpDisconnectedError(reason.message, { command: entry.command, cause: reason.cause }));
    }
    this.#events.close(reason);
    for (const listener of this.#closeListeners) {
      try {
        listener(reason);
      } catch (error) {
        this.#logger.warn({ err: error }, 'a QMP close listener threw');
      }
    }
    this.#closeListeners.clear();
  }
}

/** Polls until the socket accepts; fails at once if QEMU has exited or the deadline passes. */
async function openSocket(path: string, deadline: Deadline, hasExited: () => boolean, exited: Promise<unknown> | undefined): Promise<Socket> {
  let delayMs = 2;
  for (;;) {
    if (hasExited()) throw new QmpConnectError(path, 'QEMU exited before QMP was up');
    deadline.throwIfDone();
    try {
      return await deadline.race(tryConnect(path));
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === undefined || !NOT_YET.has(code)) throw error;
    }
    const waits: Promise<unknown>[] = [sleep(delayMs, deadline.signal)];
    if (exited) waits.push(exited);
    await Promise.race(waits);
    delayMs = Math.min(delayMs * 2, 20);
  }
}

function tryConnect(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = netConnect(path);
    const onError = (error: Error) => {
      socket.destroy();
      reject(error);
    };
    socket.once('error', onError);
    socket.once('connect', () => {
      socket.off('error', onError);
      resolve(socket);
    });
  });
}

function explainConnectFailure(path: string, error: unknown, callerSignal: AbortSignal | undefined): unknown {
  // The caller's own cancellation keeps its typed reason.
  if (callerSignal?.aborted && isSandboxVmmError(error)) return error;
  if (error instanceof QmpConnectError) return error;
  if (error instanceof OperationTimeoutError) return new QmpConnectError(path, `no QMP session within ${error.timeoutMs} ms`, { cause: error });
  if (isSandboxVmmError(error)) return error;
  return new QmpConnectError(path, error instanceof Error ? error.message : String(error), { cause: error });
}

function parseGreeting(qmp: unknown): QmpGreeting | undefined {
  if (typeof qmp !== 'object' || qmp === null) return undefined;
  const { version, capabilities } = qmp as Record<string, unknown>;
  if (typeof version !== 'object' || version === null || !Array.isArray(capabilities)) return undefined;
  const { qemu, package: pkg } = version as Record<string, unknown>;
  if (typeof qemu !== 'object' || qemu === null) return undefined;
  const { major, minor, micro } = qemu as Record<string, unknown>;
  if (typeof major !== 'number' || typeof minor !== 'number' || typeof micro !== 'number') return undefined;
  if (!capabilities.every((c) => typeof c === 'string')) return undefined;
  return { version: { qemu: { major, minor, micro }, package: typeof pkg === 'string' ? pkg : '' }, capabilities: capabilities as string[] };
}

function toEvent(m: Record<string, unknown>): QmpEvent {
  const data = typeof m['data'] === 'object' && m['data'] !== null ? (m['data'] as Record<string, unknown>) : {};
  const ts = (typeof m['timestamp'] === 'object' && m['timestamp'] !== null ? m['timestamp'] : {}) as Record<string, unknown>;
  return {
    event: m['event'] as string,
    data,
    timestamp: { seconds: Number(ts['seconds'] ?? 0), microseconds: Number(ts['microseconds'] ?? 0) },
  };
}

function preview(line: string): string {
  return line.length > 200 ? `${line.slice(0, 200)}…` : line;
}
