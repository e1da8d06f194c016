// vCPU hotplug: add with exactly the topology props QEMU offers in query-hotpluggable-cpus (never
// guessed ones), remove in reverse order of addition. Boot vCPUs are not removable.
import { HotplugError } from '../../hypervisor/errors.ts';
import { assertDeviceChangesSafe, assertVcpuAddBudget, assertVcpuRemovalAllowed, assertVcpuResizeSupported, assertVcpuTarget } from '../../hypervisor/resources.ts';
import type { VcpuResizeResult } from '../../hypervisor/types.ts';
import { QmpCommandError, type QmpEvent } from '../../qmp/index.ts';
import { within, type HotplugContext } from './context.ts';
import { removeFrontend } from './devices.ts';

export function currentVcpus(ctx: Pick<HotplugContext, 'config' | 'state'>): number {
  return ctx.config.cpus.boot + ctx.state.cpus.length;
}

export async function resizeVcpus(ctx: HotplugContext, count: number): Promise<VcpuResizeResult> {
  const previous = currentVcpus(ctx);
  assertVcpuResizeSupported(ctx.config, count, previous);
  assertVcpuTarget(ctx.config.cpus, count);
  if (count < previous) assertVcpuRemovalAllowed(ctx.vcpuRules);
  if (count > previous) assertDeviceChangesSafe('resizeVCPUs', ctx.vcpuRules, ctx.state.vcpuRemoved);
  assertVcpuAddBudget(ctx.vcpuRules, ctx.state.vcpuAdds, previous, count);
  while (currentVcpus(ctx) < count) await addOne(ctx);
  while (currentVcpus(ctx) > count) await removeNewest(ctx);
  ctx.logger.info({ previous, current: currentVcpus(ctx) }, 'vcpus resized');
  return { previous, current: currentVcpus(ctx) };
}

async function addOne(ctx: HotplugContext): Promise<void> {
  const slots = await ctx.qmp.execute('query-hotpluggable-cpus', undefined, within(ctx));
  const free = slots
    .filter((slot) => slot['qom-path'] === undefined)
    .sort((a, b) => (a.props['core-id'] ?? 0) - (b.props['core-id'] ?? 0))[0];
  if (!free) throw new HotplugError('vcpu', 'query-hotpluggable-cpus (no free vCPU slot)');
  const coreId = free.props['core-id'] ?? ctx.state.cpus.length + ctx.config.cpus.boot;
  const qemuId = `vcpu${coreId}`;
  // Counted before it is sent: an add whose outcome is unknown (timeout, lost connection) may have
  // taken a TCG context. Only QEMU's refusal gives it back.
  ctx.state.vcpuAdds += 1;
  try {
    await ctx.qmp.execute('device_add', { driver: free.type, id: qemuId, ...free.props }, within(ctx));
  } catch (error) {
    if (error instanceof QmpCommandError) {
      ctx.state.vcpuAdds -= 1;
      throw new HotplugError(qemuId, 'device_add', { cause: error });
    }
    throw error;
  }
  ctx.state.cpus.push({ qemuId, coreId });
}

/**
 * QEMU 7.2 reports an x86 vCPU unplug only as DEVICE_DELETED of its lapic child
 * (/machine/peripheral/<id>/lapic), never under the CPU's own id; once that arrives the CPU is
 * gone from query-cpus-fast, which is checked before the vCPU is forgotten.
 */
async function removeNewest(ctx: HotplugContext): Promise<void> {
  const newest = ctx.state.cpus.at(-1);
  if (!newest) return;
  const path = `/machine/peripheral/${newest.qemuId}`;
  const released = (event: QmpEvent) => {
    const eventPath = typeof event.data['path'] === 'string' ? event.data['path'] : '';
    return event.data['device'] === newest.qemuId || eventPath === path || eventPath.startsWith(`${path}/`);
  };
  // From the unplug request on, QEMU under tcg may already be unsafe for device changes.
  ctx.state.vcpuRemoved = true;
  await removeFrontend(ctx, newest.qemuId, ctx.removalTimeoutMs, released);
  const cpus = await ctx.qmp.execute('query-cpus-fast', undefined, within(ctx));
  if (cpus.some((cpu) => cpu['qom-path'] === path)) throw new HotplugError(newest.qemuId, 'device_del (the vCPU is still listed by QEMU)');
  ctx.state.cpus.pop();
}
