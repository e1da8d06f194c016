// Nothing is left behind once a command, a wait or an iterator is done: no abort listener on the
// caller's signal (a VM-lifetime signal would gain one per command), and unsubscribing one event
// listener leaves the others of that name in place.
import { getEventListeners } from 'node:events';
import { describe, expect, it } from 'vitest';
import { OperationAbortedError } from '../../../src/errors.ts';
import { QmpTimeoutError } from '../../../src/qmp/index.ts';
import { NO_REPLY } from '../../helpers/fake-qmp-server.ts';
import { rejection, startPair } from './harness.ts';

function abortListeners(signal: AbortSignal): number {
  return getEventListeners(signal, 'abort').length;
}

describe('cleanup', () => {
  it('removes the abort listener from the caller\'s signal when a command is answered, fails or times out', async () => {
    const { server, client } = await startPair();
    const signal = new AbortController().signal;
    server.handle('ok', () => ({}));
    server.handle('slow', () => NO_REPLY);
    await client.executeUntyped('ok', undefined, { signal });
    expect(abortListeners(signal)).toBe(0);
    await rejection(client.executeUntyped('unknown-command', undefined, { signal }), Error);
    expect(abortListeners(signal)).toBe(0);
    await rejection(client.executeUntyped('slow', undefined, { signal, timeoutMs: 1 }), QmpTimeoutError);
    expect(abortListeners(signal)).toBe(0);
  });

  it('holds one abort listener per command in flight, and none once they are done', async () => {
    const { server, client } = await startPair();
    const signal = new AbortController().signal;
    const replies: (() => void)[] = [];
    server.handle('later', () => new Promise((resolve) => replies.push(() => resolve({}))));
    const first = server.nextCommand('later');
    const calls = [client.executeUntyped('later', undefined, { signal }), client.executeUntyped('later', undefined, { signal })];
    await first;
    expect(abortListeners(signal)).toBe(2);
    while (replies.length < 2) await server.nextCommand('later');
    for (const reply of replies) reply();
    await Promise.all(calls);
    expect(abortListeners(signal)).toBe(0);
  });

  it('removes the abort listener of an event wait when the event comes, on cancel and on timeout', async () => {
    const { server, client } = await startPair();
    const signal = new AbortController().signal;
    const seen = client.waitForEvent('STOP', undefined, { signal });
    expect(abortListeners(signal)).toBe(1);
    server.sendEvent('STOP');
    await seen;
    expect(abortListeners(signal)).toBe(0);

    const armed = client.armEvent('STOP', undefined, { signal });
    armed.cancel();
    await rejection(armed.promise, OperationAbortedError);
    expect(abortListeners(signal)).toBe(0);

    await rejection(client.waitForEvent('STOP', undefined, { signal, timeoutMs: 1 }), Error);
    expect(abortListeners(signal)).toBe(0);
  });

  it('removes the abort listener of an event iterator when it is returned', async () => {
    const { client } = await startPair();
    const signal = new AbortController().signal;
    const events = client.events({ signal });
    expect(abortListeners(signal)).toBe(1);
    await events.return();
    expect(abortListeners(signal)).toBe(0);
  });

  it('keeps the other listeners of an event name when one unsubscribes', async () => {
    const { server, client } = await startPair();
    const kept: string[] = [];
    const offFirst = client.on('DEVICE_DELETED', () => {});
    client.on('DEVICE_DELETED', (e) => kept.push(String(e.data['device'])));
    offFirst();
    // A finished one-shot wait unsubscribes too.
    const wait = client.waitForEvent('DEVICE_DELETED');
    server.sendEvent('DEVICE_DELETED', { device: 'a' });
    await wait;
    server.sendEvent('DEVICE_DELETED', { device: 'b' });
    server.handle('query-status', () => ({}));
    await client.execute('query-status');
    expect(kept).toEqual(['a', 'b']);
  });

  it('lets a listener that unsubscribed itself be subscribed again, and unsubscribing twice is harmless', async () => {
    const { server, client } = await startPair();
    const seen: string[] = [];
    const off = client.on('STOP', () => seen.push('first'));
    off();
    off();
    client.on('STOP', () => seen.push('second'));
    // A stale unsubscribe, called again after the name has new listeners, leaves them alone.
    off();
    server.sendEvent('STOP');
    server.handle('query-status', () => ({}));
    await client.execute('query-status');
    expect(seen).toEqual(['second']);
  });
});
