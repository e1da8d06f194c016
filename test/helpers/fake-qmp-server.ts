// A scriptable QMP peer on a real unix socket, for unit tests: it greets, negotiates, answers each
// command through a handler (or not at all), and can send events, raw bytes or garbage, and drop
// the connection at any point.
import { mkdtempSync, rmSync } from 'node:fs';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface ReceivedCommand {
  /** The command's name, also for one sent with `exec-oob` (then `oob` is true). */
  execute: string;
  oob?: boolean;
  arguments?: Record<string, unknown>;
  id?: unknown;
}

/** Throw this from a handler to answer with a QMP error object. */
export class QmpErrorReply extends Error {
  constructor(
    readonly errorClass: string,
    readonly desc: string,
  ) {
    super(desc);
  }
}

/** Return this from a handler to leave the command unanswered. */
export const NO_REPLY = Symbol('no reply');

export type CommandHandler = (args: Record<string, unknown> | undefined, command: ReceivedCommand) => unknown;

export const DEFAULT_GREETING = {
  QMP: { version: { qemu: { micro: 22, minor: 2, major: 7 }, package: 'fake' }, capabilities: ['oob'] },
};

export interface FakeQmpServerOptions {
  /** The greeting line: an object (sent as JSON), a raw string, or null for none. */
  greeting?: object | string | null;
  /** Line ending QEMU uses. */
  eol?: string;
  /** Listen on this path instead of one in a fresh temporary directory (the caller cleans up its directory). */
  path?: string;
}

export class FakeQmpServer {
  readonly path: string;
  readonly received: ReceivedCommand[] = [];
  /** The lines received, as sent (JSON.parse would round integers beyond 2^53 in `received`). */
  readonly receivedLines: string[] = [];
  readonly #dir: string | undefined;
  readonly #server: Server;
  readonly #handlers = new Map<string, CommandHandler>();
  readonly #clients = new Set<Socket>();
  readonly #options: FakeQmpServerOptions;
  readonly #commandWaiters: { name: string; resolve: (c: ReceivedCommand) => void }[] = [];
  readonly #clientWaiters: (() => void)[] = [];
  #reading = true;

  private constructor(dir: string | undefined, path: string, options: FakeQmpServerOptions) {
    this.#dir = dir;
    this.path = path;
    this.#options = options;
    this.#server = createServer((socket) => this.#onClient(socket));
    this.handle('qmp_capabilities', () => ({}));
  }

  static async start(options: FakeQmpServerOptions = {}): Promise<FakeQmpServer> {
    const dir = options.path === undefined ? mkdtempSync(join(tmpdir(), 'fqmp-')) : undefined;
    const server = new FakeQmpServer(dir, options.path ?? join(dir as string, 'qmp.sock'), options);
    await new Promise<void>((resolve) => server.#server.listen(server.path, resolve));
    return server;
  }

  /** Answers `command` with what `handler` returns (a Promise is awaited; NO_REPLY answers nothing). */
  handle(command: string, handler: CommandHandler): this {
    this.#handlers.set(command, handler);
    return this;
  }

  /** Resolves the next time the server receives `command`. */
  nextCommand(name: string): Promise<ReceivedCommand> {
    return new Promise((resolve) => this.#commandWaiters.push({ name, resolve }));
  }

  get clientCount(): number {
    return this.#clients.size;
  }

  /** Resolves once a client is connected (at once if one already is). */
  waitForClient(): Promise<void> {
    if (this.#clients.size > 0) return Promise.resolve();
    return new Promise((resolve) => this.#clientWaiters.push(resolve));
  }

  /** Resolves once no client is connected. */
  async waitForNoClient(): Promise<void> {
    while (this.#clients.size > 0) await nextTurn();
  }

  /**
   * Writes each chunk on its own and lets the event loop turn in between, so that the client
   * reads them one by one (as separate 'data' events) instead of coalesced.
   */
  async sendChunks(chunks: readonly (string | Buffer)[]): Promise<void> {
    for (const chunk of chunks) {
      this.sendRaw(chunk);
      await nextTurn();
      await nextTurn();
    }
  }

  /**
   * Stops reading what clients send: once the server's stream buffer is full (16 KiB), the rest
   * stays in the kernel and the clients' writes back up (backpressure).
   */
  pauseReading(): void {
    this.#reading = false;
    for (const client of this.#clients) client.pause();
  }

  resumeReading(): void {
    this.#reading = true;
    for (const client of this.#clients) client.resume();
  }

  sendEvent(event: string, data?: Record<string, unknown>): void {
    this.sendLine(JSON.stringify({ event, ...(data ? { data } : {}), timestamp: { seconds: 1, microseconds: 2 } }));
  }

  sendLine(line: string): void {
    this.sendRaw(`${line}${this.#options.eol ?? '\r\n'}`);
  }

  sendRaw(data: string | Buffer): void {
    for (const client of this.#clients) client.write(data);
  }

  /** Ends every client connection (FIN). */
  endClients(): void {
    for (const client of this.#clients) client.end();
  }

  /**
   * Drops every client connection abruptly. A client that sent data the server left unread (see
   * pauseReading) gets ECONNRESET, as after QEMU's quit; unix sockets have no RST to send otherwise.
   */
  resetClients(): void {
    for (const client of this.#clients) client.destroy();
  }

  async close(): Promise<void> {
    for (const client of this.#clients) client.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
    if (this.#dir !== undefined) rmSync(this.#dir, { recursive: true, force: true });
  }

  #onClient(socket: Socket): void {
    this.#clients.add(socket);
    socket.on('close', () => this.#clients.delete(socket));
    socket.on('error', () => {});
    const { greeting = DEFAULT_GREETING } = this.#options;
    if (greeting !== null) socket.write(`${typeof greeting === 'string' ? greeting : JSON.stringify(greeting)}${this.#options.eol ?? '\r\n'}`);
    let buffer = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      buffer += chunk;
      let newline;
      while ((newline = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        if (!line.trim()) continue;
        this.receivedLines.push(line);
        void this.#onCommand(socket, toCommand(JSON.parse(line) as Record<string, unknown>));
      }
    });
    if (!this.#reading) socket.pause();
    for (const resolve of this.#clientWaiters.splice(0)) resolve();
  }

  async #onCommand(socket: Socket, command: ReceivedCommand): Promise<void> {
    this.received.push(command);
    for (const waiter of this.#commandWaiters.filter((w) => w.name === command.execute)) {
      this.#commandWaiters.splice(this.#commandWaiters.indexOf(waiter), 1);
      waiter.resolve(command);
    }
    const handler = this.#handlers.get(command.execute);
    const idPart = command.id === undefined ? {} : { id: command.id };
    let reply: object;
    if (!handler) {
      reply = { error: { class: 'CommandNotFound', desc: `The command ${command.execute} has not been found` }, ...idPart };
    } else {
      try {
        const value = await handler(command.arguments, command);
        if (value === NO_REPLY) return;
        reply = { return: value ?? {}, ...idPart };
      } catch (error) {
        const e = error instanceof QmpErrorReply ? error : new QmpErrorReply('GenericError', String(error));
        reply = { error: { class: e.errorClass, desc: e.desc }, ...idPart };
      }
    }
    if (!socket.destroyed) socket.write(`${JSON.stringify(reply)}${this.#options.eol ?? '\r\n'}`);
  }
}

/** `{"exec-oob": name, ...}` as `{ execute: name, oob: true, ... }`, so handlers see one shape. */
function toCommand(message: Record<string, unknown>): ReceivedCommand {
  const { 'exec-oob': oobName, ...rest } = message;
  return (typeof oobName === 'string' ? { ...rest, execute: oobName, oob: true } : rest) as unknown as ReceivedCommand;
}
