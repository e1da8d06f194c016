// What a device kind needs to put itself on the command line: where it goes on the PCI topology,
// how to hand QEMU a file descriptor, and the shared controllers it sits behind.
import { fstatSync, statSync } from 'node:fs';
import type { QmpArgs } from '../../qmp/types.ts';
import type { RuntimePaths } from '../runtime-paths.ts';

/** What the argv builder asks of the host: whether a disk is a block device (for QEMU's driver choice). */
export interface HostProbe {
  /** True for a host block device (QEMU's host_device driver), false for a file. */
  isBlockDevice(path: string): boolean;
  /** The same for a file descriptor of ours. */
  isBlockDeviceFd(fd: number): boolean;
}

/** Asks the real filesystem. */
export const realHost: HostProbe = {
  isBlockDevice(path) {
    try {
      return statSync(path).isBlockDevice();
    } catch {
      return false; // missing: QEMU reports it in its own words when it opens the file
    }
  },
  isBlockDeviceFd(fd) {
    try {
      return fstatSync(fd).isBlockDevice();
    } catch {
      return false; // checked to be open before it gets here (caller-fds.ts)
    }
  },
};

export interface ColdplugContext {
  paths: RuntimePaths;
  host: HostProbe;
  /** A slot of its own on the root bus: the bus and addr properties of a PCI device. */
  pciSlot(what: string): { bus: string; addr: string };
  /** A root port of its own (for VFIO, whose BARs need one): its id, usable as a bus. */
  dedicatedRootPort(what: string): string;
  /** The virtio-serial bus channels plug into (the controller is added the first time). */
  virtioSerialBus(): string;
  /** The SCSI bus scsi-hd disks plug into (the controller is added the first time). */
  scsiBus(): string;
  /** Hands `fd` to QEMU at spawn; returns the fd number QEMU sees. */
  passFd(fd: number): number;
  /** Hands `fd` to QEMU at spawn in an fd set of its own (-add-fd); returns the set's id. */
  fdSet(fd: number): number;
  /** A unix socket QEMU listens on at `path`, created for it before it runs; returns QEMU's fd. */
  listenSocket(path: string): number;
}

/** QMP property objects, as sent by device_add, blockdev-add, netdev_add and object-add. */
export type Props = Record<string, unknown>;
/** Each command's property object, with the members QMP requires (QmpCommandMap). */
export type DeviceAddProps = QmpArgs<'device_add'>;
export type BlockdevAddProps = QmpArgs<'blockdev-add'>;
export type NetdevAddProps = QmpArgs<'netdev_add'>;
export type ObjectAddProps = QmpArgs<'object-add'>;
