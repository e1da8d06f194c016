// NICs: a tap netdev (opened by QEMU by name, or the caller's fds, handed over at spawn or by
// getfd) and virtio-net-pci.
import type { NetDeviceConfig } from '../../hypervisor/config/index.ts';
import { renderOptions, type OptionProps } from '../argv/qemu-opts.ts';
import type { ColdplugContext, DeviceAddProps, NetdevAddProps } from './context.ts';

export function netdevId(deviceId: string): string {
  return `net-${deviceId}`;
}

/**
 * How QEMU knows the caller's fds of a tap: numbers at spawn, getfd names when hot-plugged. One
 * entry per queue, then one per vhost fd.
 */
export interface TapFdRefs {
  fds: readonly string[];
  vhostFds: readonly string[];
}

/** The caller's fds of a tap, queues first, then vhost-net: what is passed (at spawn or by getfd) in this order. */
export function tapCallerFds(device: NetDeviceConfig): { fds: number[]; vhostFds: number[] } {
  const { tap } = device;
  if ('fd' in tap) return { fds: [tap.fd], vhostFds: [] };
  if ('fds' in tap) return { fds: [...tap.fds], vhostFds: [...(tap.vhostFds ?? [])] };
  return { fds: [], vhostFds: [] };
}

/** getfd names of a hot-plugged NIC's fds (unique per device, consumed by netdev_add). */
export function tapFdNames(device: NetDeviceConfig): TapFdRefs {
  const { fds, vhostFds } = tapCallerFds(device);
  const id = netdevId(device.id);
  return { fds: fds.map((_, i) => `${id}-q${i}`), vhostFds: vhostFds.map((_, i) => `${id}-vhost${i}`) };
}

/** netdev_add arguments. `refs`: how QEMU knows the caller's fds, when the tap is given as fds. */
export function netdevProps(device: NetDeviceConfig, refs?: TapFdRefs): NetdevAddProps {
  const props: NetdevAddProps = { type: 'tap', id: netdevId(device.id) };
  if ('ifname' in device.tap) {
    // No helper scripts: QEMU's seccomp filter forbids spawning them anyway.
    Object.assign(props, { ifname: device.tap.ifname, script: 'no', downscript: 'no' });
    if (device.queues > 1) props['queues'] = device.queues;
  } else {
    if (!refs || refs.fds.length === 0) throw new Error(`internal: NIC ${device.id} has tap fds but no references to them`);
    // QEMU refuses queues= with fd/fds: the number of fds is the number of queues.
    if (refs.fds.length === 1) props['fd'] = refs.fds[0];
    else props['fds'] = refs.fds.join(':');
    if (refs.vhostFds.length === 1) props['vhostfd'] = refs.vhostFds[0];
    else if (refs.vhostFds.length > 1) props['vhostfds'] = refs.vhostFds.join(':');
  }
  if (device.vhost) props['vhost'] = true;
  return props;
}

export function netFrontendProps(device: NetDeviceConfig, placement: { bus: string; addr?: string }): DeviceAddProps {
  const props: DeviceAddProps = { driver: 'virtio-net-pci', id: device.id, netdev: netdevId(device.id), ...placement };
  if (device.mac !== undefined) props['mac'] = device.mac;
  if (device.queues > 1) {
    // One MSI-X vector per queue of each direction, plus config and control.
    props['mq'] = true;
    props['vectors'] = 2 * device.queues + 2;
  }
  return props;
}

export function netArgs(device: NetDeviceConfig, ctx: ColdplugContext): string[] {
  const callerFds = tapCallerFds(device);
  const refs = { fds: callerFds.fds.map((fd) => String(ctx.passFd(fd))), vhostFds: callerFds.vhostFds.map((fd) => String(ctx.passFd(fd))) };
  return [
    '-netdev',
    renderOptions(netdevProps(device, refs) as OptionProps, 'type'),
    '-device',
    renderOptions(netFrontendProps(device, ctx.pciSlot(device.id)) as OptionProps, 'driver'),
  ];
}
