// A hot-add that fails part-way: the step it failed at, what is taken back (with which arguments),
// what a failing rollback step leaves in the log, and that devices already plugged are untouched.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { HotplugError } from '../../../src/hypervisor/errors.ts';
import { QmpCommandError } from '../../../src/qmp/index.ts';
import type { HotplugContext } from '../../../src/qemu/hotplug/context.ts';
import { hotplugDevice } from '../../../src/qemu/hotplug/devices.ts';
import { NO_REPLY, QmpErrorReply } from '../../helpers/fake-qmp-server.ts';
import { loggedError, useHotplugHarness } from '../../helpers/hotplug-harness.ts';

const h = useHotplugHarness();

const refuse = (desc: string) => () => {
  throw new QmpErrorReply('GenericError', desc);
};

/** A VM with the VFIO device `gpu` already hot-added on rp0 (three ports), the server's log empty after. */
async function withGpu(): Promise<HotplugContext> {
  const ctx = h.context({ hotplug: { rootPorts: 3 } });
  h.server.handle('device_add', () => ({}));
  await hotplugDevice(ctx, { type: 'vfio', id: 'gpu', hostAddress: '0000:01:00.0' });
  h.server.received.length = 0;
  h.logs.length = 0;
  return ctx;
}

async function failure(promise: Promise<unknown>): Promise<HotplugError> {
  const error = await promise.catch((e: unknown) => e);
  expect(error).toBeInstanceOf(HotplugError);
  return error as HotplugError;
}

describe('the step a hot-add failed at', () => {
  it('blockdev-add: nothing to take back, and the device already plugged stays', async () => {
    const ctx = await withGpu();
    h.server.handle('blockdev-add', refuse("Could not open '/var/d0.img': No such file or directory"));
    const error = await failure(hotplugDevice(ctx, { type: 'block', id: 'd0', path: '/var/d0.img' }));
    expect(error).toMatchObject({ deviceId: 'd0', step: 'blockdev-add' });
    expect(error.cause).toBeInstanceOf(QmpCommandError);
    expect(h.changes().map(([name]) => name)).toEqual(['blockdev-add']);
    expect(ctx.state.devices.map((d) => [d.id, d.bus])).toEqual([['gpu', 'rp0']]);
    expect(h.logs.filter((r) => r.level === 'error')).toEqual([]);
  });

  it('netdev_add: nothing to take back', async () => {
    const ctx = await withGpu();
    h.server.handle('netdev_add', refuse("could not open /dev/net/tun: tap0 doesn't exist"));
    const error = await failure(hotplugDevice(ctx, { type: 'net', id: 'n0', tap: { ifname: 'tap0' } }));
    expect(error).toMatchObject({ deviceId: 'n0', step: 'netdev_add' });
    expect(h.changes().map(([name]) => name)).toEqual(['netdev_add']);
    expect(ctx.state.devices.map((d) => d.id)).toEqual(['gpu']);
  });

  it('device_add of a disk: its blockdev is deleted by node name, and the port it had is free again', async () => {
    const ctx = await withGpu();
    h.server.handle('blockdev-add', () => ({})).handle('blockdev-del', () => ({}));
    h.server.handle('device_add', refuse('Bus rp1 is full'));
    const error = await failure(hotplugDevice(ctx, { type: 'block', id: 'd0', path: '/var/d0.img' }));
    expect(error).toMatchObject({ deviceId: 'd0', step: 'device_add' });
    expect(h.changes()).toEqual([
      ['blockdev-add', expect.objectContaining({ 'node-name': 'drv-d0' })],
      ['device_add', expect.objectContaining({ id: 'd0', bus: 'rp1' })],
      ['blockdev-del', { 'node-name': 'drv-d0' }],
    ]);
    expect(ctx.state.devices.map((d) => [d.id, d.bus])).toEqual([['gpu', 'rp0']]);
    h.server.handle('device_add', () => ({}));
    expect(await hotplugDevice(ctx, { type: 'vfio', id: 'nic', hostAddress: '0000:02:00.0' })).toEqual({ id: 'nic', type: 'vfio', bus: 'rp1' });
  });

  it('a blockdev-del that fails during the rollback is logged with its step, and the hot-add still fails at device_add', async () => {
    const ctx = await withGpu();
    h.server.handle('blockdev-add', () => ({}));
    h.server.handle('device_add', refuse('Bus rp1 is full'));
    h.server.handle('blockdev-del', refuse("Node 'drv-d0' is busy"));
    const error = await failure(hotplugDevice(ctx, { type: 'block', id: 'd0', path: '/var/d0.img' }));
    expect(error).toMatchObject({ deviceId: 'd0', step: 'device_add' });
    expect((error.cause as QmpCommandError).desc).toBe('Bus rp1 is full');
    expect(h.changes().at(-1)).toEqual(['blockdev-del', { 'node-name': 'drv-d0' }]);
    const errors = h.logs.filter((r) => r.level === 'error');
    expect(errors).toEqual([{ level: 'error', msg: 'rollback step failed', step: 'blockdev-del', err: loggedError("Node 'drv-d0' is busy") }]);
    expect(ctx.state.devices.map((d) => d.id)).toEqual(['gpu']);
  });

  it('a netdev_del that fails during the rollback is logged as the netdev_del step', async () => {
    const ctx = await withGpu();
    h.server.handle('netdev_add', () => ({}));
    h.server.handle('device_add', refuse('nope'));
    h.server.handle('netdev_del', refuse('netdev busy'));
    const error = await failure(hotplugDevice(ctx, { type: 'net', id: 'n0', tap: { ifname: 'tap0' } }));
    expect(error).toMatchObject({ deviceId: 'n0', step: 'device_add' });
    expect(h.changes().at(-1)).toEqual(['netdev_del', { id: 'net-n0' }]);
    expect(h.logs.filter((r) => r.level === 'error')).toEqual([
      { level: 'error', msg: 'rollback step failed', step: 'netdev_del', err: loggedError('netdev busy') },
    ]);
  });

  it('the deadline at device_add keeps its own error, and the blockdev is still taken back', async () => {
    const ctx = h.context({}, { timeoutMs: 100 });
    h.server.handle('blockdev-add', () => ({})).handle('blockdev-del', () => ({}));
    h.server.handle('device_add', () => NO_REPLY);
    const error = await hotplugDevice(ctx, { type: 'block', id: 'd0', path: '/var/d0.img' }).catch((e: unknown) => e);
    expect(error).not.toBeInstanceOf(HotplugError);
    expect(error).toMatchObject({ code: 'TIMEOUT' });
    expect(h.changes().map(([name, args]) => [name, name === 'blockdev-del' ? args : undefined])).toEqual([
      ['blockdev-add', undefined],
      ['device_add', undefined],
      ['blockdev-del', { 'node-name': 'drv-d0' }],
    ]);
    expect(ctx.state.devices).toEqual([]);
  });
});

describe('a QEMU that never answers a rollback step', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('the blockdev-del gives up after its own bound (not the client’s 30 s), is logged, and the hot-add fails at device_add', async () => {
    const ctx = h.context({}, { timeoutMs: 60_000 });
    h.server.handle('blockdev-add', () => ({})).handle('device_add', refuse('Bus rp0 is full'));
    h.server.handle('blockdev-del', () => NO_REPLY);
    // Only setTimeout is faked: the socket and the fake server run as usual.
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const plugged = hotplugDevice(ctx, { type: 'block', id: 'd0', path: '/var/d0.img' }).catch((e: unknown) => e);
    await h.server.nextCommand('blockdev-del');
    await vi.advanceTimersByTimeAsync(5_000);
    const error = await plugged;
    expect(error).toBeInstanceOf(HotplugError);
    expect(error).toMatchObject({ deviceId: 'd0', step: 'device_add' });
    expect(h.logs.filter((r) => r.level === 'error')).toEqual([{ level: 'error', msg: 'rollback step failed', step: 'blockdev-del', err: loggedError('blockdev-del') }]);
    expect(ctx.state.devices).toEqual([]);
  });
});

describe('what a successful hot-add records', () => {
  it('the backend to delete later, and a log line naming device, type and port', async () => {
    const ctx = await withGpu();
    h.server.handle('blockdev-add', () => ({}));
    await hotplugDevice(ctx, { type: 'block', id: 'd0', path: '/var/d0.img' });
    expect(ctx.state.devices.map((d) => [d.id, d.bus, d.backends])).toEqual([
      ['gpu', 'rp0', []],
      ['d0', 'rp1', [{ kind: 'blockdev', nodeName: 'drv-d0' }]],
    ]);
    expect(h.logs).toEqual([{ level: 'info', msg: 'device hot-added', device: 'd0', type: 'block', bus: 'rp1' }]);
  });
});

describe('the SCSI controller', () => {
  const scsi = (id: string) => ({ type: 'block', id, path: `/var/${id}.img`, driver: 'virtio-scsi' }) as const;

  it('refused: every SCSI disk waiting for it fails at that step, its port is freed, and the next disk tries again', async () => {
    const ctx = h.context();
    h.server.handle('blockdev-add', () => ({}));
    h.server.handle('device_add', (args) => {
      if (args?.['driver'] === 'virtio-scsi-pci') throw new QmpErrorReply('GenericError', 'no virtio-scsi here');
      return {};
    });
    const results = await Promise.allSettled([hotplugDevice(ctx, scsi('s0')), hotplugDevice(ctx, scsi('s1'))]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected']);
    const reasons = results.map((r) => (r.status === 'rejected' ? (r.reason as HotplugError) : undefined));
    expect(reasons.map((e) => [e?.code, e?.deviceId, e?.step])).toEqual([
      ['HOTPLUG_FAILED', 's0', 'device_add virtio-scsi-pci'],
      ['HOTPLUG_FAILED', 's1', 'device_add virtio-scsi-pci'],
    ]);
    expect(h.changes()).toEqual([['device_add', { driver: 'virtio-scsi-pci', id: 'scsi0', bus: 'rp0' }]]);
    expect(ctx.state.infrastructure).toEqual([]);
    expect(ctx.state.devices).toEqual([]);

    h.server.handle('device_add', () => ({}));
    expect(await hotplugDevice(ctx, scsi('s2'))).toEqual({ id: 's2', type: 'block', bus: 'scsi0.0' });
    expect(h.changes().slice(1).map(([name, args]) => [name, args?.['driver']])).toEqual([
      ['device_add', 'virtio-scsi-pci'],
      ['blockdev-add', 'raw'],
      ['device_add', 'scsi-hd'],
    ]);
    expect(ctx.state.infrastructure).toEqual([{ id: 'scsi0', bus: 'rp0' }]);
  });

  it('is not added when the config already has a SCSI disk (and so the controller)', async () => {
    const ctx = h.context({
      devices: [
        { type: 'vsock', id: 'sock', guestCid: 3 },
        { type: 'block', id: 'cold', path: '/var/cold.img', driver: 'virtio-scsi' },
      ],
    });
    for (const c of ['blockdev-add', 'device_add']) h.server.handle(c, () => ({}));
    expect(await hotplugDevice(ctx, scsi('s0'))).toEqual({ id: 's0', type: 'block', bus: 'scsi0.0' });
    expect(h.changes().map(([name, args]) => [name, args?.['driver']])).toEqual([
      ['blockdev-add', 'raw'],
      ['device_add', 'scsi-hd'],
    ]);
    expect(ctx.state.infrastructure).toEqual([]);
  });

  it('is added when the config’s disks are all virtio-blk', async () => {
    const ctx = h.context({ devices: [{ type: 'block', id: 'cold', path: '/var/cold.img' }] });
    for (const c of ['blockdev-add', 'device_add']) h.server.handle(c, () => ({}));
    await hotplugDevice(ctx, scsi('s0'));
    expect(h.changes()[0]).toEqual(['device_add', { driver: 'virtio-scsi-pci', id: 'scsi0', bus: 'rp0' }]);
    expect(ctx.state.infrastructure).toEqual([{ id: 'scsi0', bus: 'rp0' }]);
  });

  it('a second SCSI disk waits until the controller is in before its own blockdev-add', async () => {
    const ctx = h.context();
    let release: (() => void) | undefined;
    h.server.handle('blockdev-add', () => ({}));
    h.server.handle('device_add', (args) =>
      args?.['driver'] === 'virtio-scsi-pci' ? new Promise((resolve) => (release = () => resolve({}))) : {},
    );
    const first = hotplugDevice(ctx, scsi('s0'));
    await h.server.nextCommand('device_add');
    const second = hotplugDevice(ctx, scsi('s1'));
    // A round trip: had s1 not waited for the controller, its blockdev-add would be in by now.
    h.server.handle('query-status', () => ({ status: 'running', running: true }));
    await h.qmp.execute('query-status');
    expect(h.changes().map(([name]) => name)).toEqual(['device_add']);
    release?.();
    await Promise.all([first, second]);
    expect(h.changes().map(([name, args]) => [name, args?.['driver']])).toEqual([
      ['device_add', 'virtio-scsi-pci'],
      ['blockdev-add', 'raw'],
      ['blockdev-add', 'raw'],
      ['device_add', 'scsi-hd'],
      ['device_add', 'scsi-hd'],
    ]);
  });
});
