// QMP events: listeners by name (or '*'), one-shot waits that are armed before the command that
// causes the event (QEMU may send the event before the command's reply), and an async iterator.
import { OperationAbortedError, OperationTimeoutError } from '../errors.ts';
import { abortError } from '../util/deadline.ts';
import type { Logger } from '../util/logger.ts';
import type { QmpEvent } from './types.ts';

export type QmpEventListener = (event: QmpEvent) => void;

export interface WaitForEventOptions {
  signal?: AbortSignal;
  /** No bound when absent: give a signal or a timeout, or the wait lasts until the connection closes. */
  timeoutMs?: number;
}

/** A wait already listening. `cancel()` stops it; its promise then rejects (and is never unhandled). */
export interface ArmedEvent {
  readonly promise: Promise<QmpEvent>;
  cancel(): void;
}

/** Events an iterator may hold for a slow consumer before it drops the oldest. */
const MAX_BUFFERED_EVENTS = 10_000;

export class EventHub {
  readonly #listeners = new Map<string, Set<QmpEventListener>>();
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

  emit(event: QmpEvent): void {
    this.#deliver(this.#listeners.get(event.event), event);
    this.#deliver(this.#listeners.get('*'), event);
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
      signal?.addEventListener('abort', onAbort, { once: true });
      if (timeoutMs !== undefined && Number.isFinite(timeoutMs)) {
        timer = setTimeout(() => finish(new OperationTimeoutError(operation, timeoutMs)), timeoutMs);
        timer.unref();
      }
    });
    // Whoever awaits the promise sees its rejection; a cancelled wait nobody awaits must not crash.
    promise.catch(() => {});
    return { promise, cancel: () => cancel() };
  }

  /** Every event from now on, until the connection closes or `signal` aborts. */
  async *iterate(options: { signal?: AbortSignal } = {}): AsyncGenerator<QmpEvent, void, undefined> {
    const queue: QmpEvent[] = [];
    let wake: (() => void) | undefined;
    let ended = false;
    let dropped = 0;
    const unsubscribe = this.on('*', (event) => {
      if (queue.length >= MAX_BUFFERED_EVENTS) {
        queue.shift();
        if (dropped++ === 0) this.#logger.warn({ max: MAX_BUFFERED_EVENTS }, 'QMP event iterator is not consumed: dropping the oldest events');
      }
      queue.push(event);
      wake?.();
    });
    const end = () => {
      ended = true;
      wake?.();
    };
    this.#closeWaiters.add(end);
    options.signal?.addEventListener('abort', end, { once: true });
    try {
      for (;;) {
        const event = queue.shift();
        if (event) {
          yield event;
          continue;
        }
        if (ended || this.#closedReason || options.signal?.aborted) return;
        await new Promise<void>((resolve) => (wake = resolve));
        wake = undefined;
      }
    } finally {
      unsubscribe();
      this.#closeWaiters.delete(end);
      options.signal?.removeEventListener('abort', end);
    }
  }

  /** The connection is gone: pending waits reject with `reason`, iterators end. */
  close(reason: Error): void {
    if (this.#closedReason) return;
    this.#closedReason = reason;
    for (const waiter of [...this.#closeWaiters]) waiter(reason);
    this.#closeWaiters.clear();
  }
}
