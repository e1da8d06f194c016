// Keeps the last lines a process wrote, bounded in bytes, so errors can quote QEMU's own words
// without a chatty or runaway process growing memory.
export class LineRing {
  readonly #maxBytes: number;
  #lines: string[] = [];
  #bytes = 0;
  #partial = '';

  constructor(maxBytes = 16 * 1024) {
    this.#maxBytes = maxBytes;
  }

  /** Feeds a chunk; returns the complete lines it finished. */
  push(chunk: string): string[] {
    const parts = (this.#partial + chunk).split('\n');
    this.#partial = parts.pop() ?? '';
    if (this.#partial.length > this.#maxBytes) {
      parts.push(this.#partial);
      this.#partial = '';
    }
    const complete = parts.map((line) => line.replace(/\r$/, '')).filter((line) => line.length > 0);
    for (const line of complete) this.#add(line);
    return complete;
  }

  #add(line: string): void {
    const kept = line.length > this.#maxBytes ? line.slice(-this.#maxBytes) : line;
    this.#lines.push(kept);
    this.#bytes += kept.length + 1;
    while (this.#bytes > this.#maxBytes && this.#lines.length > 1) {
      this.#bytes -= (this.#lines.shift() ?? '').length + 1;
    }
  }

  /** The last `count` lines (all kept lines by default), including an unfinished last line. */
  tail(count = Infinity): string {
    const lines = this.#partial ? [...this.#lines, this.#partial] : this.#lines;
    return lines.slice(-count).join('\n');
  }
}
