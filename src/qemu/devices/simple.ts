// The device kinds that are one or two QEMU options and only ever cold-plugged.
import type {
  BalloonDeviceConfig,
  ChannelDeviceConfig,
  FsDeviceConfig,
  PvpanicDeviceConfig,
  RngDeviceConfig,
  VsockDeviceConfig,
} from '../../hypervisor/config/index.ts';
import { renderOptions, type OptionProps } from '../argv/qemu-opts.ts';
import type { ColdplugContext } from './context.ts';
import { virtioFsChardevId, virtioFsFrontendProps } from './virtio-fs.ts';

const device = (props: OptionProps) => ['-device', renderOptions(props, 'driver')];

export function vsockArgs(d: VsockDeviceConfig, ctx: ColdplugContext): string[] {
  return device({ driver: 'vhost-vsock-pci', id: d.id, 'guest-cid': d.guestCid, ...ctx.pciSlot(d.id) });
}

export function fsArgs(d: FsDeviceConfig, ctx: ColdplugContext): string[] {
  if (d.driver === 'virtio-fs') {
    return [
      '-chardev',
      renderOptions({ backend: 'socket', id: virtioFsChardevId(d.id), path: d.socketPath ?? ctx.paths.virtiofsSocket(d.id) }, 'backend'),
      ...device(virtioFsFrontendProps(d, ctx.pciSlot(d.id)) as OptionProps),
    ];
  }
  const fsdev = `fsdev-${d.id}`;
  return [
    '-fsdev',
    renderOptions({ driver: 'local', id: fsdev, path: d.path, security_model: d.securityModel, readonly: d.readOnly ? true : undefined }, 'driver'),
    ...device({ driver: 'virtio-9p-pci', id: d.id, fsdev, mount_tag: d.tag, ...ctx.pciSlot(d.id) }),
  ];
}

export function rngArgs(d: RngDeviceConfig, ctx: ColdplugContext): string[] {
  const backend = `rng-${d.id}`;
  return [
    '-object',
    renderOptions({ 'qom-type': 'rng-random', id: backend, filename: d.source }, 'qom-type'),
    ...device({ driver: 'virtio-rng-pci', id: d.id, rng: backend, ...ctx.pciSlot(d.id) }),
  ];
}

export function balloonArgs(d: BalloonDeviceConfig, ctx: ColdplugContext): string[] {
  return device({
    driver: 'virtio-balloon-pci',
    id: d.id,
    'deflate-on-oom': d.deflateOnOom,
    'free-page-reporting': d.freePageReporting,
    ...ctx.pciSlot(d.id),
  });
}

/** A virtio-serial port whose host end is a unix socket QEMU listens on. */
export function channelArgs(d: ChannelDeviceConfig, ctx: ColdplugContext): string[] {
  const chardev = `chr-${d.id}`;
  const bus = ctx.virtioSerialBus();
  return [
    '-chardev',
    renderOptions({ backend: 'socket', id: chardev, fd: ctx.listenSocket(ctx.paths.channelSocket(d.id)), server: true, wait: false }, 'backend'),
    ...device({ driver: 'virtserialport', id: d.id, bus, chardev, name: d.name }),
  ];
}

export function pvpanicArgs(d: PvpanicDeviceConfig, ctx: ColdplugContext): string[] {
  return device({ driver: 'pvpanic-pci', id: d.id, ...ctx.pciSlot(d.id) });
}
