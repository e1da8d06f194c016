// QMP is one JSON object per line (QEMU ends lines with \r\n). The splitter works on bytes, so a
// multi-byte character split across chunks is decoded whole, and it caps a line's size so that a
// peer that never sends a newline cannot grow our memory without bound.
import { InvalidArgumentError } from '../errors.ts';
import { QmpProtocolError } from './errors.ts';

const NEWLINE = 0x0a;
const CARRIAGE_RETURN = 0x0d;

/** 10 MiB, as qemu.qmp and libvirt allow (QEMU 7.2's query-qmp-schema is one 207 KB line). */
export const DEFAULT_MAX_LINE_BYTES = 10 * 1024 * 1024;

/** Splits a byte stream into newline-terminated lines (QMP's framing), refusing a line longer than its cap. */
export class LineSplitter {
  readonly #maxLineBytes: number;
  /** Chunks of the line still missing its newline. */
  #pending: Buffer[] = [];
  #pendingBytes = 0;

  /** `maxLineBytes` bounds a line's content; its line ending (\n or \r\n) is not counted. */
  constructor(maxLineBytes = DEFAULT_MAX_LINE_BYTES) {
    // NaN would compare false against every length and silently lift the cap.
    if (!Number.isInteger(maxLineBytes) || maxLineBytes < 1) {
      throw new InvalidArgumentError('maxLineBytes', `must be a whole number of bytes >= 1, not ${String(maxLineBytes)}`);
    }
    this.#maxLineBytes = maxLineBytes;
  }

  /**
   * Feeds a chunk and returns the complete lines in it, without their line ending; empty lines are
   * skipped. Throws QmpProtocolError when a line exceeds the cap (the lines before it are lost: use
   * `feed` to receive them first).
   */
  push(chunk: Buffer): string[] {
    const lines: string[] = [];
    this.feed(chunk, (line) => {
      lines.push(line);
    });
    return lines;
  }

  /**
   * Like `push`, but hands each complete line to `onLine` as soon as it is cut, so that the lines
   * before an oversized one are delivered before the QmpProtocolError is thrown. `bytes` is the
   * line's size in bytes (UTF-8, without its line ending).
   */
  feed(chunk: Buffer, onLine: (line: string, bytes: number) => void): void {
    let start = 0;
    let newline = chunk.indexOf(NEWLINE);
    while (newline !== -1) {
      if (this.#pendingBytes === 0) {
        const end = newline > start && chunk[newline - 1] === CARRIAGE_RETURN ? newline - 1 : newline;
        if (end - start > this.#maxLineBytes) throw this.#tooLong(end - start);
        if (end > start) onLine(chunk.toString('utf8', start, end), end - start);
      } else {
        this.#pending.push(chunk.subarray(start, newline));
        const line = Buffer.concat(this.#pending);
        this.#pending = [];
        this.#pendingBytes = 0;
        const end = line.length > 0 && line[line.length - 1] === CARRIAGE_RETURN ? line.length - 1 : line.length;
        if (end > this.#maxLineBytes) throw this.#tooLong(end);
        if (end > 0) onLine(line.toString('utf8', 0, end), end);
      }
      start = newline + 1;
      newline = chunk.indexOf(NEWLINE, start);
    }
    if (start < chunk.length) {
      this.#pendingBytes += chunk.length - start;
      // One byte of slack: the line's \r may have arrived while its \n has not.
      if (this.#pendingBytes > this.#maxLineBytes + 1) throw this.#tooLong(this.#pendingBytes);
      this.#pending.push(chunk.subarray(start));
    }
  }

  #tooLong(bytes: number): QmpProtocolError {
    this.#pending = [];
    this.#pendingBytes = 0;
    return new QmpProtocolError(`a QMP line exceeded ${this.#maxLineBytes} bytes (at least ${bytes} without a newline)`);
  }
}
