// A minimal client for the test guest's command agent, on the VM's virtio-serial channel (a unix
// socket in the VM's runtime directory). Kata's shim speaks ttRPC to kata-agent over vsock in the
// same place; this agent speaks lines:
//   host → guest  RUN <id> <one line of shell>
//   guest → host  BEGIN <id>, the command's stdout+stderr, END <id> <exit code>
// The test agent sends a command's output when it ends; lines are forwarded as they arrive.
import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

interface Running {
  id: number;
  began: boolean;
  onLine: (line: string) => void;
  done: (exitCode: number) => void;
  fail: (error: Error) => void;
}

export class Agent {
  #buffer = '';
  #nextId = 1;
  #running: Running | undefined;
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.#read(chunk));
    socket.on('error', () => {}); // reported as 'close'
    socket.on('close', () => this.#running?.fail(new Error('the agent channel closed')));
  }

  /** Connects once QEMU listens, then waits for a first command to round-trip: the guest has booted. */
  static async connect(socketPath: string, signal: AbortSignal): Promise<Agent> {
    for (;;) {
      signal.throwIfAborted();
      let socket: Socket;
      try {
        socket = await new Promise<Socket>((resolve, reject) => {
          const s = connect(socketPath, () => resolve(s)).once('error', reject);
        });
      } catch {
        await sleep(50, undefined, { signal }); // QEMU is not listening yet
        continue;
      }
      const agent = new Agent(socket);
      try {
        await agent.run('true', () => {}, signal);
        return agent;
      } catch (error) {
        agent.close();
        throw error;
      }
    }
  }

  /** Runs one line of shell in the guest (one command at a time); resolves with its exit code. */
  run(command: string, onLine: (line: string) => void, signal: AbortSignal): Promise<number> {
    const result = this.#queue.then(() => this.#start(command, onLine, signal));
    this.#queue = result.catch(() => {});
    return result;
  }

  /** Runs a command that must succeed and returns its output. */
  async output(command: string, signal: AbortSignal): Promise<string> {
    const lines: string[] = [];
    const exitCode = await this.run(command, (line) => lines.push(line), signal);
    if (exitCode !== 0) throw new Error(`guest command failed (exit ${exitCode}): ${command}\n${lines.join('\n')}`);
    return lines.join('\n');
  }

  close(): void {
    this.socket.destroy();
  }

  #start(command: string, onLine: (line: string) => void, signal: AbortSignal): Promise<number> {
    if (this.socket.destroyed) return Promise.reject(new Error('the agent channel is closed'));
    signal.throwIfAborted();
    return new Promise((resolve, reject) => {
      const onAbort = () => running.fail(signal.reason as Error);
      const running: Running = {
        id: this.#nextId++,
        began: false,
        onLine,
        done: (exitCode) => settle(() => resolve(exitCode)),
        fail: (error) => settle(() => reject(error)),
      };
      const settle = (how: () => void) => {
        signal.removeEventListener('abort', onAbort);
        this.#running = undefined;
        how();
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.#running = running;
      this.socket.write(`RUN ${running.id} ${command}\n`);
    });
  }

  #read(chunk: string): void {
    this.#buffer += chunk;
    let newline;
    while ((newline = this.#buffer.indexOf('\n')) >= 0) {
      const line = this.#buffer.slice(0, newline).replace(/\r$/, '');
      this.#buffer = this.#buffer.slice(newline + 1);
      const running = this.#running;
      if (!running) continue; // READY, or what an abandoned command printed
      if (!running.began) {
        running.began = line === `BEGIN ${running.id}`;
        continue;
      }
      const end = /^END (\d+) (\d+)$/.exec(line);
      if (end && Number(end[1]) === running.id) running.done(Number(end[2]));
      else running.onLine(line);
    }
  }
}
