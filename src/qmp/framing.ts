// QMP is one JSON object per line (QEMU ends lines with \r\n). The splitter works on bytes, so a
// multi-byte character split across chunks is decoded whole, and it caps a line's size so that a
// peer that never sends a newline cannot grow our memory without bound.
import { QmpProtocolError } from './errors.ts';

const NEWLINE = 0x0a;
const CARRIAGE_RETURN = 0x0d;

export const DEFAULT_MAX_LINE_BYTES = 4 * 1024 * 1024;

export class LineSplitter {
  readonly #maxLineBytes: number;
  /** Chunks of the line still missing its newline. */
  #pending: Buffer[] = [];
  #pendingBytes = 0;

  constructor(maxLineBytes = DEFAULT_MAX_LINE_BYTES) {
    this.#maxLineBytes = maxLineBytes;
  }

  /** Feeds a chunk and returns the complete lines in it, without their line ending. */
  push(chunk: Buffer): string[] {
    const lines: string[] = [];
    let start = 0;
    let newline = chunk.indexOf(NEWLINE, start);
    while (newline !== -1) {
      const length = this.#pendingBytes + newline - start;
      if (length > this.#maxLineBytes) throw this.#tooLong(length);
      const piece = chunk.subarray(start, newline);
      const line = this.#pendingBytes === 0 ? piece : Buffer.concat([...this.#pending, piece]);
      this.#pending = [];
      this.#pendingBytes = 0;
      const end = line.length > 0 && line[line.length - 1] === CARRIAGE_RETURN ? line.length - 1 : line.length;
      if (end > 0) lines.push(line.toString('utf8', 0, end));
      start = newline + 1;
      newline = chunk.indexOf(NEWLINE, start);
    }
    if (start < chunk.length) {
      this.#pendingBytes += chunk.length - start;
      if (this.#pendingBytes > this.#maxLineBytes) throw this.#tooLong(this.#pendingBytes);
      this.#pending.push(chunk.subarray(start));
    }
    return lines;
  }

  #tooLong(bytes: number): QmpProtocolError {
    this.#pending = [];
    this.#pendingBytes = 0;
    return new QmpProtocolError(`a QMP line exceeded ${this.#maxLineBytes} bytes (at least ${bytes} without a newline)`);
  }
}
