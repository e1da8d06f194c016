// Backend-neutral resource rules: which hotplug slot a device gets, which resize targets the config
// allows, and how memory growth is cut into steps. Pure functions, shared by the QEMU backend and the
// mock so that both refuse and round the same way.
import { GUEST_MEMORY_BLOCK_MiB, type SandboxConfig } from './config/index.ts';
import { NoFreeSlotError, ResourceLimitError, UnsupportedOperationError } from './errors.ts';

/**
 * Onlining N MiB costs the guest about N/64 MiB of struct pages taken from memory it already has;
 * Kata caps each DIMM step at 48 times the current size to stay clear of that (kata-containers#4847).
 */
export const DIMM_STEP_FACTOR = 48;

/** The hotplug root ports reserved at boot, in the order they are handed out: rp0 … rp<n-1>. */
export function rootPortIds(count: number): string[] {
  return Array.from({ length: count }, (_, i) => `rp${i}`);
}

/** The first root port not in `used`; NoFreeSlotError naming `deviceId` when all are taken. */
export function pickFreeRootPort(used: ReadonlySet<string>, rootPorts: number, deviceId: string): string {
  const free = rootPortIds(rootPorts).find((port) => !used.has(port));
  if (!free) throw new NoFreeSlotError(deviceId, `PCIe root port (all ${rootPorts} reserved ports are in use)`);
  return free;
}

/** The vCPU count must be a whole number between the boot count and the maximum. */
export function assertVcpuTarget(cpus: SandboxConfig['cpus'], count: number): void {
  if (!Number.isInteger(count)) throw new ResourceLimitError('cpus', count, cpus.boot, 'min');
  if (count > cpus.max) throw new ResourceLimitError('cpus', count, cpus.max, 'max');
  if (count < cpus.boot) throw new ResourceLimitError('cpus', count, cpus.boot, 'min');
}

/**
 * A memory target must be a whole number of MiB between boot and max memory. A config without
 * memory hotplug cannot resize at all, which says more than the limit it would otherwise hit.
 */
export function assertMemoryTarget(memory: SandboxConfig['memory'], targetMiB: number, currentMiB: number): void {
  if (!Number.isInteger(targetMiB)) throw new ResourceLimitError('memory', targetMiB, memory.bootMiB, 'min');
  if (memory.hotplug === 'none' && targetMiB !== currentMiB) {
    throw new UnsupportedOperationError('resizeMemory', 'the config has memory.hotplug "none"');
  }
  if (targetMiB < memory.bootMiB) throw new ResourceLimitError('memory', targetMiB, memory.bootMiB, 'min');
  if (targetMiB > memory.maxMiB) throw new ResourceLimitError('memory', targetMiB, memory.maxMiB, 'max');
}

export function alignUp(value: number, to: number): number {
  return Math.ceil(value / to) * to;
}

/** The size to request from the virtio-mem device: the target beyond boot memory, in whole blocks, capped at the device. */
export function virtioMemRequestBytes(memory: SandboxConfig['memory'], targetMiB: number, blockBytes: number): number {
  const MiB = 1024 * 1024;
  return Math.min(alignUp((targetMiB - memory.bootMiB) * MiB, blockBytes), (memory.maxMiB - memory.bootMiB) * MiB);
}

/**
 * The DIMM sizes (MiB) that take memory from `currentMiB` to `targetMiB`: whole guest memory blocks,
 * each step at most DIMM_STEP_FACTOR times the memory the guest has when it comes. DIMMs cannot be
 * unplugged, so a smaller target is refused.
 */
export function dimmSteps(memory: SandboxConfig['memory'], currentMiB: number, targetMiB: number): number[] {
  if (targetMiB < currentMiB) {
    throw new UnsupportedOperationError('resizeMemory', 'DIMM memory cannot shrink (use memory.hotplug "virtio-mem")');
  }
  const steps: number[] = [];
  let now = currentMiB;
  let missing = Math.min(alignUp(targetMiB - currentMiB, GUEST_MEMORY_BLOCK_MiB), memory.maxMiB - currentMiB);
  while (missing > 0) {
    const step = Math.min(missing, Math.floor((now * DIMM_STEP_FACTOR) / GUEST_MEMORY_BLOCK_MiB) * GUEST_MEMORY_BLOCK_MiB);
    steps.push(step);
    now += step;
    missing -= step;
  }
  return steps;
}

/** Each DIMM takes one of the config's memory slots; this is the error when none is left. */
export function noFreeDimmSlot(memory: SandboxConfig['memory'], used: number): NoFreeSlotError {
  return new NoFreeSlotError(`dimm${used}`, `memory slot (all ${memory.slots} are in use)`);
}

/**
 * QEMU 7.2 under TCG corrupts its own memory when a vCPU is unplugged: the next device_add or
 * device_del crashes it (SIGSEGV or SIGABRT), whatever the device. Found by this project's
 * conformance run and reproduced by hand; KVM is not affected. So under tcg, removing vCPUs needs
 * the config's consent, and after it every device change is refused rather than crash QEMU.
 */
export function vcpuUnplugAllowed(config: Pick<SandboxConfig, 'machine' | 'hotplug'>): boolean {
  return config.machine.accel !== 'tcg' || config.hotplug.tcgVcpuUnplug;
}

export function assertVcpuRemovalAllowed(config: Pick<SandboxConfig, 'machine' | 'hotplug'>): void {
  if (!vcpuUnplugAllowed(config)) {
    throw new UnsupportedOperationError(
      'resizeVCPUs',
      'removing vCPUs under tcg corrupts QEMU 7.2 (a later device_add or device_del crashes it); use kvm, or set hotplug.tcgVcpuUnplug for a VM whose devices will not change afterwards',
    );
  }
}

/** After a vCPU was removed under tcg, no device may be added or removed (see vcpuUnplugAllowed). */
export function assertDeviceChangesSafe(operation: string, config: Pick<SandboxConfig, 'machine'>, vcpuRemoved: boolean): void {
  if (config.machine.accel === 'tcg' && vcpuRemoved) {
    throw new UnsupportedOperationError(operation, 'a vCPU was removed from this VM under tcg, after which QEMU 7.2 crashes on any device_add or device_del');
  }
}

/** What a virtio-mem resize that stopped short asks the caller to check (both backends say it). */
export const VIRTIO_MEM_SHORT_HINT =
  'virtio-mem plugs only what the guest accepts: wait for the guest to boot (startVM({ waitForChannel })) and have it online new memory (memhp_default_state=online_movable, or a udev rule); Linux plugs no more while 1 GiB waits offline';
