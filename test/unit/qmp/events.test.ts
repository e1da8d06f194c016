// Events: listeners, one-shot waits armed before the command that causes the event, and the
// async iterator.
import { describe, expect, it } from 'vitest';
import { OperationAbortedError, OperationTimeoutError, SandboxVmmError } from '../../../src/errors.ts';
import { QmpDisconnectedError, type QmpEvent } from '../../../src/qmp/index.ts';
import { rejection, settleIo, startPair, track } from './harness.ts';

describe('QMP events', () => {
  it('reach listeners by name and "*", in the order sent, until unsubscribed', async () => {
    const { server, client } = await startPair();
    const byName: string[] = [];
    const all: string[] = [];
    const offStop = client.on('STOP', (e) => byName.push(e.event));
    client.on('*', (e) => all.push(e.event));
    server.sendEvent('STOP');
    server.sendEvent('RESUME');
    server.sendEvent('STOP');
    server.handle('query-status', () => ({}));
    await client.execute('query-status');
    offStop();
    server.sendEvent('STOP');
    await client.execute('query-status');
    expect(byName).toEqual(['STOP', 'STOP']);
    expect(all).toEqual(['STOP', 'RESUME', 'STOP', 'STOP']);
  });

  it('fill in data, and a timestamp of -1/-1 (the spec\'s "unknown", not the epoch), when the peer leaves them out', async () => {
    const { server, client } = await startPair();
    const seen = client.waitForEvent('POWERDOWN', undefined, { timeoutMs: 5_000 });
    server.sendLine(JSON.stringify({ event: 'POWERDOWN' }));
    expect(await seen).toEqual({ event: 'POWERDOWN', data: {}, timestamp: { seconds: -1, microseconds: -1 } });
  });

  it('report each timestamp member that is missing or not a number as -1, and keep the ones that are', async () => {
    const { server, client } = await startPair();
    const seen: QmpEvent['timestamp'][] = [];
    client.on('*', (e) => seen.push(e.timestamp));
    for (const timestamp of [{ seconds: 7 }, { microseconds: 8 }, { seconds: '7', microseconds: null }, 'now', { seconds: -1, microseconds: -1 }, { seconds: 0, microseconds: 0 }]) {
      server.sendLine(JSON.stringify({ event: 'STOP', timestamp }));
    }
    await client.execute('qmp_capabilities');
    expect(seen).toEqual([
      { seconds: 7, microseconds: -1 },
      { seconds: -1, microseconds: 8 },
      { seconds: -1, microseconds: -1 },
      { seconds: -1, microseconds: -1 },
      { seconds: -1, microseconds: -1 },
      { seconds: 0, microseconds: 0 },
    ]);
  });

  it('sent between replies are delivered before the reply that follows them', async () => {
    const { server, client } = await startPair();
    const events: string[] = [];
    client.on('*', (e) => events.push(e.event));
    server.handle('step', (args) => {
      server.sendEvent(`BEFORE_${String(args?.['n'])}`);
      return {};
    });
    for (const n of [1, 2, 3]) {
      await client.executeUntyped('step', { n });
      expect(events.at(-1)).toBe(`BEFORE_${n}`);
    }
    expect(events).toEqual(['BEFORE_1', 'BEFORE_2', 'BEFORE_3']);
  });

  describe('waits armed before the command', () => {
    it('see an event sent before the reply of the command that causes it', async () => {
      const { server, client } = await startPair();
      server.handle('device_del', (args) => {
        server.sendEvent('DEVICE_DELETED', { device: 'other' });
        server.sendEvent('DEVICE_DELETED', { device: args?.['id'] });
        return {};
      });
      const armed = client.armEvent('DEVICE_DELETED', (e) => e.data['device'] === 'disk0', { timeoutMs: 5_000 });
      const waited = client.waitForEvent('DEVICE_DELETED', (e) => e.data['device'] === 'disk0', { timeoutMs: 5_000 });
      await client.execute('device_del', { id: 'disk0' });
      expect((await armed.promise).data).toEqual({ device: 'disk0' });
      expect((await waited).data).toEqual({ device: 'disk0' });
    });

    it('reject with OperationTimeoutError when the event does not come in time', async () => {
      const { client } = await startPair();
      const error = await rejection(client.waitForEvent('NEVER', undefined, { timeoutMs: 20 }), OperationTimeoutError);
      expect(error.code).toBe('TIMEOUT');
    });

    it('reject with OperationAbortedError on cancel() or abort, keeping a typed reason as is', async () => {
      const { client } = await startPair();
      const armed = client.armEvent('NEVER');
      armed.cancel();
      await rejection(armed.promise, OperationAbortedError);

      const controller = new AbortController();
      const waited = client.waitForEvent('NEVER', undefined, { signal: controller.signal });
      controller.abort('bored');
      const error = await rejection(waited, OperationAbortedError);
      expect(error.cause).toBe('bored');

      const typed = new SandboxVmmError('VM_STOPPING', 'stopping');
      await expect(client.waitForEvent('NEVER', undefined, { signal: AbortSignal.abort(typed) })).rejects.toBe(typed);
    });

    it('reject with QmpDisconnectedError when the connection goes, or at once when it is gone', async () => {
      const { server, client } = await startPair();
      const waited = client.waitForEvent('NEVER');
      server.endClients();
      await rejection(waited, QmpDisconnectedError);
      await rejection(client.waitForEvent('NEVER'), QmpDisconnectedError);
    });

    it('treat a predicate that throws as not matching', async () => {
      const { server, client } = await startPair();
      const waited = client.waitForEvent(
        'BLOCK_JOB_COMPLETED',
        (e) => {
          if (e.data['device'] === undefined) throw new Error('predicate bug');
          return e.data['device'] === 'job0';
        },
        { timeoutMs: 5_000 },
      );
      server.sendEvent('BLOCK_JOB_COMPLETED');
      server.sendEvent('BLOCK_JOB_COMPLETED', { device: 'job0' });
      expect((await waited).data).toEqual({ device: 'job0' });
    });
  });

  it('a listener that throws does not stop the others or the client', async () => {
    const { server, client } = await startPair();
    const seen: string[] = [];
    client.on('STOP', () => {
      throw new Error('listener bug');
    });
    client.on('STOP', (e) => seen.push(`named ${e.event}`));
    client.on('*', () => {
      throw new Error('another listener bug');
    });
    client.on('*', (e) => seen.push(`all ${e.event}`));
    server.handle('stop', () => {
      server.sendEvent('STOP');
      return {};
    });
    await expect(client.execute('stop')).resolves.toEqual({});
    expect(seen).toEqual(['named STOP', 'all STOP']);
    expect(client.closed).toBe(false);
  });

  describe('the async iterator', () => {
    it('yields every event from the moment it is created, even before the first next()', async () => {
      const { server, client } = await startPair();
      const iterator = client.events();
      server.handle('stop', () => {
        server.sendEvent('STOP');
        return {};
      });
      await client.execute('stop');
      server.sendEvent('RESUME', { n: 1 });
      const first = await iterator.next();
      const second = await iterator.next();
      expect(first).toEqual({ done: false, value: expect.objectContaining({ event: 'STOP' }) as QmpEvent });
      expect(second.value).toMatchObject({ event: 'RESUME', data: { n: 1 } });
      await iterator.return();
    });

    it('works with for await, and ends when the connection closes, after the buffered events', async () => {
      const { server, client } = await startPair();
      const names: string[] = [];
      const consumed = (async () => {
        for await (const event of client.events()) names.push(event.event);
      })();
      server.sendEvent('A');
      server.sendEvent('B');
      server.sendEvent('C');
      server.endClients();
      await consumed;
      expect(names).toEqual(['A', 'B', 'C']);
    });

    it('ends at once when its signal aborts, even while waiting', async () => {
      const { server, client } = await startPair();
      const controller = new AbortController();
      const iterator = client.events({ signal: controller.signal });
      server.sendEvent('A');
      expect((await iterator.next()).value).toMatchObject({ event: 'A' });
      const waiting = track(iterator.next());
      await settleIo();
      expect(waiting.current.status).toBe('pending');
      controller.abort();
      await settleIo(1);
      expect(waiting.current).toEqual({ status: 'fulfilled', value: { done: true, value: undefined } });
      server.sendEvent('B');
      await settleIo();
      expect(await iterator.next()).toEqual({ done: true, value: undefined });
    });

    it('is done at once with a signal already aborted, or on a closed client', async () => {
      const { client } = await startPair();
      expect(await client.events({ signal: AbortSignal.abort() }).next()).toEqual({ done: true, value: undefined });
      await client.close();
      expect(await client.events().next()).toEqual({ done: true, value: undefined });
    });

    it('throw() ends it, dropping what is buffered, and rejects with the error (a non-Error wrapped)', async () => {
      const { server, client } = await startPair();
      const iterator = client.events();
      server.sendEvent('A');
      server.handle('query-status', () => ({}));
      await client.execute('query-status');
      const failure = new Error('consumer gave up');
      await expect(iterator.throw(failure)).rejects.toBe(failure);
      expect(await iterator.next()).toEqual({ done: true, value: undefined });
      const other = client.events();
      await expect(other.throw('text')).rejects.toThrow(new Error('text'));
    });

    it('return() drops what is buffered and ends a pending next()', async () => {
      const { server, client } = await startPair();
      const buffered = client.events();
      const waiting = client.events();
      const pending = waiting.next();
      server.sendEvent('A');
      expect((await pending).value).toMatchObject({ event: 'A' });
      const next = track(waiting.next());
      server.handle('query-status', () => ({}));
      await client.execute('query-status');
      expect(await buffered.return()).toEqual({ done: true, value: undefined });
      expect(await buffered.next()).toEqual({ done: true, value: undefined });
      await waiting.return();
      await settleIo(1);
      expect(next.current).toEqual({ status: 'fulfilled', value: { done: true, value: undefined } });
    });

    it('ends on `await using` (Symbol.asyncDispose) and is its own async iterator', async () => {
      const { server, client } = await startPair();
      const iterator = client.events() as AsyncGenerator<QmpEvent, void, undefined> & AsyncDisposable;
      expect(iterator[Symbol.asyncIterator]()).toBe(iterator);
      await iterator[Symbol.asyncDispose]();
      server.sendEvent('A');
      await settleIo();
      expect(await iterator.next()).toEqual({ done: true, value: undefined });
    });

    it('stops listening on return(), also before the first next()', async () => {
      const { server, client } = await startPair();
      const early = client.events();
      await early.return();
      const late = client.events();
      server.sendEvent('A');
      expect((await late.next()).value).toMatchObject({ event: 'A' });
      await late.return();
      server.sendEvent('B');
      await settleIo();
      expect(await early.next()).toEqual({ done: true, value: undefined });
      expect(await late.next()).toEqual({ done: true, value: undefined });
    });
  });
});
