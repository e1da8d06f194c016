// Writes that back up: a peer that does not read while many large commands are sent must get them
// all, whole and in order, once it reads again.
import { describe, expect, it } from 'vitest';
import { settleIo, startPair } from './harness.ts';

const COMMANDS = 200;
const BLOB = 'b'.repeat(64 * 1024);

describe('backpressure', () => {
  it('queues commands while the peer does not read, then sends them all in order', async () => {
    const { server, client } = await startPair();
    server.handle('write', (args) => ({ n: args?.['n'], bytes: String(args?.['blob']).length }));
    server.pauseReading();
    const settledOrder: number[] = [];
    const calls = Array.from({ length: COMMANDS }, (_, n) =>
      client.executeUntyped('write', { n, blob: BLOB }).then((value) => {
        settledOrder.push(n);
        return value;
      }),
    );
    await settleIo(20);
    // 12.5 MiB cannot all fit in the socket buffers: the peer has only part of it so far.
    expect(server.received.filter((c) => c.execute === 'write').length).toBeLessThan(COMMANDS);
    expect(client.pendingCount).toBe(COMMANDS);
    server.resumeReading();
    const values = await Promise.all(calls);
    expect(values).toEqual(Array.from({ length: COMMANDS }, (_, n) => ({ n, bytes: BLOB.length })));
    expect(settledOrder).toEqual(Array.from({ length: COMMANDS }, (_, n) => n));
    expect(server.received.filter((c) => c.execute === 'write').map((c) => c.arguments?.['n'])).toEqual(Array.from({ length: COMMANDS }, (_, n) => n));
    expect(client.closed).toBe(false);
  });

  it('drops the queued commands with the connection when the peer goes away while blocked', async () => {
    const { server, client } = await startPair();
    server.handle('write', () => ({}));
    server.pauseReading();
    const calls = Array.from({ length: 50 }, (_, n) => client.executeUntyped('write', { n, blob: BLOB }));
    const outcomes = Promise.allSettled(calls);
    await settleIo(10);
    server.resetClients();
    const results = await outcomes;
    expect(results.every((r) => r.status === 'rejected')).toBe(true);
    expect(results.map((r) => (r.status === 'rejected' ? (r.reason as { code?: string }).code : 'fulfilled'))).toEqual(Array(50).fill('QMP_DISCONNECTED'));
  });
});
