// The default test guest, as the tests, the demo and the benchmarks use it: where its kernel and
// initramfs are (built by build.sh), and a client for the command agent it runs on the virtio-serial
// port agent.0 (see rootfs/agent for the protocol).
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The architectures build.sh builds the guest for; QEMU's names (qemu-system-<arch>). */
export type GuestArch = 'x86_64' | 'aarch64';

export interface GuestAssets {
  kernel: string;
  initrd: string;
  kernelParams: string[];
  kernelVersion: string;
}

/**
 * The built guest of one architecture (x86_64 unless told); `npm test` and `npm run demo` build
 * both first (scripts/bootstrap.mjs).
 */
export function guestAssets(arch: GuestArch = 'x86_64'): GuestAssets {
  const manifest = join(root, '.cache', 'guest', arch, 'current.json');
  let text: string;
  try {
    text = readFileSync(manifest, 'utf8');
  } catch {
    throw new Error(`the ${arch} test guest is not built (${manifest} is missing): run \`bash test/guest/build.sh ${arch}\` or \`npm test\``);
  }
  const parsed = JSON.parse(text) as GuestAssets;
  return { kernel: parsed.kernel, initrd: parsed.initrd, kernelParams: parsed.kernelParams, kernelVersion: parsed.kernelVersion };
}

export interface CommandResult {
  exitCode: number;
  output: string;
}

export interface NetInterface {
  name: string;
  mac: string;
}

interface Waiter {
  id: number;
  lines: string[];
  began: boolean;
  resolve: (result: CommandResult) => void;
  reject: (error: Error) => void;
}

/** How long the first command waits before it is asked again (see GuestAgent.connect). */
const FIRST_ANSWER_RETRY_MS = 5_000;

/** A guest command that got no answer in its time. */
export class AgentTimeoutError extends Error {}

/** Runs shell commands in the guest, one at a time, and returns their output and exit status. */
export class GuestAgent {
  readonly #socket: Socket;
  #buffer = '';
  #nextId = 1;
  #current: Waiter | undefined;
  #queue: Promise<unknown> = Promise.resolve();
  #closed: Error | undefined;

  private constructor(socket: Socket) {
    this.#socket = socket;
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.#onData(chunk));
    socket.on('error', () => {});
    socket.on('close', () => {
      this.#closed = new Error('the guest agent connection closed');
      this.#current?.reject(this.#closed);
      this.#current = undefined;
    });
  }

  /**
   * Connects to the agent's socket and waits until a first command round-trips, which means the
   * guest has booted and its agent runs.
   */
  static async connect(socketPath: string, options: { timeoutMs?: number } = {}): Promise<GuestAgent> {
    const timeoutMs = options.timeoutMs ?? 60_000;
    const end = Date.now() + timeoutMs;
    let socket: Socket | undefined;
    while (!socket) {
      try {
        socket = await new Promise<Socket>((resolve, reject) => {
          const s = connect(socketPath);
          s.once('connect', () => resolve(s));
          s.once('error', reject);
        });
      } catch (error) {
        if (Date.now() > end) throw new Error(`cannot connect to the guest agent at ${socketPath}`, { cause: error });
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    }
    const agent = new GuestAgent(socket);
    try {
      // Written now, read by the agent once the guest opens the port: the data waits in QEMU. Asked
      // again every few seconds: a restored clone's agent restarts when its host side was
      // disconnected at `cont`, and a command that reaches it while it closes the port is lost.
      for (;;) {
        const left = end - Date.now();
        try {
          await agent.run('true', { timeoutMs: Math.max(Math.min(left, FIRST_ANSWER_RETRY_MS), 1) });
          break;
        } catch (error) {
          if (left <= FIRST_ANSWER_RETRY_MS || !(error instanceof AgentTimeoutError)) throw error;
        }
      }
    } catch (error) {
      await agent.close();
      throw error;
    }
    return agent;
  }

  run(command: string, options: { timeoutMs?: number } = {}): Promise<CommandResult> {
    if (command.includes('\n')) return Promise.reject(new Error('a guest command must be one line'));
    const result = this.#queue.then(() => this.#runNow(command, options.timeoutMs ?? 30_000));
    this.#queue = result.catch(() => {});
    return result;
  }

  /** Runs a command that must succeed; returns its output. */
  async runOk(command: string, options: { timeoutMs?: number } = {}): Promise<string> {
    const result = await this.run(command, options);
    if (result.exitCode !== 0) throw new Error(`guest command failed (${result.exitCode}): ${command}\n${result.output}`);
    return result.output;
  }

  async onlineCpus(): Promise<number> {
    return countRanges((await this.runOk('cat /sys/devices/system/cpu/online')).trim());
  }

  async memTotalKiB(): Promise<number> {
    const match = /MemTotal:\s+(\d+) kB/.exec(await this.runOk('cat /proc/meminfo'));
    if (!match) throw new Error('no MemTotal in /proc/meminfo');
    return Number(match[1]);
  }

  async netInterfaces(): Promise<NetInterface[]> {
    const out = await this.runOk('for i in /sys/class/net/*; do echo "${i##*/} $(cat $i/address)"; done');
    return out
      .split('\n')
      .filter(Boolean)
      .map((line) => {
        const [name = '', mac = ''] = line.split(' ');
        return { name, mac };
      })
      .filter((i) => i.name !== 'lo');
  }

  close(): Promise<void> {
    if (this.#socket.destroyed) return Promise.resolve();
    return new Promise((resolve) => {
      this.#socket.once('close', () => resolve());
      this.#socket.destroy();
    });
  }

  #runNow(command: string, timeoutMs: number): Promise<CommandResult> {
    if (this.#closed) return Promise.reject(this.#closed);
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#current = undefined;
        reject(new AgentTimeoutError(`guest command timed out after ${timeoutMs} ms: ${command}`));
      }, timeoutMs);
      this.#current = {
        id,
        lines: [],
        began: false,
        resolve: (result) => {
          clearTimeout(timer);
          resolve(result);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      };
      this.#socket.write(`RUN ${id} ${command}\n`);
    });
  }

  #onData(chunk: string): void {
    this.#buffer += chunk;
    let newline;
    while ((newline = this.#buffer.indexOf('\n')) >= 0) {
      const line = this.#buffer.slice(0, newline).replace(/\r$/, '');
      this.#buffer = this.#buffer.slice(newline + 1);
      this.#onLine(line);
    }
  }

  #onLine(line: string): void {
    const waiter = this.#current;
    if (!waiter) return; // READY, or the tail of a command that timed out
    if (!waiter.began) {
      if (line === `BEGIN ${waiter.id}`) waiter.began = true;
      return;
    }
    const end = /^END (\d+) (\d+)$/.exec(line);
    if (end && Number(end[1]) === waiter.id) {
      this.#current = undefined;
      waiter.resolve({ exitCode: Number(end[2]), output: waiter.lines.length > 0 ? `${waiter.lines.join('\n')}\n` : '' });
      return;
    }
    waiter.lines.push(line);
  }
}

/** "0-2,4" → 4 */
function countRanges(list: string): number {
  if (!list) return 0;
  return list.split(',').reduce((sum, part) => {
    const [from, to] = part.split('-').map(Number);
    return sum + (to === undefined ? 1 : to - (from ?? to) + 1);
  }, 0);
}
