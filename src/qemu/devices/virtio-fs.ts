// A virtio-fs share on QEMU: a vhost-user-fs-pci frontend talking to its daemon through a socket
// chardev (QEMU the client). The same properties on the command line and over QMP (hot-plug).
import type { VirtioFsDeviceConfig } from '../../hypervisor/config/index.ts';
import type { QmpArgs } from '../../qmp/types.ts';
import type { DeviceAddProps } from './context.ts';

/** The chardev a share's frontend talks to its daemon through. */
export function virtioFsChardevId(deviceId: string): string {
  return `chr-${deviceId}`;
}

/** The frontend's properties on `placement` (a root bus slot, or a hotplug root port as `bus`). */
export function virtioFsFrontendProps(d: VirtioFsDeviceConfig, placement: { bus: string; addr?: string }): DeviceAddProps {
  return { driver: 'vhost-user-fs-pci', id: d.id, chardev: virtioFsChardevId(d.id), tag: d.tag, 'queue-size': d.queueSize, ...placement };
}

/** chardev-add's arguments: a unix socket client of the daemon at `socket`. */
export function virtioFsChardevAddArgs(deviceId: string, socket: string): QmpArgs<'chardev-add'> {
  return { id: virtioFsChardevId(deviceId), backend: { type: 'socket', data: { addr: { type: 'unix', data: { path: socket } }, server: false } } };
}
