// The hypervisor process, whether this Node process spawned it or adopted it from a runtime
// directory: one way to learn that it ended and one way to end it.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync } from 'node:fs';
import type { Logger } from '../../util/logger.ts';
import { sleep } from '../../util/deadline.ts';
import { isProcessAlive, readProcStat } from './proc-fs.ts';
import { LineRing } from './stderr-ring.ts';
import { createExclusiveSync, readTailSync } from '../../util/safe-fs.ts';
import { launcherArgs, launcherStdio, type LaunchSpec } from '../launch/launcher.ts';

/** How much of a stderr file an error quotes at most. */
const STDERR_TAIL_BYTES = 8 * 1024;
/**
 * After the exit, how long the stderr pipe may take to deliver its last lines (the words an error
 * quotes). Bounded: a process that outlived QEMU under its uid could hold the pipe open forever.
 */
const STDERR_DRAIN_MS = 1_000;

export interface ProcessExit {
  exitCode: number | undefined;
  signal: string | undefined;
}

export interface VmmProcess {
  readonly pid: number;
  /** /proc starttime, saved with the pid so that a recycled pid is never mistaken for ours. */
  readonly startTime: number | undefined;
  /** Resolves once the process has ended (and, for a child, been reaped). Never rejects. */
  readonly exited: Promise<ProcessExit>;
  readonly hasExited: boolean;
  stderrTail(lines?: number): string;
  /** Sends a signal if the process still runs; returns whether it was sent. */
  signal(name: NodeJS.Signals): boolean;
}

export interface SpawnSpec {
  /** The launcher (svmm-launch), an absolute path resolved once. */
  launcher: string;
  /** What the launcher sets up and execs: program, args, fds, identity, capabilities. */
  launch: LaunchSpec;
  /**
   * false: the kernel kills the program when this Node process dies (launch.dieWithParent).
   * true: it runs in its own session and outlives us, so a restarted runtime can re-attach; its
   * stderr then goes to `stderrFile`, created anew (a pipe to a dead parent would break).
   */
  detached: boolean;
  stderrFile: string;
  logger: Logger;
}

/**
 * A process this Node process spawned (through the launcher) and reaps. Spawned with
 * `child_process.spawn` rather than execa, which the rest of the library uses: this is the start
 * path of every VM, and execa's per-call option, stdio and promise handling cost the event loop
 * about 1.2 ms (1.9 ms of CPU) a spawn on top of the spawn itself, which a start storm pays 50 times
 * over (measured: ARCHITECTURE.md, "Start storms"). Nothing execa adds is needed here: no shell, no
 * output buffered, no environment, and the launcher's parent-death signal (not execa's `cleanup`,
 * which SIGKILL defeats) ends QEMU with us.
 */
export class SpawnedProcess implements VmmProcess {
  readonly pid: number;
  readonly startTime: number | undefined;
  readonly exited: Promise<ProcessExit>;
  #exit: ProcessExit | undefined;
  readonly #stderr = new LineRing();
  readonly #stderrFile: string | undefined;
  readonly #child: ChildProcess;

  private constructor(child: ChildProcess, stderrFile: string | undefined, logger: Logger) {
    this.#child = child;
    this.#stderrFile = stderrFile;
    if (child.pid === undefined) {
      // Spawning failed (e.g. the launcher missing): the 'error' event says why.
      this.pid = -1;
      this.startTime = undefined;
    } else {
      this.pid = child.pid;
      this.startTime = readProcStat(child.pid)?.startTime;
    }
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => {
      for (const line of this.#stderr.push(chunk)) logger.warn({ stderr: line }, 'stderr');
    });
    this.exited = new Promise<ProcessExit>((resolve) => {
      const end = (exit: ProcessExit) => {
        this.#exit ??= exit;
        resolve(this.#exit);
      };
      // Every 'error', not only the first: one without a listener would be thrown.
      child.on('error', (error) => {
        // Never ran: report the spawn error as stderr so the caller can show it. (A failed kill()
        // of a running child also lands here; its exit is still to come.)
        if (child.pid !== undefined) {
          logger.warn({ err: error }, 'child process error');
          return;
        }
        this.#stderr.push(`${error.message}\n`);
        end({ exitCode: undefined, signal: undefined });
      });
      child.once('exit', (code, signal) => {
        const exit = { exitCode: code ?? undefined, signal: signal ?? undefined };
        // 'close' follows once stderr has delivered its last lines, unless something else holds the pipe.
        const drained = setTimeout(() => end(exit), STDERR_DRAIN_MS);
        child.once('close', () => {
          clearTimeout(drained);
          end(exit);
        });
      });
    });
  }

  static spawn(spec: SpawnSpec): SpawnedProcess {
    // In a directory only root writes: O_EXCL|O_NOFOLLOW still refuses anything already there.
    const stderrFd = spec.detached ? createExclusiveSync(spec.stderrFile, 0o600) : undefined;
    try {
      const child = spawn(spec.launcher, launcherArgs(spec.launch), {
        // Any fd number at any position: what the launcher finds at each fd (launcherStdio).
        stdio: launcherStdio(spec.launch, stderrFd ?? 'pipe'),
        detached: spec.detached,
        // Nothing of this process's environment (tokens, proxies) reaches QEMU or a helper.
        env: {},
      });
      if (spec.detached) child.unref();
      return new SpawnedProcess(child, spec.detached ? spec.stderrFile : undefined, spec.logger);
    } finally {
      // QEMU holds its own copy; ours would only leak.
      if (stderrFd !== undefined) closeSync(stderrFd);
    }
  }

  get hasExited(): boolean {
    return this.#exit !== undefined;
  }

  stderrTail(lines = 20): string {
    if (this.#stderrFile) return readTail(this.#stderrFile, lines);
    return this.#stderr.tail(lines);
  }

  signal(name: NodeJS.Signals): boolean {
    if (this.#exit || this.pid < 0) return false;
    return this.#child.kill(name);
  }
}

/** A QEMU started by another process (re-attach): watched through /proc, since we cannot reap it. */
export class AdoptedProcess implements VmmProcess {
  readonly pid: number;
  readonly startTime: number | undefined;
  readonly exited: Promise<ProcessExit>;
  #ended = false;
  readonly #stderrFile: string;
  readonly #stopWatching = new AbortController();

  constructor(pid: number, startTime: number | undefined, stderrFile: string, pollMs = 200) {
    this.pid = pid;
    this.startTime = startTime;
    this.#stderrFile = stderrFile;
    this.exited = this.#watch(pollMs).then(() => {
      this.#ended = true;
      return { exitCode: undefined, signal: undefined };
    });
  }

  async #watch(pollMs: number): Promise<void> {
    while (isProcessAlive(this.pid, this.startTime)) {
      try {
        await sleep(pollMs, this.#stopWatching.signal);
      } catch {
        return;
      }
    }
  }

  get hasExited(): boolean {
    return this.#ended || !isProcessAlive(this.pid, this.startTime);
  }

  stderrTail(lines = 20): string {
    return readTail(this.#stderrFile, lines);
  }

  signal(name: NodeJS.Signals): boolean {
    if (this.hasExited) return false;
    try {
      process.kill(this.pid, name);
      return true;
    } catch {
      return false;
    }
  }

  /** Re-checks at once instead of at the next poll. */
  poke(): void {
    if (!isProcessAlive(this.pid, this.startTime)) this.#stopWatching.abort();
  }
}

/** The last lines of a stderr file, read bounded and without following or blocking on anything. */
function readTail(file: string, lines: number): string {
  return readTailSync(file, STDERR_TAIL_BYTES).trimEnd().split('\n').slice(-lines).join('\n');
}

/** SIGKILL, then wait for the end; a process that survives that is reported, not waited on forever. */
export async function killAndWait(proc: VmmProcess, waitMs = 10_000): Promise<ProcessExit | undefined> {
  proc.signal('SIGKILL');
  if (proc instanceof AdoptedProcess) proc.poke();
  const timeout = sleep(waitMs).then(() => undefined);
  const result = await Promise.race([proc.exited, timeout]);
  return result;
}
