// device_del refused because the guest is busy with the slot: QEMU's native PCIe hotplug (aarch64's
// virt) refuses it with "Hot-unplug failed: guest is busy (power indicator blinking)" while the
// guest still settles a hot-add there. The removal asks again every BUSY_RETRY_MS within its window,
// and says so with a typed error naming the device when the guest never settles. Only setTimeout
// is faked: the socket and the fake server run as usual.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { DeviceRemovalTimeoutError } from '../../../src/hypervisor/errors.ts';
import { QmpCommandError } from '../../../src/qmp/index.ts';
import type { HotplugContext } from '../../../src/qemu/hotplug/context.ts';
import { BUSY_RETRY_MS, hotplugDevice, unplugDevice } from '../../../src/qemu/hotplug/devices.ts';
import { QmpErrorReply } from '../../helpers/fake-qmp-server.ts';
import { tracked, useHotplugHarness, type ContextOptions } from '../../helpers/hotplug-harness.ts';

const h = useHotplugHarness();
// QEMU's words (hw/pci/pcie.c, error_setg: class GenericError).
const BUSY = 'Hot-unplug failed: guest is busy (power indicator blinking)';

afterEach(() => {
  vi.useRealTimers();
});

/** A VM with disk d0 hot-added on rp0; the server's log starts empty after. Timers are fake from here on. */
async function withDisk(options: ContextOptions = {}): Promise<HotplugContext> {
  for (const c of ['blockdev-add', 'device_add', 'blockdev-del']) h.server.handle(c, () => ({}));
  h.server.handle('query-status', () => ({ status: 'running', running: true }));
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
  const ctx = h.context({}, options);
  await hotplugDevice(ctx, { type: 'block', id: 'd0', path: '/var/d0.img' });
  h.server.received.length = 0;
  return ctx;
}

/** device_del refused as busy `times` times, then accepted (Infinity: never). */
function busyFor(times: number): void {
  let refused = 0;
  h.server.handle('device_del', () => {
    if (refused++ < times) throw new QmpErrorReply('GenericError', BUSY);
    return {};
  });
}

/** Replies come in order: once this one is back, every command sent before it has been answered and handled. */
async function repliesHandled(): Promise<void> {
  await h.qmp.execute('query-status');
  // The removal's own continuation runs after the reply's.
  await vi.advanceTimersByTimeAsync(0);
}

const deviceDels = () => h.sent().filter(([name]) => name === 'device_del').length;

describe('device_del refused while the guest is busy with the slot', () => {
  it('is asked again every BUSY_RETRY_MS until QEMU takes it, then the removal finishes as usual', async () => {
    const ctx = await withDisk({ removalTimeoutMs: 20_000 });
    busyFor(2);
    const unplug = tracked(unplugDevice(ctx, 'd0'));
    await repliesHandled();
    expect(deviceDels()).toBe(1);
    // Not before the interval is over.
    await vi.advanceTimersByTimeAsync(BUSY_RETRY_MS - 1);
    await repliesHandled();
    expect(deviceDels()).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    await repliesHandled();
    expect(deviceDels()).toBe(2);
    await vi.advanceTimersByTimeAsync(BUSY_RETRY_MS);
    await repliesHandled();
    expect(deviceDels()).toBe(3);
    // QEMU took the third: now the guest is asked, and nothing more is sent until it lets go.
    await vi.advanceTimersByTimeAsync(5 * BUSY_RETRY_MS);
    await repliesHandled();
    expect(unplug.settled).toBe(false);
    expect(ctx.state.devices.find((d) => d.id === 'd0')?.removalRequested).toBe(true);
    h.server.sendEvent('DEVICE_DELETED', { device: 'd0', path: '/machine/peripheral/d0' });
    await unplug.promise;
    expect(h.changes()).toEqual([
      ['device_del', { id: 'd0' }],
      ['device_del', { id: 'd0' }],
      ['device_del', { id: 'd0' }],
      ['blockdev-del', { 'node-name': 'drv-d0' }],
    ]);
    expect(ctx.state.devices).toEqual([]);
  });

  it('a guest busy for the whole removal window: DeviceRemovalTimeoutError naming the device, guestBusy, QEMU’s refusal as cause; the device kept, never asked', async () => {
    const ctx = await withDisk({ removalTimeoutMs: 1_000 });
    busyFor(Infinity);
    const unplug = tracked(unplugDevice(ctx, 'd0').catch((e: unknown) => e));
    await repliesHandled();
    for (let elapsed = 0; elapsed < 1_000; elapsed += BUSY_RETRY_MS) {
      await vi.advanceTimersByTimeAsync(BUSY_RETRY_MS);
      await repliesHandled();
    }
    const error = await unplug.promise;
    expect(error).toBeInstanceOf(DeviceRemovalTimeoutError);
    expect(error).toMatchObject({ code: 'DEVICE_REMOVAL_TIMEOUT', deviceId: 'd0', timeoutMs: 1_000, guestBusy: true });
    expect((error as Error).message).toContain('d0');
    expect((error as Error).cause).toBeInstanceOf(QmpCommandError);
    expect((error as Error).cause).toMatchObject({ errorClass: 'GenericError', desc: BUSY });
    // Asked at 0, 250, 500 and 750 ms; the window closed at 1000 ms, before a fifth.
    expect(h.changes()).toEqual(Array.from({ length: 4 }, () => ['device_del', { id: 'd0' }]));
    const kept = ctx.state.devices.find((d) => d.id === 'd0');
    expect(kept?.bus).toBe('rp0');
    // No request went through: a DEVICE_DELETED now would be the guest ejecting it, not this removal.
    expect(kept?.removalRequested).toBe(false);
    // Nothing is asked after the error.
    await vi.advanceTimersByTimeAsync(10 * BUSY_RETRY_MS);
    await repliesHandled();
    expect(deviceDels()).toBe(4);
  });

  it('the operation’s deadline while the guest is busy keeps its own error, and the asking stops', async () => {
    const ctx = await withDisk({ timeoutMs: 600, removalTimeoutMs: 60_000 });
    busyFor(Infinity);
    const unplug = tracked(unplugDevice(ctx, 'd0').catch((e: unknown) => e));
    await repliesHandled();
    for (let i = 0; i < 3; i++) {
      await vi.advanceTimersByTimeAsync(BUSY_RETRY_MS);
      await repliesHandled();
    }
    const error = await unplug.promise;
    expect(error).not.toBeInstanceOf(DeviceRemovalTimeoutError);
    expect(error).toMatchObject({ code: 'TIMEOUT' });
    // Asked at 0, 250 and 500 ms; the deadline passed at 600 ms.
    expect(deviceDels()).toBe(3);
    await vi.advanceTimersByTimeAsync(10 * BUSY_RETRY_MS);
    await repliesHandled();
    expect(deviceDels()).toBe(3);
    expect(ctx.state.devices.find((d) => d.id === 'd0')?.removalRequested).toBe(false);
  });

  it('an earlier request’s DEVICE_DELETED arriving while the guest is busy ends the removal without asking again', async () => {
    const ctx = await withDisk({ removalTimeoutMs: 20_000 });
    busyFor(Infinity);
    const unplug = tracked(unplugDevice(ctx, 'd0'));
    await repliesHandled();
    h.server.sendEvent('DEVICE_DELETED', { device: 'd0', path: '/machine/peripheral/d0' });
    await unplug.promise;
    expect(h.changes()).toEqual([
      ['device_del', { id: 'd0' }],
      ['blockdev-del', { 'node-name': 'drv-d0' }],
    ]);
    await vi.advanceTimersByTimeAsync(10 * BUSY_RETRY_MS);
    await repliesHandled();
    expect(deviceDels()).toBe(1);
  });

  it('a refusal for another reason is still a HotplugError at once, not asked again', async () => {
    const ctx = await withDisk({ removalTimeoutMs: 20_000 });
    h.server.handle('device_del', () => {
      throw new QmpErrorReply('GenericError', "Bus 'rp0' does not support hotplugging");
    });
    const error = await unplugDevice(ctx, 'd0').catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'HOTPLUG_FAILED', deviceId: 'd0', step: 'device_del' });
    await vi.advanceTimersByTimeAsync(10 * BUSY_RETRY_MS);
    await repliesHandled();
    expect(deviceDels()).toBe(1);
  });
});
