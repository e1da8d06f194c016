// The version rules on the QEMU backend's vCPU hotplug (fake QMP on a real socket): under tcg on
// QEMU >= 10 vCPUs may be removed, but a VM hot-adds at most cpus.max - cpus.boot vCPUs in its life;
// the count survives a re-attach through the state file. Below 10 (or unknown) today's refusal holds.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseSandboxConfig } from '../../../src/hypervisor/config/index.ts';
import { ResourceLimitError, UnsupportedOperationError, VcpuAddBudgetError } from '../../../src/hypervisor/errors.ts';
import type { QemuVersion } from '../../../src/hypervisor/version-rules.ts';
import type { HotplugContext } from '../../../src/qemu/hotplug/context.ts';
import { resizeVcpus } from '../../../src/qemu/hotplug/cpus.ts';
import { hotplugDevice } from '../../../src/qemu/hotplug/devices.ts';
import { readStateFile, serializeState, STATE_FILE_VERSION, writeStateFile } from '../../../src/qemu/state-file.ts';
import { QmpErrorReply } from '../../helpers/fake-qmp-server.ts';
import { useHotplugHarness } from '../../helpers/hotplug-harness.ts';

const h = useHotplugHarness();
const QEMU_10: QemuVersion = { major: 10, minor: 0, micro: 2 };
const QEMU_7_2: QemuVersion = { major: 7, minor: 2, micro: 22 };
const dir = mkdtempSync(join(tmpdir(), 'svmm-budget-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A QEMU with `max` vCPU slots (core 0 booted) that plugs and unplugs them as asked. */
function fakeCpus(max: number, options: { refuseAdds?: number } = {}): { adds: () => number } {
  const plugged = new Set<number>();
  let adds = 0;
  let refusals = options.refuseAdds ?? 0;
  h.server.handle('query-hotpluggable-cpus', () =>
    Array.from({ length: max }, (_, core) => ({
      type: 'max-x86_64-cpu',
      'vcpus-count': 1,
      props: { 'core-id': core },
      ...(core === 0 ? { 'qom-path': '/machine/unattached/device[0]' } : plugged.has(core) ? { 'qom-path': `/machine/peripheral/vcpu${core}` } : {}),
    })),
  );
  h.server.handle('device_add', (args) => {
    if (args?.['driver'] !== 'max-x86_64-cpu') return {};
    if (refusals > 0) {
      refusals -= 1;
      throw new QmpErrorReply('GenericError', 'CPU hotplug refused for the test');
    }
    adds += 1;
    plugged.add(Number(args['core-id']));
    return {};
  });
  h.server.handle('device_del', (args) => {
    const id = String(args?.['id']);
    plugged.delete(Number(id.replace('vcpu', '')));
    // QEMU reports a vCPU unplug only for its lapic child.
    h.server.sendEvent('DEVICE_DELETED', { path: `/machine/peripheral/${id}/lapic` });
    return {};
  });
  h.server.handle('query-cpus-fast', () => [
    { 'cpu-index': 0, 'qom-path': '/machine/unattached/device[0]', 'thread-id': 1 },
    ...[...plugged].map((core) => ({ 'cpu-index': core, 'qom-path': `/machine/peripheral/vcpu${core}`, 'thread-id': 1 + core })),
  ]);
  h.server.handle('blockdev-add', () => ({}));
  return { adds: () => adds };
}

function tcgContext(version: QemuVersion | undefined, cpus = { boot: 1, max: 3 }): HotplugContext {
  return h.context({ machine: { accel: 'tcg' }, cpus }, version ? { qemuVersion: version } : {});
}

async function budgetRefusal(ctx: HotplugContext, count: number): Promise<unknown> {
  h.server.received.length = 0;
  const before = structuredClone(ctx.state);
  const error = await resizeVcpus(ctx, count).catch((e: unknown) => e);
  expect(h.sent()).toEqual([]);
  expect(ctx.state).toEqual(before);
  return error;
}

describe('under tcg on QEMU 10', () => {
  it('removes vCPUs without the config’s consent and adds again, up to cpus.max - cpus.boot adds in the VM’s life', async () => {
    const qemu = fakeCpus(3);
    const ctx = tcgContext(QEMU_10);
    expect(await resizeVcpus(ctx, 2)).toEqual({ previous: 1, current: 2 });
    expect(await resizeVcpus(ctx, 1)).toEqual({ previous: 2, current: 1 });
    expect(await resizeVcpus(ctx, 2)).toEqual({ previous: 1, current: 2 });
    expect(ctx.state.vcpuAdds).toBe(2);
    expect(qemu.adds()).toBe(2);
    // The budget (2) is spent although only one vCPU is plugged: a third add would abort QEMU.
    const error = await budgetRefusal(ctx, 3);
    expect(error).toBeInstanceOf(VcpuAddBudgetError);
    expect(error).toBeInstanceOf(ResourceLimitError);
    expect(error).toMatchObject({ code: 'RESOURCE_LIMIT', resource: 'cpus', requested: 3, limit: 2, budget: 2, used: 2 });
    expect((error as Error).message).toBe(
      'cannot resize cpus to 3: the lifetime vCPU hot-add budget under tcg is 2 (cpus.max - cpus.boot) and 2 of it are used, ' +
        "so at most 2 vCPUs can be reached (QEMU never returns a removed vCPU's TCG context; one more add would abort it)",
    );
    // Removing stays allowed, and staying put costs nothing.
    expect(await resizeVcpus(ctx, 1)).toEqual({ previous: 2, current: 1 });
    expect(await resizeVcpus(ctx, 1)).toEqual({ previous: 1, current: 1 });
    expect(await budgetRefusal(ctx, 2)).toMatchObject({ limit: 1, used: 2 });
  });

  it('refuses a resize the budget cannot pay for as a whole, before any add', async () => {
    fakeCpus(4);
    const ctx = tcgContext(QEMU_10, { boot: 1, max: 4 });
    await resizeVcpus(ctx, 3);
    await resizeVcpus(ctx, 1);
    expect(ctx.state.vcpuAdds).toBe(2);
    expect(await budgetRefusal(ctx, 3)).toMatchObject({ requested: 3, limit: 2, budget: 3, used: 2 });
    expect(await resizeVcpus(ctx, 2)).toEqual({ previous: 1, current: 2 });
  });

  it('gives an add back when QEMU refused it (no vCPU thread was made)', async () => {
    fakeCpus(3, { refuseAdds: 1 });
    const ctx = tcgContext(QEMU_10);
    await expect(resizeVcpus(ctx, 2)).rejects.toMatchObject({ code: 'HOTPLUG_FAILED' });
    expect(ctx.state.vcpuAdds).toBe(0);
    expect(await resizeVcpus(ctx, 3)).toEqual({ previous: 1, current: 3 });
    expect(ctx.state.vcpuAdds).toBe(2);
  });

  it('still plugs devices after a vCPU removal (the heap corruption is 7.2’s)', async () => {
    fakeCpus(3);
    const ctx = tcgContext(QEMU_10);
    await resizeVcpus(ctx, 2);
    await resizeVcpus(ctx, 1);
    await expect(hotplugDevice(ctx, { type: 'block', id: 'd0', path: '/var/d0.img' })).resolves.toMatchObject({ id: 'd0' });
  });

  it('keeps the count across a re-attach: the state file carries it and the QEMU version', async () => {
    fakeCpus(3);
    const ctx = tcgContext(QEMU_10);
    await resizeVcpus(ctx, 3);
    await resizeVcpus(ctx, 1);
    const file = join(dir, 'state.json');
    const config = parseSandboxConfig({ id: 'vm-b', boot: { kernel: '/k' }, machine: { accel: 'tcg' }, cpus: { boot: 1, max: 3 }, hotplug: { rootPorts: 2 } });
    await writeStateFile(
      file,
      serializeState({
        version: STATE_FILE_VERSION,
        id: 'vm-b',
        pid: 4321,
        startTime: 1,
        qemuPath: '/usr/bin/qemu-system-x86_64',
        qemuVersion: QEMU_10,
        detached: true,
        identity: null,
        leased: false,
        config,
        paused: false,
        hotplug: ctx.state,
        helpers: [],
      }),
    );
    const saved = await readStateFile(file);
    expect(saved.hotplug.vcpuAdds).toBe(2);
    // A new process: its context comes from the saved state, and the budget is still spent.
    const attached = tcgContext(saved.qemuVersion ?? undefined);
    attached.state = saved.hotplug;
    expect(await budgetRefusal(attached, 2)).toMatchObject({ code: 'RESOURCE_LIMIT', budget: 2, used: 2, limit: 1 });
  });
});

describe('under tcg below QEMU 10, or on an unknown version', () => {
  it.each([
    ['7.2', QEMU_7_2],
    ['9.2 (untested: the older rule)', { major: 9, minor: 2, micro: 0 }],
    ['unknown', undefined],
  ])('QEMU %s refuses vCPU removal without the config’s consent, as before', async (_name, version) => {
    fakeCpus(3);
    const ctx = tcgContext(version);
    await resizeVcpus(ctx, 2);
    h.server.received.length = 0;
    const error = await resizeVcpus(ctx, 1).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UnsupportedOperationError);
    expect((error as Error).message).toContain('removing vCPUs under tcg corrupts QEMU');
    expect(h.sent()).toEqual([]);
  });
});

describe('under kvm', () => {
  it('has no add budget: add and remove as often as wanted', async () => {
    const qemu = fakeCpus(2);
    const ctx = h.context({ machine: { accel: 'kvm' }, cpus: { boot: 1, max: 2 } }, { qemuVersion: QEMU_10 });
    for (let i = 0; i < 3; i++) {
      await resizeVcpus(ctx, 2);
      await resizeVcpus(ctx, 1);
    }
    expect(qemu.adds()).toBe(3);
    expect(ctx.vcpuRules.addBudget).toBeUndefined();
  });
});
