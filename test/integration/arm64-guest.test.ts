// The arm64 test guest (test/guest/build.sh aarch64), first proven without the library's arm64
// support: the test starts qemu-system-aarch64 itself with a hand-written argv for the virt machine (GICv3,
// TCG, the PL011 console on a chardev, the agent on a virtio-serial port as the library gives the
// x86 guest), through the launcher as the library starts QEMU (an unprivileged identity, no
// capability, no environment), and checks from inside the guest, through the same GuestAgent.
// Then a sandbox the library makes of it (machine.arch aarch64) proves from inside the guest what
// the conformance suite (conformance-qemu-arm64.test.ts) does not: virtio-fs, a NIC hot-plugged and
// removed in the pod's network namespace, re-attach from a new instance, and the stop.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isProcessAlive } from '../../src/qemu/process/proc-fs.ts';
import { QemuHypervisor } from '../../src/qemu/qemu-hypervisor.ts';
import { resolveBinary } from '../../src/qemu/binaries.ts';
import { AARCH64_QEMU_UNDER_TEST } from '../helpers/qemu-under-test.ts';
import { findLauncher, launcherArgs, launcherStdio, type LaunchSpec } from '../../src/qemu/launch/launcher.ts';
import { QmpClient } from '../../src/qmp/index.ts';
import { GuestAgent, guestAssets } from '../guest/index.ts';
import { testIdentity } from '../helpers/paused-qemu.ts';
import { eventually } from './helpers/eventually.ts';
import { connectAgent, guestBoot, guestConfig, identityOf, leasesOnDisk, rawDisk, scratchDir } from './helpers/sandbox.ts';

/** The virtio drivers the guest's init loads (build.sh's aarch64 list, with their dependencies). */
const VIRTIO_MODULES = ['virtio_pci', 'virtio_blk', 'virtio_net', 'virtio_console', 'virtio_mem', 'virtio_scsi', 'virtiofs', 'fuse', 'sd_mod'];
const DISK_MARKER = 'SVMM-ARM64-HOTPLUG';
const DISK_SERIAL = 'SVMM-ARM64-DISK';

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

interface ArmGuest {
  qmp: QmpClient;
  agent: GuestAgent;
  /** What the guest wrote on its serial console so far. */
  console: () => string;
  exited: Promise<Exit>;
}

/**
 * virt with GICv3 under TCG. `pauth-impdef=on`: QEMU 7.2's `max` CPU otherwise emulates QARMA5
 * pointer authentication, which makes the kernel boot about 4 times slower.
 */
function argv(kernelParams: readonly string[]): string[] {
  const guest = guestAssets('aarch64');
  return [
    ...['-name', 'guest=svmm-arm64-guest-test,debug-threads=on'],
    ...['-machine', 'virt,gic-version=3', '-cpu', 'max,pauth-impdef=on', '-accel', 'tcg'],
    ...['-smp', '1', '-m', '512M'],
    ...['-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot', '-S'],
    ...['-sandbox', 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny'],
    ...['-chardev', 'socket,id=qmp,fd=3,server=on,wait=off', '-mon', 'chardev=qmp,mode=control'],
    // virt's PL011 takes the first -serial; the kernel's console=ttyAMA0 names it.
    ...['-chardev', 'socket,id=console,fd=4,server=on,wait=off', '-serial', 'chardev:console'],
    ...['-kernel', guest.kernel, '-initrd', guest.initrd, '-append', kernelParams.join(' ')],
    ...['-device', 'pcie-root-port,id=rp0,bus=pcie.0,chassis=1,addr=0x1,io-reserve=0'],
    ...['-device', 'virtio-serial-pci,id=vserial0,bus=pcie.0,addr=0x2'],
    ...['-chardev', 'socket,id=chr-agent,fd=5,server=on,wait=off'],
    ...['-device', 'virtserialport,id=agent,bus=vserial0.0,chardev=chr-agent,name=agent.0'],
  ];
}

function connectSocket(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(path);
    socket.once('connect', () => resolve(socket));
    socket.once('error', reject);
  });
}

describe('the arm64 test guest on qemu-system-aarch64 (virt, GICv3, TCG)', () => {
  const scratch = scratchDir();
  const undo: (() => unknown)[] = [];
  let guest: ArmGuest;

  beforeAll(async () => {
    const { kernelParams } = guestAssets('aarch64');
    const sockets = { qmp: join(scratch.dir, 'qmp.sock'), console: join(scratch.dir, 'console.sock'), agent: join(scratch.dir, 'agent.sock') };
    const spec: LaunchSpec = {
      program: resolveBinary(AARCH64_QEMU_UNDER_TEST, 'qemuPath'),
      args: argv(kernelParams),
      fds: [
        { fd: 3, kind: 'listen', path: sockets.qmp },
        { fd: 4, kind: 'listen', path: sockets.console },
        { fd: 5, kind: 'listen', path: sockets.agent },
      ],
      user: testIdentity(),
      dropCapabilities: true,
      dieWithParent: true,
    };
    const child = spawn(findLauncher(), launcherArgs(spec), { stdio: launcherStdio(spec, 'pipe'), env: {} });
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const exited = new Promise<Exit>((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
      child.once('error', (error) => {
        stderr += `${error.message}\n`;
        resolve({ code: null, signal: null });
      });
    });
    undo.push(async () => {
      // Cleanup, not an assertion: a QEMU that has not left after quit is killed.
      const killTimer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(killTimer);
    });

    let qmp: QmpClient;
    try {
      qmp = await QmpClient.connect(sockets.qmp, { exited, timeoutMs: 60_000 });
    } catch (error) {
      throw new Error(`qemu-system-aarch64 did not come up: ${stderr.trim()}`, { cause: error });
    }
    undo.push(() => qmp.close());
    undo.push(() => qmp.execute('quit', undefined, { timeoutMs: 10_000 }).catch(() => undefined));
    // Connected before the guest runs (-S), so that the console keeps everything from the start.
    const consoleSocket = await connectSocket(sockets.console);
    undo.push(() => consoleSocket.destroy());
    let consoleText = '';
    consoleSocket.setEncoding('utf8').on('data', (chunk: string) => (consoleText += chunk));

    const started = performance.now();
    await qmp.execute('cont');
    let agent: GuestAgent;
    try {
      agent = await GuestAgent.connect(sockets.agent, { timeoutMs: 90_000 });
    } catch (error) {
      throw new Error(`the arm64 guest's agent never answered. Console:\n${consoleText}\nQEMU: ${stderr.trim()}`, { cause: error });
    }
    const bootToAgentMs = performance.now() - started;
    undo.push(() => agent.close());
    const version = qmp.greeting.version.qemu;
    console.info(`arm64 guest: boot to agent ${bootToAgentMs.toFixed(0)} ms (QEMU ${version.major}.${version.minor}.${version.micro}, -cpu max,pauth-impdef=on, TCG)`);
    guest = { qmp, agent, console: () => consoleText, exited };
  });

  afterAll(async () => {
    for (const step of undo.splice(0).reverse()) await step();
    scratch.remove();
  });

  it('is an aarch64 guest of the built kernel, its console on virt\'s PL011 (ttyAMA0)', async () => {
    expect((await guest.agent.runOk('uname -m')).trim()).toBe('aarch64');
    expect((await guest.agent.runOk('uname -r')).trim()).toBe(guestAssets('aarch64').kernelVersion);
    expect(await guest.agent.runOk('cat /proc/consoles')).toMatch(/^ttyAMA0 /m);
    // The init wrote its own line on the console, and no insmod failed before it.
    const consoleText = await eventually(() => guest.console(), (text) => text.includes('init: ready'), 10_000);
    expect(consoleText).toContain('init: ready');
    expect(consoleText).not.toContain('insmod');
  });

  it('has loaded the virtio modules, and the virtio-serial port the agent answers on is bound', async () => {
    const loaded = (await guest.agent.runOk('cat /proc/modules'))
      .split('\n')
      .filter(Boolean)
      .map((line) => line.split(' ')[0]);
    expect(loaded).toEqual(expect.arrayContaining(VIRTIO_MODULES));
    expect((await guest.agent.runOk('cat /sys/class/virtio-ports/*/name')).trim()).toBe('agent.0');
    expect(await guest.agent.runOk('ls /sys/bus/virtio/drivers/virtio_console')).toMatch(/virtio\d+/);
  });

  it('sees a virtio-blk disk hot-plugged on a pcie-root-port, and loses it when it is removed', async () => {
    const disk = rawDisk(scratch.dir, 'hotplug.raw', DISK_MARKER, testIdentity());
    await guest.qmp.execute('blockdev-add', { 'node-name': 'drv-hp0', driver: 'raw', file: { driver: 'file', filename: disk } });
    await guest.qmp.execute('device_add', { driver: 'virtio-blk-pci', id: 'hp0', drive: 'drv-hp0', bus: 'rp0', serial: DISK_SERIAL });

    const seen = await eventually(() => guest.agent.run('cat /sys/block/vda/serial'), (result) => result.exitCode === 0, 30_000);
    expect(seen.output.trim()).toBe(DISK_SERIAL);
    expect(await guest.agent.runOk(`head -c ${DISK_MARKER.length} /dev/vda`)).toBe(`${DISK_MARKER}\n`);

    // virt boots from a device tree, without ACPI PCI hotplug: the removal goes through the guest's
    // native PCIe hotplug (pciehp), which waits out its attention-button delay before it lets go.
    const deleted = guest.qmp.waitForEvent('DEVICE_DELETED', (event) => event.data['device'] === 'hp0', { timeoutMs: 60_000 });
    await guest.qmp.execute('device_del', { id: 'hp0' });
    await deleted;
    const gone = await eventually(() => guest.agent.run('test -e /sys/block/vda'), (result) => result.exitCode !== 0, 10_000);
    expect(gone.exitCode).not.toBe(0);
    await guest.qmp.execute('blockdev-del', { 'node-name': 'drv-hp0' });
  });

  // Last: it ends the VM.
  it("powers off cleanly when the host presses virt's power button (a GPIO line; system_powerdown)", async () => {
    const shutdown = guest.qmp.waitForEvent('SHUTDOWN', undefined, { timeoutMs: 60_000 });
    await guest.qmp.execute('system_powerdown');
    expect((await shutdown).data).toEqual({ guest: true, reason: 'guest-shutdown' });
    expect(await guest.exited).toEqual({ code: 0, signal: null });
    expect(guest.console()).toContain('init: power button: powering off');
  });
});

// One VM for the tests below, which build on each other (one boot: TCG arm64 boots take seconds).
describe('an arm64 sandbox made by the library (machine.arch aarch64): virtio-fs, NIC hotplug, re-attach, stop', () => {
  const POD = `svmm-it-arm64-${process.pid}`;
  const NIC = { tap: 'svmmarm0', mac: '52:54:00:0b:00:02', host: '10.232.0.1', guest: '10.232.0.2' };
  const HOST_MARKER = 'written on the host for the arm64 guest\n';
  const scratch = scratchDir();
  let share: string;
  let vm: QemuHypervisor | undefined;
  let agent: GuestAgent | undefined;

  const ipIn = (...args: string[]) => execFileSync('ip', ['-n', POD, ...args], { encoding: 'utf8' });

  beforeAll(async () => {
    execFileSync('ip', ['netns', 'add', POD]);
    share = join(scratch.dir, 'shared');
    mkdirSync(share);
    writeFileSync(join(share, 'from-host.txt'), HOST_MARKER);
    vm = new QemuHypervisor();
    const base = guestConfig({
      machine: { arch: 'aarch64', accel: 'tcg' },
      boot: guestBoot('aarch64'),
      cpus: { boot: 1, max: 1 },
      memory: { bootMiB: 256, backing: { type: 'shared' } },
      hotplug: { rootPorts: 2 },
      runtime: { qemuPath: AARCH64_QEMU_UNDER_TEST, netns: `/run/netns/${POD}` },
    });
    await vm.createVM({ ...base, devices: [...(base.devices ?? []), { type: 'fs', driver: 'virtio-fs', id: 'share', tag: 'hostshare', sharedDir: share }] });
    await vm.startVM();
    agent = await connectAgent(vm, 90_000);
  });

  afterAll(async () => {
    await agent?.close();
    await vm?.stopVM();
    execFileSync('ip', ['netns', 'del', POD]);
    scratch.remove();
  });

  const running = (): { vm: QemuHypervisor; agent: GuestAgent } => {
    if (!vm || !agent) throw new Error('the VM did not start (see beforeAll)');
    return { vm, agent };
  };

  it('is the aarch64 guest on virt, with virtiofsd beside QEMU', async () => {
    const { vm, agent } = running();
    expect((await agent.runOk('uname -m')).trim()).toBe('aarch64');
    expect(vm.capabilities()).toMatchObject({ cpuHotplug: false, dimmHotplug: false, templates: false, deviceRemovalTimeoutMs: 20_000 });
    const [qemu = -1, daemon = -1] = vm.getPids();
    expect(readFileSync(`/proc/${qemu}/comm`, 'utf8').trim()).toMatch(/^qemu-system-aar/);
    expect(readFileSync(`/proc/${daemon}/comm`, 'utf8').trim()).toBe('virtiofsd');
  });

  it('mounts the virtio-fs share (the virtiofs module loaded), reads the host\'s file and writes one the host reads', async () => {
    const { agent } = running();
    const modules = (await agent.runOk('cat /proc/modules')).split('\n').map((line) => line.split(' ')[0]);
    expect(modules).toEqual(expect.arrayContaining(['virtiofs', 'fuse']));
    expect(await agent.runOk('mkdir -p /mnt/host && mount -t virtiofs hostshare /mnt/host && cat /mnt/host/from-host.txt')).toBe(HOST_MARKER);
    expect(await agent.runOk('grep " /mnt/host " /proc/mounts')).toMatch(/^hostshare \/mnt\/host virtiofs /);
    await agent.runOk('echo written in the arm64 guest > /mnt/host/from-guest.txt && sync');
    expect(readFileSync(join(share, 'from-guest.txt'), 'utf8')).toBe('written in the arm64 guest\n');
  });

  it('hot-plugs a NIC on a tap in the pod\'s namespace, which the guest pings through, and removes it from the guest', async () => {
    const { vm, agent } = running();
    ipIn('tuntap', 'add', 'dev', NIC.tap, 'mode', 'tap', 'user', String(identityOf(vm).uid));
    ipIn('addr', 'add', `${NIC.host}/24`, 'dev', NIC.tap);
    ipIn('link', 'set', NIC.tap, 'up');
    const plugged = await vm.hotplugAddDevice({ type: 'net', id: 'eth-hot', tap: { ifname: NIC.tap }, mac: NIC.mac });
    expect(plugged.bus).toMatch(/^rp\d$/);
    const iface = await eventually(async () => (await agent.netInterfaces()).find((i) => i.mac === NIC.mac)?.name, (name) => name !== undefined, 30_000);
    expect(iface).toBeDefined();
    await agent.runOk(`ip addr add ${NIC.guest}/24 dev ${iface}; ip link set ${iface} up`);
    const ping = await agent.run(`ping -c 3 -W 5 ${NIC.host}`, { timeoutMs: 30_000 });
    expect(Number(/(\d+) packets received/.exec(ping.output)?.[1] ?? 0), ping.output).toBe(3);

    // Right after the guest used it: native PCIe hotplug, the guest lets go after its attention-button wait.
    await vm.hotplugRemoveDevice('eth-hot', { timeoutMs: 60_000 });
    expect(vm.devices().find((d) => d.id === 'eth-hot')).toBeUndefined();
    const macs = await eventually(async () => (await agent.netInterfaces()).map((i) => i.mac), (list) => !list.includes(NIC.mac), 10_000);
    expect(macs).not.toContain(NIC.mac);
  });

  it('a new instance re-attaches to the detached VM, and the guest still answers through it', async () => {
    const { vm: first, agent: firstAgent } = running();
    const dir = first.runtimeDir as string;
    const pids = first.getPids();
    await firstAgent.close();
    agent = undefined;
    await first.detach();
    vm = undefined;
    expect(pids.filter((pid) => !isProcessAlive(pid))).toEqual([]);

    vm = await QemuHypervisor.attach(dir, { timeoutMs: 30_000 });
    expect(vm.state).toBe('running');
    expect(vm.config?.machine.arch).toBe('aarch64');
    expect(vm.getPids()).toEqual(pids);
    agent = await connectAgent(vm);
    expect((await agent.runOk('uname -m')).trim()).toBe('aarch64');
    expect(await agent.runOk('cat /mnt/host/from-host.txt')).toBe(HOST_MARKER);
    await vm.check();
  });

  it('stopVM ends QEMU and virtiofsd and leaves nothing behind', async () => {
    const { vm: attached, agent: attachedAgent } = running();
    const dir = attached.runtimeDir as string;
    const pids = attached.getPids();
    expect(pids).toHaveLength(2);
    await attachedAgent.close();
    agent = undefined;
    await attached.stopVM();
    vm = undefined;
    expect(attached.state).toBe('stopped');
    expect(attached.exitInfo?.expected).toBe(true);
    expect(pids.filter((pid) => isProcessAlive(pid))).toEqual([]);
    expect(existsSync(dir)).toBe(false);
    expect(leasesOnDisk(attached.id)).toEqual([]);
    // The tap stays the pod's: only the guest's side of it went.
    expect(ipIn('link', 'show', NIC.tap)).toContain(NIC.tap);
  });
});
