// What has been plugged and resized since boot. Saved in the runtime directory after every change,
// so a process that re-attaches knows which slots are taken and what it may remove.
import type { HotplugDeviceConfig } from '../../hypervisor/config/index.ts';

export interface HotpluggedDevice {
  id: string;
  device: HotplugDeviceConfig;
  /** The root port (rpN) or SCSI bus the device sits on. */
  bus: string;
  /** Backend objects to delete after the frontend is gone, newest first (a blockdev before the fd set it reads, a chardev before its daemon). */
  backends: BackendRef[];
  /**
   * hotplugRemoveDevice asked the guest for it (set before device_del, kept after a removal timeout):
   * its DEVICE_DELETED then ends that removal and is no ejection (see ejections.ts).
   */
  removalRequested?: boolean | undefined;
}

/**
 * What a device's frontend stands on: a block node, a netdev, the fd set a disk given as an fd reads
 * from, a virtio-fs share's chardev, or the helper daemon (virtiofsd) the backend runs for it.
 */
export type BackendRef =
  | { kind: 'blockdev'; nodeName: string }
  | { kind: 'netdev'; id: string }
  | { kind: 'fdset'; id: number }
  | { kind: 'chardev'; id: string }
  | { kind: 'helper'; deviceId: string };

export interface HotpluggedCpu {
  qemuId: string;
  coreId: number;
}

export interface HotpluggedDimm {
  qemuId: string;
  backendId: string;
  sizeMiB: number;
}

export interface HotplugState {
  devices: HotpluggedDevice[];
  /** Devices the backend added for its own needs (e.g. a SCSI controller), with their port. */
  infrastructure: { id: string; bus: string }[];
  /** Hot-added vCPUs, oldest first; removal goes in reverse. */
  cpus: HotpluggedCpu[];
  /** virtio-mem: the size requested from the device, beyond boot memory. */
  virtioMemMiB: number;
  dimms: HotpluggedDimm[];
  /** A vCPU has been removed (which, under tcg below QEMU 10, rules out further device changes). */
  vcpuRemoved: boolean;
  /** vCPU hot-adds over the VM's life, removed ones included (the tcg add budget, VcpuRules.addBudget). */
  vcpuAdds: number;
}

export function emptyHotplugState(): HotplugState {
  return { devices: [], infrastructure: [], cpus: [], virtioMemMiB: 0, dimms: [], vcpuRemoved: false, vcpuAdds: 0 };
}

/**
 * Devices the guest ejected on its own whose backends are being deleted: already gone for the
 * caller (not listed, not removable), still holding their id until their backends are gone.
 */
const ejecting = new WeakSet<HotpluggedDevice>();

export function markEjecting(device: HotpluggedDevice): void {
  ejecting.add(device);
}

export function isEjecting(device: HotpluggedDevice): boolean {
  return ejecting.has(device);
}
