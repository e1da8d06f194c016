// The raw baseline's QMP: a bare unix socket, JSON lines and ids, nothing from the library. What a
// script driving QEMU by hand would write; the benchmarks hold the library against it.
import { connect, type Socket } from 'node:net';

export class RawQmp {
  #buffer = '';
  #nextId = 0;
  readonly #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  readonly #eventWaiters: { name: string; match: (data: Record<string, unknown>) => boolean; resolve: () => void }[] = [];

  private constructor(readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.#onData(chunk));
    socket.on('error', () => {});
    socket.on('close', () => {
      for (const p of this.#pending.values()) p.reject(new Error('closed'));
      this.#pending.clear();
    });
  }

  /** Polls until QEMU listens, reads the greeting and negotiates capabilities. */
  static async connect(path: string, timeoutMs = 30_000): Promise<RawQmp> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      try {
        const socket = await new Promise<Socket>((resolve, reject) => {
          const s = connect(path);
          s.once('connect', () => resolve(s));
          s.once('error', reject);
        });
        const qmp = new RawQmp(socket);
        await qmp.#greeting;
        await qmp.execute('qmp_capabilities');
        return qmp;
      } catch (error) {
        if (Date.now() > end) throw error;
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    }
  }

  #greetingResolve: () => void = () => {};
  readonly #greeting = new Promise<void>((resolve) => (this.#greetingResolve = resolve));

  #onData(chunk: string): void {
    this.#buffer += chunk;
    let newline;
    while ((newline = this.#buffer.indexOf('\n')) >= 0) {
      const line = this.#buffer.slice(0, newline);
      this.#buffer = this.#buffer.slice(newline + 1);
      const message = JSON.parse(line) as Record<string, unknown>;
      if ('QMP' in message) this.#greetingResolve();
      else if ('event' in message) {
        const data = (message['data'] ?? {}) as Record<string, unknown>;
        for (const w of [...this.#eventWaiters]) {
          if (w.name === message['event'] && w.match(data)) {
            this.#eventWaiters.splice(this.#eventWaiters.indexOf(w), 1);
            w.resolve();
          }
        }
      } else if (typeof message['id'] === 'number') {
        const p = this.#pending.get(message['id']);
        this.#pending.delete(message['id']);
        if ('error' in message) p?.reject(new Error(JSON.stringify(message['error'])));
        else p?.resolve(message['return']);
      }
    }
  }

  execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.socket.write(JSON.stringify(args ? { execute: command, arguments: args, id } : { execute: command, id }) + '\n');
    });
  }

  /** Must be called before the command that causes the event. */
  waitEvent(name: string, match: (data: Record<string, unknown>) => boolean = () => true): Promise<void> {
    return new Promise((resolve) => this.#eventWaiters.push({ name, match, resolve }));
  }

  close(): void {
    this.socket.destroy();
  }
}
