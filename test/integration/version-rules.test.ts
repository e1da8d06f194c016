// The version rules on real QEMUs, side by side: QEMU 10.0.2 (from the bootstrap's cache) under tcg
// removes vCPUs but hot-adds at most cpus.max - cpus.boot over the VM's life, kept across detach and
// attach; Debian 12's QEMU 7.2 still refuses the removal. Each count is read from inside the guest.
// Both binaries are named here (not SANDBOX_VMM_QEMU): the file is about how they differ.
import { existsSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MissingFeatureError, UnsupportedOperationError, VcpuAddBudgetError } from '../../src/hypervisor/errors.ts';
import { QemuHypervisor } from '../../src/qemu/qemu-hypervisor.ts';
import { qemuFeatures } from '../../src/qemu/features/store.ts';
import type { GuestAgent } from '../guest/index.ts';
import { connectAgent, fakeQemu, guestConfig, leasesOnDisk, scratchDir } from './helpers/sandbox.ts';
import { useCleanups } from './helpers/cleanups.ts';
import { eventually } from './helpers/eventually.ts';

const QEMU_10 = join(process.cwd(), '.cache', 'qemu', '10.0.2', 'root', 'usr', 'bin', 'qemu-system-x86_64');
const QEMU_7_2 = '/usr/bin/qemu-system-x86_64';

describe('QEMU 10.0.2 under tcg: vCPU removal with the lifetime add budget', () => {
  let vm: QemuHypervisor | undefined;
  let agent: GuestAgent | undefined;

  beforeAll(async () => {
    expect(existsSync(QEMU_10)).toBe(true);
    vm = new QemuHypervisor({ deviceRemovalTimeoutMs: 30_000 });
    await vm.createVM(guestConfig({ cpus: { boot: 1, max: 3 }, hotplug: { rootPorts: 1 }, runtime: { qemuPath: QEMU_10 } }));
    await vm.startVM();
    agent = await connectAgent(vm);
  });

  afterAll(async () => {
    await agent?.close();
    await vm?.stopVM();
  });

  it('probed the binary at start: its version decides the rules, and capabilities() reports the budget', () => {
    // Kept under the resolved path, as createVM resolves runtime.qemuPath.
    const features = qemuFeatures.known(realpathSync(QEMU_10));
    expect(features?.version).toMatchObject({ major: 10, minor: 0 });
    expect(features?.commands.has('query-hotpluggable-cpus')).toBe(true);
    expect(features?.machines.get('q35')?.type).toBe('pc-q35-10.0-machine');
    expect(vm?.capabilities()).toMatchObject({ cpuHotUnplug: true, cpuHotAddBudget: { limit: 2, used: 0 } });
  });

  it('adds, removes and adds again up to the budget; the next add is RESOURCE_LIMIT and QEMU and the guest live on', async () => {
    const live = vm as QemuHypervisor;
    const guest = agent as GuestAgent;
    expect(await live.resizeVCPUs(2)).toEqual({ previous: 1, current: 2 });
    expect(await eventually(() => guest.onlineCpus(), (n) => n === 2)).toBe(2);
    expect(await live.resizeVCPUs(1)).toEqual({ previous: 2, current: 1 });
    expect(await eventually(() => guest.onlineCpus(), (n) => n === 1)).toBe(1);
    expect(await live.resizeVCPUs(2)).toEqual({ previous: 1, current: 2 });
    expect(await eventually(() => guest.onlineCpus(), (n) => n === 2)).toBe(2);
    expect(live.capabilities().cpuHotAddBudget).toEqual({ limit: 2, used: 2 });

    // Two vCPUs are plugged of a maximum of three, but both adds are spent: a third would abort QEMU.
    const error = await live.resizeVCPUs(3).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(VcpuAddBudgetError);
    expect(error).toMatchObject({ code: 'RESOURCE_LIMIT', budget: 2, used: 2, limit: 2 });
    await live.check();
    expect(live.pid).toBeDefined();
    expect(await guest.onlineCpus()).toBe(2);
    expect(await guest.runOk('echo alive')).toBe('alive\n');
  });

  it('keeps the spent budget across detach and attach (the state file)', async () => {
    const first = vm as QemuHypervisor;
    const runtimeDir = first.runtimeDir as string;
    await first.detach();
    vm = await QemuHypervisor.attach(runtimeDir, { timeoutMs: 10_000, deviceRemovalTimeoutMs: 30_000 });
    expect(vm.capabilities().cpuHotAddBudget).toEqual({ limit: 2, used: 2 });
    await expect(vm.resizeVCPUs(3)).rejects.toMatchObject({ code: 'RESOURCE_LIMIT', used: 2 });
    // Removal still works for the new owner; adding back is refused all the same.
    expect(await vm.resizeVCPUs(1)).toEqual({ previous: 2, current: 1 });
    expect(await eventually(() => (agent as GuestAgent).onlineCpus(), (n) => n === 1)).toBe(1);
    await expect(vm.resizeVCPUs(2)).rejects.toBeInstanceOf(VcpuAddBudgetError);
    expect(await (agent as GuestAgent).runOk('echo still-here')).toBe('still-here\n');
  });
});

describe('a QEMU lacking a command the library sends (as an older one would)', () => {
  const { cleanups, track } = useCleanups();

  it('fails startVM with MissingFeatureError naming the command and the binary, leaving nothing behind', async () => {
    const scratch = scratchDir();
    cleanups.push(scratch.remove);
    const qemu = fakeQemu(scratch.dir, [], ['query-hotpluggable-cpus']);
    const vm = track(new QemuHypervisor());
    await vm.createVM({ ...guestConfig(), runtime: { qemuPath: qemu } });
    const dir = vm.runtimeDir as string;
    const error = await vm.startVM().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(MissingFeatureError);
    expect(error).toMatchObject({ code: 'FEATURE_MISSING', kind: 'command', feature: 'query-hotpluggable-cpus', binary: realpathSync(qemu) });
    expect((error as Error).message).toBe(`${realpathSync(qemu)} (QEMU 7.2.0) lacks the QMP command query-hotpluggable-cpus, which this VM needs`);
    expect(vm.state).toBe('stopped');
    expect(existsSync(dir)).toBe(false);
    expect(leasesOnDisk(vm.id)).toEqual([]);
  });
});

describe('QEMU 7.2 under tcg: vCPU removal is still refused', () => {
  let vm: QemuHypervisor | undefined;
  let agent: GuestAgent | undefined;

  beforeAll(async () => {
    vm = new QemuHypervisor();
    await vm.createVM(guestConfig({ cpus: { boot: 1, max: 2 }, hotplug: { rootPorts: 1 }, runtime: { qemuPath: QEMU_7_2 } }));
    await vm.startVM();
    agent = await connectAgent(vm);
  });

  afterAll(async () => {
    await agent?.close();
    await vm?.stopVM();
  });

  it('adds a vCPU, refuses to remove it (heap corruption below 10) and reports no add budget', async () => {
    const live = vm as QemuHypervisor;
    expect(qemuFeatures.known(realpathSync(QEMU_7_2))?.version).toMatchObject({ major: 7, minor: 2 });
    expect(live.capabilities().cpuHotUnplug).toBe(false);
    expect(live.capabilities().cpuHotAddBudget).toBeUndefined();
    expect(await live.resizeVCPUs(2)).toEqual({ previous: 1, current: 2 });
    expect(await eventually(() => (agent as GuestAgent).onlineCpus(), (n) => n === 2)).toBe(2);
    const error = await live.resizeVCPUs(1).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UnsupportedOperationError);
    expect((error as Error).message).toContain('corrupts QEMU 7.2');
    expect(await (agent as GuestAgent).onlineCpus()).toBe(2);
  });
});
