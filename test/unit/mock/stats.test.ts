// The mock's stats(): vCPU time is the time its guest's vCPUs ran (not while paused), disk and NIC
// counters move by what a test says the guest did, and the balloon reports the guest's memory.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { MockHypervisor } from '../../../src/mock/index.ts';
import { useMockVms } from './mock-vms.ts';

const { kernel, file, track } = useMockVms('svmm-mock-stats-');
const MiB = 1024n * 1024n;

afterEach(() => void vi.useRealTimers());

async function running(): Promise<MockHypervisor> {
  const vm = track(new MockHypervisor({ host: false }));
  await vm.createVM({
    boot: { kernel },
    cpus: { boot: 2, max: 2 },
    memory: { bootMiB: 256 },
    hotplug: { rootPorts: 2 },
    devices: [
      { type: 'block', id: 'disk0', path: file('disk0.img') },
      { type: 'net', id: 'nic0', tap: { ifname: 'tap0' } },
      { type: 'net', id: 'nic1', tap: { fd: 0 } },
      { type: 'balloon', id: 'balloon0', statsIntervalSeconds: 1 },
    ],
  });
  await vm.startVM();
  return vm;
}

describe('MockHypervisor.stats', () => {
  it('counts vCPU time while the vCPUs run and not while paused, for each vCPU', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const vm = await running();
    const start = await vm.stats();
    vi.setSystemTime(Date.now() + 1_500);
    const ran = await vm.stats();
    expect(ran.vcpus.map((v) => v.cpuTimeNs - (start.vcpus[v.index]?.cpuTimeNs ?? 0n))).toEqual([1_500_000_000n, 1_500_000_000n]);
    expect(ran.uptimeMs - start.uptimeMs).toBe(1_500);
    await vm.pauseVM();
    const paused = await vm.stats();
    vi.setSystemTime(Date.now() + 10_000);
    expect((await vm.stats()).vcpus.map((v) => v.cpuTimeNs)).toEqual(paused.vcpus.map((v) => v.cpuTimeNs));
  });

  it('moves a disk or NIC counter by what the guest did on that device only; taps given as fds are not listed', async () => {
    const vm = await running();
    expect(await vm.simulateGuestIo('disk0', { writeBytes: 1 << 20, readBytes: 4096 })).toBe(true);
    expect(await vm.simulateGuestIo('nic0', { rxBytes: 98, txBytes: 98 })).toBe(true);
    expect(await vm.simulateGuestIo('balloon0', { readBytes: 1 })).toBe(false);
    expect(await vm.simulateGuestIo('nope', { readBytes: 1 })).toBe(false);
    const stats = await vm.stats();
    expect(stats.disks).toEqual([
      { id: 'disk0', readBytes: 4096n, writeBytes: 1_048_576n, readOperations: 1n, writeOperations: 1n, flushOperations: 0n, readTimeNs: 0n, writeTimeNs: 0n, flushTimeNs: 0n },
    ]);
    expect(stats.nics).toEqual([{ id: 'nic0', tap: 'tap0', rxBytes: 98n, rxPackets: 1n, rxErrors: 0n, rxDropped: 0n, txBytes: 98n, txPackets: 1n, txErrors: 0n, txDropped: 0n }]);
    expect(stats.memory.balloon?.actualBytes).toBe(256n * MiB);
    expect(stats.memory.balloon?.guest?.totalBytes).toBe(256n * MiB);
  });
});
