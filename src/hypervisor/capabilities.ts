// What a VM of a config can do, the same for every backend built on QEMU's semantics (the QEMU
// backend and the mock): the architecture's profile decides what the machine can hot-plug, the
// config what this VM chose.
import type { SandboxConfig } from './config/index.ts';
import { profileOf } from './arch-profiles.ts';
import { vcpuUnplugAllowed } from './resources.ts';
import type { HypervisorCapabilities } from './types.ts';

/** `config` undefined (before createVM): an x86_64 VM with the config defaults. */
export function capabilitiesOf(config: SandboxConfig | undefined): HypervisorCapabilities {
  const profile = profileOf(config);
  const hotplug = config?.memory.hotplug ?? 'none';
  return {
    blockHotplug: true,
    netHotplug: true,
    vfioHotplug: true,
    cpuHotplug: profile.cpuHotplug,
    cpuHotUnplug: profile.cpuHotplug && (config ? vcpuUnplugAllowed(config) : true),
    memoryHotplug: hotplug !== 'none',
    memoryHotUnplug: hotplug === 'virtio-mem',
    dimmHotplug: profile.memoryHotplug.includes('dimm'),
    fsSharing: true,
    pause: true,
    reattach: true,
  };
}
