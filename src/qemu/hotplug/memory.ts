// Memory resize. virtio-mem grows and shrinks by asking the device for a new size and waiting for
// the guest to plug or unplug it; DIMMs only grow, one pc-dimm per step, in steps small enough for
// the guest to online (its memmap must fit in the memory it already has).
import { OperationTimeoutError } from '../../errors.ts';
import { sleep } from '../../util/deadline.ts';
import { HotplugError, ResizeIncompleteError } from '../../hypervisor/errors.ts';
import { assertDeviceChangesSafe, assertMemoryTarget, dimmSteps, noFreeDimmSlot, virtioMemRequestBytes, VIRTIO_MEM_SHORT_HINT } from '../../hypervisor/resources.ts';
import type { MemoryResizeResult } from '../../hypervisor/types.ts';
import { QmpCommandError, type QmpEvent } from '../../qmp/index.ts';
import { dimmIds, memoryBackendProps, VIRTIO_MEM_ID } from '../devices/memory.ts';
import { within, type HotplugContext } from './context.ts';
import type { HotpluggedDimm } from './state.ts';

export { DIMM_STEP_FACTOR } from '../../hypervisor/resources.ts';

const MiB = 1024 * 1024;
/**
 * QEMU sends MEMORY_DEVICE_SIZE_CHANGE at most once a second per device, so the event alone can lag
 * the guest by up to a second: between events the plugged size is read this often.
 */
const SIZE_POLL_MS = 100;

export function currentMemoryMiB(ctx: Pick<HotplugContext, 'config' | 'state'>): number {
  const { bootMiB, hotplug } = ctx.config.memory;
  if (hotplug === 'virtio-mem') return bootMiB + ctx.state.virtioMemMiB;
  return bootMiB + ctx.state.dimms.reduce((sum, dimm) => sum + dimm.sizeMiB, 0);
}

export async function resizeMemory(ctx: HotplugContext, targetMiB: number): Promise<MemoryResizeResult> {
  const { hotplug } = ctx.config.memory;
  const previousMiB = currentMemoryMiB(ctx);
  assertMemoryTarget(ctx.config.memory, targetMiB, previousMiB);
  if (hotplug === 'virtio-mem') await resizeVirtioMem(ctx, targetMiB);
  if (hotplug === 'dimm') await growDimms(ctx, targetMiB);
  const currentMiB = currentMemoryMiB(ctx);
  ctx.logger.info({ previousMiB, currentMiB }, 'memory resized');
  return { previousMiB, currentMiB };
}

async function resizeVirtioMem(ctx: HotplugContext, targetMiB: number): Promise<void> {
  const { bootMiB } = ctx.config.memory;
  const blockBytes = Number(await ctx.qmp.execute('qom-get', { path: VIRTIO_MEM_ID, property: 'block-size' }, within(ctx)));
  const requestedBytes = virtioMemRequestBytes(ctx.config.memory, targetMiB, blockBytes);
  // Listen before asking, so a size change reported right after qom-set is not missed.
  let plugged = Number.NaN;
  let wake: () => void = () => {};
  const stopListening = ctx.qmp.on('MEMORY_DEVICE_SIZE_CHANGE', (event: QmpEvent) => {
    const qomPath = typeof event.data['qom-path'] === 'string' ? event.data['qom-path'] : '';
    if (event.data['id'] !== VIRTIO_MEM_ID && !qomPath.endsWith(`/${VIRTIO_MEM_ID}`)) return;
    plugged = Number(event.data['size']);
    wake();
  });
  try {
    await ctx.qmp.execute('qom-set', { path: VIRTIO_MEM_ID, property: 'requested-size', value: requestedBytes }, within(ctx));
    ctx.state.virtioMemMiB = requestedBytes / MiB;
    if (Number.isNaN(plugged)) plugged = Number(await ctx.qmp.execute('qom-get', { path: VIRTIO_MEM_ID, property: 'size' }, within(ctx)));
    while (plugged !== requestedBytes) {
      const woken = await ctx.deadline.race(
        Promise.race([new Promise<boolean>((resolve) => (wake = () => resolve(true))), sleep(SIZE_POLL_MS).then(() => false)]),
      );
      if (!woken) plugged = Number(await ctx.qmp.execute('qom-get', { path: VIRTIO_MEM_ID, property: 'size' }, within(ctx)));
    }
  } catch (error) {
    if (!(error instanceof OperationTimeoutError)) throw error;
    // The guest did not get there in time: report where it stands, and leave the request in place
    // (the guest may still catch up; a new resize replaces it).
    const reached = Number(await ctx.qmp.execute('qom-get', { path: VIRTIO_MEM_ID, property: 'size' }, { timeoutMs: 1_000 }));
    throw new ResizeIncompleteError(bootMiB + requestedBytes / MiB, bootMiB + reached / MiB, { cause: error, hint: VIRTIO_MEM_SHORT_HINT });
  } finally {
    stopListening();
  }
}

async function growDimms(ctx: HotplugContext, targetMiB: number): Promise<void> {
  const steps = dimmSteps(ctx.config.memory, currentMemoryMiB(ctx), targetMiB);
  if (steps.length > 0) assertDeviceChangesSafe('resizeMemory', ctx.vcpuRules, ctx.state.vcpuRemoved);
  for (const step of steps) {
    if (ctx.state.dimms.length >= ctx.config.memory.slots) throw noFreeDimmSlot(ctx.config.memory, ctx.state.dimms.length);
    await addDimm(ctx, step);
  }
}

async function addDimm(ctx: HotplugContext, sizeMiB: number): Promise<void> {
  const dimm: HotpluggedDimm = { ...dimmIds(ctx.state.dimms.length), sizeMiB };
  try {
    await ctx.qmp.execute('object-add', memoryBackendProps(dimm.backendId, sizeMiB, ctx.config.memory.backing, ctx.config.memory.prealloc), within(ctx));
  } catch (error) {
    if (error instanceof QmpCommandError) throw new HotplugError(dimm.qemuId, 'object-add', { cause: error });
    throw error;
  }
  try {
    await ctx.qmp.execute('device_add', { driver: 'pc-dimm', id: dimm.qemuId, memdev: dimm.backendId }, within(ctx));
  } catch (error) {
    await ctx.qmp.execute('object-del', { id: dimm.backendId }, { timeoutMs: 5_000 }).catch((undoError: unknown) => {
      ctx.logger.error({ err: undoError }, 'rollback of the dimm backend failed');
    });
    if (error instanceof QmpCommandError) throw new HotplugError(dimm.qemuId, 'device_add', { cause: error });
    throw error;
  }
  ctx.state.dimms.push(dimm);
}
