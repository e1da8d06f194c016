// Hot-adding and removing PCI devices (disks, NICs, VFIO) on a running QEMU: backend first, then the
// frontend on a free root port; removal waits for the guest to let go before deleting the backend.
import { statSync } from 'node:fs';
import { validateDeviceConfig, type BlockDeviceConfig, type NetDeviceConfig, type VfioDeviceConfig } from '../../hypervisor/config/index.ts';
import {
  DeviceExistsError,
  DeviceNotFoundError,
  DeviceRemovalTimeoutError,
  HotplugError,
  UnsupportedOperationError,
} from '../../hypervisor/errors.ts';
import type { HotplugDevice, HotplugResult } from '../../hypervisor/types.ts';
import { QmpCommandError, QmpTimeoutError } from '../../qmp/index.ts';
import { OperationTimeoutError } from '../../errors.ts';
import { within, type HotplugContext } from './context.ts';
import { takeRootPort } from './slots.ts';
import type { BackendRef, HotpluggedDevice } from './state.ts';
import { UndoStack } from './undo.ts';

const HOTPLUGGABLE = ['block', 'net', 'vfio'] as const;
/** Rollback must run even when the operation's own deadline is what failed. */
const ROLLBACK_TIMEOUT_MS = 5_000;
export const SCSI_CONTROLLER_ID = 'scsi0';

export async function hotplugDevice(ctx: HotplugContext, input: HotplugDevice): Promise<HotplugResult> {
  const device = validateDeviceConfig(input, 'device');
  if (!(HOTPLUGGABLE as readonly string[]).includes(device.type)) {
    throw new UnsupportedOperationError('hotplugAddDevice', `${device.type} devices can only be cold-plugged (in the config)`);
  }
  const hot = device as HotplugDevice;
  assertIdFree(ctx, hot.id);
  if (hot.type === 'net' && 'fd' in hot.tap) {
    throw new UnsupportedOperationError(
      'hotplugAddDevice',
      'a tap given as an fd cannot reach a running QEMU from Node (no SCM_RIGHTS); name the tap (tap.ifname) or cold-plug it',
    );
  }
  const undo = new UndoStack();
  // Claim the id and the port synchronously, before the first await, so that concurrent hotplugs
  // can neither reuse the id nor be handed the same port.
  const isScsi = hot.type === 'block' && hot.driver === 'virtio-scsi';
  const bus = isScsi ? `${SCSI_CONTROLLER_ID}.0` : takeRootPort(ctx.state, ctx.config.hotplug.rootPorts, hot.id);
  const record: HotpluggedDevice = { id: hot.id, device: hot, bus, backends: [] };
  ctx.state.devices.push(record);
  try {
    if (isScsi) await ensureScsiController(ctx);
    switch (hot.type) {
      case 'block':
        await plugBlock(ctx, hot, record, undo);
        break;
      case 'net':
        await plugNet(ctx, hot, record, undo);
        break;
      case 'vfio':
        await plugVfio(ctx, hot, record);
        break;
    }
  } catch (error) {
    await undo.unwind(ctx.logger);
    ctx.state.devices = ctx.state.devices.filter((d) => d !== record);
    const original = unwrapStep(error);
    // QEMU refusing a step is a hotplug failure; a stop, an exit or a deadline keeps its own type.
    if (original instanceof QmpCommandError) throw new HotplugError(hot.id, stepOf(error), { cause: original });
    throw original;
  }
  ctx.logger.info({ device: hot.id, type: hot.type, bus: record.bus }, 'device hot-added');
  return { id: hot.id, type: hot.type, bus: record.bus };
}

function assertIdFree(ctx: HotplugContext, id: string): void {
  const taken =
    ctx.config.devices.some((d) => d.id === id) ||
    ctx.state.devices.some((d) => d.id === id) ||
    ctx.state.infrastructure.some((d) => d.id === id) ||
    id === SCSI_CONTROLLER_ID;
  if (taken) throw new DeviceExistsError(id);
}

const scsiControllerReady = new WeakMap<object, Promise<void>>();

/** The SCSI controller is hot-added on a root port the first time a SCSI disk needs it, once. */
function ensureScsiController(ctx: HotplugContext): Promise<void> {
  const coldScsi = ctx.config.devices.some((d) => d.type === 'block' && d.driver === 'virtio-scsi');
  if (coldScsi || ctx.state.infrastructure.some((d) => d.id === SCSI_CONTROLLER_ID)) {
    return scsiControllerReady.get(ctx.state) ?? Promise.resolve();
  }
  const bus = takeRootPort(ctx.state, ctx.config.hotplug.rootPorts, SCSI_CONTROLLER_ID);
  const entry = { id: SCSI_CONTROLLER_ID, bus };
  ctx.state.infrastructure.push(entry);
  const ready = step('device_add virtio-scsi-pci', ctx.qmp.execute('device_add', { driver: 'virtio-scsi-pci', id: SCSI_CONTROLLER_ID, bus }, within(ctx))).then(
    () => undefined,
    (error: unknown) => {
      ctx.state.infrastructure = ctx.state.infrastructure.filter((d) => d !== entry);
      scsiControllerReady.delete(ctx.state);
      throw error;
    },
  );
  // It stays once added: later SCSI disks share it, and it costs one port.
  scsiControllerReady.set(ctx.state, ready);
  return ready;
}

/** blockdev-add maps the config's cache mode onto QEMU's two cache flags and the device's write cache. */
function cacheFlags(cache: BlockDeviceConfig['cache']): { direct: boolean; noFlush: boolean; writeCache: boolean } {
  switch (cache) {
    case 'none':
      return { direct: true, noFlush: false, writeCache: true };
    case 'writethrough':
      return { direct: false, noFlush: false, writeCache: false };
    case 'directsync':
      return { direct: true, noFlush: false, writeCache: false };
    case 'unsafe':
      return { direct: false, noFlush: true, writeCache: true };
    default:
      return { direct: false, noFlush: false, writeCache: true };
  }
}

async function plugBlock(ctx: HotplugContext, device: BlockDeviceConfig, record: HotpluggedDevice, undo: UndoStack): Promise<void> {
  const nodeName = `drv-${device.id}`;
  const flags = cacheFlags(device.cache);
  const readOnly = device.readOnly ?? false;
  await step(
    'blockdev-add',
    ctx.qmp.execute(
      'blockdev-add',
      {
        driver: device.format ?? 'raw',
        'node-name': nodeName,
        'read-only': readOnly,
        cache: { direct: flags.direct, 'no-flush': flags.noFlush },
        file: {
          driver: isBlockDevice(device.path) ? 'host_device' : 'file',
          filename: device.path,
          aio: device.aio ?? 'threads',
          'read-only': readOnly,
          cache: { direct: flags.direct, 'no-flush': flags.noFlush },
        },
      },
      within(ctx),
    ),
  );
  const backend: BackendRef = { kind: 'blockdev', nodeName };
  record.backends.push(backend);
  undo.push('blockdev-del', () => deleteBackend(ctx, backend));
  const frontend: Record<string, unknown> =
    device.driver === 'virtio-scsi'
      ? { driver: 'scsi-hd', id: device.id, drive: nodeName, bus: record.bus }
      : { driver: 'virtio-blk-pci', id: device.id, drive: nodeName, bus: record.bus, 'write-cache': flags.writeCache ? 'on' : 'off' };
  if (device.serial) frontend['serial'] = device.serial;
  await step('device_add', ctx.qmp.execute('device_add', frontend, within(ctx)));
}

async function plugNet(ctx: HotplugContext, device: NetDeviceConfig, record: HotpluggedDevice, undo: UndoStack): Promise<void> {
  const netdevId = `net-${device.id}`;
  const queues = device.queues ?? 1;
  const ifname = 'ifname' in device.tap ? device.tap.ifname : '';
  const netdev: Record<string, unknown> = { type: 'tap', id: netdevId, ifname, script: 'no', downscript: 'no' };
  if (queues > 1) netdev['queues'] = queues;
  await step('netdev_add', ctx.qmp.execute('netdev_add', netdev, within(ctx)));
  const backend: BackendRef = { kind: 'netdev', id: netdevId };
  record.backends.push(backend);
  undo.push('netdev_del', () => deleteBackend(ctx, backend));
  const frontend: Record<string, unknown> = { driver: 'virtio-net-pci', id: device.id, netdev: netdevId, bus: record.bus };
  if (device.mac) frontend['mac'] = device.mac;
  if (queues > 1) {
    frontend['mq'] = true;
    frontend['vectors'] = 2 * queues + 2;
  }
  await step('device_add', ctx.qmp.execute('device_add', frontend, within(ctx)));
}

async function plugVfio(ctx: HotplugContext, device: VfioDeviceConfig, record: HotpluggedDevice): Promise<void> {
  const host = device.hostAddress.includes(':') && device.hostAddress.split(':').length === 2 ? `0000:${device.hostAddress}` : device.hostAddress;
  await step('device_add', ctx.qmp.execute('device_add', { driver: 'vfio-pci', id: device.id, host, bus: record.bus }, within(ctx)));
}

/**
 * Removes a hot-added device. The DEVICE_DELETED wait is armed before device_del so that an event
 * arriving before the reply is not missed; when the guest does not let go within `timeoutMs`, the
 * device stays plugged and accounted for, and the caller gets a DeviceRemovalTimeoutError.
 */
export async function unplugDevice(ctx: HotplugContext, id: string, timeoutMs: number): Promise<void> {
  const record = ctx.state.devices.find((d) => d.id === id);
  if (!record) throw new DeviceNotFoundError(id);
  await removeFrontend(ctx, id, timeoutMs);
  for (const backend of record.backends) await deleteBackend(ctx, backend, ctx.deadline.signal);
  ctx.state.devices = ctx.state.devices.filter((d) => d !== record);
  ctx.logger.info({ device: id }, 'device removed');
}

/** device_del + DEVICE_DELETED; shared by devices and vCPUs. */
export async function removeFrontend(ctx: HotplugContext, qemuId: string, timeoutMs: number): Promise<void> {
  const deleted = ctx.qmp.armEvent('DEVICE_DELETED', (e) => e.data['device'] === qemuId, {
    timeoutMs,
    signal: ctx.deadline.signal,
  });
  try {
    await ctx.qmp.execute('device_del', { id: qemuId }, within(ctx));
  } catch (error) {
    const alreadyPending = error instanceof QmpCommandError && /already in (the )?process of unplug|in progress/i.test(error.desc);
    if (!alreadyPending) {
      deleted.cancel();
      // Already gone (a removal that completed after an earlier timeout): nothing left to wait for.
      if (error instanceof QmpCommandError && error.errorClass === 'DeviceNotFound') return;
      if (error instanceof QmpCommandError) throw new HotplugError(qemuId, 'device_del', { cause: error });
      throw error;
    }
    // An earlier request is still with the guest: keep waiting for it.
  }
  try {
    await deleted.promise;
  } catch (error) {
    if (error instanceof OperationTimeoutError || error instanceof QmpTimeoutError) {
      throw new DeviceRemovalTimeoutError(qemuId, timeoutMs);
    }
    throw error;
  }
}

async function deleteBackend(ctx: HotplugContext, backend: BackendRef, signal?: AbortSignal): Promise<void> {
  const options = signal ? { signal } : { timeoutMs: ROLLBACK_TIMEOUT_MS };
  if (backend.kind === 'blockdev') await ctx.qmp.execute('blockdev-del', { 'node-name': backend.nodeName }, options);
  else await ctx.qmp.execute('netdev_del', { id: backend.id }, options);
}

function isBlockDevice(path: string): boolean {
  try {
    return statSync(path).isBlockDevice();
  } catch {
    // Missing: let QEMU say so, in its own words, at blockdev-add.
    return false;
  }
}

class StepError extends Error {
  constructor(
    readonly step: string,
    readonly original: unknown,
  ) {
    super(step);
  }
}

/** Tags a failure with the QMP step it happened at. */
async function step<T>(name: string, promise: Promise<T>): Promise<T> {
  try {
    return await promise;
  } catch (error) {
    throw new StepError(name, error);
  }
}

function stepOf(error: unknown): string {
  return error instanceof StepError ? error.step : 'hotplug';
}

export function unwrapStep(error: unknown): unknown {
  return error instanceof StepError ? error.original : error;
}
