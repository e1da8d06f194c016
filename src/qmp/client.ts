// A QMP client over a unix socket: greeting and negotiation, commands correlated by id so that
// many can be in flight at once, events, per-command timeouts and cancellation, and a clean,
// typed failure of everything pending when the connection goes away.
import { fstatSync } from 'node:fs';
import type { Socket } from 'node:net';
import { InvalidArgumentError, isSandboxVmmError, OperationTimeoutError } from '../errors.ts';
import { abortError, Deadline, type OperationOptions } from '../util/deadline.ts';
import { silentLogger, type Logger } from '../util/logger.ts';
import { QmpCommandError, QmpConnectError, QmpDisconnectedError, QmpProtocolError, QmpTimeoutError } from './errors.ts';
import type { EventStreamOptions } from './event-stream.ts';
import { EventHub, type ArmedEvent, type QmpEventListener, type WaitForEventOptions } from './events.ts';
import { DEFAULT_MAX_LINE_BYTES, LineSplitter } from './framing.ts';
import { defaultFdSender, type FdSender } from './fd-sender.ts';
import { ExitWatch, openSocket } from './open-socket.ts';
import { parseQmpJson, stringifyQmpJson } from './json.ts';
import { parseGreeting, toEvent } from './messages.ts';
import { resolveTimeoutMs, startTimeout } from '../util/timeout.ts';
import type { QmpArgs, QmpCommandName, QmpEvent, QmpGreeting, QmpReturn } from './types.ts';

export interface QmpConnectOptions extends OperationOptions {
  /** Silent by default. Commands are logged at debug with their duration. */
  logger?: Logger;
  /**
   * Settles when the QEMU behind the socket has exited: connecting then fails at once instead of
   * polling a socket nobody will ever open.
   */
  exited?: Promise<unknown>;
  /** Timeout of commands that are given none. Default 30 s; Infinity for none. */
  commandTimeoutMs?: number;
  /** A line longer than this is a protocol error. Default 10 MiB (DEFAULT_MAX_LINE_BYTES). */
  maxLineBytes?: number;
  /** Default 10 s when neither timeoutMs nor signal bounds the connect. */
  defaultConnectTimeoutMs?: number;
  /** How an fd given to execute() is sent. Default: this package's build/svmm-sendfd. */
  fdSender?: FdSender;
}

/** Options of one `QmpClient.execute` call. */
export interface QmpExecuteOptions {
  signal?: AbortSignal;
  /**
   * Overrides the client's command timeout; Infinity waits for as long as the connection lives.
   * NaN, a negative number or a non-number rejects with InvalidArgumentError (INVALID_ARGUMENT)
   * before anything is sent.
   */
  timeoutMs?: number;
  /**
   * A file descriptor sent with the command (SCM_RIGHTS), for the commands that take one (getfd,
   * add-fd). QEMU gets a copy; the caller keeps its own and may close it once the command
   * returns. Such commands go one at a time, each after the previous one's reply.
   */
  fd?: number;
  /**
   * Sends the command with `exec-oob`: QEMU runs it at once, even while in-band commands are queued
   * or stuck (its reply may overtake theirs). Only for commands QEMU marks `allow-oob` (`yank`,
   * `migrate-pause`, `migrate-recover`), and only when QEMU offered the `oob` capability (see
   * `oobEnabled`); otherwise it rejects with InvalidArgumentError before anything is sent.
   */
  oob?: boolean;
}

type ExecuteRest<C extends QmpCommandName> = undefined extends QmpArgs<C>
  ? [args?: QmpArgs<C>, options?: QmpExecuteOptions]
  : [args: QmpArgs<C>, options?: QmpExecuteOptions];

/** A command's line waiting in the outbox behind a command with an fd. */
interface QueuedLine {
  id: number;
  line: string;
}

/** An in-band command held back while MAX_IN_BAND_IN_FLIGHT others are in flight (OOB enabled). */
interface HeldCommand {
  id: number;
  command: string;
  line: string;
  fd: number | undefined;
  reply: Promise<unknown>;
}

/** A command waiting in the outbox to be sent with its fd. */
interface FdSend {
  id: number;
  command: string;
  line: string;
  fd: number;
  reply: Promise<unknown>;
}

interface PendingCommand {
  command: string;
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
  /** performance.now() at send when debug logging was on (for the duration it logs), else 0. */
  startedAt: number;
  timer: NodeJS.Timeout | undefined;
  /** The caller's signal and the listener this command added to it, removed when it settles. */
  abort: { signal: AbortSignal; listener: () => void } | undefined;
  /** How many id-less errors had arrived when the command was written. */
  idlessErrorsAtSend: number;
}

interface GreetingWaiter {
  resolve: (greeting: QmpGreeting) => void;
  reject: (error: Error) => void;
}

const DEFAULT_COMMAND_TIMEOUT_MS = 30_000;
/**
 * In-band commands in flight while OOB is enabled: QEMU queues up to 8 and stops reading the socket
 * when its queue is full, so an `exec-oob` written behind more would not be read until they finish.
 */
export const MAX_IN_BAND_IN_FLIGHT = 8;
const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;

/**
 * A QMP client on QEMU's unix socket: `QmpClient.connect` negotiates capabilities, then commands are
 * pipelined and matched to replies by id, with a timeout and an AbortSignal each; events come through
 * `on`, `waitForEvent` and `events()`.
 */
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
  readonly #greetingReceived: Promise<QmpGreeting>;
  readonly #greetingWaiter: GreetingWaiter;
  #disconnected: QmpDisconnectedError | undefined;
  #socketError: Error | undefined;
  readonly #closedPromise: Promise<void>;
  /** True from a tick's first command to the end of that tick, while the socket is corked. */
  #corked = false;
  /**
   * From a command with an fd until it has been sent: what is written meanwhile, in call order
   * (lines, and further commands with an fd), so that nothing overtakes it on the wire.
   */
  #outbox: (QueuedLine | FdSend)[] | undefined;
  /** Settles when the last command sent with an fd has its reply (or failed). */
  #lastFdReply: Promise<unknown> = Promise.resolve();
  readonly #fdSender: FdSender | undefined;
  /**
   * Error replies without an id (QEMU could not read the command's id, e.g. a parse error): how
   * many came, and the latest, which a command sent before it and then timing out gets as cause.
   */
  #idlessErrors = 0;
  #lastIdlessError: QmpCommandError | undefined;
  /** True once `oob` was negotiated: exec-oob is possible, and in-band commands are windowed. */
  #oob = false;
  /** In-band commands written (or in the fd outbox) and not yet settled, while OOB is enabled. */
  readonly #inBandInFlight = new Set<number>();
  /** In-band commands waiting for room in that window, in call order. */
  readonly #held: HeldCommand[] = [];

  private constructor(socketPath: string, socket: Socket, options: QmpConnectOptions) {
    this.socketPath = socketPath;
    this.#socket = socket;
    this.#logger = options.logger ?? silentLogger;
    this.#splitter = new LineSplitter(options.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES);
    this.#events = new EventHub(this.#logger);
    // connect() has checked it.
    this.#commandTimeoutMs = options.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
    this.#fdSender = options.fdSender;
    this.#closedPromise = new Promise((resolve) => socket.once('close', () => resolve()));
    let greetingWaiter: GreetingWaiter | undefined;
    this.#greetingReceived = new Promise((resolve, reject) => (greetingWaiter = { resolve, reject }));
    // The executor ran synchronously.
    this.#greetingWaiter = greetingWaiter as GreetingWaiter;
    // Only connect() awaits it, and not when it already failed for another reason.
    this.#greetingReceived.catch(() => {});
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    // ECONNRESET after `quit` is QEMU's normal goodbye: record it as the cause, never throw it.
    socket.on('error', (error) => {
      this.#socketError ??= error;
    });
    socket.once('close', () => {
      const cause = this.#socketError;
      const reason = new QmpDisconnectedError(cause ? `the QMP connection was lost (${cause.message})` : 'the QMP connection was closed by the peer', { cause });
      this.#teardown(reason, { peerClosed: true });
    });
  }

  /**
   * Connects to QEMU's QMP socket, polling until it accepts (QEMU creates it a moment after it
   * starts), then reads and checks the greeting and negotiates capabilities. Rejects with
   * InvalidArgumentError, before touching the socket, when `timeoutMs`, `defaultConnectTimeoutMs`
   * or `commandTimeoutMs` is NaN, negative or not a number.
   */
  static async connect(socketPath: string, options: QmpConnectOptions = {}): Promise<QmpClient> {
    const commandTimeoutMs = resolveTimeoutMs(options.commandTimeoutMs, DEFAULT_COMMAND_TIMEOUT_MS, 'commandTimeoutMs');
    const defaultConnectTimeoutMs = resolveTimeoutMs(options.defaultConnectTimeoutMs, DEFAULT_CONNECT_TIMEOUT_MS, 'defaultConnectTimeoutMs');
    const timeoutMs = resolveTimeoutMs(options.timeoutMs, options.signal ? undefined : defaultConnectTimeoutMs);
    const deadline = new Deadline(`QMP connect to ${socketPath}`, { ...options, ...(timeoutMs === undefined ? {} : { timeoutMs }) });
    const exit = new ExitWatch(socketPath, options.exited);
    let client: QmpClient | undefined;
    try {
      const socket = await openSocket(socketPath, deadline, exit);
      client = new QmpClient(socketPath, socket, { ...options, commandTimeoutMs });
      // Promise.race subscribes to every promise, so whichever loses never goes unhandled.
      await Promise.race([client.#handshake(deadline.signal), deadline.expired(), exit.failure]);
      return client;
    } catch (error) {
      const stage: ConnectStage = client === undefined ? 'socket' : client.#greeting === undefined ? 'greeting' : 'negotiation';
      await client?.close();
      throw explainConnectFailure(socketPath, error, options.signal, stage);
    } finally {
      deadline.dispose();
    }
  }

  /**
   * Reads and checks the greeting, then leaves capabilities negotiation mode; bounded by the
   * connect's own deadline (`signal`), not by the command timeout.
   */
  async #handshake(signal: AbortSignal): Promise<void> {
    const greeting = await this.#greetingReceived;
    this.#logger.debug({ version: greeting.version.qemu, capabilities: greeting.capabilities }, 'QMP greeting');
    // Enabled when offered, as the spec asks of clients; it cannot be enabled later.
    const oob = greeting.capabilities.includes('oob');
    await this.execute('qmp_capabilities', oob ? { enable: ['oob'] } : undefined, { signal, timeoutMs: Infinity });
    this.#oob = oob;
  }

  /** True when QEMU offered the `oob` capability and it was enabled: execute's `oob` option works. */
  get oobEnabled(): boolean {
    return this.#oob;
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

  /** Commands issued and not yet answered (including in-band ones held back while OOB is enabled). */
  get pendingCount(): number {
    return this.#pending.size;
  }

  /**
   * Sends one of the commands the library knows (QmpCommandMap) and resolves with its typed `return`
   * value. Many may be in flight at once. Its name and arguments are checked at compile time: a
   * misspelt command or a missing argument does not compile. Any other command goes through
   * executeUntyped.
   */
  execute<C extends QmpCommandName>(command: C, ...rest: ExecuteRest<C>): Promise<QmpReturn<C>> {
    const [args, options] = rest;
    // The reply is QEMU's, parsed: the map's return type is what QEMU documents for the command.
    return this.#send(command, args, options);
  }

  /**
   * Sends any command by name, unchecked: for the commands QmpCommandMap does not list (e.g.
   * `query-kvm`, `human-monitor-command`). Resolves with QEMU's `return` value as parsed, which the
   * caller must check; behaves like execute in every other way (timeouts, `signal`, `fd`, `oob`).
   */
  executeUntyped(command: string, args?: Record<string, unknown>, options?: QmpExecuteOptions): Promise<unknown> {
    return this.#send(command, args, options);
  }

  #send(command: string, args: object | undefined, options: QmpExecuteOptions | undefined): Promise<unknown> {
    let timeoutMs: number;
    try {
      timeoutMs = resolveTimeoutMs(options?.timeoutMs, this.#commandTimeoutMs);
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
    if (this.#disconnected) {
      return Promise.reject(new QmpDisconnectedError(this.#disconnected.message, { command, cause: this.#disconnected }));
    }
    const signal = options?.signal;
    if (signal?.aborted) return Promise.reject(abortError(`QMP command ${command}`, signal));
    const fd = options?.fd;
    if (fd !== undefined && !isOpenFd(fd)) {
      return Promise.reject(new InvalidArgumentError('fd', `must be an open file descriptor of this process (got ${String(fd)})`));
    }
    const oob = options?.oob === true;
    if (oob && !this.#oob) return Promise.reject(new InvalidArgumentError('oob', `QEMU did not offer the oob capability, so ${command} cannot be sent out of band`));
    if (oob && fd !== undefined) return Promise.reject(new InvalidArgumentError('oob', `cannot be combined with fd (${command})`));
    const id = this.#nextId++;
    const verb = oob ? 'exec-oob' : 'execute';
    let line: string;
    try {
      // A bigint argument is written as its digits: QEMU reads 64-bit integers exactly.
      // Undefined `arguments` are left out, as JSON.stringify leaves out any undefined member.
      line = `${stringifyQmpJson({ [verb]: command, arguments: args, id })}\n`;
    } catch (error) {
      // Arguments JSON cannot encode (a cycle): the caller's mistake, reported as a rejection.
      return Promise.reject(error instanceof Error ? error : new TypeError(String(error)));
    }
    const windowed = this.#oob && !oob;
    if (windowed && (this.#held.length > 0 || this.#inBandInFlight.size >= MAX_IN_BAND_IN_FLIGHT)) {
      const reply = this.#track(id, command, timeoutMs, signal);
      this.#held.push({ id, command, line, fd, reply });
      return reply;
    }
    if (windowed) this.#inBandInFlight.add(id);
    if (fd !== undefined) return this.#executeWithFd(id, command, line, fd, timeoutMs, signal);
    // Written first, the bookkeeping after: QEMU starts on the command sooner (a serial caller's
    // round trip is mostly QEMU waking up). Safe, as no reply can be read before we return.
    this.#write({ id, line });
    return this.#track(id, command, timeoutMs, signal);
  }

  /**
   * Sends held in-band commands while the window has room. One that timed out or was aborted while
   * held is dropped unsent.
   */
  #releaseHeld(): void {
    // #teardown empties #held before it settles anything: after a disconnect this finds nothing.
    while (this.#inBandInFlight.size < MAX_IN_BAND_IN_FLIGHT) {
      const held = this.#held.shift();
      if (held === undefined) return;
      if (!this.#pending.has(held.id)) continue;
      this.#inBandInFlight.add(held.id);
      if (held.fd === undefined) this.#write({ id: held.id, line: held.line });
      else this.#queueFdSend({ id: held.id, command: held.command, line: held.line, fd: held.fd, reply: held.reply });
    }
  }

  /** The pending entry of a sent (or about to be sent) command: its reply, timeout and abort. */
  #track(id: number, command: string, timeoutMs: number, signal: AbortSignal | undefined): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const startedAt = this.#logger.isLevelEnabled('debug') ? performance.now() : 0;
      const entry: PendingCommand = { command, resolve, reject, startedAt, timer: undefined, abort: undefined, idlessErrorsAtSend: this.#idlessErrors };
      entry.timer = startTimeout(timeoutMs, () => this.#settle(id, undefined, new QmpTimeoutError(command, timeoutMs, { cause: this.#idlessErrorSince(entry) })));
      if (signal) {
        const listener = (): void => this.#settle(id, undefined, abortError(`QMP command ${command}`, signal));
        entry.abort = { signal, listener };
        // Not `once`: #settle removes it, whichever way the command ends.
        signal.addEventListener('abort', listener);
      }
      this.#pending.set(id, entry);
    });
  }

  /**
   * A command with an fd goes through the outbox: after everything written before it, and only once
   * the previous such command has its reply (QEMU keeps just the last fd it received until a
   * command takes it). The sender then writes it while our own writes wait. The timeout and abort
   * run from the call, as for any command.
   */
  #executeWithFd(id: number, command: string, line: string, fd: number, timeoutMs: number, signal: AbortSignal | undefined): Promise<unknown> {
    const reply = this.#track(id, command, timeoutMs, signal);
    this.#queueFdSend({ id, command, line, fd, reply });
    return reply;
  }

  #queueFdSend(send: FdSend): void {
    if (this.#outbox) {
      this.#outbox.push(send);
      return;
    }
    this.#outbox = [send];
    void this.#pumpOutbox(this.#outbox);
  }

  /** Sends `outbox` (which is `#outbox` until it is empty) in order. */
  async #pumpOutbox(outbox: (QueuedLine | FdSend)[]): Promise<void> {
    for (let item = outbox.shift(); item !== undefined; item = outbox.shift()) {
      if (!('fd' in item)) {
        this.#writeNow(item);
        continue;
      }
      await this.#lastFdReply;
      // Timed out, aborted or disconnected while waiting for its turn: nothing is sent.
      if (!this.#pending.has(item.id)) continue;
      try {
        const sender = this.#fdSender ?? defaultFdSender(item.command);
        await this.#flushed();
        this.#markSent(item.id);
        await sender.send(this.#socket, item.line, item.fd, item.command);
      } catch (error) {
        this.#settle(item.id, undefined, error instanceof Error ? error : new Error(String(error)));
      }
      this.#lastFdReply = item.reply.catch(() => {});
    }
    this.#outbox = undefined;
  }

  /** Resolves once everything written so far has left our buffers for the socket. */
  async #flushed(): Promise<void> {
    if (this.#corked) this.#uncork();
    if (this.#socket.writableLength === 0) return;
    // Writes complete in order: this one's callback runs after every earlier chunk was handed over.
    await new Promise<void>((resolve) => this.#socket.write('', () => resolve()));
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

  /**
   * Every event from the moment this is called (not from the first next()), until the connection
   * closes (buffered events are still served) or `signal` aborts (the iterator ends at once).
   * Events not yet consumed are buffered up to a count and a byte budget (the size of the lines
   * they came in), 10 000 events and 16 MiB by default; past either, the oldest are dropped and a
   * warning is logged once. Throws InvalidArgumentError for a budget that is neither a positive
   * integer nor Infinity.
   */
  events(options: EventStreamOptions = {}): AsyncGenerator<QmpEvent, void, undefined> {
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
    this.#teardown(new QmpDisconnectedError('the QMP client was closed'), {});
    this.#socket.destroy();
    return this.#closedPromise;
  }

  // ------------------------------------------------------------------ wire

  /**
   * The commands of a tick are gathered into one write at the end of the tick (one syscall for a
   * pipelined burst: each write wakes QEMU, which in a storm of VMs on few cores costs the event
   * loop more than the syscall itself). A serial caller's command waits only for the end of its
   * tick, before any I/O. When the peer does not read, the socket's own buffer keeps them, in
   * order, until it drains (backpressure); close() discards what was never sent.
   */
  #write(queued: QueuedLine): void {
    if (this.#outbox) this.#outbox.push(queued);
    else this.#writeNow(queued);
  }

  #writeNow({ id, line }: QueuedLine): void {
    this.#markSent(id);
    if (!this.#corked) {
      this.#corked = true;
      this.#socket.cork();
      process.nextTick(this.#uncork);
    }
    this.#socket.write(line);
  }

  readonly #uncork = (): void => {
    this.#corked = false;
    this.#socket.uncork();
  };

  #onData(chunk: Buffer): void {
    // No check for a disconnect here: the socket is destroyed with it and reads nothing more, and
    // #onLine and the catch below stop at one raised by this very chunk.
    try {
      this.#splitter.feed(chunk, this.#onLine);
    } catch (error) {
      if (this.#disconnected) return;
      this.#fail(error instanceof QmpProtocolError ? error : new QmpProtocolError('cannot read the QMP stream', { cause: error }));
    }
  }

  readonly #onLine = (line: string, bytes: number): void => {
    // The lines after a protocol error in the same chunk are not to be trusted.
    if (this.#disconnected) return;
    let message: unknown;
    try {
      // Integers beyond 2^53 (uint64 sizes, addresses, qom-get values) come out as exact bigints.
      message = parseQmpJson(line);
    } catch (error) {
      this.#fail(new QmpProtocolError(`QEMU sent a line that is not JSON: ${preview(line)}`, { cause: error }));
      return;
    }
    this.#dispatch(message, line, bytes);
  };

  /** `bytes`: the line's size, which is what an event buffered for an iterator is counted as. */
  #dispatch(message: unknown, line: string, bytes: number): void {
    if (typeof message !== 'object' || message === null || Array.isArray(message)) {
      this.#fail(new QmpProtocolError(`QEMU sent a line that is not a JSON object: ${preview(line)}`));
      return;
    }
    const m = message as Record<string, unknown>;
    if (typeof m['event'] === 'string') {
      this.#events.emit(toEvent(m), bytes);
    } else if ('return' in m || 'error' in m) {
      this.#onReply(m, line);
    } else if ('QMP' in m) {
      this.#onGreetingMessage(m['QMP'], line);
    } else {
      this.#onOtherMessage(m['id'], line);
    }
  }

  /**
   * A reply to a waiting command with neither `return` nor `error` (qemu.qmp's BadReplyError): that
   * command fails at once instead of waiting for its timeout. The connection stays: the line was
   * well-formed JSON, so the stream is still framed and the other commands' replies can be trusted.
   * Any other message of unknown shape is logged and ignored.
   */
  #onOtherMessage(id: unknown, line: string): void {
    const entry = typeof id === 'number' ? this.#pending.get(id) : undefined;
    if (entry === undefined) {
      this.#logger.warn({ line: preview(line) }, 'ignoring a QMP message of unknown shape');
      return;
    }
    const { command } = entry;
    this.#logger.warn({ command, line: preview(line) }, 'a QMP reply has neither return nor error');
    this.#settle(id as number, undefined, new QmpProtocolError(`QEMU answered ${command} with neither return nor error: ${preview(line)}`));
  }

  #onReply(m: Record<string, unknown>, line: string): void {
    const id = m['id'];
    const entry = typeof id === 'number' ? this.#pending.get(id) : undefined;
    if (!entry) {
      if (!('id' in m) && 'error' in m) this.#onIdlessError(m['error']);
      // A reply to a command that timed out or was cancelled (or an id-less success).
      else this.#logger.debug({ line: preview(line) }, 'dropping a QMP reply no command is waiting for');
      return;
    }
    if ('error' in m) {
      this.#settle(id as number, undefined, commandError(entry.command, m['error']));
    } else {
      this.#settle(id as number, m['return'], undefined);
    }
  }

  /**
   * An error QEMU could not attach to a command, because it could not read the command's id (input
   * it could not parse; one over-deep argument gives a burst of them). Blaming the oldest pending
   * command would fail healthy ones, so it is logged, and kept as the cause for a command sent
   * before it that then times out.
   */
  #onIdlessError(error: unknown): void {
    const reported = commandError(UNATTRIBUTED, error);
    this.#idlessErrors++;
    this.#lastIdlessError = reported;
    this.#logger.warn({ errorClass: reported.errorClass, desc: reported.desc }, 'QEMU reported an error without an id (input it could not parse)');
  }

  /** The latest id-less error, if one arrived after `entry` was written. */
  #idlessErrorSince(entry: PendingCommand): QmpCommandError | undefined {
    return this.#idlessErrors > entry.idlessErrorsAtSend ? this.#lastIdlessError : undefined;
  }

  #markSent(id: number): void {
    const entry = this.#pending.get(id);
    if (entry) entry.idlessErrorsAtSend = this.#idlessErrors;
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
    this.#greetingWaiter.resolve(greeting);
  }

  #settle(id: number, value: unknown, error: Error | undefined): void {
    const entry = this.#pending.get(id);
    if (!entry) return;
    this.#pending.delete(id);
    if (this.#inBandInFlight.delete(id)) this.#releaseHeld();
    clearTimeout(entry.timer);
    entry.abort?.signal.removeEventListener('abort', entry.abort.listener);
    // Set at send only when debug logging was on; logger.debug itself drops it if that changed.
    if (entry.startedAt > 0) {
      const ms = Math.round((performance.now() - entry.startedAt) * 1000) / 1000;
      this.#logger.debug({ command: entry.command, ms, ok: error === undefined, ...(error ? { error: error.message } : {}) }, 'QMP command');
    }
    if (error) entry.reject(error);
    else entry.resolve(value);
  }

  /** A protocol violation: the stream cannot be trusted any more, so the connection is dropped. */
  #fail(error: QmpProtocolError): void {
    this.#logger.error({ err: error }, 'QMP protocol error: closing the connection');
    this.#teardown(new QmpDisconnectedError(`the QMP connection was dropped: ${error.message}`, { cause: error }), { pendingError: error });
    this.#socket.destroy();
  }

  /**
   * The connection is gone: everything pending fails with `pendingError` (a protocol error) or a
   * QmpDisconnectedError naming its command.
   */
  #teardown(reason: QmpDisconnectedError, how: { pendingError?: Error; peerClosed?: boolean }): void {
    if (this.#disconnected) return;
    this.#disconnected = reason;
    this.#greetingWaiter.reject(how.pendingError ?? reason);
    // Held commands are pending too: they fail below, unsent.
    this.#held.length = 0;
    for (const [id, entry] of this.#pending) {
      // QEMU answers `quit` by closing the socket, sometimes before the reply: that is success.
      if (entry.command === 'quit' && how.peerClosed === true) this.#settle(id, {}, undefined);
      else this.#settle(id, undefined, how.pendingError ?? new QmpDisconnectedError(reason.message, { command: entry.command, cause: reason.cause }));
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

/** How far a connect got: the socket accepting, QEMU's greeting, or qmp_capabilities. */
type ConnectStage = 'socket' | 'greeting' | 'negotiation';

/** What a connect that ran out of time was waiting for, per stage. */
const TIMEOUT_REASONS: Record<ConnectStage, (ms: number) => string> = {
  socket: (ms) => `no QMP session within ${ms} ms (the socket did not accept a connection)`,
  // QEMU accepts further clients on a QMP socket but greets only one at a time.
  greeting: (ms) => `no QMP session within ${ms} ms: the socket accepted, but QEMU sent no greeting (another QMP client may hold the monitor)`,
  negotiation: (ms) => `no QMP session within ${ms} ms: QEMU did not answer qmp_capabilities`,
};

function explainConnectFailure(path: string, error: unknown, callerSignal: AbortSignal | undefined, stage: ConnectStage): unknown {
  // The caller's cancellation wins, typed as execute() types it.
  if (callerSignal?.aborted) return abortError(`QMP connect to ${path}`, callerSignal);
  if (error instanceof OperationTimeoutError) return new QmpConnectError(path, TIMEOUT_REASONS[stage](error.timeoutMs), { cause: error });
  if (isSandboxVmmError(error)) return error;
  return new QmpConnectError(path, error instanceof Error ? error.message : String(error), { cause: error });
}

/** The `command` of a QmpCommandError for an error reply that carried no id. */
const UNATTRIBUTED = '(no id)';

/** A QMP error object as a QmpCommandError; a missing class or desc is filled in (QEMU always sends both). */
function commandError(command: string, error: unknown): QmpCommandError {
  const fields = (typeof error === 'object' && error !== null ? error : {}) as Record<string, unknown>;
  const errorClass = typeof fields['class'] === 'string' ? fields['class'] : 'GenericError';
  // Written back exactly: the error object may hold a bigint, which JSON.stringify would throw on.
  const desc = typeof fields['desc'] === 'string' ? fields['desc'] : stringifyQmpJson(error);
  return new QmpCommandError(command, errorClass, desc);
}

/** fstat rejects a negative, fractional or out-of-range number as it rejects a closed fd. */
function isOpenFd(fd: number): boolean {
  try {
    fstatSync(fd);
  } catch {
    return false;
  }
  return true;
}

function preview(line: string): string {
  return line.length > 200 ? `${line.slice(0, 200)}…` : line;
}
