// stats() on a real guest under TCG, proved from inside it: a dd in the guest moves its disk's
// write and read counters by at least what it wrote and read, a busy loop raises its vCPU's CPU
// time, and a ping through a NIC (its tap in a network namespace this test makes, where QEMU runs)
// moves the tap's counters. Every figure is read through the library; the guest says what it did.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { VmStats } from '../../src/hypervisor/stats.ts';
import { QemuHypervisor } from '../../src/qemu/qemu-hypervisor.ts';
import type { GuestAgent } from '../guest/index.ts';
import { connectAgent, guestConfig, identityOf, rawDisk, scratchDir } from './helpers/sandbox.ts';

const NETNS = `svmm-it-stats-${process.pid}`;
const NIC = { id: 'eth0', tap: 'svmmstats0', mac: '52:54:00:0b:00:02', host: '10.232.0.1', guest: '10.232.0.2' };
const DISK = { id: 'data', serial: 'statsdisk', sizeMiB: 32 };
const MiB = 1024n * 1024n;

function ipIn(...args: string[]): string {
  return execFileSync('ip', ['-n', NETNS, ...args], { encoding: 'utf8' });
}

function diskOf(stats: VmStats) {
  const disk = stats.disks.find((d) => d.id === DISK.id);
  if (!disk) throw new Error(`no stats for disk ${DISK.id}: ${stats.disks.map((d) => d.id).join(', ')}`);
  return disk;
}

function nicOf(stats: VmStats) {
  const nic = stats.nics.find((n) => n.id === NIC.id);
  if (!nic) throw new Error(`no stats for NIC ${NIC.id}`);
  return nic;
}

describe('stats() on a running guest', () => {
  const scratch = scratchDir();
  let vm: QemuHypervisor | undefined;
  let agent: GuestAgent | undefined;
  let device = '';

  const running = (): { vm: QemuHypervisor; agent: GuestAgent } => {
    if (!vm || !agent) throw new Error('the VM did not start');
    return { vm, agent };
  };

  beforeAll(async () => {
    execFileSync('ip', ['netns', 'add', NETNS]);
    vm = new QemuHypervisor();
    const base = guestConfig();
    const image = join(scratch.dir, 'data.img');
    await vm.createVM({
      ...base,
      cpus: { boot: 1, max: 1 },
      // Shared memory for virtio-fs, whose virtiofsd is a helper process of the VM.
      memory: { bootMiB: 256, backing: { type: 'shared' } },
      runtime: { netns: `/run/netns/${NETNS}` },
      devices: [
        ...(base.devices ?? []),
        { type: 'block', id: DISK.id, path: image, serial: DISK.serial },
        { type: 'net', id: NIC.id, tap: { ifname: NIC.tap }, mac: NIC.mac },
        { type: 'balloon', id: 'balloon0', statsIntervalSeconds: 1 },
        { type: 'fs', driver: 'virtio-fs', id: 'share', tag: 'share', sharedDir: scratch.dir },
      ],
    });
    const identity = identityOf(vm);
    rawDisk(scratch.dir, 'data.img', 'stats', identity, DISK.sizeMiB);
    ipIn('tuntap', 'add', 'dev', NIC.tap, 'mode', 'tap', 'user', String(identity.uid));
    ipIn('addr', 'add', `${NIC.host}/24`, 'dev', NIC.tap);
    ipIn('link', 'set', NIC.tap, 'up');
    await vm.startVM();
    agent = await connectAgent(vm);
    device = (await agent.runOk(`for d in /sys/block/vd*; do [ "$(cat $d/serial)" = ${DISK.serial} ] && echo \${d##*/}; done`)).trim();
    if (!/^vd[a-z]+$/.test(device)) throw new Error(`the guest has no disk with serial ${DISK.serial}: '${device}'`);
  }, 180_000);

  afterAll(async () => {
    await agent?.close();
    await vm?.stopVM();
    execFileSync('ip', ['netns', 'del', NETNS]);
    scratch.remove();
  });

  it('reports the QEMU and virtiofsd processes, the vCPU thread, boot memory and the balloon', async () => {
    const { vm } = running();
    const stats = await vm.stats();
    const [qemuPid, virtiofsdPid] = vm.getPids();
    expect(stats.processes.map((p) => [p.pid, p.role, p.deviceId])).toEqual([
      [qemuPid, 'hypervisor', undefined],
      [virtiofsdPid, 'virtiofsd', 'share'],
    ]);
    for (const p of stats.processes) expect(p.pssBytes > 0n && p.pssBytes <= p.rssBytes).toBe(true);
    // QEMU's resident memory includes at least the guest's kernel and initramfs it loaded.
    expect((stats.processes[0]?.rssBytes ?? 0n) > 16n * MiB).toBe(true);
    expect(stats.vcpus.map((v) => [v.index, v.threadId])).toEqual([...(await vm.getThreadIds())]);
    expect(stats.memory.bootBytes).toBe(256n * MiB);
    expect(stats.memory.pluggedBytes).toBe(0n);
    expect(stats.memory.balloon?.actualBytes).toBe(256n * MiB);
    expect(stats.uptimeMs).toBeGreaterThan(0);
  });

  it("a dd in the guest moves the disk's write and read counters by at least what it moved", async () => {
    const { vm, agent } = running();
    const count = 8;
    const before = diskOf(await vm.stats());
    // fsync so the writes reach QEMU now; caches dropped so the read reaches QEMU too.
    await agent.runOk(`dd if=/dev/urandom of=/dev/${device} bs=1M count=${count} conv=fsync 2>/dev/null`);
    await agent.runOk(`echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/${device} of=/dev/null bs=1M count=${count} 2>/dev/null`);
    const after = diskOf(await vm.stats());
    expect(after.writeBytes - before.writeBytes >= BigInt(count) * MiB).toBe(true);
    expect(after.readBytes - before.readBytes >= BigInt(count) * MiB).toBe(true);
    expect(after.writeOperations > before.writeOperations).toBe(true);
    expect(after.readOperations > before.readOperations).toBe(true);
    expect(after.flushOperations > before.flushOperations).toBe(true);
  });

  it("a busy loop in the guest raises its vCPU's CPU time", async () => {
    const { vm, agent } = running();
    const before = (await vm.stats()).vcpus[0];
    // Three seconds of the guest's clock spent spinning on its only vCPU.
    await agent.runOk('end=$(($(date +%s) + 3)); while [ $(date +%s) -lt $end ]; do :; done');
    const after = (await vm.stats()).vcpus[0];
    expect(after?.threadId).toBe(before?.threadId);
    expect((after?.cpuTimeNs ?? 0n) > (before?.cpuTimeNs ?? 0n)).toBe(true);
  });

  it("a ping through the NIC moves its tap's counters, as read in QEMU's network namespace", async () => {
    const { vm, agent } = running();
    const iface = (await agent.netInterfaces()).find((i) => i.mac === NIC.mac)?.name;
    if (!iface) throw new Error(`no guest interface with MAC ${NIC.mac}`);
    await agent.runOk(`ip addr add ${NIC.guest}/24 dev ${iface}; ip link set ${iface} up`);
    const before = nicOf(await vm.stats());
    const ping = await agent.run(`ping -c 5 -W 5 ${NIC.host}`, { timeoutMs: 60_000 });
    const replies = Number(/(\d+) packets received/.exec(ping.output)?.[1] ?? 0);
    expect(replies).toBe(5);
    const after = nicOf(await vm.stats());
    expect(after.tap).toBe(NIC.tap);
    // The tap received the guest's 5 echo requests and sent it the 5 replies (84-byte IP + 14-byte Ethernet each).
    expect(after.rxPackets - before.rxPackets >= 5n).toBe(true);
    expect(after.txPackets - before.txPackets >= 5n).toBe(true);
    expect(after.rxBytes - before.rxBytes >= 5n * 98n).toBe(true);
    expect(after.txBytes - before.txBytes >= 5n * 98n).toBe(true);
    // The namespace's own view agrees: the library read the tap there, not a host interface.
    const [link] = JSON.parse(ipIn('-s', '-j', 'link', 'show', NIC.tap)) as { stats64: { rx: { packets: number } } }[];
    expect(BigInt(link?.stats64.rx.packets ?? -1) >= after.rxPackets).toBe(true);
  });
});
