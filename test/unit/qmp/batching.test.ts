// The cork/uncork batching of commands issued in one tick: all of a tick's commands leave together
// in one write at the end of the tick, a serial caller's one per write, and each later tick batches
// afresh. Observed at the socket's own write hooks: what reaches the
// kernel as separate writes.
import { Socket } from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { startPair } from './harness.ts';

/**
 * Watches the socket's write hooks (called through): `writes()` gives the commands (by name) of each
 * write the client's sockets handed to the kernel, in order. Replies hold no "execute".
 */
function recordWrites(): { writes: () => string[][] } {
  const names = (chunk: unknown) => [...String(chunk).matchAll(/"execute":"([^"]+)"/g)].map((m) => m[1] as string);
  const single = vi.spyOn(Socket.prototype, '_write');
  const vector = vi.spyOn(Socket.prototype, '_writev');
  return {
    writes: () => {
      const calls = [
        ...single.mock.calls.map((args, i) => ({ order: single.mock.invocationCallOrder[i] ?? 0, commands: names(args[0]) })),
        ...vector.mock.calls.map((args, i) => ({ order: vector.mock.invocationCallOrder[i] ?? 0, commands: args[0].flatMap(({ chunk }) => names(chunk)) })),
      ];
      return calls
        .filter((call) => call.commands.length > 0)
        .sort((a, b) => a.order - b.order)
        .map((call) => call.commands);
    },
  };
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe('write batching', () => {
  it('sends the commands of a tick in one write, tick after tick', async () => {
    const { server, client } = await startPair();
    for (const name of ['a', 'b', 'c', 'd', 'e', 'f']) server.handle(name, () => ({}));
    const recorder = recordWrites();
    await Promise.all(['a', 'b', 'c'].map((name) => client.executeUntyped(name)));
    await Promise.all(['d', 'e', 'f'].map((name) => client.executeUntyped(name)));
    expect(recorder.writes()).toEqual([['a', 'b', 'c'], ['d', 'e', 'f']]);
  });

  it('sends a serial caller\'s commands one write each, none held back', async () => {
    const { server, client } = await startPair();
    server.handle('a', () => ({}));
    const recorder = recordWrites();
    for (let i = 0; i < 3; i++) await client.executeUntyped('a');
    expect(recorder.writes()).toEqual([['a'], ['a'], ['a']]);
  });
});
