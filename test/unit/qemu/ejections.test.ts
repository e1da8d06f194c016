// A guest that ejects a hot-plugged device on its own, against a fake QMP server: which
// DEVICE_DELETED events count as an ejection, what is sent to QEMU to settle it, and how it meets a
// removal the caller asked for.
import { vcpuRules } from '../../../src/hypervisor/resources.ts';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { parseSandboxConfig, type SandboxConfigInput } from '../../../src/hypervisor/config/index.ts';
import { DeviceNotFoundError, DeviceRemovalTimeoutError, HotplugError, InvalidReplyError } from '../../../src/hypervisor/errors.ts';
import type { HypervisorEvent } from '../../../src/hypervisor/types.ts';
import { QmpClient } from '../../../src/qmp/index.ts';
import type { HotplugContext } from '../../../src/qemu/hotplug/context.ts';
import { hotplugDevice, unplugDevice } from '../../../src/qemu/hotplug/devices.ts';
import { EjectionReconciler } from '../../../src/qemu/hotplug/ejections.ts';
import { emptyHotplugState } from '../../../src/qemu/hotplug/state.ts';
import { Deadline } from '../../../src/util/deadline.ts';
import { FakeQmpServer, NO_REPLY, QmpErrorReply } from '../../helpers/fake-qmp-server.ts';
import { loggedError, recordingLogger, type LogRecord } from '../../helpers/hotplug-harness.ts';

let server: FakeQmpServer;
let qmp: QmpClient;
const deadlines: Deadline[] = [];

beforeEach(async () => {
  server = await FakeQmpServer.start();
  for (const command of ['blockdev-add', 'device_add', 'netdev_add', 'blockdev-del', 'netdev_del', 'query-status']) server.handle(command, () => ({}));
  qmp = await QmpClient.connect(server.path);
});

afterEach(async () => {
  vi.useRealTimers();
  for (const d of deadlines.splice(0)) d.dispose();
  await qmp.close();
  await server.close();
});

interface Rig {
  ctx: HotplugContext;
  reconciler: EjectionReconciler;
  /** What the caller was told, in order. */
  reported: HypervisorEvent[];
  /** The hot-plugged device ids each saveState saw, in order. */
  saved: string[][];
  /** saveState calls and reports, in the order they happened. */
  order: string[];
  /** What the hotplug operations and the reconciler logged (one logger, as in the QEMU backend). */
  logs: LogRecord[];
}

interface RigOptions {
  removalTimeoutMs?: number;
  /** Whether QEMU is gone (the host then has no context to give). */
  qemuGone?: () => boolean;
  /** Why saveState fails, when it does. */
  saveFails?: () => Error | undefined;
  /** Default 2 s (x86_64's). */
  freedSlotSettleMs?: number;
}

function rig(config: Partial<SandboxConfigInput> = {}, options: RigOptions = {}): Rig {
  const { removalTimeoutMs = 2_000, qemuGone = () => false, saveFails = () => undefined, freedSlotSettleMs = 2_000 } = options;
  const deadline = new Deadline('test', { timeoutMs: 5_000 });
  deadlines.push(deadline);
  const { logger, records: logs } = recordingLogger();
  const ctx: HotplugContext = {
    qmp,
    config: parseSandboxConfig({ boot: { kernel: '/k' }, hotplug: { rootPorts: 2 }, ...config }),
    state: emptyHotplugState(),
    vcpuRules: vcpuRules(parseSandboxConfig({ boot: { kernel: '/k' }, hotplug: { rootPorts: 2 }, ...config }), undefined),
    deadline,
    logger,
    removalTimeoutMs,
    freedSlotSettleMs,
  };
  const reported: HypervisorEvent[] = [];
  const saved: string[][] = [];
  const order: string[] = [];
  const reconciler = new EjectionReconciler({
    state: () => ctx.state,
    context: (cleanup) => (qemuGone() ? undefined : { ...ctx, deadline: cleanup }),
    saveState: () => {
      saved.push(ctx.state.devices.map((d) => d.id));
      order.push('save');
      const failure = saveFails();
      return failure ? Promise.reject(failure) : Promise.resolve();
    },
    report: (event) => {
      reported.push(event);
      order.push(`report ${event.data.id}`);
    },
    logger: () => logger,
  });
  // As the QEMU backend does: every event of the connection goes through the reconciler.
  qmp.on('*', (event) => reconciler.onQmpEvent(event));
  return { ctx, reconciler, reported, saved, order, logs };
}

/** The commands the server got since `from`, as [name, arguments]. */
function sentSince(from: number): [string, Record<string, unknown> | undefined][] {
  return server.received.slice(from).map((c) => [c.execute, c.arguments]);
}

/**
 * Lets events sent so far reach the client (the server sends them before this command's reply),
 * then waits for what the reconciler began to settle.
 */
async function settle(r: Rig): Promise<void> {
  await qmp.execute('query-status');
  await r.reconciler.settled();
}

const ejected = (id: string, type: string, bus: string): HypervisorEvent => ({ name: 'DEVICE_EJECTED', data: { id, type, bus } });
/** The warning each ejection leaves, naming the device and where it was. */
const ejectedLog = (device: string, bus: string): LogRecord => ({ level: 'warn', msg: 'the guest ejected a device on its own', device, bus });
const controllerEjectedLog = (port: string): LogRecord => ({ level: 'warn', msg: 'the guest ejected the SCSI controller', port });
const releasedLog = (device: string): LogRecord => ({ level: 'debug', msg: 'the guest released a device whose removal was asked for: the removal finishes it', device });

/** The error logged when an ejected d0's block node is left in QEMU, with what went wrong. */
function d0BackendsLeft(error: string): Record<string, unknown> {
  return { level: 'error', msg: 'the backends of an ejected device could not be deleted', err: loggedError(error), device: 'd0', backends: [{ kind: 'blockdev', nodeName: 'drv-d0' }] };
}

describe('an unrequested DEVICE_DELETED', () => {
  it('named by its device key alone: the blockdev is deleted, the device leaves the saved state, then the caller is told', async () => {
    const r = rig();
    await hotplugDevice(r.ctx, { type: 'block', id: 'd0', path: '/var/d0.img' });
    r.logs.length = 0;
    const from = server.received.length;
    server.sendEvent('DEVICE_DELETED', { device: 'd0' });
    await settle(r);
    expect(sentSince(from)).toEqual([
      ['query-status', undefined],
      ['blockdev-del', { 'node-name': 'drv-d0' }],
    ]);
    expect(r.ctx.state.devices).toEqual([]);
    expect(r.saved).toEqual([[]]);
    expect(r.order).toEqual(['save', 'report d0']);
    expect(r.reported).toEqual([ejected('d0', 'block', 'rp0')]);
    expect(r.logs).toEqual([ejectedLog('d0', 'rp0')]);
  });

  it('frees the slot for the guest to settle: it is handed out after a port never used', async () => {
    const r = rig({ hotplug: { rootPorts: 2 } });
    await hotplugDevice(r.ctx, { type: 'block', id: 'd0', path: '/var/d0.img' });
    server.sendEvent('DEVICE_DELETED', { device: 'd0', path: '/machine/peripheral/d0' });
    await settle(r);
    expect((await hotplugDevice(r.ctx, { type: 'block', id: 'e0', path: '/var/e0.img' })).bus).toBe('rp1');
  });

  it('of the SCSI controller frees its slot for the guest to settle too', async () => {
    const r = rig({ hotplug: { rootPorts: 2 } });
    await hotplugDevice(r.ctx, { type: 'block', id: 's0', path: '/var/s0.img', driver: 'virtio-scsi' });
    expect(r.ctx.state.infrastructure).toEqual([{ id: 'scsi0', bus: 'rp0' }]);
    server.sendEvent('DEVICE_DELETED', { device: 'scsi0', path: '/machine/peripheral/scsi0' });
    await settle(r);
    expect((await hotplugDevice(r.ctx, { type: 'block', id: 'e0', path: '/var/e0.img' })).bus).toBe('rp1');
  });

  it('named by its path alone: the netdev is deleted and the slot is handed out again', async () => {
    // One slot, handed out again as soon as it is free.
    const r = rig({ hotplug: { rootPorts: 1 } }, { freedSlotSettleMs: 0 });
    await hotplugDevice(r.ctx, { type: 'net', id: 'n0', tap: { ifname: 'tap0' } });
    const from = server.received.length;
    server.sendEvent('DEVICE_DELETED', { path: '/machine/peripheral/n0' });
    await settle(r);
    expect(sentSince(from)).toEqual([
      ['query-status', undefined],
      ['netdev_del', { id: 'net-n0' }],
    ]);
    expect(r.reported).toEqual([ejected('n0', 'net', 'rp0')]);
    expect((await hotplugDevice(r.ctx, { type: 'vfio', id: 'g', hostAddress: '0000:01:00.0' })).bus).toBe('rp0');
  });

  it('for a device with no backend (VFIO) sends nothing and still frees the slot', async () => {
    const r = rig();
    await hotplugDevice(r.ctx, { type: 'vfio', id: 'g', hostAddress: '0000:01:00.0' });
    r.logs.length = 0;
    const from = server.received.length;
    server.sendEvent('DEVICE_DELETED', { device: 'g', path: '/machine/peripheral/g' });
    await settle(r);
    expect(sentSince(from)).toEqual([['query-status', undefined]]);
    expect(r.reported).toEqual([ejected('g', 'vfio', 'rp0')]);
    expect(r.ctx.state.devices).toEqual([]);
    expect(r.logs).toEqual([ejectedLog('g', 'rp0')]);
  });

  it('for a device with no backend, arriving while QEMU is being torn down, has no backends to speak of', async () => {
    let gone = false;
    const r = rig({}, { qemuGone: () => gone });
    await hotplugDevice(r.ctx, { type: 'vfio', id: 'g', hostAddress: '0000:01:00.0' });
    r.logs.length = 0;
    gone = true;
    server.sendEvent('DEVICE_DELETED', { device: 'g' });
    await settle(r);
    expect(r.reported).toEqual([ejected('g', 'vfio', 'rp0')]);
    expect(r.logs).toEqual([ejectedLog('g', 'rp0')]);
  });

  it('is reported even when the state cannot be saved, and the failed save is logged', async () => {
    const r = rig({}, { saveFails: () => new Error('ENOSPC: no space left on device') });
    await hotplugDevice(r.ctx, { type: 'block', id: 'd0', path: '/var/d0.img' });
    r.logs.length = 0;
    server.sendEvent('DEVICE_DELETED', { device: 'd0' });
    await settle(r);
    expect(r.order).toEqual(['save', 'report d0']);
    expect(r.reported).toEqual([ejected('d0', 'block', 'rp0')]);
    expect(r.ctx.state.devices).toEqual([]);
    expect(r.logs).toEqual([
      ejectedLog('d0', 'rp0'),
      { level: 'error', msg: 'the state could not be saved after an ejection', err: loggedError('ENOSPC') },
    ]);
  });

  it('naming an unknown id, a child of a device, or a cold-plugged device changes nothing', async () => {
    const r = rig({ devices: [{ type: 'rng', id: 'rng0' }] });
    await hotplugDevice(r.ctx, { type: 'block', id: 'd0', path: '/var/d0.img' });
    const from = server.received.length;
    server.sendEvent('DEVICE_DELETED', { device: 'other', path: '/machine/peripheral/other' });
    server.sendEvent('DEVICE_DELETED', { path: '/machine/peripheral/d0/virtio-backend' });
    server.sendEvent('DEVICE_DELETED', { path: '/machine/peripheral-anon/d0' });
    server.sendEvent('DEVICE_DELETED', { device: 'rng0', path: '/machine/peripheral/rng0' });
    await settle(r);
    expect(sentSince(from)).toEqual([['query-status', undefined]]);
    expect(r.reported).toEqual([]);
    expect(r.saved).toEqual([]);
    expect(r.ctx.state.devices.map((d) => d.id)).toEqual(['d0']);
  });

  it('only DEVICE_DELETED counts: another event naming the device (the guest refusing an unplug) changes nothing', async () => {
    const r = rig();
    await hotplugDevice(r.ctx, { type: 'block', id: 'd0', path: '/var/d0.img' });
    r.logs.length = 0;
    const from = server.received.length;
    server.sendEvent('DEVICE_UNPLUG_GUEST_ERROR', { device: 'd0', path: '/machine/peripheral/d0' });
    server.sendEvent('DEVICE_TRAY_MOVED', { device: 'd0', id: 'd0', 'tray-open': true });
    await settle(r);
    expect(sentSince(from)).toEqual([['query-status', undefined]]);
    expect(r.reported).toEqual([]);
    expect(r.saved).toEqual([]);
    expect(r.ctx.state.devices.map((d) => d.id)).toEqual(['d0']);
    expect(r.logs).toEqual([]);
  });

  it('of the SCSI controller the backend added ejects its disks and frees its port; the next SCSI disk adds a new one', async () => {
    // One slot, handed out again as soon as it is free.
    const r = rig({ hotplug: { rootPorts: 1 } }, { freedSlotSettleMs: 0 });
    await hotplugDevice(r.ctx, { type: 'block', id: 's0', path: '/var/s0.img', driver: 'virtio-scsi' });
    await hotplugDevice(r.ctx, { type: 'block', id: 's1', path: '/var/s1.img', driver: 'virtio-scsi' });
    expect(r.ctx.state.infrastructure).toEqual([{ id: 'scsi0', bus: 'rp0' }]);
    r.logs.length = 0;
    const from = server.received.length;
    server.sendEvent('DEVICE_DELETED', { device: 'scsi0', path: '/machine/peripheral/scsi0' });
    // QEMU may also name the disks that went with it: they are not settled twice.
    server.sendEvent('DEVICE_DELETED', { device: 's0', path: '/machine/peripheral/s0' });
    await settle(r);
    expect(sentSince(from).filter(([name]) => name === 'blockdev-del')).toEqual([
      ['blockdev-del', { 'node-name': 'drv-s0' }],
      ['blockdev-del', { 'node-name': 'drv-s1' }],
    ]);
    expect(r.reported).toEqual([ejected('s0', 'block', 'scsi0.0'), ejected('s1', 'block', 'scsi0.0')]);
    expect(r.logs).toEqual([controllerEjectedLog('rp0'), ejectedLog('s0', 'scsi0.0'), ejectedLog('s1', 'scsi0.0')]);
    expect(r.ctx.state.infrastructure).toEqual([]);
    expect(r.ctx.state.devices).toEqual([]);
    await hotplugDevice(r.ctx, { type: 'block', id: 's2', path: '/var/s2.img', driver: 'virtio-scsi' });
    expect(r.ctx.state.infrastructure).toEqual([{ id: 'scsi0', bus: 'rp0' }]);
  });

  it('of the SCSI controller with no disk left frees its port and saves the state, reporting nothing', async () => {
    const r = rig();
    await hotplugDevice(r.ctx, { type: 'block', id: 's0', path: '/var/s0.img', driver: 'virtio-scsi' });
    server.handle('device_del', (args) => {
      server.sendEvent('DEVICE_DELETED', { device: String(args?.['id']) });
      return {};
    });
    await unplugDevice(r.ctx, 's0');
    r.logs.length = 0;
    server.sendEvent('DEVICE_DELETED', { path: '/machine/peripheral/scsi0' });
    await settle(r);
    expect(r.ctx.state.infrastructure).toEqual([]);
    expect(r.saved).toEqual([[]]);
    expect(r.reported).toEqual([]);
    expect(r.logs).toEqual([controllerEjectedLog('rp0')]);
  });

  it('of the SCSI controller ejects its own disks only: a virtio-blk disk on another port stays', async () => {
    const r = rig({ hotplug: { rootPorts: 3 } });
    await hotplugDevice(r.ctx, { type: 'block', id: 's0', path: '/var/s0.img', driver: 'virtio-scsi' });
    await hotplugDevice(r.ctx, { type: 'block', id: 'd0', path: '/var/d0.img' });
    await hotplugDevice(r.ctx, { type: 'block', id: 's1', path: '/var/s1.img', driver: 'virtio-scsi' });
    r.logs.length = 0;
    const from = server.received.length;
    server.sendEvent('DEVICE_DELETED', { device: 'scsi0', path: '/machine/peripheral/scsi0' });
    await settle(r);
    expect(sentSince(from)).toEqual([
      ['query-status', undefined],
      ['blockdev-del', { 'node-name': 'drv-s0' }],
      ['blockdev-del', { 'node-name': 'drv-s1' }],
    ]);
    expect(r.reported).toEqual([ejected('s0', 'block', 'scsi0.0'), ejected('s1', 'block', 'scsi0.0')]);
    expect(r.ctx.state.devices.map((d) => [d.id, d.bus])).toEqual([['d0', 'rp1']]);
    expect(r.ctx.state.infrastructure).toEqual([]);
    expect(r.logs).toEqual([controllerEjectedLog('rp0'), ejectedLog('s0', 'scsi0.0'), ejectedLog('s1', 'scsi0.0')]);
  });

  it('of another device leaves the SCSI controller and its disks alone', async () => {
    const r = rig();
    await hotplugDevice(r.ctx, { type: 'block', id: 's0', path: '/var/s0.img', driver: 'virtio-scsi' });
    await hotplugDevice(r.ctx, { type: 'block', id: 'd0', path: '/var/d0.img' });
    r.logs.length = 0;
    const from = server.received.length;
    server.sendEvent('DEVICE_DELETED', { device: 'd0', path: '/machine/peripheral/d0' });
    await settle(r);
    expect(sentSince(from)).toEqual([
      ['query-status', undefined],
      ['blockdev-del', { 'node-name': 'drv-d0' }],
    ]);
    expect(r.reported).toEqual([ejected('d0', 'block', 'rp1')]);
    expect(r.ctx.state.infrastructure).toEqual([{ id: 'scsi0', bus: 'rp0' }]);
    expect(r.ctx.state.devices.map((d) => [d.id, d.bus])).toEqual([['s0', 'scsi0.0']]);
    expect(r.logs).toEqual([ejectedLog('d0', 'rp1')]);
  });

  it('of a SCSI disk, then of its controller: the disk is settled once', async () => {
    const r = rig();
    await hotplugDevice(r.ctx, { type: 'block', id: 's0', path: '/var/s0.img', driver: 'virtio-scsi' });
    await hotplugDevice(r.ctx, { type: 'block', id: 's1', path: '/var/s1.img', driver: 'virtio-scsi' });
    r.logs.length = 0;
    const from = server.received.length;
    server.sendEvent('DEVICE_DELETED', { device: 's0', path: '/machine/peripheral/s0' });
    server.sendEvent('DEVICE_DELETED', { device: 'scsi0', path: '/machine/peripheral/scsi0' });
    await settle(r);
    expect(sentSince(from)).toEqual([
      ['query-status', undefined],
      ['blockdev-del', { 'node-name': 'drv-s0' }],
      ['blockdev-del', { 'node-name': 'drv-s1' }],
    ]);
    expect(r.reported).toEqual([ejected('s0', 'block', 'scsi0.0'), ejected('s1', 'block', 'scsi0.0')]);
    expect(r.logs).toEqual([ejectedLog('s0', 'scsi0.0'), controllerEjectedLog('rp0'), ejectedLog('s1', 'scsi0.0')]);
    expect(r.ctx.state.devices).toEqual([]);
  });

  it('of the SCSI controller leaves a disk whose removal timed out to that removal, which the retry finishes', async () => {
    const r = rig({}, { removalTimeoutMs: 100 });
    await hotplugDevice(r.ctx, { type: 'block', id: 's0', path: '/var/s0.img', driver: 'virtio-scsi' });
    await hotplugDevice(r.ctx, { type: 'block', id: 's1', path: '/var/s1.img', driver: 'virtio-scsi' });
    server.handle('device_del', () => ({}));
    await expect(unplugDevice(r.ctx, 's0')).rejects.toBeInstanceOf(DeviceRemovalTimeoutError);
    r.logs.length = 0;
    const from = server.received.length;
    server.sendEvent('DEVICE_DELETED', { device: 'scsi0', path: '/machine/peripheral/scsi0' });
    await settle(r);
    expect(sentSince(from)).toEqual([
      ['query-status', undefined],
      ['blockdev-del', { 'node-name': 'drv-s1' }],
    ]);
    expect(r.reported).toEqual([ejected('s1', 'block', 'scsi0.0')]);
    expect(r.ctx.state.devices.map((d) => d.id)).toEqual(['s0']);
    expect(r.logs).toEqual([controllerEjectedLog('rp0'), ejectedLog('s1', 'scsi0.0')]);
    server.handle('device_del', () => {
      throw new QmpErrorReply('DeviceNotFound', "Device 's0' not found");
    });
    await unplugDevice(r.ctx, 's0');
    expect(sentSince(from).filter(([name]) => name === 'blockdev-del')).toEqual([
      ['blockdev-del', { 'node-name': 'drv-s1' }],
      ['blockdev-del', { 'node-name': 'drv-s0' }],
    ]);
    expect(r.ctx.state.devices).toEqual([]);
    expect(r.reported).toEqual([ejected('s1', 'block', 'scsi0.0')]);
  });

  it('arriving while QEMU is being torn down sends nothing, and still takes the device out of the books', async () => {
    let gone = false;
    const r = rig({}, { qemuGone: () => gone });
    await hotplugDevice(r.ctx, { type: 'block', id: 'd0', path: '/var/d0.img' });
    r.logs.length = 0;
    gone = true;
    const from = server.received.length;
    server.sendEvent('DEVICE_DELETED', { device: 'd0' });
    await settle(r);
    expect(sentSince(from)).toEqual([['query-status', undefined]]);
    expect(r.ctx.state.devices).toEqual([]);
    expect(r.reported).toEqual([ejected('d0', 'block', 'rp0')]);
    expect(r.logs).toEqual([ejectedLog('d0', 'rp0'), { level: 'debug', msg: 'QEMU is gone: the ejected device’s backends went with it', device: 'd0' }]);
  });

  it('whose backend cannot be deleted still takes the device out of the books and is reported', async () => {
    const r = rig();
    await hotplugDevice(r.ctx, { type: 'block', id: 'd0', path: '/var/d0.img' });
    server.handle('blockdev-del', () => {
      throw new QmpErrorReply('GenericError', "Node 'drv-d0' is busy: block device is in use by block job");
    });
    r.logs.length = 0;
    server.sendEvent('DEVICE_DELETED', { device: 'd0' });
    await settle(r);
    expect(r.reported).toEqual([ejected('d0', 'block', 'rp0')]);
    expect(r.ctx.state.devices).toEqual([]);
    // What is left in QEMU is named.
    expect(r.logs).toEqual([ejectedLog('d0', 'rp0'), d0BackendsLeft("Node 'drv-d0' is busy")]);
  });

  it('whose backend deletion QEMU never answers gives up after its own 5 s bound, then settles', async () => {
    const r = rig();
    await hotplugDevice(r.ctx, { type: 'block', id: 'd0', path: '/var/d0.img' });
    server.handle('blockdev-del', () => NO_REPLY);
    r.logs.length = 0;
    // Only setTimeout is faked: the socket and the fake server run as usual.
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const deleting = server.nextCommand('blockdev-del');
    server.sendEvent('DEVICE_DELETED', { device: 'd0' });
    await deleting;
    await vi.advanceTimersByTimeAsync(5_000);
    // What the bound set off settles without further I/O: done before this round trip's reply.
    await qmp.execute('query-status');
    expect(r.reported).toEqual([ejected('d0', 'block', 'rp0')]);
    expect(r.ctx.state.devices).toEqual([]);
    expect(r.logs).toEqual([ejectedLog('d0', 'rp0'), d0BackendsLeft('backend deletion of ejected device d0 did not finish within 5000 ms')]);
  });

  it('leaves no timer behind once settled (its cleanup bound is released)', async () => {
    const r = rig();
    await hotplugDevice(r.ctx, { type: 'block', id: 'd0', path: '/var/d0.img' });
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    server.sendEvent('DEVICE_DELETED', { device: 'd0' });
    await settle(r);
    expect(r.reported).toEqual([ejected('d0', 'block', 'rp0')]);
    expect(vi.getTimerCount()).toBe(0);
  });
});

describe('a removal the caller asked for', () => {
  it('ends on its DEVICE_DELETED, deleting the backend once, and is no ejection', async () => {
    const r = rig();
    await hotplugDevice(r.ctx, { type: 'block', id: 'd0', path: '/var/d0.img' });
    server.handle('device_del', (args) => {
      server.sendEvent('DEVICE_DELETED', { device: String(args?.['id']) });
      return {};
    });
    const from = server.received.length;
    await unplugDevice(r.ctx, 'd0');
    await settle(r);
    expect(sentSince(from)).toEqual([
      ['device_del', { id: 'd0' }],
      ['blockdev-del', { 'node-name': 'drv-d0' }],
      ['query-status', undefined],
    ]);
    expect(r.reported).toEqual([]);
    expect(r.ctx.state.devices).toEqual([]);
  });

  it('that timed out stays the caller’s: the guest’s late release is no ejection, and the retry finishes it', async () => {
    const r = rig({}, { removalTimeoutMs: 100 });
    await hotplugDevice(r.ctx, { type: 'net', id: 'n0', tap: { ifname: 'tap0' } });
    server.handle('device_del', () => ({}));
    await expect(unplugDevice(r.ctx, 'n0')).rejects.toBeInstanceOf(DeviceRemovalTimeoutError);
    r.logs.length = 0;
    const from = server.received.length;
    server.sendEvent('DEVICE_DELETED', { device: 'n0', path: '/machine/peripheral/n0' });
    await settle(r);
    expect(r.reported).toEqual([]);
    expect(r.logs).toEqual([releasedLog('n0')]);
    expect(sentSince(from)).toEqual([['query-status', undefined]]);
    expect(r.ctx.state.devices.map((d) => d.id)).toEqual(['n0']);
    server.handle('device_del', () => {
      throw new QmpErrorReply('DeviceNotFound', "Device 'n0' not found");
    });
    await unplugDevice(r.ctx, 'n0');
    expect(sentSince(from).filter(([name]) => name === 'netdev_del')).toEqual([['netdev_del', { id: 'net-n0' }]]);
    expect(r.ctx.state.devices).toEqual([]);
  });

  it('that QEMU refused leaves the device the guest’s to eject', async () => {
    const r = rig();
    await hotplugDevice(r.ctx, { type: 'block', id: 'd0', path: '/var/d0.img' });
    server.handle('device_del', () => {
      throw new QmpErrorReply('GenericError', 'Bus rp0 does not support hotplugging');
    });
    await expect(unplugDevice(r.ctx, 'd0')).rejects.toBeInstanceOf(HotplugError);
    server.sendEvent('DEVICE_DELETED', { device: 'd0' });
    await settle(r);
    expect(r.reported).toEqual([ejected('d0', 'block', 'rp0')]);
  });

  it('that begins once the ejection was noticed finds no device, even while the backend is still being deleted', async () => {
    const r = rig();
    await hotplugDevice(r.ctx, { type: 'block', id: 'd0', path: '/var/d0.img' });
    let answerDelete: () => void = () => {};
    server.handle('blockdev-del', () => new Promise((resolve) => (answerDelete = () => resolve({}))));
    const deleting = server.nextCommand('blockdev-del');
    server.sendEvent('DEVICE_DELETED', { device: 'd0' });
    await deleting;
    // The backend is not gone yet: the device is no longer the caller's, and its id stays taken.
    await expect(unplugDevice(r.ctx, 'd0')).rejects.toBeInstanceOf(DeviceNotFoundError);
    expect(r.reported).toEqual([]);
    answerDelete();
    await settle(r);
    expect(r.reported).toEqual([ejected('d0', 'block', 'rp0')]);
    expect(server.received.filter((c) => c.execute === 'blockdev-del' || c.execute === 'device_del')).toHaveLength(1);
  });

  it('racing an ejection (the guest lets go before device_del arrives) ends cleanly as a removal', async () => {
    const r = rig();
    await hotplugDevice(r.ctx, { type: 'block', id: 'd0', path: '/var/d0.img' });
    // The guest ejected it first: QEMU reports it, then no longer knows the device.
    server.handle('device_del', () => {
      throw new QmpErrorReply('DeviceNotFound', "Device 'd0' not found");
    });
    const removal = unplugDevice(r.ctx, 'd0');
    server.sendEvent('DEVICE_DELETED', { device: 'd0' });
    await removal;
    await settle(r);
    expect(r.reported).toEqual([]);
    expect(server.received.filter((c) => c.execute === 'blockdev-del')).toHaveLength(1);
    expect(r.ctx.state.devices).toEqual([]);
  });
});

describe('catching up when a process takes the VM over', () => {
  const child = (name: string) => ({ name, type: `child<${name}>` });

  it('settles a hot-plugged device QEMU no longer has as an ejection, and leaves what it has and what a removal owns', async () => {
    const r = rig({ hotplug: { rootPorts: 4 } }, { removalTimeoutMs: 100 });
    await hotplugDevice(r.ctx, { type: 'block', id: 'gone', path: '/var/gone.img' });
    await hotplugDevice(r.ctx, { type: 'block', id: 'kept', path: '/var/kept.img' });
    await hotplugDevice(r.ctx, { type: 'net', id: 'asked', tap: { ifname: 'tap0' } });
    server.handle('device_del', () => ({}));
    await expect(unplugDevice(r.ctx, 'asked')).rejects.toBeInstanceOf(DeviceRemovalTimeoutError);
    // QEMU names its peripherals, and properties that are no device ids.
    server.handle('qom-list', () => [{ name: 'type', type: 'string' }, child('kept'), null, 'gone', { name: 7 }, child('rp0'), child('rp1')]);
    const from = server.received.length;
    await r.reconciler.catchUp(qmp, { timeoutMs: 1_000 });
    await r.reconciler.settled();
    expect(sentSince(from)).toEqual([
      ['qom-list', { path: '/machine/peripheral' }],
      ['blockdev-del', { 'node-name': 'drv-gone' }],
    ]);
    expect(r.reported).toEqual([ejected('gone', 'block', 'rp0')]);
    expect(r.ctx.state.devices.map((d) => d.id)).toEqual(['kept', 'asked']);
  });

  it('a reply that is not a list is an InvalidReplyError, and changes nothing', async () => {
    const r = rig();
    await hotplugDevice(r.ctx, { type: 'block', id: 'd0', path: '/var/d0.img' });
    server.handle('qom-list', () => ({ d0: true }));
    const error = await r.reconciler.catchUp(qmp, { timeoutMs: 1_000 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InvalidReplyError);
    expect(error).toMatchObject({ command: 'qom-list', message: "the hypervisor's reply to qom-list is invalid: not a list of properties" });
    expect(r.ctx.state.devices.map((d) => d.id)).toEqual(['d0']);
    expect(r.reported).toEqual([]);
  });
});
