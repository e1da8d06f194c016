// An async iterator over QMP events that listens from the moment it is created (an async generator
// function would only subscribe at its first next(), losing the events sent in between).
import { InvalidArgumentError } from '../errors.ts';
import type { Logger } from '../util/logger.ts';
import type { QmpEvent } from './types.ts';

/** Events a stream holds for a slow consumer before it drops the oldest. */
export const MAX_BUFFERED_EVENTS = 10_000;

/**
 * Bytes of events (counted as the size of the lines they came in) a stream holds for a slow
 * consumer before it drops the oldest: with lines of up to 10 MiB, the count cap alone would let one
 * stream hold about 100 GiB.
 */
export const MAX_BUFFERED_EVENT_BYTES = 16 * 1024 * 1024;

/** Options of `QmpClient.events()`: how much it buffers for a slow reader before dropping the oldest. */
export interface EventStreamOptions {
  /** Ends the stream at once (what is buffered is dropped). */
  signal?: AbortSignal;
  /** Default MAX_BUFFERED_EVENTS. */
  maxBufferedEvents?: number;
  /**
   * Default MAX_BUFFERED_EVENT_BYTES. The newest event is always kept, even one larger than this
   * on its own.
   */
  maxBufferedBytes?: number;
}

/** An event with the size of the line it came in. */
export type SizedEventListener = (event: QmpEvent, bytes: number) => void;

/** What a stream needs from the hub: subscribe to every event, and to the connection's end. */
export interface EventSource {
  onEvent(listener: SizedEventListener): () => void;
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
  /** The size of each queued event, in the same order. */
  readonly #sizes: number[] = [];
  #queuedBytes = 0;
  readonly #maxEvents: number;
  readonly #maxBytes: number;
  readonly #waiters: ((step: Step) => void)[] = [];
  readonly #logger: Logger;
  readonly #signal: AbortSignal | undefined;
  readonly #unsubscribe: () => void;
  readonly #stopWatchingEnd: () => void;
  #ended = false;
  #finished = false;
  #dropped = 0;

  /** Throws InvalidArgumentError when a budget is neither a positive integer nor Infinity. */
  constructor(source: EventSource, logger: Logger, options: EventStreamOptions = {}) {
    this.#maxEvents = budget('maxBufferedEvents', options.maxBufferedEvents, MAX_BUFFERED_EVENTS);
    this.#maxBytes = budget('maxBufferedBytes', options.maxBufferedBytes, MAX_BUFFERED_EVENT_BYTES);
    const { signal } = options;
    this.#logger = logger;
    this.#signal = signal;
    this.#unsubscribe = source.onEvent((event, bytes) => this.#onEvent(event, bytes));
    this.#stopWatchingEnd = source.onEnd(() => this.#onEnd());
    if (signal?.aborted) this.#finish();
    // #finish() removes it, whatever ends the stream.
    else signal?.addEventListener('abort', this.#onAbort);
  }

  /** Events dropped so far because the consumer fell behind. */
  get droppedCount(): number {
    return this.#dropped;
  }

  next(): Promise<Step> {
    const event = this.#queue.shift();
    if (event) {
      this.#queuedBytes -= this.#sizes.shift() ?? 0;
      return Promise.resolve({ done: false, value: event });
    }
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

  #onEvent(event: QmpEvent, bytes: number): void {
    const waiter = this.#waiters.shift();
    if (waiter) {
      waiter({ done: false, value: event });
      return;
    }
    this.#queue.push(event);
    this.#sizes.push(bytes);
    this.#queuedBytes += bytes;
    // The oldest go first; the newest event always stays.
    let dropped = 0;
    while (this.#queue.length > 1 && (this.#queue.length > this.#maxEvents || this.#queuedBytes > this.#maxBytes)) {
      this.#queue.shift();
      this.#queuedBytes -= this.#sizes.shift() ?? 0;
      dropped++;
    }
    if (dropped === 0) return;
    if (this.#dropped === 0) {
      this.#logger.warn(
        { dropped, maxEvents: this.#maxEvents, maxBytes: this.#maxBytes, bufferedEvents: this.#queue.length, bufferedBytes: this.#queuedBytes },
        'QMP event iterator is not consumed: dropping the oldest events',
      );
    }
    this.#dropped += dropped;
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
    this.#sizes.length = 0;
    this.#queuedBytes = 0;
    this.#unsubscribe();
    this.#stopWatchingEnd();
    this.#signal?.removeEventListener('abort', this.#onAbort);
    for (const waiter of this.#waiters.splice(0)) waiter(DONE);
  }
}

function budget(name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (value === Infinity) return value;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) {
    throw new InvalidArgumentError(name, `must be a positive integer (Infinity for no cap), not ${typeof value === 'number' ? String(value) : typeof value}`);
  }
  return value;
}
