// Out-of-band execution: `oob` is negotiated when the greeting offers it, `exec-oob` sends a command
// that QEMU runs at once (`yank` unsticks a hung chardev or migration), and while OOB is enabled at
// most 8 in-band commands are in flight (QEMU queues 8 and then stops reading, which would leave an
// exec-oob unread behind them).
import { closeSync, openSync } from 'node:fs';
import type { Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError, OperationAbortedError } from '../../../src/errors.ts';
import { MAX_IN_BAND_IN_FLIGHT, QmpDisconnectedError, QmpTimeoutError, type FdSender } from '../../../src/qmp/index.ts';
import { DEFAULT_GREETING, NO_REPLY, type FakeQmpServer, type ReceivedCommand } from '../../helpers/fake-qmp-server.ts';
import { rejection, settleIo, startPair, track } from './harness.ts';

const NO_OOB = { greeting: { QMP: { ...DEFAULT_GREETING.QMP, capabilities: [] } } };

/** The commands named `name` the peer has received so far. */
function receivedNamed(server: FakeQmpServer, name: string): ReceivedCommand[] {
  return server.received.filter((c) => c.execute === name);
}

/** Lets I/O run until the peer has `count` commands named `name`, then a little longer (nothing more may come). */
async function peerHas(server: FakeQmpServer, name: string, count: number): Promise<void> {
  await expect.poll(() => receivedNamed(server, name).length).toBe(count);
  await settleIo(10);
  expect(receivedNamed(server, name)).toHaveLength(count);
}

function reply(server: FakeQmpServer, command: ReceivedCommand | undefined, value: unknown): void {
  server.sendLine(JSON.stringify({ return: value, id: command?.id }));
}

describe('out-of-band execution', () => {
  it('sends exec-oob, whose reply may overtake the in-band ones', async () => {
    const { server, client } = await startPair();
    server.handle('stuck', () => NO_REPLY);
    server.handle('yank', () => ({}));
    const stuck = track(client.executeUntyped('stuck'));
    await peerHas(server, 'stuck', 1);
    await expect(client.execute('yank', { instances: [{ type: 'chardev', id: 'console' }] }, { oob: true })).resolves.toEqual({});
    const [yank] = receivedNamed(server, 'yank');
    expect(yank).toMatchObject({ oob: true, arguments: { instances: [{ type: 'chardev', id: 'console' }] } });
    expect(server.receivedLines.find((line) => line.includes('yank'))).toMatch(/^\{"exec-oob":"yank",/);
    expect(stuck.current.status).toBe('pending');
  });

  it('refuses oob when QEMU did not offer it, or with an fd, before sending anything', async () => {
    const { server, client } = await startPair(NO_OOB);
    const error = await client.executeUntyped('yank', {}, { oob: true }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(InvalidArgumentError);
    expect((error as InvalidArgumentError).argument).toBe('oob');
    const other = await startPair();
    const fd = openSync('/dev/null', 'r');
    try {
      const withFd = await other.client.execute('getfd', { fdname: 'x' }, { fd, oob: true }).catch((caught: unknown) => caught);
      expect(withFd).toBeInstanceOf(InvalidArgumentError);
    } finally {
      closeSync(fd);
    }
    await settleIo(10);
    expect(server.received.map((c) => c.execute)).toEqual(['qmp_capabilities']);
    expect(other.server.received.map((c) => c.execute)).toEqual(['qmp_capabilities']);
  });

  it(`keeps at most ${MAX_IN_BAND_IN_FLIGHT} in-band commands in flight, sending each held one as a reply frees room`, async () => {
    const { server, client } = await startPair();
    server.handle('work', () => NO_REPLY);
    server.handle('yank', () => ({}));
    const calls = Array.from({ length: 20 }, (_, n) => client.executeUntyped('work', { n }));
    await peerHas(server, 'work', MAX_IN_BAND_IN_FLIGHT);
    expect(client.pendingCount).toBe(20);
    // An exec-oob is not held: it goes out at once, past the full window.
    await expect(client.executeUntyped('yank', {}, { oob: true })).resolves.toEqual({});
    // Replies in any order; each frees exactly one place, filled in call order.
    const sent = receivedNamed(server, 'work');
    reply(server, sent[5], 5);
    await peerHas(server, 'work', MAX_IN_BAND_IN_FLIGHT + 1);
    reply(server, sent[0], 0);
    reply(server, sent[1], 1);
    await peerHas(server, 'work', MAX_IN_BAND_IN_FLIGHT + 3);
    expect(receivedNamed(server, 'work').map((c) => c.arguments?.['n'])).toEqual(Array.from({ length: MAX_IN_BAND_IN_FLIGHT + 3 }, (_, n) => n));
    // The peer answers everything from now on, as it comes.
    for (const command of receivedNamed(server, 'work')) {
      if (![0, 1, 5].includes(command.arguments?.['n'] as number)) reply(server, command, command.arguments?.['n']);
    }
    server.handle('work', (args) => args?.['n']);
    expect(await Promise.all(calls)).toEqual(Array.from({ length: 20 }, (_, n) => n));
    expect(receivedNamed(server, 'work')).toHaveLength(20);
  });

  it('a held command that times out or is aborted is never sent, and takes no place in the window', async () => {
    const { server, client } = await startPair();
    server.handle('work', () => NO_REPLY);
    const first = Array.from({ length: MAX_IN_BAND_IN_FLIGHT }, (_, n) => client.executeUntyped('work', { n }));
    for (const call of first) call.catch(() => {});
    const controller = new AbortController();
    const aborted = client.executeUntyped('work', { n: 'aborted' }, { signal: controller.signal });
    const timedOut = client.executeUntyped('work', { n: 'timed out' }, { timeoutMs: 1 });
    const last = client.executeUntyped('work', { n: 'last' });
    controller.abort();
    await rejection(aborted, OperationAbortedError);
    await rejection(timedOut, QmpTimeoutError);
    await peerHas(server, 'work', MAX_IN_BAND_IN_FLIGHT);
    reply(server, receivedNamed(server, 'work')[0], 'done');
    await expect(first[0]).resolves.toBe('done');
    await peerHas(server, 'work', MAX_IN_BAND_IN_FLIGHT + 1);
    expect(receivedNamed(server, 'work').at(-1)?.arguments).toEqual({ n: 'last' });
    reply(server, receivedNamed(server, 'work').at(-1), 'last');
    await expect(last).resolves.toBe('last');
  });

  it('held commands fail with the others when the connection goes, and are never written', async () => {
    const { server, client } = await startPair();
    server.handle('work', () => NO_REPLY);
    const calls = Array.from({ length: MAX_IN_BAND_IN_FLIGHT + 4 }, (_, n) => client.executeUntyped('work', { n }));
    for (const call of calls) call.catch(() => {});
    await peerHas(server, 'work', MAX_IN_BAND_IN_FLIGHT);
    await client.close();
    for (const call of calls) await rejection(call, QmpDisconnectedError);
    expect(client.pendingCount).toBe(0);
    expect(receivedNamed(server, 'work')).toHaveLength(MAX_IN_BAND_IN_FLIGHT);
  });

  it('a held command with an fd goes to the fd sender once room frees, in call order', async () => {
    const sends: string[] = [];
    const sender: FdSender = {
      send: (socket: Socket, message: string) => {
        sends.push(message);
        return new Promise<void>((resolve) => socket.write(message, () => resolve()));
      },
    };
    const { server, client } = await startPair({}, { fdSender: sender });
    server.handle('work', () => NO_REPLY);
    server.handle('getfd', () => ({}));
    const busy = Array.from({ length: MAX_IN_BAND_IN_FLIGHT }, (_, n) => client.executeUntyped('work', { n }));
    for (const call of busy) call.catch(() => {});
    const fd = openSync('/dev/null', 'r');
    try {
      const getfd = client.execute('getfd', { fdname: 'tap0' }, { fd });
      const after = client.executeUntyped('work', { n: 'after' });
      after.catch(() => {});
      await peerHas(server, 'work', MAX_IN_BAND_IN_FLIGHT);
      expect(sends).toEqual([]);
      reply(server, receivedNamed(server, 'work')[0], 0);
      await expect(getfd).resolves.toEqual({});
      expect(sends).toHaveLength(1);
      expect(JSON.parse(sends[0] ?? '')).toMatchObject({ execute: 'getfd', arguments: { fdname: 'tap0' } });
      // getfd's reply freed its place in turn: the command called after it follows.
      await peerHas(server, 'work', MAX_IN_BAND_IN_FLIGHT + 1);
      expect(receivedNamed(server, 'work').at(-1)?.arguments).toEqual({ n: 'after' });
    } finally {
      closeSync(fd);
    }
  });

  it('without oob, in-band commands are not windowed', async () => {
    const { server, client } = await startPair(NO_OOB);
    server.handle('work', () => NO_REPLY);
    const calls = Array.from({ length: 20 }, (_, n) => client.executeUntyped('work', { n }));
    for (const call of calls) call.catch(() => {});
    await peerHas(server, 'work', 20);
  });
});
