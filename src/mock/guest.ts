// The mock's guest kernel, reduced to what the host can observe: it only acts (releases an unplugged
// device, offlines a vCPU, plugs virtio-mem blocks) while its vCPUs run and it has not panicked, a
// little after being asked, as a real guest does.
import { sleep } from '../util/deadline.ts';

export class MockGuest {
  #vcpusRunning = false;
  /** Time its vCPUs ran before the current run, and when the current run began (ms, Date.now()). */
  #ranMs = 0;
  #runningSince: number | undefined;
  #panicked = false;
  #wake: (() => void)[] = [];
  readonly #reactionMs: number;

  constructor(reactionMs: number) {
    this.#reactionMs = reactionMs;
  }

  /** Whether the guest can act now. */
  get responsive(): boolean {
    return this.#vcpusRunning && !this.#panicked;
  }

  get panicked(): boolean {
    return this.#panicked;
  }

  /** How long its vCPUs have run, in ms: what stats() reports as each vCPU's CPU time. */
  ranMs(now = Date.now()): number {
    return this.#ranMs + (this.#runningSince === undefined ? 0 : now - this.#runningSince);
  }

  setVcpusRunning(running: boolean): void {
    const now = Date.now();
    if (running && this.#runningSince === undefined) this.#runningSince = now;
    if (!running && this.#runningSince !== undefined) {
      this.#ranMs += now - this.#runningSince;
      this.#runningSince = undefined;
    }
    this.#vcpusRunning = running;
    this.#wakeUp();
  }

  /** The kernel stops for good; only a new boot would bring it back. */
  panic(): void {
    this.#panicked = true;
  }

  /**
   * Runs `action` once the guest has had time to react while responsive. Rejects with the signal's
   * reason if `signal` aborts first (the machine went away).
   */
  async act(signal: AbortSignal, action: () => void): Promise<void> {
    for (;;) {
      await this.#whenResponsive(signal);
      await sleep(this.#reactionMs, signal);
      if (this.responsive) {
        action();
        return;
      }
    }
  }

  #whenResponsive(signal: AbortSignal): Promise<void> {
    if (signal.aborted) return Promise.reject(signal.reason as Error);
    if (this.responsive) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const onAbort = () => reject(signal.reason as Error);
      signal.addEventListener('abort', onAbort, { once: true });
      this.#wake.push(() => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      });
    });
  }

  #wakeUp(): void {
    if (!this.responsive) return;
    const waiting = this.#wake;
    this.#wake = [];
    for (const wake of waiting) wake();
  }
}
