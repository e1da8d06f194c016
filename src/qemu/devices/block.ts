// Disks: a blockdev node tree (format over protocol) and a virtio-blk-pci or scsi-hd frontend.
import type { BlockDeviceConfig } from '../../hypervisor/config/index.ts';
import { renderOptions, type OptionProps } from '../argv/qemu-opts.ts';
import type { BlockdevAddProps, ColdplugContext, DeviceAddProps, HostProbe } from './context.ts';

export const SCSI_CONTROLLER_ID = 'scsi0';

export function blockNodeName(deviceId: string): string {
  return `drv-${deviceId}`;
}

/** The config's cache mode as QEMU's two cache flags plus the device's write cache. */
export function cacheFlags(cache: BlockDeviceConfig['cache']): { direct: boolean; noFlush: boolean; writeCache: boolean } {
  switch (cache) {
    case 'none':
      return { direct: true, noFlush: false, writeCache: true };
    case 'writethrough':
      return { direct: false, noFlush: false, writeCache: false };
    case 'directsync':
      return { direct: true, noFlush: false, writeCache: false };
    case 'unsafe':
      return { direct: false, noFlush: true, writeCache: true };
    case 'writeback':
      return { direct: false, noFlush: false, writeCache: true };
  }
}

/**
 * The protocol node's driver and filename: the path QEMU opens, or the fd set the caller's fd was
 * put in (QEMU then opens /dev/fdset/<id>, taking the fd of the disk's access mode from it).
 */
export function blockFile(device: BlockDeviceConfig, host: HostProbe, fdSet?: number): { driver: 'file' | 'host_device'; filename: string } {
  if (device.fd !== undefined) {
    if (fdSet === undefined) throw new Error(`internal: disk ${device.id} is given as an fd but has no fd set`);
    return { driver: host.isBlockDeviceFd(device.fd) ? 'host_device' : 'file', filename: `/dev/fdset/${fdSet}` };
  }
  if (device.path === undefined) throw new Error(`internal: disk ${device.id} has neither path nor fd`);
  return { driver: host.isBlockDevice(device.path) ? 'host_device' : 'file', filename: device.path };
}

/** blockdev-add arguments: the format node named drv-<id> over a file or host_device node. */
export function blockdevProps(device: BlockDeviceConfig, host: HostProbe, fdSet?: number): BlockdevAddProps {
  const { direct, noFlush } = cacheFlags(device.cache);
  const cache = { direct, 'no-flush': noFlush };
  return {
    driver: device.format,
    'node-name': blockNodeName(device.id),
    'read-only': device.readOnly,
    cache,
    file: {
      ...blockFile(device, host, fdSet),
      aio: device.aio,
      'read-only': device.readOnly,
      cache,
    },
  };
}

/** device_add arguments for the disk on `bus` (a root port, pcie.0 or the SCSI bus). */
export function blockFrontendProps(device: BlockDeviceConfig, placement: { bus: string; addr?: string }): DeviceAddProps {
  const props: DeviceAddProps = {
    driver: device.driver === 'virtio-scsi' ? 'scsi-hd' : 'virtio-blk-pci',
    id: device.id,
    drive: blockNodeName(device.id),
    bus: placement.bus,
    'write-cache': cacheFlags(device.cache).writeCache ? 'on' : 'off',
  };
  if (placement.addr !== undefined) props['addr'] = placement.addr;
  if (device.serial !== undefined) props['serial'] = device.serial;
  return props;
}

export function scsiControllerProps(placement: { bus: string; addr?: string }): DeviceAddProps {
  return { driver: 'virtio-scsi-pci', id: SCSI_CONTROLLER_ID, ...placement };
}

export function blockArgs(device: BlockDeviceConfig, ctx: ColdplugContext): string[] {
  const placement = device.driver === 'virtio-scsi' ? { bus: ctx.scsiBus() } : ctx.pciSlot(device.id);
  const fdSet = device.fd === undefined ? undefined : ctx.fdSet(device.fd);
  return [
    '-blockdev',
    renderOptions(blockdevProps(device, ctx.host, fdSet) as OptionProps),
    '-device',
    renderOptions(blockFrontendProps(device, placement) as OptionProps, 'driver'),
  ];
}
