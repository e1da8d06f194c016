// File descriptors handed to a running QEMU (SCM_RIGHTS through build/svmm-sendfd) and at start:
// disks QEMU could not open by path (root's, mode 0600) read back their marker in the guest, a
// multi-queue NIC from a macvtap the test opened passes traffic, and once a device is removed QEMU
// holds none of its fds. All traffic stays in a network namespace this test makes and removes.
import { execFileSync } from 'node:child_process';
import { closeSync, openSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QemuHypervisor } from '../../src/qemu/qemu-hypervisor.ts';
import type { GuestAgent } from '../guest/index.ts';
import { eventually } from './helpers/eventually.ts';
import { connectAgent, guestConfig, rawDisk, scratchDir } from './helpers/sandbox.ts';

const NETNS = `svmm-it-fds-${process.pid}`;
const ROOT = { uid: 0, gid: 0 };

/** What QEMU's open fds point at (its /proc/<pid>/fd links). */
function qemuFdTargets(pid: number): string[] {
  return readdirSync(`/proc/${pid}/fd`).flatMap((fd) => {
    try {
      return [readlinkSync(`/proc/${pid}/fd/${fd}`)];
    } catch {
      return [];
    }
  });
}

function ipIn(...args: string[]): string {
  return execFileSync('ip', ['-n', NETNS, ...args], { encoding: 'utf8' });
}

/** The guest's first bytes of each disk, by name. */
async function guestMarkers(agent: GuestAgent): Promise<string> {
  return agent.runOk('for d in /sys/block/vd*; do n=${d##*/}; echo "$n $(head -c 16 /dev/$n | tr -c "A-Za-z0-9-" .)"; done');
}


describe('fd passing: disks and NICs from the caller’s descriptors', () => {
  const scratch = scratchDir();
  const fds: number[] = [];
  let vm: QemuHypervisor | undefined;
  let agent: GuestAgent | undefined;
  let qemu = 0;

  beforeAll(async () => {
    // Root's and 0600: QEMU's own uid could not open it by path, only through the fd.
    const cold = rawDisk(scratch.dir, 'cold.img', 'MARKER-COLD-FD1', ROOT);
    const coldFd = openSync(cold, 'r');
    fds.push(coldFd);
    vm = new QemuHypervisor({ deviceRemovalTimeoutMs: 15_000 });
    const base = guestConfig();
    await vm.createVM({ ...base, devices: [...(base.devices ?? []), { type: 'block', id: 'cold-fd', fd: coldFd, readOnly: true }] });
    await vm.startVM();
    agent = await connectAgent(vm);
    qemu = vm.getPids()[0] as number;
    execFileSync('ip', ['netns', 'add', NETNS]);
  });

  afterAll(async () => {
    await agent?.close();
    await vm?.stopVM();
    for (const fd of fds) closeSync(fd);
    try {
      execFileSync('ip', ['netns', 'del', NETNS]);
    } catch {
      // Not made.
    }
    scratch.remove();
  });

  it('a disk given as an fd at start is read by the guest though QEMU cannot open its path', async () => {
    if (!agent) throw new Error('no guest');
    expect(await guestMarkers(agent)).toContain('MARKER-COLD-FD1.');
  });

  it('a disk hot-plugged from an fd reads back the host marker, and QEMU keeps no fd of it after removal', async () => {
    if (!vm || !agent) throw new Error('no guest');
    const path = rawDisk(scratch.dir, 'hot.img', 'MARKER-HOT-FD02', ROOT);
    const baseline = qemuFdTargets(qemu);
    const fd = openSync(path, 'r+');
    try {
      await vm.hotplugAddDevice({ type: 'block', id: 'hot-fd', fd });
    } finally {
      // Ours to close once QEMU has its copy.
      closeSync(fd);
    }
    expect(qemuFdTargets(qemu).filter((t) => t === path).length).toBeGreaterThanOrEqual(1);
    expect(await eventually(() => guestMarkers(agent as GuestAgent), (markers) => markers.includes('MARKER-HOT-FD02.'))).toContain('MARKER-HOT-FD02.');
    await vm.hotplugRemoveDevice('hot-fd');
    expect(await guestMarkers(agent)).not.toContain('MARKER-HOT-FD02.');
    expect(qemuFdTargets(qemu).filter((t) => t === path)).toEqual([]);
    expect(qemuFdTargets(qemu).length).toBe(baseline.length);
  });

  it('a two-queue NIC from a macvtap opened twice passes traffic, and QEMU keeps no tap fd after removal', async () => {
    if (!vm || !agent) throw new Error('no guest');
    // veth pair in the namespace, a macvtap on one end, the namespace's address on the other.
    ipIn('link', 'add', 'svmmva', 'type', 'veth', 'peer', 'name', 'svmmvb');
    ipIn('link', 'add', 'link', 'svmmva', 'name', 'svmmmvt', 'type', 'macvtap', 'mode', 'bridge');
    ipIn('addr', 'add', '10.232.0.1/24', 'dev', 'svmmvb');
    for (const link of ['svmmva', 'svmmvb', 'svmmmvt']) ipIn('link', 'set', link, 'up');
    const [macvtap] = JSON.parse(ipIn('-j', 'link', 'show', 'svmmmvt')) as { ifindex: number; address: string }[];
    if (!macvtap) throw new Error('no macvtap');
    // No udev here: the character device is made from what sysfs says (seen from inside the namespace).
    const devNumbers = execFileSync('ip', ['netns', 'exec', NETNS, 'cat', `/sys/class/net/svmmmvt/macvtap/tap${macvtap.ifindex}/dev`], { encoding: 'utf8' }).trim();
    const [major, minor] = devNumbers.split(':');
    const node = `/dev/svmm-tap-${process.pid}`;
    execFileSync('mknod', ['-m', '600', node, 'c', String(major), String(minor)]);
    const queues = [openSync(node, 'r+'), openSync(node, 'r+')];
    rmSync(node);
    const baseline = qemuFdTargets(qemu);
    try {
      await vm.hotplugAddDevice({ type: 'net', id: 'mvt', tap: { fds: queues }, queues: 2, mac: macvtap.address });
    } finally {
      for (const fd of queues) closeSync(fd);
    }
    const taps = qemuFdTargets(qemu).filter((t) => t.startsWith(node));
    expect(taps).toHaveLength(2);

    const iface = (await eventually(() => (agent as GuestAgent).netInterfaces(), (list) => list.some((i) => i.mac === macvtap.address))).find((i) => i.mac === macvtap.address)?.name;
    expect(iface).toBeDefined();
    // The guest negotiated multi-queue (virtio-net feature bit 22, VIRTIO_NET_F_MQ); with one vCPU it uses one pair.
    expect((await agent.runOk(`cat /sys/class/net/${iface}/device/features`)).trim()[22]).toBe('1');
    await agent.runOk(`ip addr add 10.232.0.2/24 dev ${iface} && ip link set ${iface} up`);
    const rxBefore = (JSON.parse(ipIn('-s', '-j', 'link', 'show', 'svmmvb')) as { stats64: { rx: { packets: number } } }[])[0]?.stats64.rx.packets ?? 0;
    const ping = await agent.run('ping -c 3 -W 5 10.232.0.1', { timeoutMs: 30_000 });
    expect(ping.output).toMatch(/3 packets received/);
    const rxAfter = (JSON.parse(ipIn('-s', '-j', 'link', 'show', 'svmmvb')) as { stats64: { rx: { packets: number } } }[])[0]?.stats64.rx.packets ?? 0;
    expect(rxAfter - rxBefore).toBeGreaterThanOrEqual(3);

    await vm.hotplugRemoveDevice('mvt');
    expect((await agent.netInterfaces()).map((i) => i.mac)).not.toContain(macvtap.address);
    expect(qemuFdTargets(qemu).filter((t) => t.startsWith(node))).toEqual([]);
    expect(qemuFdTargets(qemu).length).toBe(baseline.length);
  });
});
