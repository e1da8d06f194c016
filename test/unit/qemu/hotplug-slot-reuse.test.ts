// Which root port a hot-add gets when slots have been freed, and the wait before plugging into a
// slot a device has just left: the guest may still act on that slot's last hotplug events (a stale
// ACPI Eject request, measured on q35 to take out the next device if it comes too soon).
import { describe, expect, it } from 'vitest';
import { OperationTimeoutError } from '../../../src/errors.ts';
import type { HotplugContext } from '../../../src/qemu/hotplug/context.ts';
import { hotplugDevice, unplugDevice } from '../../../src/qemu/hotplug/devices.ts';
import { sleep } from '../../../src/util/deadline.ts';
import { tracked, turn, useHotplugHarness, type ContextOptions } from '../../helpers/hotplug-harness.ts';

const h = useHotplugHarness();

/** A VM with `rootPorts` ports whose QEMU answers every step at once and releases a device at its device_del. */
function vm(rootPorts: number, options: ContextOptions = {}): HotplugContext {
  const ctx = h.context({ hotplug: { rootPorts } }, options);
  for (const c of ['blockdev-add', 'device_add', 'blockdev-del']) h.server.handle(c, () => ({}));
  h.server.handle('device_del', (args) => {
    h.server.sendEvent('DEVICE_DELETED', { device: String(args?.['id']) });
    return {};
  });
  return ctx;
}

const disk = (id: string) => ({ type: 'block' as const, id, path: `/var/${id}.img` });
const busOf = async (ctx: HotplugContext, id: string) => (await hotplugDevice(ctx, disk(id))).bus;
/** The device_adds QEMU was sent, by id. */
const deviceAdds = () => h.sent().filter(([name]) => name === 'device_add').map(([, args]) => args?.['id']);

describe('the order free root ports are handed out in', () => {
  it('a port never used comes before one a device has left', async () => {
    const ctx = vm(2);
    expect(await busOf(ctx, 'd0')).toBe('rp0');
    await unplugDevice(ctx, 'd0');
    // rp0 is free again, but the guest may still be settling it.
    expect(await busOf(ctx, 'e0')).toBe('rp1');
  });

  it('of the ports devices have left, the one left longest ago comes first', async () => {
    const ctx = vm(2, { freedSlotSettleMs: 0 });
    expect([await busOf(ctx, 'd0'), await busOf(ctx, 'd1')]).toEqual(['rp0', 'rp1']);
    await unplugDevice(ctx, 'd1');
    // Two distinct times, however fast the machine.
    await sleep(5);
    await unplugDevice(ctx, 'd0');
    expect([await busOf(ctx, 'e0'), await busOf(ctx, 'e1')]).toEqual(['rp1', 'rp0']);
  });
});

describe('a hot-add into the only free slot, which a device has just left', () => {
  it('waits for the guest to settle the slot before sending anything, and plugs once it has', async () => {
    const ctx = vm(1, { freedSlotSettleMs: 1_000 });
    await hotplugDevice(ctx, disk('d0'));
    await unplugDevice(ctx, 'd0');
    const adding = tracked(hotplugDevice(ctx, disk('e0')));
    await turn();
    expect(adding.settled).toBe(false);
    expect(h.sent().filter(([, args]) => JSON.stringify(args).includes('e0'))).toEqual([]);
    // The slot is claimed meanwhile: a concurrent hot-add finds none.
    expect(ctx.state.devices.map((d) => [d.id, d.bus])).toEqual([['e0', 'rp0']]);
    expect((await adding.promise).bus).toBe('rp0');
    expect(deviceAdds()).toEqual(['d0', 'e0']);
    expect(h.logs).toContainEqual(expect.objectContaining({ level: 'debug', msg: 'waiting for the guest to settle the slot a device just left', bus: 'rp0' }));
  });

  it('fails with the operation’s deadline when that comes first, leaving nothing plugged and the slot free', async () => {
    const ctx = vm(1, { freedSlotSettleMs: 60_000, timeoutMs: 500 });
    await hotplugDevice(ctx, disk('d0'));
    await unplugDevice(ctx, 'd0');
    await expect(hotplugDevice(ctx, disk('e0'))).rejects.toBeInstanceOf(OperationTimeoutError);
    expect(deviceAdds()).toEqual(['d0']);
    expect(h.sent().filter(([name]) => name === 'blockdev-add')).toHaveLength(1);
    expect(ctx.state.devices).toEqual([]);
  });

  it('the SCSI controller waits too when it needs that slot', async () => {
    const ctx = vm(1, { freedSlotSettleMs: 60_000, timeoutMs: 500 });
    await hotplugDevice(ctx, disk('d0'));
    await unplugDevice(ctx, 'd0');
    await expect(hotplugDevice(ctx, { ...disk('s0'), driver: 'virtio-scsi' })).rejects.toBeInstanceOf(OperationTimeoutError);
    expect(deviceAdds()).toEqual(['d0']);
    expect(ctx.state.infrastructure).toEqual([]);
    expect(ctx.state.devices).toEqual([]);
  });

  it('does not wait for a slot whose device left longer ago than the guest takes', async () => {
    const ctx = vm(1, { freedSlotSettleMs: 0, timeoutMs: 500 });
    await hotplugDevice(ctx, disk('d0'));
    await unplugDevice(ctx, 'd0');
    expect(await busOf(ctx, 'e0')).toBe('rp0');
    expect(h.logs.some((l) => l.msg.startsWith('waiting for the guest'))).toBe(false);
  });
});
