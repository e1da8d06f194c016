// Commands sent with a file descriptor (execute's `fd` option): the sender owns the socket while it
// writes, nothing else the client writes can come between, such commands go one at a time (QEMU
// keeps only the last fd it received), and every failure is typed.
import { closeSync, openSync } from 'node:fs';
import type { Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError } from '../../../src/errors.ts';
import { NativeFdSender, QmpFdPassingError, QmpTimeoutError, type FdSender } from '../../../src/qmp/index.ts';
import { defaultFdSender } from '../../../src/qmp/fd-sender.ts';
import { NO_REPLY } from '../../helpers/fake-qmp-server.ts';
import { rejection, settleIo, startPair, track } from './harness.ts';

/** A sender the test controls: it records each call and writes the message when told to. */
class ManualSender implements FdSender {
  readonly calls: { message: string; fd: number; command: string; write: () => void; fail: (error: Error) => void }[] = [];

  send(socket: Socket, message: string, fd: number, command: string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.calls.push({
        message,
        fd,
        command,
        write: () => socket.write(message, () => resolve()),
        fail: reject,
      });
    });
  }
}

function devNull(): number {
  const fd = openSync('/dev/null', 'r');
  return fd;
}

describe('QmpClient.execute with an fd', () => {
  it('hands the command line and the fd to the sender, and holds every later write until it is done', async () => {
    const sender = new ManualSender();
    const { server, client } = await startPair({}, { fdSender: sender });
    server.handle('getfd', () => ({}));
    server.handle('query-status', () => ({ status: 'running', running: true }));
    const fd = devNull();
    try {
      const before = client.execute('query-status');
      const getfd = client.execute('getfd', { fdname: 'tap0' }, { fd });
      const after = client.execute('query-status');
      await before;
      // The sender is called once the earlier write has left; the later command waits for it.
      await expect.poll(() => sender.calls.length).toBe(1);
      const [call] = sender.calls;
      expect(call?.fd).toBe(fd);
      expect(call?.command).toBe('getfd');
      expect(JSON.parse(call?.message ?? '')).toEqual({ execute: 'getfd', arguments: { fdname: 'tap0' }, id: expect.any(Number) as unknown });
      expect(call?.message.endsWith('\n')).toBe(true);
      await settleIo(10);
      expect(server.received.map((c) => c.execute)).toEqual(['qmp_capabilities', 'query-status']);

      call?.write();
      await Promise.all([getfd, after]);
      expect(server.received.map((c) => c.execute)).toEqual(['qmp_capabilities', 'query-status', 'getfd', 'query-status']);
    } finally {
      closeSync(fd);
    }
  });

  it('calls the sender only once everything written before has left our buffers, also under backpressure', async () => {
    // The real sender writes with sendmsg on the socket's fd, past Node's buffers: anything still
    // buffered then would reach QEMU after the command it preceded.
    const buffered: number[] = [];
    const sender: FdSender = {
      send: (socket, message) => {
        buffered.push(socket.writableLength);
        return new Promise((resolve) => socket.write(message, () => resolve()));
      },
    };
    const { server, client } = await startPair({}, { fdSender: sender });
    server.handle('big', () => ({}));
    server.handle('getfd', () => ({}));
    server.pauseReading();
    const fd = devNull();
    try {
      // More than the socket buffers hold while the peer does not read.
      const bigs = Array.from({ length: 4 }, () => client.executeUntyped('big', { blob: 'x'.repeat(256 * 1024) }));
      const getfd = client.execute('getfd', { fdname: 'tap0' }, { fd });
      await settleIo(10);
      server.resumeReading();
      await Promise.all([...bigs, getfd]);
      expect(buffered).toEqual([0]);
      expect(server.received.map((c) => c.execute)).toEqual(['qmp_capabilities', 'big', 'big', 'big', 'big', 'getfd']);
    } finally {
      closeSync(fd);
    }
  });

  it('sends the next command with an fd only after the previous one has its reply', async () => {
    const sender = new ManualSender();
    const { server, client } = await startPair({}, { fdSender: sender });
    const replies: (() => void)[] = [];
    server.handle('getfd', () => new Promise((resolve) => replies.push(() => resolve({}))));
    const fd = devNull();
    try {
      const first = track(client.execute('getfd', { fdname: 'a' }, { fd }));
      const second = track(client.execute('getfd', { fdname: 'b' }, { fd }));
      await expect.poll(() => sender.calls.length).toBe(1);
      sender.calls[0]?.write();
      await expect.poll(() => replies.length).toBe(1);
      await settleIo(10);
      // QEMU has the first fd but has not taken it yet: the second must not arrive now.
      expect(sender.calls).toHaveLength(1);
      replies[0]?.();
      await expect.poll(() => first.current.status).toBe('fulfilled');
      await expect.poll(() => sender.calls.length).toBe(2);
      expect((JSON.parse(sender.calls[1]?.message ?? '') as { arguments: unknown }).arguments).toEqual({ fdname: 'b' });
      sender.calls[1]?.write();
      await expect.poll(() => replies.length).toBe(2);
      replies[1]?.();
      await expect.poll(() => second.current.status).toBe('fulfilled');
    } finally {
      closeSync(fd);
    }
  });

  it('a failed send rejects that command with its error and lets the held writes go', async () => {
    const sender = new ManualSender();
    const { server, client } = await startPair({}, { fdSender: sender });
    server.handle('query-status', () => ({ status: 'running', running: true }));
    const fd = devNull();
    try {
      const getfd = client.execute('getfd', { fdname: 'x' }, { fd });
      const later = client.execute('query-status');
      await expect.poll(() => sender.calls.length).toBe(1);
      const failure = new QmpFdPassingError('getfd', 'sendmsg: Broken pipe');
      sender.calls[0]?.fail(failure);
      expect(await rejection(getfd, QmpFdPassingError)).toBe(failure);
      await expect(later).resolves.toEqual({ status: 'running', running: true });
      expect(server.received.map((c) => c.execute)).toEqual(['qmp_capabilities', 'query-status']);
      expect(client.pendingCount).toBe(0);
    } finally {
      closeSync(fd);
    }
  });

  it('a command that times out while waiting for its turn is never sent', async () => {
    const sender = new ManualSender();
    const { server, client } = await startPair({}, { fdSender: sender });
    server.handle('getfd', () => NO_REPLY);
    const fd = devNull();
    try {
      const first = client.execute('getfd', { fdname: 'a' }, { fd, timeoutMs: 200 });
      const second = client.execute('getfd', { fdname: 'b' }, { fd, timeoutMs: 50 });
      // Observed at once: they reject while the test is still waiting for the sender.
      first.catch(() => {});
      second.catch(() => {});
      await expect.poll(() => sender.calls.length).toBe(1);
      sender.calls[0]?.write();
      expect(await rejection(second, QmpTimeoutError)).toMatchObject({ command: 'getfd', timeoutMs: 50 });
      expect(await rejection(first, QmpTimeoutError)).toMatchObject({ timeoutMs: 200 });
      await settleIo(10);
      expect(sender.calls).toHaveLength(1);
      expect(server.received.filter((c) => c.execute === 'getfd')).toHaveLength(1);
    } finally {
      closeSync(fd);
    }
  });

  it('refuses an fd that is not an open descriptor of this process, sending nothing', async () => {
    const sender = new ManualSender();
    const { server, client } = await startPair({}, { fdSender: sender });
    const closed = devNull();
    closeSync(closed);
    for (const fd of [closed, -1, 1.5, Number.NaN]) {
      const error = await rejection(client.execute('getfd', { fdname: 'x' }, { fd }), InvalidArgumentError);
      expect(error.argument).toBe('fd');
    }
    await settleIo();
    expect(sender.calls).toHaveLength(0);
    expect(server.received.map((c) => c.execute)).toEqual(['qmp_capabilities']);
  });
});

describe('NativeFdSender (build/svmm-sendfd)', () => {
  it('writes the command on the QMP socket, and the client keeps reading replies afterwards', async () => {
    const { server, client } = await startPair({}, { fdSender: defaultFdSender('getfd') });
    server.handle('getfd', (args) => ({ named: args?.['fdname'] }));
    server.handle('query-status', () => ({ status: 'running', running: true }));
    const fd = devNull();
    try {
      await expect(client.execute('getfd', { fdname: 'tap0' }, { fd })).resolves.toEqual({ named: 'tap0' });
      // Node pauses a socket it shares with a child: replies must still be read.
      await expect(client.execute('query-status')).resolves.toMatchObject({ status: 'running' });
      await expect(client.execute('getfd', { fdname: 'tap1' }, { fd })).resolves.toEqual({ named: 'tap1' });
      expect(server.received.map((c) => c.execute)).toEqual(['qmp_capabilities', 'getfd', 'query-status', 'getfd']);
    } finally {
      closeSync(fd);
    }
  });

  it('fails with QmpFdPassingError naming the command when the helper cannot run', async () => {
    const { client } = await startPair({}, { fdSender: new NativeFdSender('/nonexistent/svmm-sendfd') });
    const fd = devNull();
    try {
      const error = await rejection(client.execute('add-fd', undefined, { fd }), QmpFdPassingError);
      expect(error.code).toBe('QMP_FD_PASSING_FAILED');
      expect(error.command).toBe('add-fd');
      expect(error.message).toMatch(/^cannot send an fd with QMP command add-fd: \/nonexistent\/svmm-sendfd could not run/);
    } finally {
      closeSync(fd);
    }
  });
});
