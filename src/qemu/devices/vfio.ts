// Host PCI devices passed through with VFIO, each on a PCIe root port (large BARs need one).
import type { VfioDeviceConfig } from '../../hypervisor/config/index.ts';
import { renderOptions, type OptionProps } from '../argv/qemu-opts.ts';
import type { ColdplugContext, DeviceAddProps } from './context.ts';

export function vfioProps(device: VfioDeviceConfig, bus: string): DeviceAddProps {
  return { driver: 'vfio-pci', id: device.id, host: device.hostAddress, bus };
}

export function vfioArgs(device: VfioDeviceConfig, ctx: ColdplugContext): string[] {
  return ['-device', renderOptions(vfioProps(device, ctx.dedicatedRootPort(device.id)) as OptionProps, 'driver')];
}
