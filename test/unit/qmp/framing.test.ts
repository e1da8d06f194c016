// LineSplitter on its own: lines must come out the same however the byte stream is cut.
import { describe, expect, it } from 'vitest';
import { LineSplitter, QmpProtocolError } from '../../../src/qmp/index.ts';

const TRANSCRIPT = [
  '{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}}',
  '{"return": {}, "id": 1}',
  '{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}',
  '{"return": {"status": "paused", "running": false, "note": "é€😀"}, "id": 2}',
];

function splitAll(splitter: LineSplitter, chunks: Buffer[]): string[] {
  return chunks.flatMap((chunk) => splitter.push(chunk));
}

function bytesOf(text: string): Buffer {
  return Buffer.from(text, 'utf8');
}

describe('LineSplitter', () => {
  it('returns every line of a chunk, without line endings (CRLF and LF)', () => {
    const splitter = new LineSplitter();
    expect(splitter.push(bytesOf('a\r\nb\nc\r\n'))).toEqual(['a', 'b', 'c']);
  });

  it('keeps an incomplete line until its newline arrives', () => {
    const splitter = new LineSplitter();
    expect(splitter.push(bytesOf('{"ret'))).toEqual([]);
    expect(splitter.push(bytesOf('urn": {}'))).toEqual([]);
    expect(splitter.push(bytesOf('}\r\n{"x'))).toEqual(['{"return": {}}']);
    expect(splitter.push(bytesOf('": 1}\n'))).toEqual(['{"x": 1}']);
  });

  it('skips empty lines', () => {
    const splitter = new LineSplitter();
    expect(splitter.push(bytesOf('\r\n\n{"a":1}\r\n\r\n'))).toEqual(['{"a":1}']);
  });

  for (const eol of ['\r\n', '\n']) {
    const text = TRANSCRIPT.map((line) => `${line}${eol}`).join('');
    const eolName = JSON.stringify(eol);

    it(`gives the same lines fed one byte at a time (${eolName})`, () => {
      const bytes = bytesOf(text);
      const chunks = [...bytes].map((byte) => Buffer.from([byte]));
      expect(splitAll(new LineSplitter(), chunks)).toEqual(TRANSCRIPT);
    });

    it(`gives the same lines split in two at every position (${eolName})`, () => {
      const bytes = bytesOf(text);
      for (let cut = 0; cut <= bytes.length; cut++) {
        const lines = splitAll(new LineSplitter(), [bytes.subarray(0, cut), bytes.subarray(cut)]);
        expect(lines, `cut at byte ${cut}`).toEqual(TRANSCRIPT);
      }
    });
  }

  it('decodes a multi-byte character split across chunks whole', () => {
    const bytes = bytesOf('{"s": "😀é"}\n');
    const emoji = bytes.indexOf(0xf0);
    for (let cut = emoji + 1; cut < emoji + 6; cut++) {
      const lines = splitAll(new LineSplitter(), [bytes.subarray(0, cut), bytes.subarray(cut)]);
      expect(lines, `cut at byte ${cut}`).toEqual(['{"s": "😀é"}']);
      expect(lines[0]).not.toContain('\ufffd');
    }
  });

  it('skips an empty line whose \\r and \\n arrive in different chunks', () => {
    const splitter = new LineSplitter();
    expect(splitter.push(bytesOf('a\r\n\r'))).toEqual(['a']);
    expect(splitter.push(bytesOf('\nb\n'))).toEqual(['b']);
    expect(splitter.push(bytesOf('\r'))).toEqual([]);
    expect(splitter.push(bytesOf('\n'))).toEqual([]);
  });

  it('strips a \\r that arrived in an earlier chunk than its \\n', () => {
    const splitter = new LineSplitter();
    expect(splitter.push(bytesOf('abc\r'))).toEqual([]);
    expect(splitter.push(bytesOf('\n'))).toEqual(['abc']);
  });

  describe('size cap', () => {
    it('accepts a line of exactly maxLineBytes, whatever its ending', () => {
      expect(new LineSplitter(8).push(bytesOf('12345678\n'))).toEqual(['12345678']);
      expect(new LineSplitter(8).push(bytesOf('12345678\r\n'))).toEqual(['12345678']);
      const split = new LineSplitter(8);
      expect(split.push(bytesOf('1234'))).toEqual([]);
      expect(split.push(bytesOf('5678\r'))).toEqual([]);
      expect(split.push(bytesOf('\n'))).toEqual(['12345678']);
    });

    it('rejects a complete line one byte over the cap', () => {
      expect(() => new LineSplitter(8).push(bytesOf('123456789\n'))).toThrow(QmpProtocolError);
      expect(() => new LineSplitter(8).push(bytesOf('123456789\r\n'))).toThrow(QmpProtocolError);
    });

    it('rejects a line that grows past the cap without a newline, before it ends', () => {
      const splitter = new LineSplitter(8);
      expect(splitter.push(bytesOf('12345'))).toEqual([]);
      let error: unknown;
      try {
        splitter.push(bytesOf('67890'));
      } catch (caught) {
        error = caught;
      }
      expect(error).toBeInstanceOf(QmpProtocolError);
      expect(error).toMatchObject({ code: 'QMP_PROTOCOL' });
    });

    it('rejects a line split across chunks whose whole exceeds the cap when its newline arrives', () => {
      for (const eol of ['\n', '\r\n']) {
        const splitter = new LineSplitter(8);
        expect(splitter.push(bytesOf('12345'))).toEqual([]);
        expect(() => splitter.push(bytesOf(`6789${eol}`)), JSON.stringify(eol)).toThrow(QmpProtocolError);
        // The bytes of the oversized line are gone: the next line comes out alone.
        expect(splitter.push(bytesOf('ab\n'))).toEqual(['ab']);
      }
    });

    it('measures each line of a chunk on its own, also lines of exactly the cap after others', () => {
      const splitter = new LineSplitter(8);
      expect(splitter.push(bytesOf('12345678\nabcdefgh\r\n1234567'))).toEqual(['12345678', 'abcdefgh']);
      // The 7 bytes kept are counted as 7: one more byte and its line ending still fit.
      expect(splitter.push(bytesOf('8\r\n'))).toEqual(['12345678']);
    });

    it('starts afresh after an oversized line, also for a line that then arrives in pieces', () => {
      const splitter = new LineSplitter(4);
      expect(() => splitter.push(bytesOf('123456'))).toThrow(QmpProtocolError);
      expect(splitter.push(bytesOf('ab'))).toEqual([]);
      expect(splitter.push(bytesOf('c\n'))).toEqual(['abc']);
    });

    it('names the cap and the size it saw', () => {
      expect(() => new LineSplitter(8).push(bytesOf('123456789\n'))).toThrow('a QMP line exceeded 8 bytes (at least 9 without a newline)');
      const split = new LineSplitter(8);
      split.push(bytesOf('12345'));
      expect(() => split.push(bytesOf('67890\n'))).toThrow('a QMP line exceeded 8 bytes (at least 10 without a newline)');
      expect(() => new LineSplitter(8).push(bytesOf('1234567890'))).toThrow('a QMP line exceeded 8 bytes (at least 10 without a newline)');
    });

    it('counts bytes, not characters', () => {
      // Four characters, eight bytes.
      expect(new LineSplitter(8).push(bytesOf('éééé\n'))).toEqual(['éééé']);
      expect(() => new LineSplitter(7).push(bytesOf('éééé\n'))).toThrow(QmpProtocolError);
    });

    it('feed() hands over the lines before an oversized one, then throws', () => {
      const lines: string[] = [];
      const feed = () => new LineSplitter(8).feed(bytesOf('ok\n1234567890\nlater\n'), (line) => lines.push(line));
      expect(feed).toThrow(QmpProtocolError);
      expect(lines).toEqual(['ok']);
    });

    it('starts afresh after an oversized line', () => {
      const splitter = new LineSplitter(4);
      expect(() => splitter.push(bytesOf('123456'))).toThrow(QmpProtocolError);
      expect(splitter.push(bytesOf('ab\n'))).toEqual(['ab']);
    });
  });

  it('refuses a line cap that is not a whole number of bytes >= 1 (NaN would lift the cap)', () => {
    for (const bad of [NaN, 0, -1, 1.5, Infinity]) {
      expect(() => new LineSplitter(bad), String(bad)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', argument: 'maxLineBytes' }));
      expect(() => new LineSplitter(bad), String(bad)).toThrow(`must be a whole number of bytes >= 1, not ${String(bad)}`);
    }
    expect(new LineSplitter(1).push(bytesOf('a\n'))).toEqual(['a']);
  });
});
