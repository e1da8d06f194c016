import { isSandboxVmmError, OperationAbortedError, OperationTimeoutError } from '../errors.ts';
import { checkTimeoutMs, isBounded, resolveTimeoutMs, startTimeout } from './timeout.ts';

/** What every long operation accepts. */
export interface OperationOptions {
  signal?: AbortSignal;
  /**
   * Milliseconds, >= 0; Infinity (or anything beyond 2^31-1) means no bound, and leaving it out
   * applies the default. NaN, a negative number or a non-number fails the operation with
   * InvalidArgumentError (code INVALID_ARGUMENT).
   */
  timeoutMs?: number;
}

/**
 * One operation's cancellation: the caller's signal and its own timeout folded into one signal
 * whose `reason` is already a typed error (OperationAbortedError or OperationTimeoutError).
 * Always `dispose()` it (or use `using`) so that its timer and listener go away.
 */
export class Deadline implements Disposable {
  readonly signal: AbortSignal;
  readonly #controller = new AbortController();
  readonly #timer: NodeJS.Timeout | undefined;
  readonly #parent: AbortSignal | undefined;
  readonly #onParentAbort: () => void;
  readonly #linked: { signal: AbortSignal; onAbort: () => void }[] = [];

  /**
   * `linked` signals abort this deadline with their own reason, unchanged (for example a VM's
   * "stopping" signal whose reason is already the error pending operations should reject with).
   */
  constructor(
    operation: string,
    options: OperationOptions = {},
    defaultTimeoutMs?: number,
    linked: readonly AbortSignal[] = [],
  ) {
    this.signal = this.#controller.signal;
    // An invalid timeout (the caller's or the default) is the deadline's reason from the start: the
    // operation fails at once with it, and one that must not fail (stopVM) merely skips its bound
    // steps, as if the deadline had passed.
    let timeoutMs: number | undefined;
    try {
      timeoutMs = resolveTimeoutMs(options.timeoutMs, defaultTimeoutMs, 'timeoutMs', 'defaultTimeoutMs');
    } catch (error) {
      this.#controller.abort(error);
    }
    this.#parent = options.signal;
    this.#onParentAbort = () => {
      // A reason that already is one of ours (a parent deadline's, a VM stopping) stays as it is.
      this.#controller.abort(abortError(operation, this.#parent as AbortSignal));
    };
    if (this.signal.aborted) return;
    if (this.#parent?.aborted) {
      this.#onParentAbort();
    } else {
      this.#parent?.addEventListener('abort', this.#onParentAbort, { once: true });
    }
    for (const signal of linked) {
      const onAbort = () => this.#controller.abort(signal.reason);
      if (signal.aborted) onAbort();
      else signal.addEventListener('abort', onAbort, { once: true });
      this.#linked.push({ signal, onAbort });
    }
    if (timeoutMs !== undefined && !this.signal.aborted) {
      const ms = timeoutMs;
      this.#timer = startTimeout(ms, () => this.#controller.abort(new OperationTimeoutError(operation, ms)));
    }
  }

  /** Throws the typed reason if the deadline has passed or the caller aborted. */
  throwIfDone(): void {
    if (this.signal.aborted) throw this.signal.reason;
  }

  /** Rejects with the typed reason when the deadline passes; never resolves otherwise. */
  expired(): Promise<never> {
    return new Promise((_, reject) => {
      if (this.signal.aborted) reject(this.signal.reason as Error);
      else this.signal.addEventListener('abort', () => reject(this.signal.reason as Error), { once: true });
    });
  }

  /** Races `promise` against the deadline. */
  async race<T>(promise: Promise<T>): Promise<T> {
    // Observed even when the deadline has already passed: its rejection must not go unhandled.
    void promise.catch(() => {});
    this.throwIfDone();
    let onAbort: (() => void) | undefined;
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => reject(this.signal.reason as Error);
      this.signal.addEventListener('abort', onAbort, { once: true });
    });
    try {
      return await Promise.race([promise, aborted]);
    } finally {
      if (onAbort) this.signal.removeEventListener('abort', onAbort);
    }
  }

  /**
   * Like race(), but once the deadline passes the operation still gets `graceMs` to settle by
   * itself: one that honours the signal rejects at once with a more telling error of its own (a
   * resize reporting how far it got), or finishes; one that ignores the signal is cut off with the
   * deadline's reason.
   */
  async settle<T>(promise: Promise<T>, graceMs: number): Promise<T> {
    let onAbort: (() => void) | undefined;
    const cutOff = new Promise<never>((_, reject) => {
      onAbort = () => {
        const reason = this.signal.reason as Error;
        const timer = setTimeout(() => reject(reason), graceMs);
        void promise.then(
          () => clearTimeout(timer),
          () => clearTimeout(timer),
        );
      };
      if (this.signal.aborted) onAbort();
      else this.signal.addEventListener('abort', onAbort, { once: true });
    });
    try {
      return await Promise.race([promise, cutOff]);
    } finally {
      if (onAbort) this.signal.removeEventListener('abort', onAbort);
    }
  }

  dispose(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#parent?.removeEventListener('abort', this.#onParentAbort);
    for (const { signal, onAbort } of this.#linked) signal.removeEventListener('abort', onAbort);
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

/**
 * Resolves after `ms`, or rejects with the deadline's reason as soon as it passes. `ms` follows the
 * timeout rule: beyond 2^31-1 (or Infinity) the sleep lasts until aborted; NaN, a negative number
 * or a non-number rejects with InvalidArgumentError.
 */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    checkTimeoutMs(ms, 'ms');
    if (signal?.aborted) {
      reject(signal.reason as Error);
      return;
    }
    const onAbort = () => {
      if (timer) clearTimeout(timer);
      reject(signal?.reason as Error);
    };
    // Beyond what a timer can wait, the sleep lasts until aborted (a timer would fire at once).
    const timer =
      !isBounded(ms)
        ? undefined
        : setTimeout(() => {
            signal?.removeEventListener('abort', onAbort);
            resolve();
          }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * The error an operation rejects with when `signal` aborts: the signal's reason when it already is
 * one of ours (a Deadline's timeout, a VM stopping), otherwise OperationAbortedError with the
 * reason as its cause.
 */
export function abortError(operation: string, signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  return isSandboxVmmError(reason) ? reason : new OperationAbortedError(operation, { cause: reason });
}
