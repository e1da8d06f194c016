// One module per device kind; this switch is the only place that lists them all, and the compiler
// checks that it does.
import type { DeviceConfig } from '../../hypervisor/config/index.ts';
import { blockArgs } from './block.ts';
import type { ColdplugContext } from './context.ts';
import { netArgs } from './net.ts';
import { balloonArgs, channelArgs, fsArgs, pvpanicArgs, rngArgs, vsockArgs } from './simple.ts';
import { vfioArgs } from './vfio.ts';

export function coldplugArgs(device: DeviceConfig, ctx: ColdplugContext): string[] {
  switch (device.type) {
    case 'block':
      return blockArgs(device, ctx);
    case 'net':
      return netArgs(device, ctx);
    case 'vfio':
      return vfioArgs(device, ctx);
    case 'vsock':
      return vsockArgs(device, ctx);
    case 'fs':
      return fsArgs(device, ctx);
    case 'rng':
      return rngArgs(device, ctx);
    case 'balloon':
      return balloonArgs(device, ctx);
    case 'channel':
      return channelArgs(device, ctx);
    case 'pvpanic':
      return pvpanicArgs(device, ctx);
    default: {
      const unknown: never = device;
      throw new Error(`no command-line builder for device type ${(unknown as { type: string }).type}`);
    }
  }
}

export { realHost, type ColdplugContext, type HostProbe, type Props } from './context.ts';
