// What was learned about a program, kept per path while the file stays the same build (binaryKey).
// Concurrent first users share one probe, so a start storm probes each binary once.
import { binaryKey } from './binary-key.ts';

interface Entry<T> {
  key: string;
  value: Promise<T>;
}

export class PerBinaryCache<T> {
  readonly #entries = new Map<string, Entry<T>>();

  /** The value learned for this build of `path`, if any (a stat, nothing more). */
  peek(path: string): Promise<T> | undefined {
    const entry = this.#entries.get(path);
    return entry && entry.key === binaryKey(path) ? entry.value : undefined;
  }

  /** The value for this build of `path`: cached, or from `probe` (whose failure is not kept). */
  get(path: string, probe: () => Promise<T>): Promise<T> {
    const key = binaryKey(path);
    const entry = this.#entries.get(path);
    if (entry && entry.key === key) return entry.value;
    const value = probe();
    this.#entries.set(path, { key, value });
    value.catch(() => {
      if (this.#entries.get(path)?.value === value) this.#entries.delete(path);
    });
    return value;
  }

  /** Replaces what is known of this build of `path` (the key was read before the value was learned). */
  set(path: string, key: string, value: T): void {
    if (binaryKey(path) === key) this.#entries.set(path, { key, value: Promise.resolve(value) });
  }

  clear(): void {
    this.#entries.clear();
  }
}
