// A set of callbacks where one that throws cannot stop the others from being called.
import type { Logger } from '../util/logger.ts';

export class Listeners<T> {
  readonly #listeners = new Set<(value: T) => void>();
  readonly #logger: Logger;
  readonly #what: string;

  constructor(logger: Logger, what: string) {
    this.#logger = logger;
    this.#what = what;
  }

  add(listener: (value: T) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  call(value: T): void {
    for (const listener of this.#listeners) {
      try {
        listener(value);
      } catch (error) {
        this.#logger.warn({ err: error }, `${this.#what} listener threw`);
      }
    }
  }
}
