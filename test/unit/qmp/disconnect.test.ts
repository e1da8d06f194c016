// The connection going away: the peer hanging up or resetting, `quit`, and close() on our side.
import { describe, expect, it } from 'vitest';
import { MAX_IN_BAND_IN_FLIGHT, QmpDisconnectedError, type QmpClient } from '../../../src/qmp/index.ts';
import { NO_REPLY, type FakeQmpServer } from '../../helpers/fake-qmp-server.ts';
import { rejection, settleIo, startPair, track } from './harness.ts';

/**
 * Sends `count` commands the peer leaves unanswered, and waits until the peer has them all (all that
 * the in-band window lets out while OOB is enabled; the rest are held, pending all the same).
 */
async function unanswered(server: FakeQmpServer, client: QmpClient, count: number): Promise<Promise<unknown>[]> {
  server.handle('slow', () => NO_REPLY);
  const calls = Array.from({ length: count }, (_, n) => client.executeUntyped('slow', { n }));
  for (const call of calls) call.catch(() => {});
  const sent = client.oobEnabled ? Math.min(count, MAX_IN_BAND_IN_FLIGHT) : count;
  while (server.received.filter((c) => c.execute === 'slow').length < sent) await settleIo(1);
  return calls;
}

describe('disconnects', () => {
  it('the peer hanging up fails every pending command at once with QmpDisconnectedError', async () => {
    const { server, client } = await startPair();
    const calls = await unanswered(server, client, 10);
    let pendingWhenClosed: number | undefined;
    let closeReason: QmpDisconnectedError | undefined;
    client.onClose((reason) => {
      pendingWhenClosed = client.pendingCount;
      closeReason = reason;
    });
    server.endClients();
    for (const call of calls) {
      const error = await rejection(call, QmpDisconnectedError);
      expect(error.command).toBe('slow');
      expect(error.code).toBe('QMP_DISCONNECTED');
      expect(error.message).toBe('QMP command slow failed: the QMP connection was closed by the peer');
    }
    expect(pendingWhenClosed).toBe(0);
    expect(closeReason).toBeInstanceOf(QmpDisconnectedError);
    expect(closeReason?.message).toBe('the QMP connection was closed by the peer');
    expect(closeReason?.cause).toBeUndefined();
    expect(client.closed).toBe(true);
    const later = await rejection(client.execute('query-status'), QmpDisconnectedError);
    expect(later.command).toBe('query-status');
    expect(later.message).toBe('QMP command query-status failed: the QMP connection was closed by the peer');
    expect(later.cause).toBe(closeReason);
  });

  it('a peer reset (ECONNRESET) fails pending commands and never crashes the process', async () => {
    const { server, client } = await startPair();
    server.pauseReading();
    server.handle('big', () => NO_REPLY);
    // More than the peer's stream buffer holds: the rest stays unread in the kernel, so that the
    // peer closing turns into a reset on our side.
    const calls = Array.from({ length: 4 }, () => client.executeUntyped('big', { blob: 'x'.repeat(256 * 1024) }));
    for (const call of calls) call.catch(() => {});
    await settleIo();
    server.resetClients();
    const errors = await Promise.all(calls.map((call) => rejection(call, QmpDisconnectedError)));
    const cause = errors[0]?.cause as NodeJS.ErrnoException | undefined;
    expect(['ECONNRESET', 'EPIPE']).toContain(cause?.code);
    expect(errors[0]?.message).toContain(cause?.code);
    expect(errors[0]?.message).toMatch(/^QMP command big failed: the QMP connection was lost \(/);
    await rejection(client.execute('query-status'), QmpDisconnectedError);
  });

  describe('quit', () => {
    it('resolves when the peer closes the socket before replying', async () => {
      const { server, client } = await startPair();
      server.handle('quit', () => {
        server.sendEvent('SHUTDOWN', { guest: false, reason: 'host-qmp-quit' });
        server.endClients();
        return NO_REPLY;
      });
      const shutdown = client.waitForEvent('SHUTDOWN', undefined, { timeoutMs: 5_000 });
      const others = await unanswered(server, client, 2);
      await expect(client.execute('quit')).resolves.toEqual({});
      expect((await shutdown).data).toEqual({ guest: false, reason: 'host-qmp-quit' });
      for (const call of others) await rejection(call, QmpDisconnectedError);
      await rejection(client.execute('query-status'), QmpDisconnectedError);
    });

    it('resolves with the reply when the peer does reply first', async () => {
      const { server, client } = await startPair();
      server.handle('quit', (_args, command) => {
        server.sendLine(JSON.stringify({ return: {}, id: command.id }));
        server.endClients();
        return NO_REPLY;
      });
      await expect(client.execute('quit')).resolves.toEqual({});
    });

    it('rejects when it is our own close() that ends the connection', async () => {
      const { server, client } = await startPair();
      server.handle('quit', () => NO_REPLY);
      const quit = rejection(client.execute('quit'), QmpDisconnectedError);
      await server.nextCommand('quit');
      await client.close();
      await quit;
    });
  });

  describe('close()', () => {
    it('rejects pending commands, closes the socket, and is idempotent', async () => {
      const { server, client } = await startPair();
      const calls = await unanswered(server, client, 3);
      const first = client.close();
      const second = client.close();
      for (const call of calls) {
        const error = await rejection(call, QmpDisconnectedError);
        expect(error.message).toBe('QMP command slow failed: the QMP client was closed');
      }
      await first;
      await second;
      await client.close();
      expect(client.closed).toBe(true);
      await server.waitForNoClient();
    });

    it('calls each onClose listener once; a listener added later is called at once; one that throws does not stop the others', async () => {
      const { server, client } = await startPair();
      const calls: string[] = [];
      client.onClose(() => {
        calls.push('throws');
        throw new Error('listener bug');
      });
      client.onClose((reason) => calls.push(`second: ${reason.code}`));
      const unsubscribe = client.onClose(() => calls.push('unsubscribed'));
      unsubscribe();
      await client.close();
      server.endClients();
      await client.close();
      expect(calls).toEqual(['throws', 'second: QMP_DISCONNECTED']);
      const late = track(new Promise<QmpDisconnectedError>((resolve) => client.onClose(resolve)));
      await settleIo(1);
      expect(late.current.status).toBe('fulfilled');
    });
  });
});
