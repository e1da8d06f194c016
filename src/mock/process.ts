// The mock's stand-in for the hypervisor process: a fake pid, an exit that happens once, and the
// tail of what it "wrote" to stderr.

/**
 * Linux pids stay below PID_MAX_LIMIT (2^22), so fake pids start there: they are stable and look
 * like pids, and a runtime that signals or inspects one can never hit a real process.
 */
const FIRST_FAKE_PID = 4 * 1024 * 1024;
/** Room for a pid and one thread id per possible vCPU (at most 255). */
const PIDS_PER_VM = 256;
let nextPid = FIRST_FAKE_PID;

export interface MockExit {
  exitCode: number | undefined;
  signal: string | undefined;
}

export class MockProcess {
  readonly pid: number;
  /** When it started (Date.now()), for stats()' uptime. */
  readonly startedAt = Date.now();
  readonly exited: Promise<MockExit>;
  #exit: MockExit | undefined;
  #resolveExit: (exit: MockExit) => void = () => {};
  readonly #stderr: string[] = [];
  /** A running hypervisor keeps Node alive (QEMU does, through its pipes and socket) until it ends. */
  readonly #keepAlive = setInterval(() => {}, 2 ** 30);

  constructor() {
    this.pid = nextPid;
    nextPid += PIDS_PER_VM;
    this.exited = new Promise((resolve) => (this.#resolveExit = resolve));
  }

  get hasExited(): boolean {
    return this.#exit !== undefined;
  }

  /** The host thread id of vCPU `index`: fake too, and stable for the life of the process. */
  threadId(index: number): number {
    return this.pid + 1 + index;
  }

  writeStderr(line: string): void {
    this.#stderr.push(line);
    if (this.#stderr.length > 20) this.#stderr.shift();
  }

  stderrTail(): string {
    return this.#stderr.join('\n');
  }

  /** Ends the process; only the first end counts, as with a real one. Returns how it ended. */
  end(exit: MockExit): MockExit {
    if (!this.#exit) {
      this.#exit = exit;
      clearInterval(this.#keepAlive);
      this.#resolveExit(exit);
    }
    return this.#exit;
  }
}
