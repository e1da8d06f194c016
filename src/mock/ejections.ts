// The guest giving up a hot-plugged device on its own (it powers the device's slot off), with the
// QEMU backend's rules (src/qemu/hotplug/ejections.ts): QEMU reports DEVICE_DELETED; a device no
// removal asked for is an ejection, at once gone for the caller, and once its backend is deleted it
// leaves the state (freeing its slot and id) and DEVICE_EJECTED is emitted. A device whose removal
// was asked for is merely released, and that removal finishes the job.
import { DEVICE_EJECTED, type DeviceEjectedData } from '../hypervisor/types.ts';
import { SCSI_BUS, SCSI_CONTROLLER_ID, type MockHotDevice, type MockMachine } from './machine.ts';

/**
 * The guest powers off the slot of hot-plugged device `id`: the device, or for a SCSI disk the
 * controller with all its disks. Resolves once the backend has reacted, to whether the guest did it
 * (false for an id that names no hot-plugged device, which includes cold-plugged ones: they sit
 * where the guest cannot power them off, or when the process ends first).
 */
export async function guestEjects(machine: MockMachine, id: string): Promise<boolean> {
  const onSlot = (target: MockHotDevice): MockHotDevice[] => {
    if (target.bus !== SCSI_BUS) return [target];
    return machine.state.devices.filter((d) => d.bus === SCSI_BUS && !d.ejected && !d.released);
  };
  const ejectable = (): MockHotDevice | undefined => {
    const target = machine.state.devices.find((d) => d.id === id && !d.ejected && !d.released);
    // A cold-plugged SCSI controller sits on the root bus, where nothing can be powered off.
    const slotOwned = target?.bus !== SCSI_BUS || machine.state.infrastructure.some((d) => d.id === SCSI_CONTROLLER_ID);
    return slotOwned ? target : undefined;
  };
  if (!ejectable()) return false;
  let settling: Promise<void> | undefined;
  await machine.whenGuestActs(() => {
    // Things may have changed while the guest got to it.
    const target = ejectable();
    if (!target) return;
    const gone = onSlot(target);
    // Decided when QEMU reports it, as the QEMU backend does.
    for (const device of gone) {
      if (device.removalRequested) device.released = true;
      else device.ejected = true;
      machine.reportDeleted(device);
    }
    if (target.bus === SCSI_BUS) {
      const controller = machine.state.infrastructure.find((d) => d.id === SCSI_CONTROLLER_ID);
      if (controller) machine.reportDeleted(controller);
      machine.state.infrastructure = machine.state.infrastructure.filter((d) => d !== controller);
      machine.scsiControllerReady = undefined;
    }
    settling = settle(machine, gone.filter((d) => d.ejected));
  });
  if (!settling) return false;
  await settling;
  return true;
}

/** The backends go (a turn of the event loop, as a QMP command would take), then the books and the event. */
async function settle(machine: MockMachine, devices: MockHotDevice[]): Promise<void> {
  await new Promise((resolve) => setImmediate(resolve));
  for (const device of devices) {
    machine.stopHelper(device.id);
    machine.state.devices = machine.state.devices.filter((d) => d !== device);
    const data: DeviceEjectedData = { id: device.id, type: device.device.type, bus: device.bus };
    machine.report(DEVICE_EJECTED, data);
  }
}
