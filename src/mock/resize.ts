// Memory and vCPU resize on the mock, with the QEMU backend's rules (shared in
// hypervisor/resources.ts): virtio-mem grows and shrinks in 2 MiB blocks once the guest plugs them,
// DIMMs only grow, one slot per step; vCPUs are added at once and removed newest first once the
// guest has offlined them.
import { OperationTimeoutError } from '../errors.ts';
import { MEMORY_ALIGN_MiB } from '../hypervisor/config/index.ts';
import { HotplugError, ResizeIncompleteError } from '../hypervisor/errors.ts';
import {
  assertDeviceChangesSafe,
  assertMemoryTarget,
  assertVcpuAddBudget,
  assertVcpuRemovalAllowed,
  assertVcpuResizeSupported,
  assertVcpuTarget,
  dimmSteps,
  noFreeDimmSlot,
  virtioMemRequestBytes,
  VIRTIO_MEM_SHORT_HINT,
} from '../hypervisor/resources.ts';
import type { MemoryResizeResult, VcpuResizeResult } from '../hypervisor/types.ts';
import { waitForRelease, type MockContext } from './context.ts';
import type { MockHotCpu } from './machine.ts';

const MiB = 1024 * 1024;

export async function resizeMemory(ctx: MockContext, targetMiB: number): Promise<MemoryResizeResult> {
  const { machine } = ctx;
  const previousMiB = machine.memoryMiB();
  assertMemoryTarget(machine.config.memory, targetMiB, previousMiB);
  await ctx.delay();
  if (machine.config.memory.hotplug === 'virtio-mem') await resizeVirtioMem(ctx, targetMiB);
  if (machine.config.memory.hotplug === 'dimm') growDimms(ctx, targetMiB);
  return { previousMiB, currentMiB: machine.memoryMiB() };
}

async function resizeVirtioMem(ctx: MockContext, targetMiB: number): Promise<void> {
  const { machine } = ctx;
  const { state } = machine;
  const { bootMiB } = machine.config.memory;
  state.virtioMemMiB = virtioMemRequestBytes(machine.config.memory, targetMiB, MEMORY_ALIGN_MiB * MiB) / MiB;
  machine.askGuestToPlugMemory();
  try {
    while (state.virtioMemPluggedMiB !== state.virtioMemMiB) await ctx.deadline.race(machine.nextChange());
  } catch (error) {
    if (!(error instanceof OperationTimeoutError)) throw error;
    // The request stays: the guest may still get there, and a new resize replaces it.
    throw new ResizeIncompleteError(bootMiB + state.virtioMemMiB, bootMiB + state.virtioMemPluggedMiB, { cause: error, hint: VIRTIO_MEM_SHORT_HINT });
  }
}

function growDimms(ctx: MockContext, targetMiB: number): void {
  const { machine } = ctx;
  const { memory } = machine.config;
  const steps = dimmSteps(memory, machine.memoryMiB(), targetMiB);
  if (steps.length > 0) assertDeviceChangesSafe('resizeMemory', machine.vcpuRules, machine.state.vcpuRemoved);
  for (const size of steps) {
    const slot = machine.state.dimms.length;
    if (slot >= memory.slots) throw noFreeDimmSlot(memory, slot);
    const failure = ctx.faults.takeHotplugFailure(`dimm${slot}`, ['object-add', 'device_add']);
    if (failure) throw new HotplugError(`dimm${slot}`, failure.step, { cause: new Error(failure.message) });
    machine.state.dimms.push(size);
  }
}

export async function resizeVcpus(ctx: MockContext, count: number): Promise<VcpuResizeResult> {
  const { machine } = ctx;
  const previous = machine.vcpuCount();
  assertVcpuResizeSupported(machine.config, count, previous);
  assertVcpuTarget(machine.config.cpus, count);
  if (count < previous) assertVcpuRemovalAllowed(machine.vcpuRules);
  if (count > previous) assertDeviceChangesSafe('resizeVCPUs', machine.vcpuRules, machine.state.vcpuRemoved);
  assertVcpuAddBudget(machine.vcpuRules, machine.state.vcpuAdds, previous, count);
  await ctx.delay();
  while (machine.vcpuCount() < count) addCpu(ctx);
  while (machine.vcpuCount() > count) await removeNewestCpu(ctx);
  return { previous, current: machine.vcpuCount() };
}

/** The lowest free core: boot vCPUs hold the first cores and removal goes newest first. */
function addCpu(ctx: MockContext): void {
  const { machine } = ctx;
  ctx.deadline.throwIfDone();
  const cpu: MockHotCpu = { coreId: machine.vcpuCount(), guestAsked: false, released: false };
  const id = `vcpu${cpu.coreId}`;
  const failure = ctx.faults.takeHotplugFailure(id, ['device_add']);
  if (failure) throw new HotplugError(id, failure.step, { cause: new Error(failure.message) });
  machine.state.vcpuAdds += 1;
  machine.state.cpus.push(cpu);
  machine.announceCpu(cpu);
}

async function removeNewestCpu(ctx: MockContext): Promise<void> {
  const { machine } = ctx;
  const cpu = machine.state.cpus.at(-1);
  if (!cpu) return;
  const id = `vcpu${cpu.coreId}`;
  machine.state.vcpuRemoved = true;
  if (!cpu.released) {
    if (!ctx.faults.takeRemovalTimeout(id)) machine.askGuestToOfflineCpu(cpu);
    await waitForRelease(ctx, cpu, id);
  }
  ctx.deadline.throwIfDone();
  machine.state.cpus.pop();
}
