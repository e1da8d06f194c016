// The event hub's bookkeeping, held to what a caller sees: a wait that ends leaves no timer and no
// abort listener behind, an invalid timeout is refused before anything listens, failures name what
// was awaited, a stream refuses a nonsense budget, and an event's malformed members read as absent.
import { getEventListeners } from 'node:events';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { InvalidArgumentError, OperationAbortedError, OperationTimeoutError } from '../../../src/errors.ts';
import { EventHub } from '../../../src/qmp/events.ts';
import { toEvent } from '../../../src/qmp/messages.ts';
import { QmpTimeoutError } from '../../../src/qmp/index.ts';
import { silentLogger } from '../../../src/util/logger.ts';
import type { QmpEvent } from '../../../src/qmp/types.ts';
import { rejection } from './harness.ts';

function event(name: string, data: Record<string, unknown> = {}): QmpEvent {
  return { event: name, data, timestamp: { seconds: 1, microseconds: 2 } };
}

afterEach(() => {
  vi.useRealTimers();
});

describe('EventHub waits', () => {
  it('a wait that gets its event leaves no timer running', async () => {
    vi.useFakeTimers();
    const hub = new EventHub(silentLogger);
    const armed = hub.arm('SHUTDOWN', undefined, { timeoutMs: 60_000 });
    expect(vi.getTimerCount()).toBe(1);
    hub.emit(event('SHUTDOWN'), 10);
    await expect(armed.promise).resolves.toMatchObject({ event: 'SHUTDOWN' });
    expect(vi.getTimerCount()).toBe(0);
  });

  it('a wait that ends removes its abort listener from the caller’s signal', async () => {
    const controller = new AbortController();
    const hub = new EventHub(silentLogger);
    const armed = hub.arm('SHUTDOWN', undefined, { signal: controller.signal });
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(1);
    hub.emit(event('SHUTDOWN'), 10);
    await armed.promise;
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);
  });

  it('an invalid timeout is refused before the wait listens: no listener is left behind', async () => {
    const controller = new AbortController();
    const hub = new EventHub(silentLogger);
    const armed = hub.arm('SHUTDOWN', undefined, { signal: controller.signal, timeoutMs: -1 });
    const error = await rejection(armed.promise, InvalidArgumentError);
    expect(error.message).toContain('timeoutMs');
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);
  });

  it('a timed-out or cancelled wait names the event it was waiting for', async () => {
    const hub = new EventHub(silentLogger);
    const timedOut = await rejection(hub.arm('DEVICE_DELETED', undefined, { timeoutMs: 1 }).promise, OperationTimeoutError);
    expect(timedOut.message).toContain('waiting for QMP event DEVICE_DELETED');
    const armed = hub.arm('BLOCK_JOB_COMPLETED');
    armed.cancel();
    const cancelled = await rejection(armed.promise, OperationAbortedError);
    expect(cancelled.message).toContain('waiting for QMP event BLOCK_JOB_COMPLETED');
  });

  it('removing one listener keeps the others of that name, and re-adding after all left works', () => {
    const hub = new EventHub(silentLogger);
    const seen: string[] = [];
    const offA = hub.on('RESET', () => seen.push('a'));
    const offB = hub.on('RESET', () => seen.push('b'));
    offA();
    hub.emit(event('RESET'), 1);
    offB();
    offB();
    hub.emit(event('RESET'), 1);
    hub.on('RESET', () => seen.push('c'));
    hub.emit(event('RESET'), 1);
    expect(seen).toEqual(['b', 'c']);
  });
  it('an unsubscribe called again after its name emptied does not drop listeners added since', () => {
    const hub = new EventHub(silentLogger);
    const seen: string[] = [];
    const off = hub.on('STOP', () => seen.push('old'));
    off();
    hub.on('STOP', () => seen.push('new'));
    off();
    hub.emit(event('STOP'), 1);
    expect(seen).toEqual(['new']);
  });
});

describe('EventHub streams', () => {
  it('refuses a buffer budget that is not a positive integer, naming it', () => {
    const hub = new EventHub(silentLogger);
    for (const bad of [0, -3, 1.5, NaN, '10'] as unknown[]) {
      expect(() => hub.iterate({ maxBufferedEvents: bad as number })).toThrow(InvalidArgumentError);
      expect(() => hub.iterate({ maxBufferedBytes: bad as number })).toThrow(/maxBufferedBytes/);
    }
  });

  it('a stream stopped by its signal removes its abort listener', async () => {
    const controller = new AbortController();
    const hub = new EventHub(silentLogger);
    const stream = hub.iterate({ signal: controller.signal });
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(1);
    const next = stream[Symbol.asyncIterator]().next();
    controller.abort();
    await next.catch(() => {});
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);
  });
});

describe('toEvent', () => {
  it('reads a data or timestamp member that is not an object as absent', () => {
    expect(toEvent({ event: 'X', data: 'oops', timestamp: 5 })).toEqual({ event: 'X', data: {}, timestamp: { seconds: -1, microseconds: -1 } });
    expect(toEvent({ event: 'X', data: [1], timestamp: null })).toEqual({ event: 'X', data: {}, timestamp: { seconds: -1, microseconds: -1 } });
  });
});

describe('QmpTimeoutError', () => {
  it('says nothing about id-less errors when there was none', () => {
    expect(new QmpTimeoutError('query-status', 100).message).toBe('QMP command query-status got no reply within 100 ms');
  });
});
