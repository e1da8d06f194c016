// The hypervisor process, whether this Node process spawned it or adopted it from a runtime
// directory: one way to learn that it ended and one way to end it.
import { closeSync, openSync, readFileSync } from 'node:fs';
import { execa, type Options, type ResultPromise } from 'execa';
import type { Logger } from '../../util/logger.ts';
import { sleep } from '../../util/deadline.ts';
import { isProcessAlive, readProcStat } from './proc-fs.ts';
import { LineRing } from './stderr-ring.ts';

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

export interface DropPrivileges {
  uid: number;
  gid: number;
  groups: number[];
}

export interface SpawnSpec {
  file: string;
  args: string[];
  /** Caller fds QEMU gets as 3, 4, … (the argv already refers to them). */
  passFds: number[];
  /** Run as this user; undefined keeps the current one. */
  user: DropPrivileges | undefined;
  /**
   * false: the kernel kills QEMU when this Node process dies (PR_SET_PDEATHSIG), even by SIGKILL.
   * true: QEMU runs in its own session and outlives us, so a restarted runtime can re-attach.
   */
  detached: boolean;
  /** Where stderr goes when detached (a pipe to a dead parent would break). */
  stderrFile: string;
  logger: Logger;
}

/**
 * QEMU is started through setpriv (util-linux): it sets the parent-death signal *after* dropping
 * privileges (a uid change clears it, which is why QEMU's own -runas is not used) and then execs
 * QEMU, so the pid stays QEMU's.
 */
export function setprivArgs(spec: Pick<SpawnSpec, 'user' | 'detached'>): string[] {
  const args: string[] = [];
  if (spec.user) {
    args.push(`--reuid=${spec.user.uid}`, `--regid=${spec.user.gid}`);
    args.push(spec.user.groups.length > 0 ? `--groups=${spec.user.groups.join(',')}` : '--clear-groups');
  }
  if (!spec.detached) args.push('--pdeathsig', 'SIGKILL');
  return args;
}

export class SpawnedProcess implements VmmProcess {
  readonly pid: number;
  readonly startTime: number | undefined;
  readonly exited: Promise<ProcessExit>;
  #exit: ProcessExit | undefined;
  readonly #stderr = new LineRing();
  readonly #stderrFile: string | undefined;
  readonly #child: ResultPromise;

  private constructor(child: ResultPromise, stderrFile: string | undefined, logger: Logger) {
    this.#child = child;
    this.#stderrFile = stderrFile;
    if (child.pid === undefined) {
      // Spawning failed (e.g. setpriv or QEMU missing); execa reports why through the promise.
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
    this.exited = child.then(
      (result) => {
        const exit: ProcessExit = { exitCode: result.exitCode, signal: result.signal };
        if (result.failed && result.exitCode === undefined && result.signal === undefined) {
          // Never ran: report the spawn error as stderr so the caller can show it.
          this.#stderr.push(`${result.message}\n`);
        }
        this.#exit = exit;
        return exit;
      },
      (error: unknown) => {
        this.#stderr.push(`${String(error)}\n`);
        this.#exit = { exitCode: undefined, signal: undefined };
        return this.#exit;
      },
    );
  }

  static spawn(spec: SpawnSpec): SpawnedProcess {
    const stderrFd = spec.detached ? openSync(spec.stderrFile, 'a', 0o600) : undefined;
    try {
      const options: Options = {
        // execa's types only admit a few literal fds; at runtime any inherited fd number works.
        stdio: ['ignore', 'ignore', stderrFd ?? 'pipe', ...spec.passFds] as unknown as Options['stdio'],
        detached: spec.detached,
        cleanup: !spec.detached,
        reject: false,
        buffer: false,
      };
      const child: ResultPromise = execa('setpriv', [...setprivArgs(spec), '--', spec.file, ...spec.args], options);
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

function readTail(file: string, lines: number): string {
  try {
    const text = readFileSync(file, 'utf8');
    return text.trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

/** SIGKILL, then wait for the end; a process that survives that is reported, not waited on forever. */
export async function killAndWait(proc: VmmProcess, waitMs = 10_000): Promise<ProcessExit | undefined> {
  proc.signal('SIGKILL');
  if (proc instanceof AdoptedProcess) proc.poke();
  const timeout = sleep(waitMs).then(() => undefined);
  const result = await Promise.race([proc.exited, timeout]);
  return result;
}
