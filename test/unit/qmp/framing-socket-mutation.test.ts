// Line framing limits measured per line (not per chunk), and which connect errors are worth
// retrying: a socket path that can never become a socket fails at once with its own error.
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LineSplitter } from '../../../src/qmp/framing.ts';
import { ExitWatch, openSocket } from '../../../src/qmp/open-socket.ts';
import { QmpProtocolError } from '../../../src/qmp/index.ts';
import { Deadline } from '../../../src/util/deadline.ts';

describe('LineSplitter limits', () => {
  it('measures each line of a chunk from its own start: lines under the cap late in a chunk pass', () => {
    const splitter = new LineSplitter(8);
    expect(splitter.push(Buffer.from('12345678\r\nabcdefgh\nABCDEFGH\r\n'))).toEqual(['12345678', 'abcdefgh', 'ABCDEFGH']);
  });

  it('still refuses a line over the cap late in a chunk', () => {
    const splitter = new LineSplitter(8);
    const lines: string[] = [];
    expect(() => splitter.feed(Buffer.from('ok\n123456789\n'), (line) => lines.push(line))).toThrow(QmpProtocolError);
    expect(lines).toEqual(['ok']);
  });

  it('takes a \\r\\n split across chunks as a line ending, and skips empty lines', () => {
    const splitter = new LineSplitter(4);
    expect(splitter.push(Buffer.from('abcd\r'))).toEqual([]);
    expect(splitter.push(Buffer.from('\n\r\n\n'))).toEqual(['abcd']);
    expect(splitter.push(Buffer.from('ef'))).toEqual([]);
    expect(splitter.push(Buffer.from('gh\r\n'))).toEqual(['efgh']);
  });
});

describe('openSocket', () => {
  it('gives up at once on an error that waiting cannot fix (ENOTDIR), with that error', async () => {
    // A deadline far beyond the test: only the errno class decides that polling stops.
    const deadline = new Deadline('connecting to QMP', { timeoutMs: 600_000 });
    try {
      await expect(openSocket('/dev/null/qmp.sock', deadline, new ExitWatch('/dev/null/qmp.sock', undefined))).rejects.toMatchObject({ code: 'ENOTDIR' });
    } finally {
      deadline[Symbol.dispose]();
    }
  });

  it('hands over a connected socket with none of its own error listeners left on it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'svmm-open-socket-'));
    const path = join(dir, 'qmp.sock');
    const server = createServer((peer) => peer.end());
    await new Promise<void>((resolve) => server.listen(path, resolve));
    const deadline = new Deadline('connecting to QMP', { timeoutMs: 600_000 });
    try {
      const socket = await openSocket(path, deadline, new ExitWatch(path, undefined));
      // The client's own error handler decides what a later socket error means.
      expect(socket.listenerCount('error')).toBe(0);
      socket.destroy();
    } finally {
      deadline[Symbol.dispose]();
      await new Promise((resolve) => server.close(resolve));
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
