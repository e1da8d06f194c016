// The mock follows the version rules of the QEMU it pretends (MockHypervisorOptions.qemuVersion, the
// config's accel): under tcg on QEMU 10 vCPUs go and come back within the lifetime add budget, which
// a VM keeps across detach and attach; on 7.2 (or an unknown version) removal is refused as on QEMU.
import { afterEach, describe, expect, it } from 'vitest';
import { UnsupportedOperationError, VcpuAddBudgetError } from '../../../src/hypervisor/errors.ts';
import { MockHypervisor, type MockHypervisorOptions } from '../../../src/mock/index.ts';

const running: MockHypervisor[] = [];
afterEach(async () => {
  for (const vm of running.splice(0)) await vm.stopVM();
});

async function tcgVm(options: MockHypervisorOptions = {}): Promise<MockHypervisor> {
  const vm = new MockHypervisor({ host: false, ...options });
  running.push(vm);
  await vm.createVM({ boot: { kernel: '/k' }, machine: { accel: 'tcg' }, cpus: { boot: 1, max: 3 } });
  await vm.startVM();
  return vm;
}

describe('the mock pretending QEMU 10 under tcg', () => {
  it('removes vCPUs and adds again until the budget is spent, counting removed ones, across detach and attach', async () => {
    const vm = await tcgVm({ qemuVersion: { major: 10, minor: 0, micro: 2 } });
    expect(vm.capabilities()).toMatchObject({ cpuHotUnplug: true, cpuHotAddBudget: { limit: 2, used: 0 } });
    await vm.resizeVCPUs(2);
    await vm.resizeVCPUs(1);
    expect(await vm.resizeVCPUs(2)).toEqual({ previous: 1, current: 2 });
    expect(vm.guest?.onlineCpus).toBe(2);
    await vm.detach();
    const owner = await MockHypervisor.attach(vm.runtimeDir as string);
    running.push(owner);
    expect(owner.capabilities().cpuHotAddBudget).toEqual({ limit: 2, used: 2 });
    const error = await owner.resizeVCPUs(3).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(VcpuAddBudgetError);
    expect(error).toMatchObject({ code: 'RESOURCE_LIMIT', budget: 2, used: 2, limit: 2 });
    expect(owner.guest?.onlineCpus).toBe(2);
  });
});

describe('the mock pretending QEMU 7.2, or no version, under tcg', () => {
  it.each([[{ qemuVersion: { major: 7, minor: 2, micro: 22 } }], [{}]])('refuses vCPU removal and reports no budget (%j)', async (options) => {
    const vm = await tcgVm(options);
    expect(vm.capabilities().cpuHotUnplug).toBe(false);
    expect(vm.capabilities().cpuHotAddBudget).toBeUndefined();
    await vm.resizeVCPUs(2);
    await expect(vm.resizeVCPUs(1)).rejects.toBeInstanceOf(UnsupportedOperationError);
  });
});
