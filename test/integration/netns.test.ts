// A VM started inside a pod's network namespace (runtime.netns), as a shim starts it after the CNI
// plugin made the pod's taps there: QEMU is in that namespace, opens the taps there by name (cold
// and hot-plugged), and the guest reaches the namespace's side of each tap. Nothing is created in
// the host's own namespace, and every address lives in a namespace this test made and removes.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readlinkSync, statSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AttachError } from '../../src/hypervisor/errors.ts';
import { QemuHypervisor } from '../../src/qemu/qemu-hypervisor.ts';
import { runtimePaths } from '../../src/qemu/runtime-paths.ts';
import type { GuestAgent } from '../guest/index.ts';
import { connectAgent, guestConfig, identityOf, scratchDir } from './helpers/sandbox.ts';

const POD = `svmm-it-pod-${process.pid}`;
const OTHER = `svmm-it-other-${process.pid}`;
const COLD = { tap: 'svmmpod0', mac: '52:54:00:0a:00:02', host: '10.231.0.1', guest: '10.231.0.2' };
const HOT = { tap: 'svmmpod1', mac: '52:54:00:0a:01:02', host: '10.231.1.1', guest: '10.231.1.2' };

function ipIn(netns: string, ...args: string[]): string {
  return execFileSync('ip', ['-n', netns, ...args], { encoding: 'utf8' });
}

/** A tap in the pod's namespace, owned by the VM's QEMU user, with the namespace's address on it. */
function podTap(nic: typeof COLD, uid: number): void {
  ipIn(POD, 'tuntap', 'add', 'dev', nic.tap, 'mode', 'tap', 'user', String(uid));
  ipIn(POD, 'addr', 'add', `${nic.host}/24`, 'dev', nic.tap);
  ipIn(POD, 'link', 'set', nic.tap, 'up');
}

/** Packets the tap has carried, as its namespace counts them. */
function tapPackets(tap: string): { rx: number; tx: number } {
  const [link] = JSON.parse(ipIn(POD, '-s', '-j', 'link', 'show', tap)) as { stats64: { rx: { packets: number }; tx: { packets: number } } }[];
  if (!link) throw new Error(`no link ${tap} in ${POD}`);
  return { rx: link.stats64.rx.packets, tx: link.stats64.tx.packets };
}

/** Gives the guest NIC with this MAC its address and pings the namespace's side: the replies received. */
async function guestPings(agent: GuestAgent, nic: typeof COLD): Promise<number> {
  const end = Date.now() + 20_000;
  let iface: string | undefined;
  while (!(iface = (await agent.netInterfaces()).find((i) => i.mac === nic.mac)?.name)) {
    if (Date.now() > end) throw new Error(`no guest interface with MAC ${nic.mac}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  await agent.runOk(`ip addr show dev ${iface} | grep -q ' ${nic.guest}/' || ip addr add ${nic.guest}/24 dev ${iface}; ip link set ${iface} up`);
  const ping = await agent.run(`ping -c 3 -W 5 ${nic.host}`, { timeoutMs: 30_000 });
  return Number(/(\d+) packets received/.exec(ping.output)?.[1] ?? 0);
}

describe('runtime.netns: QEMU inside the pod network namespace', () => {
  let vm: QemuHypervisor | undefined;
  let agent: GuestAgent | undefined;

  const scratch = scratchDir();

  beforeAll(() => {
    execFileSync('ip', ['netns', 'add', POD]);
    execFileSync('ip', ['netns', 'add', OTHER]);
  });
  afterAll(async () => {
    await agent?.close();
    await vm?.stopVM();
    for (const netns of [POD, OTHER]) execFileSync('ip', ['netns', 'del', netns]);
    scratch.remove();
  });

  it('starts QEMU in the namespace, where the guest reaches a cold-plugged and a hot-plugged tap', async () => {
    const netns = `/run/netns/${POD}`;
    vm = new QemuHypervisor({ deviceRemovalTimeoutMs: 15_000 });
    const base = guestConfig();
    const share = scratch.dir;
    await vm.createVM({
      ...base,
      runtime: { ...base.runtime, netns },
      memory: { ...base.memory, backing: { type: 'shared' } },
      devices: [...(base.devices ?? []), { type: 'net', id: 'eth-cold', tap: { ifname: COLD.tap }, mac: COLD.mac }, { type: 'fs', driver: 'virtio-fs', id: 'share', tag: 'share', sharedDir: share }],
    });
    podTap(COLD, identityOf(vm).uid);
    await vm.startVM();
    agent = await connectAgent(vm);

    // QEMU runs in the pod's namespace (its virtiofsd entered it too, then unshared a sandbox of its own).
    const [qemu, virtiofsd] = vm.getPids();
    expect(virtiofsd).toBeDefined();
    expect(readlinkSync(`/proc/${qemu}/ns/net`)).toBe(`net:[${statSync(netns).ino}]`);
    expect(readlinkSync(`/proc/${qemu}/ns/net`)).not.toBe(readlinkSync('/proc/self/ns/net'));

    const before = tapPackets(COLD.tap);
    expect(await guestPings(agent, COLD)).toBe(3);
    const after = tapPackets(COLD.tap);
    // The guest's echo requests arrive at the tap (tx from QEMU's side is rx on the namespace's).
    expect(after.rx - before.rx).toBeGreaterThanOrEqual(3);
    expect(after.tx - before.tx).toBeGreaterThanOrEqual(3);

    podTap(HOT, identityOf(vm).uid);
    await vm.hotplugAddDevice({ type: 'net', id: 'eth-hot', tap: { ifname: HOT.tap }, mac: HOT.mac });
    expect(await guestPings(agent, HOT)).toBe(3);
    expect(tapPackets(HOT.tap).rx).toBeGreaterThanOrEqual(3);

    // The taps exist only in the pod's namespace.
    for (const tap of [COLD.tap, HOT.tap]) expect(existsSync(`/sys/class/net/${tap}`)).toBe(false);
  });

  it('a re-attach keeps the namespace, and refuses a state file naming another one than QEMU is in', async () => {
    if (!vm || !agent) throw new Error('the first test did not start the VM');
    const dir = vm.runtimeDir as string;
    await agent.close();
    agent = undefined;
    await vm.detach();
    vm = undefined;

    const stateFile = runtimePaths(dir).stateFile;
    const real = readFileSync(stateFile, 'utf8');
    const forged = JSON.parse(real) as { config: { runtime: { netns?: string } } };
    forged.config.runtime.netns = `/run/netns/${OTHER}`;
    writeFileSync(stateFile, JSON.stringify(forged), { mode: 0o600 });
    const error = await QemuHypervisor.attach(dir, { timeoutMs: 10_000 }).catch((e: unknown) => e);
    writeFileSync(stateFile, real, { mode: 0o600 });
    expect(error).toBeInstanceOf(AttachError);
    expect((error as Error).message).toMatch(`it runs in another network namespace than /run/netns/${OTHER}`);

    vm = await QemuHypervisor.attach(dir, { timeoutMs: 10_000 });
    expect(vm.config?.runtime.netns).toBe(`/run/netns/${POD}`);
    agent = await connectAgent(vm);
    expect(await guestPings(agent, COLD)).toBe(3);
    await vm.hotplugRemoveDevice('eth-hot');
    expect((await agent.netInterfaces()).map((i) => i.mac)).not.toContain(HOT.mac);
    await agent.close();
    agent = undefined;
    await vm.stopVM();
    vm = undefined;
    expect(existsSync(dir)).toBe(false);
  });
});
