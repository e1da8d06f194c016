// NICs: a tap netdev (opened by QEMU by name, or an fd handed over at spawn) and virtio-net-pci.
import type { NetDeviceConfig } from '../../hypervisor/config/index.ts';
import { renderOptions, type OptionProps } from '../argv/qemu-opts.ts';
import type { ColdplugContext, Props } from './context.ts';

export function netdevId(deviceId: string): string {
  return `net-${deviceId}`;
}

/** netdev_add arguments. `fdInQemu` is the number QEMU knows a caller's fd by. */
export function netdevProps(device: NetDeviceConfig, fdInQemu?: number): Props {
  const props: Props = { type: 'tap', id: netdevId(device.id) };
  if ('ifname' in device.tap) {
    // No helper scripts: QEMU's seccomp filter forbids spawning them anyway.
    Object.assign(props, { ifname: device.tap.ifname, script: 'no', downscript: 'no' });
  } else {
    props['fd'] = String(fdInQemu ?? device.tap.fd);
  }
  if (device.queues > 1) props['queues'] = device.queues;
  if (device.vhost) props['vhost'] = true;
  return props;
}

export function netFrontendProps(device: NetDeviceConfig, placement: { bus: string; addr?: string }): Props {
  const props: Props = { driver: 'virtio-net-pci', id: device.id, netdev: netdevId(device.id), ...placement };
  if (device.mac !== undefined) props['mac'] = device.mac;
  if (device.queues > 1) {
    // One MSI-X vector per queue of each direction, plus config and control.
    props['mq'] = true;
    props['vectors'] = 2 * device.queues + 2;
  }
  return props;
}

export function netArgs(device: NetDeviceConfig, ctx: ColdplugContext): string[] {
  const fd = 'fd' in device.tap ? ctx.passFd(device.tap.fd) : undefined;
  return [
    '-netdev',
    renderOptions(netdevProps(device, fd) as OptionProps, 'type'),
    '-device',
    renderOptions(netFrontendProps(device, ctx.pciSlot(device.id)) as OptionProps, 'driver'),
  ];
}
