// Backend-neutral resource rules: which hotplug slot a device gets, which resize targets the config
// allows, and how memory growth is cut into steps. Pure functions, shared by the QEMU backend and the
// mock so that both refuse and round the same way.
import { GUEST_MEMORY_BLOCK_MiB, type SandboxConfig } from './config/index.ts';
import { NoFreeSlotError, ResourceLimitError, UnsupportedOperationError, VcpuAddBudgetError } from './errors.ts';
import { applicableRules, formatVersion, type QemuVersion } from './version-rules.ts';
import { profileOf } from './arch-profiles.ts';

/**
 * Onlining N MiB costs the guest about N/64 MiB of struct pages taken from memory it already has;
 * Kata caps each DIMM step at 48 times the current size to stay clear of that (kata-containers#4847).
 */
export const DIMM_STEP_FACTOR = 48;

/** The hotplug root ports reserved at boot, in the order they are handed out: rp0 … rp<n-1>. */
export function rootPortIds(count: number): string[] {
  return Array.from({ length: count }, (_, i) => `rp${i}`);
}

/**
 * When each root port was last given up by a device (removed or ejected). A guest goes on handling
 * a slot for a while after it let go of the device in it, so a slot freed a moment ago is the last
 * one handed out (see pickFreeRootPort).
 */
export class FreedRootPorts {
  readonly #at = new Map<string, number>();

  /** Notes that `port` was given up at `at` (ms since the epoch). */
  freed(port: string, at: number = Date.now()): void {
    this.#at.set(port, at);
  }

  /** When `port` was last given up; undefined when it never was. */
  freedAt(port: string): number | undefined {
    return this.#at.get(port);
  }
}

/**
 * A root port not in `used`: one never given up first (rp0 … rp<n-1>), else the one given up
 * longest ago, so that a slot the guest may still be settling is reused only when no other is free.
 * NoFreeSlotError naming `deviceId` when all are taken.
 */
export function pickFreeRootPort(used: ReadonlySet<string>, rootPorts: number, deviceId: string, freed?: FreedRootPorts): string {
  const free = rootPortIds(rootPorts).filter((port) => !used.has(port));
  // Times are >= 0: a port never given up comes before any that was.
  const order = (port: string) => freed?.freedAt(port) ?? -1;
  // A stable sort: ports never given up keep their index order.
  const [port] = free.sort((a, b) => order(a) - order(b));
  if (!port) throw new NoFreeSlotError(deviceId, `PCIe root port (all ${rootPorts} reserved ports are in use)`);
  return port;
}

/**
 * A machine without vCPU hotplug (aarch64's virt) keeps its boot vCPUs: any other count is
 * UNSUPPORTED, which says more than the cpus.max it would otherwise hit.
 */
export function assertVcpuResizeSupported(config: Pick<SandboxConfig, 'machine'>, count: number, current: number): void {
  const profile = profileOf(config);
  if (!profile.cpuHotplug && count !== current) throw new UnsupportedOperationError('resizeVCPUs', profile.cpuHotplugMissing);
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
 * What may be done with vCPUs on this VM, from the version rules (version-rules.ts) for its accel
 * and QEMU version:
 * - below QEMU 10 under tcg a vCPU unplug corrupts QEMU's heap: removal needs the config's consent
 *   (hotplug.tcgVcpuUnplug), and after one every device change is refused rather than crash QEMU;
 * - from QEMU 10 on under tcg removal is fine, but hot-adds are capped over the VM's life;
 * - KVM has neither problem.
 */
export interface VcpuRules {
  /** The QEMU version the rules were chosen for (undefined: unknown, judged as the oldest). */
  version: QemuVersion | undefined;
  /** vCPUs may be removed. */
  unplug: boolean;
  /** After a vCPU removal, device changes crash QEMU: refuse them. */
  changesUnsafeAfterUnplug: boolean;
  /** At most this many vCPU hot-adds over the VM's life (removed ones count); undefined: no cap. */
  addBudget: number | undefined;
}

export function vcpuRules(config: Pick<SandboxConfig, 'machine' | 'hotplug' | 'cpus'>, version: QemuVersion | undefined): VcpuRules {
  const rules = applicableRules(config.machine.accel, version);
  const corrupts = rules.has('tcg-vcpu-unplug-corrupts-heap');
  return {
    version,
    unplug: !corrupts || config.hotplug.tcgVcpuUnplug,
    changesUnsafeAfterUnplug: corrupts,
    addBudget: rules.has('tcg-vcpu-contexts-never-returned') ? config.cpus.max - config.cpus.boot : undefined,
  };
}

export function assertVcpuRemovalAllowed(rules: VcpuRules): void {
  if (!rules.unplug) {
    throw new UnsupportedOperationError(
      'resizeVCPUs',
      `removing vCPUs under tcg corrupts QEMU ${formatVersion(rules.version)} (below 10, a later device_add or device_del crashes it); use kvm or QEMU >= 10, or set hotplug.tcgVcpuUnplug for a VM whose devices will not change afterwards`,
    );
  }
}

/** After a vCPU was removed under tcg below QEMU 10, no device may be added or removed (see vcpuRules). */
export function assertDeviceChangesSafe(operation: string, rules: VcpuRules, vcpuRemoved: boolean): void {
  if (rules.changesUnsafeAfterUnplug && vcpuRemoved) {
    throw new UnsupportedOperationError(operation, `a vCPU was removed from this VM under tcg, after which QEMU ${formatVersion(rules.version)} (below 10) crashes on any device_add or device_del`);
  }
}

/**
 * Going from `current` to `requested` vCPUs takes `requested - current` hot-adds: refused as a whole,
 * before any is made, when the lifetime budget cannot pay for them (`used` were spent already).
 */
export function assertVcpuAddBudget(rules: VcpuRules, used: number, current: number, requested: number): void {
  const budget = rules.addBudget;
  if (budget === undefined || requested <= current) return;
  if (used + (requested - current) > budget) throw new VcpuAddBudgetError(requested, current + Math.max(0, budget - used), budget, used);
}

/** What a virtio-mem resize that stopped short asks the caller to check (both backends say it). */
export const VIRTIO_MEM_SHORT_HINT =
  'virtio-mem plugs only what the guest accepts: wait for the guest to boot (startVM({ waitForChannel })) and have it online new memory (memhp_default_state=online_movable, or a udev rule); Linux plugs no more while 1 GiB waits offline';
