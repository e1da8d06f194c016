// Hot-adding and removing devices on the mock, with the QEMU backend's rules: the id and the slot
// are claimed before the first await, the first SCSI disk adds the controller on a root port, a
// failing step undoes the whole hotplug, and a removal waits for the guest to let go.
import { assertCallerFdsUsable } from '../hypervisor/caller-fds.ts';
import { isSandboxVmmError } from '../errors.ts';
import { validateHotplugDevice, type HotplugDeviceConfig } from '../hypervisor/config/index.ts';
import { DeviceExistsError, DeviceNotFoundError, HelperError, HotplugError } from '../hypervisor/errors.ts';
import { assertFsHotplugFits, assertHotpluggableKind } from '../hypervisor/hotplug-rules.ts';
import { pickFreeRootPort, assertDeviceChangesSafe } from '../hypervisor/resources.ts';
import type { HotplugDevice, HotplugResult } from '../hypervisor/types.ts';
import { waitForRelease, type MockContext } from './context.ts';
import { hotplugProblem } from './host.ts';
import { freeScsiAddress, locateMockDevice } from './pci.ts';
import { isManagedShare, SCSI_BUS, SCSI_CONTROLLER_ID, type MockHotDevice, type MockMachine } from './machine.ts';

const SCSI_CONTROLLER_STEP = 'device_add virtio-scsi-pci';

export async function hotplugDevice(ctx: MockContext, input: HotplugDevice): Promise<HotplugResult> {
  assertHotpluggableKind(input);
  const device = validateHotplugDevice(input);
  assertDeviceChangesSafe('hotplugAddDevice', ctx.machine.vcpuRules, ctx.machine.state.vcpuRemoved);
  assertCallerFdsUsable(device, 'device.');
  const { machine } = ctx;
  assertIdFree(machine, device.id);
  assertFsHotplugFits(machine.config, device, machine.state.devices.filter((d) => !d.ejected).map((d) => d.device));
  // Claimed before the first await, so that concurrent hotplugs can neither share an id nor a port.
  const isScsi = device.type === 'block' && device.driver === 'virtio-scsi';
  const bus = isScsi ? SCSI_BUS : pickFreeRootPort(usedRootPorts(machine), machine.config.hotplug.rootPorts, device.id, machine.freedPorts);
  const record: MockHotDevice = { id: device.id, device, bus, guestAsked: false, released: false };
  if (isScsi) record.scsi = freeScsiAddress(machine.config, machine.state);
  machine.state.devices.push(record);
  try {
    const steps = plugSteps(device);
    const failure = ctx.faults.takeHotplugFailure(device.id, [...(isScsi && needsScsiController(machine) ? [SCSI_CONTROLLER_STEP] : []), ...steps]);
    if (isScsi) await ensureScsiController(ctx, device.id, failure?.step === SCSI_CONTROLLER_STEP ? failure.message : undefined);
    await ctx.delay();
    for (const step of steps) {
      ctx.deadline.throwIfDone();
      const problem = failure?.step === step ? failure : hostProblemAt(ctx, device, step);
      // A daemon that does not come up is its own failure, as the QEMU backend's HelperError.
      if (problem && step === VIRTIOFSD_STEP) throw new HelperError('virtiofsd', device.id, 'exited before it was ready', { exitCode: 1, stderrTail: problem.message });
      if (problem) throw new HotplugError(device.id, step, { cause: new Error(problem.message) });
      if (step === VIRTIOFSD_STEP) machine.startHelper(device.id);
    }
  } catch (error) {
    // Rolled back: the share's daemon goes with the rest.
    machine.stopHelper(device.id);
    machine.state.devices = machine.state.devices.filter((d) => d !== record);
    throw error;
  }
  // From the record itself: the guest may have ejected the device already.
  return { id: device.id, type: device.type, bus, ...locateMockDevice(device, machine.config, { ...machine.state, devices: [record] }) };
}

/** Starting a share's virtiofsd, before its QMP steps. */
const VIRTIOFSD_STEP = 'virtiofsd';

/** The steps the QEMU backend takes for this device, in order: its QMP commands, and a share's daemon. */
function plugSteps(device: HotplugDeviceConfig): string[] {
  switch (device.type) {
    case 'block':
      return ['blockdev-add', 'device_add'];
    case 'net':
      return ['netdev_add', 'device_add'];
    case 'vfio':
      return ['device_add'];
    case 'fs':
      return [...(isManagedShare(device) ? [VIRTIOFSD_STEP] : []), 'chardev-add', 'device_add'];
  }
}

function hostProblemAt(ctx: MockContext, device: HotplugDeviceConfig, step: string): { message: string } | undefined {
  const problem = hotplugProblem(device, ctx.host, ctx.machine.config.runtime.netns);
  return problem?.step === step ? problem : undefined;
}

function assertIdFree(machine: MockMachine, id: string): void {
  const { config, state } = machine;
  const taken =
    config.devices.some((d) => d.id === id) ||
    state.devices.some((d) => d.id === id) ||
    state.infrastructure.some((d) => d.id === id) ||
    (config.boot.image !== undefined && id === 'rootfs');
  if (taken) throw new DeviceExistsError(id);
}

function usedRootPorts(machine: MockMachine): Set<string> {
  return new Set([...machine.state.devices.map((d) => d.bus), ...machine.state.infrastructure.map((d) => d.bus)]);
}

function needsScsiController(machine: MockMachine): boolean {
  const coldScsi = machine.config.devices.some((d) => d.type === 'block' && d.driver === 'virtio-scsi');
  return !coldScsi && !machine.state.infrastructure.some((d) => d.id === SCSI_CONTROLLER_ID);
}

/** The controller takes a root port the first time a SCSI disk needs it, and stays. */
async function ensureScsiController(ctx: MockContext, deviceId: string, failWith: string | undefined): Promise<void> {
  const { machine } = ctx;
  if (!needsScsiController(machine)) {
    await stepOf(deviceId, SCSI_CONTROLLER_STEP, machine.scsiControllerReady ?? Promise.resolve());
    return;
  }
  const bus = pickFreeRootPort(usedRootPorts(machine), machine.config.hotplug.rootPorts, deviceId, machine.freedPorts);
  const entry = { id: SCSI_CONTROLLER_ID, bus };
  machine.state.infrastructure.push(entry);
  const ready = (async () => {
    await ctx.delay();
    if (failWith !== undefined) throw new Error(failWith);
  })();
  machine.scsiControllerReady = ready.catch((error: unknown) => {
    machine.state.infrastructure = machine.state.infrastructure.filter((d) => d !== entry);
    machine.scsiControllerReady = undefined;
    throw error;
  });
  await stepOf(deviceId, SCSI_CONTROLLER_STEP, machine.scsiControllerReady);
}

/** A failed controller is a HotplugError of each disk that waited for it; a deadline keeps its own error. */
async function stepOf(deviceId: string, step: string, promise: Promise<void>): Promise<void> {
  try {
    await promise;
  } catch (error) {
    if (!isSandboxVmmError(error)) throw new HotplugError(deviceId, step, { cause: error });
    throw error;
  }
}

/**
 * Removes a hot-added device once the guest has let go. If it does not in time, the device stays
 * plugged and accounted for (DeviceRemovalTimeoutError); a later call finishes the job.
 */
export async function unplugDevice(ctx: MockContext, id: string): Promise<void> {
  const { machine } = ctx;
  const record = machine.state.devices.find((d) => d.id === id);
  // A device the guest already ejected is gone for the caller too (see ejections.ts).
  if (!record || record.ejected) throw new DeviceNotFoundError(id);
  assertDeviceChangesSafe('hotplugRemoveDevice', machine.vcpuRules, machine.state.vcpuRemoved);
  // From here the guest letting go of it, asked or not, ends this removal.
  record.removalRequested = true;
  await ctx.delay();
  if (!record.released) {
    if (!ctx.faults.takeRemovalTimeout(id)) machine.askGuestToRelease(record);
    await waitForRelease(ctx, record, id);
  }
  ctx.deadline.throwIfDone();
  // The frontend is gone: its chardev, then its daemon.
  machine.stopHelper(id);
  machine.state.devices = machine.state.devices.filter((d) => d !== record);
}
