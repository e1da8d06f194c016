// What a VM of a config can do, the same for every backend built on QEMU's semantics (the QEMU
// backend and the mock): the architecture's profile decides what the machine can hot-plug, the
// version rules what its QEMU can survive (vCPU removal, the TCG add budget), the config what
// this VM chose.
import type { SandboxConfig } from './config/index.ts';
import { deviceRemovalTimeoutMs, profileOf } from './arch-profiles.ts';
import { fsHotplugSupported } from './hotplug-rules.ts';
import type { VcpuRules } from './resources.ts';
import type { HypervisorCapabilities } from './types.ts';

/**
 * `config` undefined (before createVM): an x86_64 VM with the config defaults. `rules` undefined:
 * the QEMU version is not known yet, so nothing is said about removal beyond the machine.
 * `removalTimeoutMs`: the backend's deviceRemovalTimeoutMs option, when it was given.
 */
export function capabilitiesOf(config: SandboxConfig | undefined, rules?: VcpuRules, vcpuAdds = 0, removalTimeoutMs?: number): HypervisorCapabilities {
  const profile = profileOf(config);
  const hotplug = config?.memory.hotplug ?? 'none';
  const budget = profile.cpuHotplug ? rules?.addBudget : undefined;
  return {
    blockHotplug: true,
    netHotplug: true,
    vfioHotplug: true,
    cpuHotplug: profile.cpuHotplug,
    cpuHotUnplug: profile.cpuHotplug && (rules ? rules.unplug : true),
    ...(budget === undefined ? {} : { cpuHotAddBudget: { limit: budget, used: vcpuAdds } }),
    memoryHotplug: hotplug !== 'none',
    memoryHotUnplug: hotplug === 'virtio-mem',
    dimmHotplug: profile.memoryHotplug.includes('dimm'),
    fsSharing: true,
    fsHotplug: fsHotplugSupported(config),
    pause: true,
    reattach: true,
    templates: profile.templates,
    deviceRemovalTimeoutMs: deviceRemovalTimeoutMs(removalTimeoutMs, config ?? {}),
  };
}
