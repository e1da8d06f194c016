// stats() conformance on one running VM with a balloon: every figure is there with its unit and
// exact (amounts are bigints), vCPUs and processes are the ones getThreadIds and getPids name,
// counters never go back, disks come and go with hotplug, plugged memory follows resizeMemory, and
// stats() is refused outside running and paused.
import assert from 'node:assert/strict';
import type { Hypervisor } from '../hypervisor/types.ts';
import type { VmStats } from '../hypervisor/stats.ts';
import { rejectsWithCode, type Harness, type VmSpec } from './harness.ts';
import type { ConformanceTestApi } from './options.ts';
import { SharedVm } from './shared-vm.ts';

const MiB = 1024n * 1024n;
const BALLOON_ID = 'conformance-balloon';
const spec: VmSpec = {
  cpus: { boot: 2, max: 2 },
  memory: { bootMiB: 256, maxMiB: 512, hotplug: 'virtio-mem' },
  rootPorts: 2,
  devices: [{ type: 'balloon', id: BALLOON_ID, statsIntervalSeconds: 1 }],
};

/** Every counter of a stats() result, by where it is, for checks that hold for all of them. */
function counters(stats: VmStats): Map<string, unknown> {
  const found = new Map<string, unknown>();
  for (const v of stats.vcpus) for (const key of ['userTimeNs', 'systemTimeNs', 'cpuTimeNs'] as const) found.set(`vcpus[${v.index}].${key}`, v[key]);
  for (const p of stats.processes) for (const key of ['rssBytes', 'pssBytes'] as const) found.set(`processes[${p.pid}].${key}`, p[key]);
  for (const d of stats.disks) for (const [key, value] of Object.entries(d)) if (key !== 'id') found.set(`disks[${d.id}].${key}`, value);
  for (const n of stats.nics) for (const [key, value] of Object.entries(n)) if (key !== 'id' && key !== 'tap') found.set(`nics[${n.id}].${key}`, value);
  found.set('memory.bootBytes', stats.memory.bootBytes);
  found.set('memory.pluggedBytes', stats.memory.pluggedBytes);
  return found;
}

function assertExactAmounts(stats: VmStats): void {
  for (const [at, value] of counters(stats)) {
    assert.equal(typeof value, 'bigint', `${at} is a bigint`);
    assert.ok((value as bigint) >= 0n, `${at} is not negative`);
  }
}

/** Counters that may only grow between two reads of the same VM (vCPU time, disk and NIC traffic). */
function assertNoCounterWentBack(before: VmStats, after: VmStats): void {
  const later = counters(after);
  for (const [at, value] of counters(before)) {
    if (at.startsWith('processes') || at.startsWith('memory')) continue;
    const now = later.get(at);
    if (now !== undefined) assert.ok((now as bigint) >= (value as bigint), `${at} went from ${value as bigint} back to ${now as bigint}`);
  }
}

function blockIds(vm: Hypervisor): string[] {
  return vm
    .devices()
    .filter((d) => d.type === 'block')
    .map((d) => d.id)
    .sort();
}

export function defineStatsTests(t: ConformanceTestApi, h: Harness): void {
  const ms = h.timeouts.testMs;
  const shared = new SharedVm(h, spec);
  shared.registerHooks(t);

  t.it('stats() names the vCPUs, processes and devices the VM has, every amount an exact bigint', async () => {
    const vm = await shared.get();
    const stats = await vm.stats(h.op());
    assertExactAmounts(stats);
    const threads = await vm.getThreadIds(h.op());
    assert.deepEqual(
      stats.vcpus.map((v) => [v.index, v.threadId]),
      [...threads].sort(([a], [b]) => a - b),
      'one entry per vCPU, on the thread getThreadIds names',
    );
    for (const v of stats.vcpus) assert.equal(v.cpuTimeNs, v.userTimeNs + v.systemTimeNs, `vcpus[${v.index}].cpuTimeNs is user + system`);

    const pids = vm.getPids();
    assert.equal(stats.processes[0]?.pid, pids[0], 'the hypervisor process comes first');
    assert.equal(stats.processes[0]?.role, 'hypervisor');
    assert.deepEqual(stats.processes.map((p) => p.pid).sort(), [...pids].sort(), 'one entry per process getPids names');
    for (const p of stats.processes) {
      assert.ok(p.rssBytes > 0n, `process ${p.pid} has resident memory`);
      assert.ok(p.pssBytes > 0n && p.pssBytes <= p.rssBytes, `process ${p.pid}: 0 < PSS <= RSS`);
    }

    assert.equal(stats.memory.bootBytes, 256n * MiB);
    assert.equal(stats.memory.pluggedBytes, 0n);
    const balloon = stats.memory.balloon;
    assert.ok(balloon, 'a VM with a balloon reports it');
    assert.equal(balloon.actualBytes, stats.memory.bootBytes + stats.memory.pluggedBytes, 'an empty balloon leaves the guest all its memory');
    if (balloon.guest) assert.ok(Number.isSafeInteger(balloon.guest.updatedAtSeconds) && balloon.guest.updatedAtSeconds > 0);

    assert.deepEqual(stats.disks.map((d) => d.id).sort(), blockIds(vm), 'one entry per disk');
    assert.ok(Number.isFinite(stats.uptimeMs) && stats.uptimeMs >= 0, 'uptime in ms');

    const again = await vm.stats(h.op());
    assert.ok(again.uptimeMs >= stats.uptimeMs, 'uptime does not go back');
    assertNoCounterWentBack(stats, again);
  }, ms);

  t.it('a hot-plugged disk is counted from its hotplug until its removal, and stats() works while paused', async () => {
    const vm = await shared.get();
    const id = 'conformance-stats-disk';
    const guestDisks = h.options.guest?.diskCount?.bind(h.options.guest);
    const before = guestDisks ? await guestDisks(vm) : 0;
    await vm.hotplugAddDevice({ type: 'block', id, path: await h.disk(id, vm) }, h.op());
    // The guest has the disk (a guest still booting may not answer its removal yet).
    if (guestDisks) assert.equal(await h.eventually(() => guestDisks(vm), (n) => n === before + 1), before + 1, 'the guest sees the disk');
    const plugged = await vm.stats(h.op());
    assertExactAmounts(plugged);
    assert.deepEqual(plugged.disks.map((d) => d.id).sort(), blockIds(vm));
    assert.ok(plugged.disks.some((d) => d.id === id), 'the new disk is counted');

    await vm.pauseVM(h.op());
    const paused = await vm.stats(h.op());
    assertNoCounterWentBack(plugged, paused);
    await vm.resumeVM(h.op());

    await vm.hotplugRemoveDevice(id, h.op());
    const removed = await vm.stats(h.op());
    assert.ok(!removed.disks.some((d) => d.id === id), 'a removed disk is no longer counted');
  }, ms);

  t.it('plugged memory follows resizeMemory, as the guest plugs it', async () => {
    const vm = await shared.get();
    const { currentMiB } = await vm.resizeMemory(512, h.op());
    const want = BigInt(currentMiB - 256) * MiB;
    const stats = await h.eventually(() => vm.stats(h.op()), (s) => s.memory.pluggedBytes === want);
    assert.equal(stats.memory.pluggedBytes, want, 'what the guest plugged beyond boot memory');
    assert.equal(stats.memory.bootBytes, 256n * MiB, 'boot memory does not change');
  }, ms);

  t.it('stats() is refused with INVALID_STATE before the VM runs and after it stopped', async () => {
    const fresh = await h.create();
    try {
      await rejectsWithCode(fresh.stats(h.op()), 'INVALID_STATE', 'stats before createVM');
    } finally {
      await h.dispose(fresh);
    }
    const vm = await shared.get();
    await shared.dispose();
    await rejectsWithCode(vm.stats(h.op()), 'INVALID_STATE', 'stats after stopVM');
  }, ms);
}
