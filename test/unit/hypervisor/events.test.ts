import { describe, expect, it } from 'vitest';
import { isEventOf, nextEvent } from '../../../src/hypervisor/events.ts';
import type { HypervisorEvent } from '../../../src/hypervisor/types.ts';

/** A minimal event source: what onEvent is to a backend. */
function source() {
  const listeners = new Set<(event: HypervisorEvent) => void>();
  return {
    subscribe: (listener: (event: HypervisorEvent) => void) => {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    emit: (name: string, data: Record<string, unknown>) => {
      for (const listener of [...listeners]) listener({ name, data });
    },
    get listening() {
      return listeners.size;
    },
  };
}

describe('isEventOf', () => {
  it('takes a known event only with the data its type promises (QEMU is not trusted)', () => {
    expect(isEventOf({ name: 'VSERPORT_CHANGE', data: { id: 'agent', open: true } }, 'VSERPORT_CHANGE')).toBe(true);
    expect(isEventOf({ name: 'VSERPORT_CHANGE', data: { id: 'agent', open: 'yes' } }, 'VSERPORT_CHANGE')).toBe(false);
    expect(isEventOf({ name: 'VSERPORT_CHANGE', data: { open: true } }, 'VSERPORT_CHANGE')).toBe(false);
    expect(isEventOf({ name: 'SHUTDOWN', data: { guest: true, reason: 'guest-reset' } }, 'SHUTDOWN')).toBe(true);
    expect(isEventOf({ name: 'SHUTDOWN', data: { guest: true } }, 'SHUTDOWN')).toBe(false);
    expect(isEventOf({ name: 'DEVICE_EJECTED', data: { id: 'd', type: 'block' } }, 'DEVICE_EJECTED')).toBe(false);
  });

  it('takes any data of an event it does not know, and never another name', () => {
    expect(isEventOf({ name: 'RTC_CHANGE', data: {} }, 'RTC_CHANGE')).toBe(true);
    expect(isEventOf({ name: 'STOP', data: {} }, 'RESUME')).toBe(false);
    // A name inherited from Object.prototype is no known event.
    expect(isEventOf({ name: 'toString', data: {} }, 'toString')).toBe(true);
  });
});

describe('nextEvent', () => {
  it('resolves with the first event of the name that the predicate accepts, and stops listening', async () => {
    const events = source();
    const opened = nextEvent(events.subscribe, 'VSERPORT_CHANGE', (e) => e.data.id === 'agent' && e.data.open, new AbortController().signal);
    events.emit('VSERPORT_CHANGE', { id: 'other', open: true });
    events.emit('VSERPORT_CHANGE', { id: 'agent', open: false });
    events.emit('VSERPORT_CHANGE', { id: 'agent', open: 'true' });
    events.emit('RESUME', { id: 'agent', open: true });
    events.emit('VSERPORT_CHANGE', { id: 'agent', open: true, extra: 1 });
    expect(await opened).toEqual({ name: 'VSERPORT_CHANGE', data: { id: 'agent', open: true, extra: 1 } });
    expect(events.listening).toBe(0);
  });

  it("rejects with the signal's reason when it aborts, already or later, and stops listening", async () => {
    const events = source();
    const reason = new Error('deadline');
    await expect(nextEvent(events.subscribe, 'STOP', undefined, AbortSignal.abort(reason))).rejects.toBe(reason);
    const controller = new AbortController();
    const pending = nextEvent(events.subscribe, 'STOP', undefined, controller.signal);
    expect(events.listening).toBe(1);
    controller.abort(reason);
    await expect(pending).rejects.toBe(reason);
    expect(events.listening).toBe(0);
  });

  it('rejects with what the predicate throws', async () => {
    const events = source();
    const broken = new Error('predicate');
    const pending = nextEvent(
      events.subscribe,
      'STOP',
      () => {
        throw broken;
      },
      new AbortController().signal,
    );
    events.emit('STOP', {});
    await expect(pending).rejects.toBe(broken);
    expect(events.listening).toBe(0);
  });
});
