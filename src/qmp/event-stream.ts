// An async iterator over QMP events that listens from the moment it is created (an async generator
// function would only subscribe at its first next(), losing the events sent in between).
import type { Logger } from '../util/logger.ts';
import type { QmpEvent } from './types.ts';

/** Events a stream holds for a slow consumer before it drops the oldest. */
export const MAX_BUFFERED_EVENTS = 10_000;

/** What a stream needs from the hub: subscribe to every event, and to the connection's end. */
export interface EventSource {
  onEvent(listener: (event: QmpEvent) => void): () => void;
  /** Calls `listener` when the connection ends (at once if it already has). */
  onEnd(listener: () => void): () => void;
}

type Step = IteratorResult<QmpEvent, void>;

const DONE: Step = { done: true, value: undefined };

/**
 * Buffered events are still delivered after the connection ends, then the stream is done; an abort
 * (or return()) ends it at once and drops what is buffered.
 */
export class EventStream implements AsyncGenerator<QmpEvent, void, undefined> {
  readonly #queue: QmpEvent[] = [];
  readonly #waiters: ((step: Step) => void)[] = [];
  readonly #logger: Logger;
  readonly #signal: AbortSignal | undefined;
  readonly #unsubscribe: () => void;
  readonly #stopWatchingEnd: () => void;
  #ended = false;
  #finished = false;
  #dropped = 0;

  constructor(source: EventSource, logger: Logger, signal: AbortSignal | undefined) {
    this.#logger = logger;
    this.#signal = signal;
    this.#unsubscribe = source.onEvent((event) => this.#onEvent(event));
    this.#stopWatchingEnd = source.onEnd(() => this.#onEnd());
    if (signal?.aborted) this.#finish();
    else signal?.addEventListener('abort', this.#onAbort, { once: true });
  }

  next(): Promise<Step> {
    const event = this.#queue.shift();
    if (event) return Promise.resolve({ done: false, value: event });
    if (this.#ended || this.#finished) {
      this.#finish();
      return Promise.resolve(DONE);
    }
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  return(): Promise<Step> {
    this.#finish();
    return Promise.resolve(DONE);
  }

  throw(error: unknown): Promise<Step> {
    this.#finish();
    return Promise.reject(error instanceof Error ? error : new Error(String(error)));
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.return();
  }

  readonly #onAbort = (): void => this.#finish();

  #onEvent(event: QmpEvent): void {
    const waiter = this.#waiters.shift();
    if (waiter) {
      waiter({ done: false, value: event });
      return;
    }
    if (this.#queue.length >= MAX_BUFFERED_EVENTS) {
      this.#queue.shift();
      if (this.#dropped++ === 0) this.#logger.warn({ max: MAX_BUFFERED_EVENTS }, 'QMP event iterator is not consumed: dropping the oldest events');
    }
    this.#queue.push(event);
  }

  /** The connection ended: no more events will come, but the buffered ones are still served. */
  #onEnd(): void {
    this.#ended = true;
    this.#unsubscribe();
    // Waiters only exist while the queue is empty.
    for (const waiter of this.#waiters.splice(0)) waiter(DONE);
  }

  #finish(): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#queue.length = 0;
    this.#unsubscribe();
    this.#stopWatchingEnd();
    this.#signal?.removeEventListener('abort', this.#onAbort);
    for (const waiter of this.#waiters.splice(0)) waiter(DONE);
  }
}
