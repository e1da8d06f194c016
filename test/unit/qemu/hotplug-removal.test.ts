// Removing hot-added devices when things do not go to plan: QEMU refusing device_del, an unplug
// already under way, a device already gone, DEVICE_DELETED events for other devices, backend
// deletions that fail and the retry that resumes, and the deadline or the connection ending the wait.
import { describe, expect, it } from 'vitest';
import { DeviceNotFoundError, DeviceRemovalTimeoutError, HotplugError } from '../../../src/hypervisor/errors.ts';
import { QmpCommandError, QmpDisconnectedError } from '../../../src/qmp/index.ts';
import type { HotplugContext } from '../../../src/qemu/hotplug/context.ts';
import { hotplugDevice, unplugDevice } from '../../../src/qemu/hotplug/devices.ts';
import { NO_REPLY, QmpErrorReply } from '../../helpers/fake-qmp-server.ts';
import { tracked, turn, useHotplugHarness, type ContextOptions } from '../../helpers/hotplug-harness.ts';

const h = useHotplugHarness();

/** A VM with disks d0, d1, d2 hot-added on rp0, rp1, rp2; the server's log starts empty after. */
async function withDisks(options: ContextOptions = {}): Promise<HotplugContext> {
  const ctx = h.context({ hotplug: { rootPorts: 4 } }, options);
  for (const c of ['blockdev-add', 'device_add', 'blockdev-del']) h.server.handle(c, () => ({}));
  for (const id of ['d0', 'd1', 'd2']) await hotplugDevice(ctx, { type: 'block', id, path: `/var/${id}.img` });
  h.server.received.length = 0;
  return ctx;
}

/** device_del answered at once, with these DEVICE_DELETED events sent before the reply. */
function deleteSending(events: (id: string) => Record<string, unknown>[]): void {
  h.server.handle('device_del', (args) => {
    for (const data of events(String(args?.['id']))) h.server.sendEvent('DEVICE_DELETED', data);
    return {};
  });
}

const ids = (ctx: HotplugContext) => ctx.state.devices.map((d) => [d.id, d.bus]);

describe('which DEVICE_DELETED ends the wait', () => {
  it('one that names the device alone, without a path', async () => {
    const ctx = await withDisks();
    deleteSending((id) => [{ device: id }]);
    await unplugDevice(ctx, 'd1');
    expect(h.sent()).toEqual([
      ['device_del', { id: 'd1' }],
      ['blockdev-del', { 'node-name': 'drv-d1' }],
    ]);
    expect(ids(ctx)).toEqual([
      ['d0', 'rp0'],
      ['d2', 'rp2'],
    ]);
  });

  it('one that gives only the device’s QOM path', async () => {
    const ctx = await withDisks();
    deleteSending((id) => [{ path: `/machine/peripheral/${id}` }]);
    await unplugDevice(ctx, 'd2');
    expect(h.sent()).toEqual([
      ['device_del', { id: 'd2' }],
      ['blockdev-del', { 'node-name': 'drv-d2' }],
    ]);
    expect(ids(ctx)).toEqual([
      ['d0', 'rp0'],
      ['d1', 'rp1'],
    ]);
    expect(h.logs.at(-1)).toEqual({ level: 'info', msg: 'device removed', device: 'd2' });
  });

  it('not one for another device, by id or by path: the removal times out and nothing is forgotten', async () => {
    const ctx = await withDisks({ removalTimeoutMs: 100 });
    // Ids no device here has: an unrequested DEVICE_DELETED of a plugged device is the guest ejecting it.
    deleteSending(() => [
      { device: 'd9', path: '/machine/peripheral/d9' },
      { device: 'd1x' },
      { path: '/machine/peripheral/d1x' },
      { path: '/machine/peripheral/d1/virtio-backend' },
    ]);
    const error = await unplugDevice(ctx, 'd1').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DeviceRemovalTimeoutError);
    expect(error).toMatchObject({ deviceId: 'd1', timeoutMs: 100 });
    expect(h.sent()).toEqual([['device_del', { id: 'd1' }]]);
    expect(ids(ctx)).toEqual([
      ['d0', 'rp0'],
      ['d1', 'rp1'],
      ['d2', 'rp2'],
    ]);
  });
});

describe('device_del refused', () => {
  it('for a real reason: a HotplugError at once, no waiting, nothing deleted, the device kept', async () => {
    // A removal bound long past the test's own timeout: only not waiting at all gets the error in time.
    const ctx = await withDisks({ removalTimeoutMs: 60_000 });
    h.server.handle('device_del', () => {
      throw new QmpErrorReply('GenericError', "Bus 'rp1' does not support hotplugging");
    });
    const error = await unplugDevice(ctx, 'd1').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HotplugError);
    expect(error).toMatchObject({ deviceId: 'd1', step: 'device_del' });
    expect((error as HotplugError).cause).toBeInstanceOf(QmpCommandError);
    expect((error as HotplugError).cause).toMatchObject({ errorClass: 'GenericError', desc: "Bus 'rp1' does not support hotplugging" });
    expect(h.sent()).toEqual([['device_del', { id: 'd1' }]]);
    expect(ids(ctx)).toEqual([
      ['d0', 'rp0'],
      ['d1', 'rp1'],
      ['d2', 'rp2'],
    ]);
  });

  it.each(['Device d1 is already in the process of unplug', 'Device d1 is already in process of unplug', 'Unplug of device d1 is in progress'])(
    'with "%s": keeps waiting for the guest, and deletes the backend only after DEVICE_DELETED',
    async (desc) => {
      const ctx = await withDisks({ removalTimeoutMs: 60_000 });
      h.server.handle('device_del', () => {
        throw new QmpErrorReply('GenericError', desc);
      });
      h.server.handle('query-status', () => ({ status: 'running', running: true }));
      const unplug = tracked(unplugDevice(ctx, 'd1'));
      // Replies come in order: once this one is back, the device_del refusal has been handled too.
      await h.server.nextCommand('device_del');
      await h.qmp.execute('query-status');
      await turn();
      expect(unplug.settled).toBe(false);
      expect(h.sent().map(([name]) => name)).toEqual(['device_del', 'query-status']);
      expect(ids(ctx)).toContainEqual(['d1', 'rp1']);
      h.server.sendEvent('DEVICE_DELETED', { device: 'd1', path: '/machine/peripheral/d1' });
      await unplug.promise;
      expect(h.sent()).toEqual([
        ['device_del', { id: 'd1' }],
        ['query-status', undefined],
        ['blockdev-del', { 'node-name': 'drv-d1' }],
      ]);
      expect(ids(ctx)).toEqual([
        ['d0', 'rp0'],
        ['d2', 'rp2'],
      ]);
    },
  );

  it('with DeviceNotFound: the device is already gone, so the backend is deleted without waiting', async () => {
    const ctx = await withDisks({ removalTimeoutMs: 60_000 });
    h.server.handle('device_del', () => {
      throw new QmpErrorReply('DeviceNotFound', "Device 'd0' not found");
    });
    await unplugDevice(ctx, 'd0');
    expect(h.sent()).toEqual([
      ['device_del', { id: 'd0' }],
      ['blockdev-del', { 'node-name': 'drv-d0' }],
    ]);
    expect(ids(ctx)).toEqual([
      ['d1', 'rp1'],
      ['d2', 'rp2'],
    ]);
  });
});

describe('the wait ended by something else', () => {
  it('the operation’s deadline during device_del keeps its own error, not a HotplugError', async () => {
    const ctx = await withDisks({ timeoutMs: 100 });
    h.server.handle('device_del', () => NO_REPLY);
    const error = await unplugDevice(ctx, 'd0').catch((e: unknown) => e);
    expect(error).not.toBeInstanceOf(HotplugError);
    expect(error).toMatchObject({ code: 'TIMEOUT' });
    expect(ids(ctx)).toContainEqual(['d0', 'rp0']);
  });

  it('the operation’s deadline while the guest holds on keeps its own error, not DeviceRemovalTimeoutError', async () => {
    const ctx = await withDisks({ timeoutMs: 100, removalTimeoutMs: 60_000 });
    h.server.handle('device_del', () => ({}));
    const error = await unplugDevice(ctx, 'd0').catch((e: unknown) => e);
    expect(error).not.toBeInstanceOf(DeviceRemovalTimeoutError);
    expect(error).toMatchObject({ code: 'TIMEOUT' });
    expect(h.sent().map(([name]) => name)).toEqual(['device_del']);
    expect(ids(ctx)).toContainEqual(['d0', 'rp0']);
  });

  it('the connection lost during device_del is that command’s QmpDisconnectedError', async () => {
    const ctx = await withDisks({ removalTimeoutMs: 60_000 });
    h.server.handle('device_del', () => {
      h.server.endClients();
      return NO_REPLY;
    });
    const error = await unplugDevice(ctx, 'd0').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(QmpDisconnectedError);
    expect(error).toMatchObject({ command: 'device_del' });
    expect(ids(ctx)).toContainEqual(['d0', 'rp0']);
  });

  it('the connection lost while the guest holds on is a QmpDisconnectedError, not DeviceRemovalTimeoutError', async () => {
    const ctx = await withDisks({ removalTimeoutMs: 60_000 });
    h.server.handle('device_del', () => {
      setImmediate(() => h.server.endClients());
      return {};
    });
    const error = await unplugDevice(ctx, 'd0').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(QmpDisconnectedError);
    expect(ids(ctx)).toContainEqual(['d0', 'rp0']);
  });
});

describe('backend deletion', () => {
  it('a refused blockdev-del is a HotplugError at that step; the retry skips the gone frontend and finishes', async () => {
    const ctx = await withDisks();
    deleteSending((id) => [{ device: id, path: `/machine/peripheral/${id}` }]);
    h.server.handle('blockdev-del', () => {
      throw new QmpErrorReply('GenericError', "Node 'drv-d1' is busy: node is used as backing hd of 'x'");
    });
    const error = await unplugDevice(ctx, 'd1').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HotplugError);
    expect(error).toMatchObject({ deviceId: 'd1', step: 'blockdev-del' });
    expect((error as HotplugError).cause).toMatchObject({ desc: "Node 'drv-d1' is busy: node is used as backing hd of 'x'" });
    expect(ids(ctx)).toContainEqual(['d1', 'rp1']);
    expect(ctx.state.devices.find((d) => d.id === 'd1')?.backends).toEqual([{ kind: 'blockdev', nodeName: 'drv-d1' }]);

    h.server.handle('device_del', () => {
      throw new QmpErrorReply('DeviceNotFound', "Device 'd1' not found");
    });
    h.server.handle('blockdev-del', () => ({}));
    await unplugDevice(ctx, 'd1');
    expect(h.sent()).toEqual([
      ['device_del', { id: 'd1' }],
      ['blockdev-del', { 'node-name': 'drv-d1' }],
      ['device_del', { id: 'd1' }],
      ['blockdev-del', { 'node-name': 'drv-d1' }],
    ]);
    expect(ids(ctx)).toEqual([
      ['d0', 'rp0'],
      ['d2', 'rp2'],
    ]);
  });

  it('a backend QEMU no longer has counts as deleted', async () => {
    const ctx = await withDisks();
    deleteSending((id) => [{ device: id }]);
    h.server.handle('blockdev-del', () => {
      throw new QmpErrorReply('GenericError', "Failed to find node with node-name='drv-d0'");
    });
    await unplugDevice(ctx, 'd0');
    expect(ids(ctx)).toEqual([
      ['d1', 'rp1'],
      ['d2', 'rp2'],
    ]);
  });

  it('a refused netdev_del is a HotplugError at netdev_del; on the retry "not found" means done', async () => {
    const ctx = h.context();
    for (const c of ['netdev_add', 'device_add']) h.server.handle(c, () => ({}));
    await hotplugDevice(ctx, { type: 'net', id: 'n0', tap: { ifname: 'tap0' } });
    expect(ctx.state.devices[0]?.backends).toEqual([{ kind: 'netdev', id: 'net-n0' }]);
    deleteSending((id) => [{ device: id }]);
    h.server.handle('netdev_del', () => {
      throw new QmpErrorReply('GenericError', 'netdev net-n0 is in use');
    });
    await expect(unplugDevice(ctx, 'n0')).rejects.toMatchObject({ code: 'HOTPLUG_FAILED', deviceId: 'n0', step: 'netdev_del' });
    expect(ctx.state.devices.map((d) => d.id)).toEqual(['n0']);
    h.server.handle('netdev_del', () => {
      throw new QmpErrorReply('DeviceNotFound', "Device 'net-n0' not found");
    });
    await unplugDevice(ctx, 'n0');
    expect(h.changes().slice(2)).toEqual([
      ['device_del', { id: 'n0' }],
      ['netdev_del', { id: 'net-n0' }],
      ['device_del', { id: 'n0' }],
      ['netdev_del', { id: 'net-n0' }],
    ]);
    expect(ctx.state.devices).toEqual([]);
  });
});

describe('what cannot be removed', () => {
  it('an id that was never hot-added (a cold-plugged one included) is DeviceNotFoundError, with nothing sent', async () => {
    const ctx = h.context({ devices: [{ type: 'block', id: 'cold', path: '/var/cold.img' }] });
    await expect(unplugDevice(ctx, 'cold')).rejects.toBeInstanceOf(DeviceNotFoundError);
    await expect(unplugDevice(ctx, 'nope')).rejects.toMatchObject({ code: 'DEVICE_NOT_FOUND', deviceId: 'nope' });
    expect(h.sent()).toEqual([]);
  });
});
