// Hot-adding and removing PCI devices (disks, NICs, VFIO, virtio-fs shares) on a running QEMU:
// backend first (for a share with a sharedDir, its virtiofsd), then the frontend on a free root
// port, each step undone if a later one fails; removal waits for the guest to let go before
// deleting the backends.
import { validateHotplugDevice, type BlockDeviceConfig, type HotplugDeviceConfig, type NetDeviceConfig, type VirtioFsDeviceConfig } from '../../hypervisor/config/index.ts';
import { DeviceExistsError, DeviceNotFoundError, DeviceRemovalTimeoutError, HotplugError } from '../../hypervisor/errors.ts';
import { assertFsHotplugFits, assertHotpluggableKind } from '../../hypervisor/hotplug-rules.ts';
import type { HotplugDevice, HotplugResult } from '../../hypervisor/types.ts';
import { QmpCommandError, type QmpEvent } from '../../qmp/index.ts';
import { blockdevProps, blockFrontendProps, blockNodeName, SCSI_CONTROLLER_ID, scsiControllerProps } from '../devices/block.ts';
import { netdevId, netdevProps, netFrontendProps, tapCallerFds, tapFdNames, type TapFdRefs } from '../devices/net.ts';
import { assertCallerFdsUsable } from '../../hypervisor/caller-fds.ts';
import { vfioProps } from '../devices/vfio.ts';
import { virtioFsChardevAddArgs, virtioFsChardevId, virtioFsFrontendProps } from '../devices/virtio-fs.ts';
import { realHost } from '../devices/context.ts';
import { within, type HotplugContext } from './context.ts';
import { slotFreed, slotSettled, takeRootPort } from './slots.ts';
import { assertDeviceChangesSafe } from '../../hypervisor/resources.ts';
import { isEjecting, type BackendRef, type HotpluggedDevice } from './state.ts';
import { UndoStack } from './undo.ts';

/** Rollback and backend deletion must run even when the operation's own deadline is what failed. */
const CLEANUP_TIMEOUT_MS = 5_000;

/** The guest PCI path is added by the caller (see pci-paths.ts), from the placement made here. */
export async function hotplugDevice(ctx: HotplugContext, input: HotplugDevice): Promise<Omit<HotplugResult, 'pci' | 'scsi'>> {
  assertHotpluggableKind(input);
  const device = validateHotplugDevice(input);
  assertDeviceChangesSafe('hotplugAddDevice', ctx.vcpuRules, ctx.state.vcpuRemoved);
  assertCallerFdsUsable(device, 'device.');
  assertIdFree(ctx, device.id);
  assertFsHotplugFits(ctx.config, device, ctx.state.devices.filter((d) => !isEjecting(d)).map((d) => d.device));
  assertQemuCanPlug(ctx, device);
  // Claim the id and the port synchronously, before the first await, so that concurrent hotplugs
  // can neither reuse the id nor be handed the same port.
  const isScsi = device.type === 'block' && device.driver === 'virtio-scsi';
  const bus = isScsi ? `${SCSI_CONTROLLER_ID}.0` : takeRootPort(ctx.state, ctx.config.hotplug.rootPorts, device.id);
  const record: HotpluggedDevice = { id: device.id, device, bus, backends: [] };
  ctx.state.devices.push(record);
  const undo = new UndoStack();
  try {
    if (isScsi) await ensureScsiController(ctx, device.id);
    else await slotSettled(ctx, bus);
    await plug(ctx, device, record, undo);
  } catch (error) {
    await undo.unwind(ctx.logger);
    ctx.state.devices = ctx.state.devices.filter((d) => d !== record);
    throw explain(device.id, error);
  }
  ctx.logger.info({ device: device.id, type: device.type, bus }, 'device hot-added');
  return { id: device.id, type: device.type, bus };
}

/** Before anything is sent: the frontends this device needs exist in this QEMU with the properties set (feature probe). */
function assertQemuCanPlug(ctx: HotplugContext, device: HotplugDeviceConfig): void {
  const check = ctx.checkDevice;
  if (!check) return;
  const placement = { bus: 'probe' };
  if (device.type === 'vfio') check(vfioProps(device, placement.bus));
  if (device.type === 'net') check(netFrontendProps(device, placement));
  if (device.type === 'block') {
    if (device.driver === 'virtio-scsi') check(scsiControllerProps(placement));
    check(blockFrontendProps(device, placement));
  }
  if (device.type === 'fs') check(virtioFsFrontendProps(device, placement));
}

async function plug(ctx: HotplugContext, device: HotplugDeviceConfig, record: HotpluggedDevice, undo: UndoStack): Promise<void> {
  switch (device.type) {
    case 'block':
      return plugBlock(ctx, device, record, undo);
    case 'net':
      return plugNet(ctx, device, record, undo);
    case 'vfio':
      await step('device_add', ctx.qmp.execute('device_add', vfioProps(device, record.bus), within(ctx)));
      return;
    case 'fs':
      return plugVirtioFs(ctx, device, record, undo);
  }
}

function assertIdFree(ctx: HotplugContext, id: string): void {
  const taken =
    ctx.config.devices.some((d) => d.id === id) ||
    ctx.state.devices.some((d) => d.id === id) ||
    ctx.state.infrastructure.some((d) => d.id === id) ||
    (ctx.config.boot.image !== undefined && id === 'rootfs');
  if (taken) throw new DeviceExistsError(id);
}

const scsiControllerReady = new WeakMap<object, Promise<void>>();

/** The SCSI controller is hot-added on a root port the first time a SCSI disk needs it, once. */
function ensureScsiController(ctx: HotplugContext, forDevice: string): Promise<void> {
  const coldScsi = ctx.config.devices.some((d) => d.type === 'block' && d.driver === 'virtio-scsi');
  if (coldScsi || ctx.state.infrastructure.some((d) => d.id === SCSI_CONTROLLER_ID)) {
    return scsiControllerReady.get(ctx.state) ?? Promise.resolve();
  }
  // The disk is what cannot be plugged when the controller finds no port: name it in the error.
  const bus = takeRootPort(ctx.state, ctx.config.hotplug.rootPorts, forDevice);
  const entry = { id: SCSI_CONTROLLER_ID, bus };
  ctx.state.infrastructure.push(entry);
  const added = slotSettled(ctx, bus).then(() => ctx.qmp.execute('device_add', scsiControllerProps({ bus }), within(ctx)));
  const ready = step('device_add virtio-scsi-pci', added).then(
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

async function plugBlock(ctx: HotplugContext, device: BlockDeviceConfig, record: HotpluggedDevice, undo: UndoStack): Promise<void> {
  let fdSet: number | undefined;
  if (device.fd !== undefined) {
    // The caller's fd goes into an fd set of its own: QEMU then never needs access to the image's path.
    const added = await step('add-fd', ctx.qmp.execute('add-fd', { opaque: `sandbox-vmm:${device.id}` }, { ...within(ctx), fd: device.fd }));
    fdSet = added['fdset-id'];
    addBackend(ctx, record, undo, { kind: 'fdset', id: fdSet });
  }
  await step('blockdev-add', ctx.qmp.execute('blockdev-add', blockdevProps(device, realHost, fdSet), within(ctx)));
  addBackend(ctx, record, undo, { kind: 'blockdev', nodeName: blockNodeName(device.id) });
  await step('device_add', ctx.qmp.execute('device_add', blockFrontendProps(device, { bus: record.bus }), within(ctx)));
}

async function plugNet(ctx: HotplugContext, device: NetDeviceConfig, record: HotpluggedDevice, undo: UndoStack): Promise<void> {
  const refs = 'ifname' in device.tap ? undefined : await passTapFds(ctx, device, undo);
  await step('netdev_add', ctx.qmp.execute('netdev_add', netdevProps(device, refs), within(ctx)));
  addBackend(ctx, record, undo, { kind: 'netdev', id: netdevId(device.id) });
  await step('device_add', ctx.qmp.execute('device_add', netFrontendProps(device, { bus: record.bus }), within(ctx)));
}

/**
 * A share: its daemon (the backend's virtiofsd for a sharedDir, or the caller's behind socketPath),
 * a chardev connected to the daemon's socket, then vhost-user-fs-pci on the port. QEMU maps the
 * guest's memory for the daemon when the frontend is realized.
 */
async function plugVirtioFs(ctx: HotplugContext, device: VirtioFsDeviceConfig, record: HotpluggedDevice, undo: UndoStack): Promise<void> {
  let socket = device.socketPath;
  if (socket === undefined) {
    const { sharedDir } = device;
    const helpers = ctx.helpers;
    if (sharedDir === undefined || !helpers) throw new Error('a sharedDir share needs the VM\'s helper launcher');
    await step('virtiofsd', helpers.startVirtiofsd({ ...device, sharedDir }, ctx.deadline.signal));
    addBackend(ctx, record, undo, { kind: 'helper', deviceId: device.id });
    socket = helpers.socketOf(device.id);
  }
  await step('chardev-add', ctx.qmp.execute('chardev-add', virtioFsChardevAddArgs(device.id, socket), within(ctx)));
  addBackend(ctx, record, undo, { kind: 'chardev', id: virtioFsChardevId(device.id) });
  await step('device_add', ctx.qmp.execute('device_add', virtioFsFrontendProps(device, { bus: record.bus }), within(ctx)));
}

/**
 * Sends the caller's tap fds (and vhost fds) with getfd, each under a name netdev_add then takes
 * (QEMU hands a named fd over to the netdev that uses it). A failure closes the names still held.
 */
async function passTapFds(ctx: HotplugContext, device: NetDeviceConfig, undo: UndoStack): Promise<TapFdRefs> {
  const names = tapFdNames(device);
  const fds = tapCallerFds(device);
  const pairs = [...zip(names.fds, fds.fds), ...zip(names.vhostFds, fds.vhostFds)];
  for (const [fdname, fd] of pairs) {
    await step('getfd', ctx.qmp.execute('getfd', { fdname }, { ...within(ctx), fd }));
    undo.push('closefd', () => closeFdName(ctx, fdname));
  }
  return names;
}

function zip<A, B>(as: readonly A[], bs: readonly B[]): [A, B][] {
  return as.map((a, i) => [a, bs[i] as B]);
}

/** Closes a getfd name; one a netdev has taken (or QEMU closed) is already gone, which is fine. */
async function closeFdName(ctx: HotplugContext, fdname: string): Promise<void> {
  try {
    await ctx.qmp.execute('closefd', { fdname }, { timeoutMs: CLEANUP_TIMEOUT_MS });
  } catch (error) {
    if (error instanceof QmpCommandError && /not found/i.test(error.desc)) return;
    throw error;
  }
}

/** The step that deletes a backend (a QMP command, or stopping a helper daemon). */
const DELETE_COMMAND: Record<BackendRef['kind'], string> = {
  blockdev: 'blockdev-del',
  netdev: 'netdev_del',
  fdset: 'remove-fd',
  chardev: 'chardev-remove',
  helper: 'stop virtiofsd',
};

function addBackend(ctx: HotplugContext, record: HotpluggedDevice, undo: UndoStack, backend: BackendRef): void {
  record.backends.unshift(backend);
  undo.push(DELETE_COMMAND[backend.kind], () => deleteBackend(ctx, backend, { timeoutMs: CLEANUP_TIMEOUT_MS }));
}

/**
 * Removes a hot-added device. When the guest does not let go in time, the device stays
 * plugged and accounted for (its port stays taken), and the caller gets DeviceRemovalTimeoutError;
 * calling again later finishes the job.
 */
export async function unplugDevice(ctx: HotplugContext, id: string): Promise<void> {
  const record = ctx.state.devices.find((d) => d.id === id);
  // A device the guest already ejected is gone for the caller too (see ejections.ts).
  if (!record || isEjecting(record)) throw new DeviceNotFoundError(id);
  assertDeviceChangesSafe('hotplugRemoveDevice', ctx.vcpuRules, ctx.state.vcpuRemoved);
  // Set before device_del: its DEVICE_DELETED, however late, ends this removal and is no ejection.
  const requestedBefore = record.removalRequested === true;
  record.removalRequested = true;
  const request: RemovalRequest = { accepted: false };
  try {
    await removeFrontend(ctx, id, ctx.removalTimeoutMs, deletedEventFor(id), request);
    slotFreed(ctx.state, record.bus);
  } catch (error) {
    // QEMU never took this device_del (refused, or the guest stayed busy): this call asked the guest
    // nothing, though an earlier call's request may still be with it.
    if (!request.accepted) record.removalRequested = requestedBefore;
    throw error;
  }
  // Each backend leaves the record once deleted, so a retry after a failure resumes where it stopped.
  while (record.backends.length > 0) {
    const backend = record.backends[0] as BackendRef;
    try {
      await deleteBackend(ctx, backend, within(ctx));
    } catch (error) {
      throw explain(id, new StepError(DELETE_COMMAND[backend.kind], error));
    }
    record.backends.shift();
  }
  ctx.state.devices = ctx.state.devices.filter((d) => d !== record);
  ctx.logger.info({ device: id }, 'device removed');
}

/** DEVICE_DELETED for the device itself (by id, or by path when QEMU gives only the path). */
export function deletedEventFor(qemuId: string): (event: QmpEvent) => boolean {
  const path = `/machine/peripheral/${qemuId}`;
  return (event) => event.data['device'] === qemuId || event.data['path'] === path;
}

/** Whether QEMU took the device_del (or already had one under way): the guest has been asked. */
export interface RemovalRequest {
  accepted: boolean;
}

/** An earlier request is still with the guest: wait for it. */
const UNPLUG_UNDER_WAY = /already in (the )?process of unplug|in progress/i;
/**
 * QEMU refuses device_del on a PCIe slot whose power indicator blinks: the guest is still settling
 * a hot-add there (or powering the slot), and an attention-button press now would mean "cancel".
 * Native PCIe hotplug only (aarch64's virt); the request is repeated until the guest has settled.
 */
const GUEST_BUSY = /power indicator blinking/i;
/** How often a device_del refused for a busy guest is repeated (a hot-add settles in about 0.3 s). */
export const BUSY_RETRY_MS = 250;

/**
 * device_del, then the event that says the guest let go (shared by devices and vCPUs). The wait is
 * armed before device_del: QEMU may send the event before the command's reply. A device_del refused
 * because the guest is busy with the slot is repeated within the same removal window.
 */
export async function removeFrontend(
  ctx: HotplugContext,
  qemuId: string,
  timeoutMs: number,
  released: (event: QmpEvent) => boolean = deletedEventFor(qemuId),
  request: RemovalRequest = { accepted: false },
): Promise<void> {
  const deleted = ctx.qmp.armEvent('DEVICE_DELETED', released, { timeoutMs, signal: ctx.deadline.signal });
  // Observed at once: while device_del is being repeated, the window may close before it is awaited.
  const outcome = deleted.promise.then(
    () => ({ released: true as const }),
    (error: unknown) => ({ released: false as const, error }),
  );
  let busy: QmpCommandError | undefined;
  for (;;) {
    try {
      await ctx.qmp.execute('device_del', { id: qemuId }, within(ctx));
      request.accepted = true;
      break;
    } catch (error) {
      if (!(error instanceof QmpCommandError)) {
        deleted.cancel();
        throw error;
      }
      // Gone already: a removal that completed after an earlier call timed out.
      if (error.errorClass === 'DeviceNotFound') {
        deleted.cancel();
        return;
      }
      if (UNPLUG_UNDER_WAY.test(error.desc)) {
        request.accepted = true;
        break;
      }
      if (!GUEST_BUSY.test(error.desc)) {
        deleted.cancel();
        throw new HotplugError(qemuId, 'device_del', { cause: error });
      }
      busy = error;
    }
    // The guest is busy with the slot: ask again shortly, unless the window closes first (or an
    // earlier request's DEVICE_DELETED arrives meanwhile).
    const retry = new Promise<'retry'>((resolve) => {
      const timer = setTimeout(() => resolve('retry'), BUSY_RETRY_MS);
      void outcome.then(() => clearTimeout(timer));
    });
    const next = await Promise.race([retry, outcome]);
    if (next !== 'retry') break;
  }
  const result = await outcome;
  if (result.released) return;
  // The operation's own deadline keeps its error; the removal bound becomes the typed timeout.
  if (ctx.deadline.signal.aborted) throw ctx.deadline.signal.reason;
  if (ctx.qmp.closed) throw result.error;
  if (!request.accepted) throw new DeviceRemovalTimeoutError(qemuId, timeoutMs, { guestBusy: true, cause: busy });
  throw new DeviceRemovalTimeoutError(qemuId, timeoutMs);
}

/** Deletes one backend object; one QEMU no longer has counts as deleted. */
export async function deleteBackend(ctx: HotplugContext, backend: BackendRef, options: { signal?: AbortSignal; timeoutMs?: number }): Promise<void> {
  try {
    switch (backend.kind) {
      case 'blockdev':
        return void (await ctx.qmp.execute('blockdev-del', { 'node-name': backend.nodeName }, options));
      case 'netdev':
        return void (await ctx.qmp.execute('netdev_del', { id: backend.id }, options));
      case 'fdset':
        // QEMU closes the set's fd once nothing uses it any more (the blockdev went first).
        return void (await ctx.qmp.execute('remove-fd', { 'fdset-id': backend.id }, options));
      case 'chardev':
        return void (await ctx.qmp.execute('chardev-remove', { id: backend.id }, options));
      case 'helper':
        // The chardev went first: the daemon has no client left when it is stopped.
        if (!ctx.helpers) throw new Error(`the helper of ${backend.deviceId} cannot be stopped from here`);
        return await ctx.helpers.stop(backend.deviceId);
    }
  } catch (error) {
    // Already deleted (a retry after a partial removal): that is the state we want.
    if (error instanceof QmpCommandError && /not found|cannot find|failed to find/i.test(error.desc)) return;
    throw error;
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

/** QEMU refusing a step is a HotplugError naming the step; a stop, an exit or a deadline keeps its own type. */
function explain(deviceId: string, error: unknown): unknown {
  const original = error instanceof StepError ? error.original : error;
  if (original instanceof QmpCommandError) return new HotplugError(deviceId, error instanceof StepError ? error.step : original.command, { cause: original });
  return original;
}
