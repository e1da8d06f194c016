// QMP events: listeners by name (or '*'), one-shot waits that are armed before the command that
// causes the event (QEMU may send the event before the command's reply), and an async iterator.
import { OperationAbortedError, OperationTimeoutError } from '../errors.ts';
import { abortError } from '../util/deadline.ts';
import type { Logger } from '../util/logger.ts';
import { EventStream, type EventStreamOptions, type SizedEventListener } from './event-stream.ts';
import { checkTimeoutMs, startTimeout } from '../util/timeout.ts';
import type { QmpEvent } from './types.ts';

/** Called with each QMP event, in the order QEMU sent them. */
export type QmpEventListener = (event: QmpEvent) => void;

/** Options of `waitForEvent` and `armEvent`. */
export interface WaitForEventOptions {
  signal?: AbortSignal;
  /**
   * No bound when absent (or Infinity): give a signal or a timeout, or the wait lasts until the
   * connection closes. NaN, a negative number or a non-number rejects with InvalidArgumentError.
   */
  timeoutMs?: number;
}

/** A wait already listening. `cancel()` stops it; its promise then rejects (and is never unhandled). */
export interface ArmedEvent {
  readonly promise: Promise<QmpEvent>;
/** Stops waiting; the promise rejects with `OperationAbortedError`. */
  cancel(): void;
}

export class EventHub {
  readonly #listeners = new Map<string, Set<QmpEventListener>>();
  /** The async iterators, which also get each event's size (to bound what they buffer). */
  readonly #streams = new Set<SizedEventListener>();
  readonly #closeWaiters = new Set<(reason: Error) => void>();
  readonly #logger: Logger;
  #closedReason: Error | undefined;

  constructor(logger: Logger) {
    this.#logger = logger;
  }

  /** Calls `listener` for every event named `name` ('*': every event). Returns the unsubscribe. */
  on(name: string, listener: QmpEventListener): () => void {
    let set = this.#listeners.get(name);
    if (!set) {
      set = new Set();
      this.#listeners.set(name, set);
    }
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0 && this.#listeners.get(name) === set) this.#listeners.delete(name);
    };
  }

  /** `bytes`: the size of the line the event came in. */
  emit(event: QmpEvent, bytes: number): void {
    this.#deliver(this.#listeners.get(event.event), event);
    this.#deliver(this.#listeners.get('*'), event);
    // Streams only queue the event or hand it to a waiting next(): they neither throw nor change
    // the set while it is walked.
    for (const stream of this.#streams) stream(event, bytes);
  }

  #deliver(listeners: Set<QmpEventListener> | undefined, event: QmpEvent): void {
    if (!listeners) return;
    // A copy: a listener may unsubscribe itself (one-shot waits do).
    for (const listener of [...listeners]) {
      try {
        listener(event);
      } catch (error) {
        this.#logger.warn({ err: error, event: event.event }, 'a QMP event listener threw');
      }
    }
  }

  /** Starts listening now for the first `name` event that `predicate` accepts. */
  arm(name: string, predicate: (event: QmpEvent) => boolean = () => true, options: WaitForEventOptions = {}): ArmedEvent {
    const operation = `waiting for QMP event ${name}`;
    let cancel: () => void = () => {};
    const promise = new Promise<QmpEvent>((resolve, reject) => {
      const { signal, timeoutMs } = options;
      // Checked before listening: an invalid timeout rejects the wait (thrown in the executor).
      if (timeoutMs !== undefined) checkTimeoutMs(timeoutMs);
      let timer: NodeJS.Timeout | undefined;
      const finish = (error: Error | undefined, event?: QmpEvent) => {
        unsubscribe();
        this.#closeWaiters.delete(onClose);
        if (timer) clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        if (error) reject(error);
        else resolve(event as QmpEvent);
      };
      const unsubscribe = this.on(name, (event) => {
        let matches = false;
        try {
          matches = predicate(event);
        } catch (error) {
          this.#logger.warn({ err: error, event: name }, 'a QMP event predicate threw');
        }
        if (matches) finish(undefined, event);
      });
      const onClose = (reason: Error) => finish(reason);
      const onAbort = () => finish(abortError(operation, signal as AbortSignal));
      cancel = () => finish(new OperationAbortedError(operation));
      if (this.#closedReason) return finish(this.#closedReason);
      if (signal?.aborted) return onAbort();
      this.#closeWaiters.add(onClose);
      // finish() removes it, whatever ends the wait.
      signal?.addEventListener('abort', onAbort);
      if (timeoutMs !== undefined) timer = startTimeout(timeoutMs, () => finish(new OperationTimeoutError(operation, timeoutMs)));
    });
    // Whoever awaits the promise sees its rejection; a cancelled wait nobody awaits must not crash.
    promise.catch(() => {});
    return { promise, cancel: () => cancel() };
  }

  /** Every event from now on (listening starts now, not at the first next()). */
  iterate(options: EventStreamOptions = {}): EventStream {
    const source = {
      onEvent: (listener: SizedEventListener) => {
        this.#streams.add(listener);
        return () => {
          this.#streams.delete(listener);
        };
      },
      onEnd: (listener: () => void) => {
        if (this.#closedReason) {
          listener();
          return () => {};
        }
        this.#closeWaiters.add(listener);
        return () => this.#closeWaiters.delete(listener);
      },
    };
    return new EventStream(source, this.#logger, options);
  }

  /** The connection is gone: pending waits reject with `reason`, iterators end. */
  close(reason: Error): void {
    if (this.#closedReason) return;
    this.#closedReason = reason;
    for (const waiter of [...this.#closeWaiters]) waiter(reason);
    this.#closeWaiters.clear();
  }
}
