// Every matrix config of each architecture (test/helpers/argv-matrix.ts), built with paths to real
// files and taps, is started by the real QEMU of its architecture and of the version under test
// (qemu-system-x86_64 or qemu-system-aarch64, test/helpers/qemu-under-test.ts), paused (-S: the
// guest never runs, so TCG is quick). QEMU must accept the command line, and then confirm over QMP
// and /proc that each option took effect and that the config's settings reached it.
// What this machine cannot run (vsock and VFIO devices, KVM) is listed per config below and
// checked by QEMU's own device and type introspection instead, on the same paused QEMU.
// QEMU is launched as the library launches it (svmm-launch, listening sockets at the argv's fds),
// as the identity the config asks for; a leased one ('auto' under root) becomes a fixed test uid.
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ARCHITECTURES, archProfile, type Architecture } from '../../src/hypervisor/arch-profiles.ts';
import { parseSandboxConfig, type SandboxConfig } from '../../src/hypervisor/config/index.ts';
import { identityRequest } from '../../src/hypervisor/identity.ts';
import type { VmIdentity } from '../../src/hypervisor/types.ts';
import { buildQemuArgv } from '../../src/qemu/argv/index.ts';
import { dimmIds, memoryBackendProps } from '../../src/qemu/devices/memory.ts';
import { identityOfLease } from '../../src/qemu/identity/identity.ts';
import { runtimePaths } from '../../src/qemu/runtime-paths.ts';
import type { QmpClient } from '../../src/qmp/index.ts';
import { guestAssets } from '../guest/index.ts';
import { MATRICES, virtioFsSourceDir, X86_64_MATRIX, type MatrixEntry, type MatrixEnv } from '../helpers/argv-matrix.ts';
import { argvMismatches } from '../helpers/argv-realized.ts';
import { configMismatches } from '../helpers/config-realized.ts';
import { HostResources, hugePagesFree } from '../helpers/host-resources.ts';
import { planLaunch, unconfirmedClaims } from '../helpers/launch-plan.ts';
import { launchPaused, TEST_QEMU_UID } from '../helpers/paused-qemu.ts';
import { QEMU_UNDER_TEST_BY_ARCH } from '../helpers/qemu-under-test.ts';
import { tapBehindFd } from '../helpers/qemu-state.ts';

/** What this test needs to know of an architecture besides its profile (src/hypervisor/arch-profiles.ts). */
interface ArchRun {
  /** What each config cannot run here; every other config runs exactly as built. */
  notRunHere: Readonly<Record<string, string[]>>;
  /** A config with a vCPU to spare (cpus.max above cpus.boot where the profile allows it). */
  vcpuEntry: string;
  /** The QOM type of a hot-plugged vCPU of the `max` model. */
  vcpuType: string;
}

const ARCH_RUNS: Readonly<Record<Architecture, ArchRun>> = {
  x86_64: {
    notRunHere: {
      'every-device-kind': ['-device vfio-pci (gpu0)', '-device vhost-vsock-pci (vsock0)'],
      'vfio-root-ports': ['-device vfio-pci (nic0)', '-device vfio-pci (gpu0)'],
      'many-root-ports': ['-device vfio-pci (vf0)'],
      'full-root-bus': ['-device vfio-pci (vf0)'],
      kvm: ['-accel kvm', '-cpu host', '-global kvm-pit.lost_tick_policy=discard'],
    },
    vcpuEntry: 'initrd-boot',
    vcpuType: 'max-x86_64-cpu',
  },
  aarch64: {
    notRunHere: {
      'arm64-every-device-kind': ['-device vfio-pci (gpu0)', '-device vhost-vsock-pci (vsock0)'],
      'arm64-kvm': ['-machine virt,gic-version=host', '-accel kvm', '-cpu host'],
    },
    vcpuEntry: 'arm64-initrd-boot',
    vcpuType: 'max-arm-cpu',
  },
};

/** Huge pages the hugepages config needs (128 MiB of 2 MiB pages), with some room. */
const HUGE_PAGES = 72;
const MiB = 1024 * 1024;

const shared = new HostResources();
/** The host's side of the environment, shared by both architectures' configs. */
let host: Omit<MatrixEnv, 'guest'>;

beforeAll(() => {
  const dir = mkdtempSync('/tmp/svmm-m');
  shared.onCleanup(`scratch dir ${dir}`, () => rmSync(dir, { recursive: true, force: true }));
  const tag = String(process.pid % 100_000);
  host = {
    dir,
    blockDevice: shared.loopDevice(join(dir, 'loop.img')),
    taps: { multiQueue: shared.tap(`svm${tag}q`, { multiQueue: true }), single: shared.tap(`svm${tag}t`), byFd: shared.tap(`svm${tag}f`) },
    // Stands for the caller's fd; launchPaused attaches taps.byFd at QEMU's fd for it in its place.
    tapFd: 7,
    hugepages: shared.hugepages(join(dir, 'huge'), HUGE_PAGES),
  };
});

afterAll(() => shared.cleanup());

/** The environment of an architecture's configs: the host's, and the test guest's kernel and initramfs of that architecture (loaded, never run). */
function envOf(arch: Architecture): MatrixEnv {
  const guest = guestAssets(arch);
  return { ...host, guest: { kernel: guest.kernel, initrd: guest.initrd, kernelParams: guest.kernelParams } };
}

/** The files and daemons a config refers to. */
async function prepareHost(config: SandboxConfig, resources: HostResources): Promise<void> {
  if (config.boot.image) resources.rawImage(config.boot.image, 16, 'ROOTFS');
  if (config.memory.backing.type === 'file') mkdirSync(config.memory.backing.path, { recursive: true });
  for (const device of config.devices) {
    if (device.type === 'block' && device.path !== undefined && device.path !== host.blockDevice) {
      if (device.format === 'qcow2') resources.qcow2Image(device.path);
      else resources.rawImage(device.path);
    }
    if (device.type === 'fs' && device.driver === '9p') mkdirSync(device.path, { recursive: true });
    if (device.type === 'fs' && device.driver === 'virtio-fs' && device.socketPath) await resources.virtiofsd(device.socketPath, virtioFsSourceDir(device.socketPath));
  }
}

/** A DIMM hot-added to the paused VM fits: -m gave it slots and room (the library's own backend props). */
async function hotAddDimm(qmp: QmpClient, config: SandboxConfig): Promise<unknown> {
  const { qemuId, backendId } = dimmIds(0);
  await qmp.execute('object-add', memoryBackendProps(backendId, 128, config.memory.backing, false));
  await qmp.execute('device_add', { driver: 'pc-dimm', id: qemuId, memdev: backendId });
  const devices = (await qmp.execute('query-memory-devices')) as { type: string; data: { id?: string; size: number } }[];
  return devices.find((d) => d.type === 'dimm');
}

/**
 * Who QEMU runs as, by the library's rules (identityRequest): 'current' (with allowRoot under root)
 * keeps this process's user, a fixed identity is used as given, and where the library would lease
 * a uid, a fixed test uid stands in with the identity a lease gets.
 */
function identityFor(config: SandboxConfig): VmIdentity | undefined {
  const request = identityRequest(config, process.geteuid?.() ?? -1);
  switch (request.kind) {
    case 'current':
      return undefined;
    case 'fixed':
      return { uid: request.uid, gid: request.gid, groups: request.groups };
    case 'lease':
      return identityOfLease(TEST_QEMU_UID, config.machine.accel);
  }
}

/** An entry's config and launch plan for this host, its QEMU the one of the config's architecture. */
function planOf(entry: MatrixEntry) {
  const config = parseSandboxConfig(entry.config(envOf(entryArch(entry))));
  return { config, launch: planLaunch(buildQemuArgv(config, runtimePaths('/run/x')).args, config.machine.arch) };
}

/** The architecture whose matrix holds the entry. */
function entryArch(entry: MatrixEntry): Architecture {
  const arch = ARCHITECTURES.find((a) => MATRICES[a].includes(entry));
  if (!arch) throw new Error(`${entry.name} is in no matrix`);
  return arch;
}

/** Builds an entry's argv for this host, prepares what it refers to, and starts it paused in the QEMU of its architecture. */
async function start(entry: MatrixEntry, local: HostResources) {
  const config = parseSandboxConfig(entry.config(envOf(entryArch(entry))));
  const runtimeDir = mkdtempSync('/tmp/svmm-r');
  local.onCleanup(`runtime dir ${runtimeDir}`, () => rmSync(runtimeDir, { recursive: true, force: true }));
  const user = identityFor(config);
  // As the library makes it (launch/home.ts): ours, QEMU's group may only traverse it. QEMU
  // creates nothing there: the launcher binds the sockets as root.
  if (user) {
    chownSync(runtimeDir, process.geteuid?.() ?? 0, user.gid);
    chmodSync(runtimeDir, 0o710);
  }
  const paths = runtimePaths(runtimeDir);
  const argv = buildQemuArgv(config, paths);
  const plan = planLaunch(argv.args, config.machine.arch);
  await prepareHost(config, local);
  // Each caller fd is the matrix's tap fd; launchPaused hands the real tap over in its place.
  const inherited = argv.fds.flatMap((entry) => (entry.kind === 'inherit' ? [entry] : []));
  if (!inherited.every((entry) => entry.from === host.tapFd)) throw new Error(`unexpected caller fds ${JSON.stringify(inherited)}`);
  const fdTaps = inherited.map(() => host.taps.byFd);
  const qemu = await launchPaused({ args: plan.args, fds: argv.fds, qmpSocket: paths.qmpSocket, user, fdTaps, qemuPath: QEMU_UNDER_TEST_BY_ARCH[config.machine.arch] });
  local.onCleanup(`qemu ${qemu.pid}`, () => qemu.stop());
  return { config, paths, argv, plan, user, inherited, fdTaps, qemu };
}

describe.each(ARCHITECTURES.map((arch) => ({ arch })))('the $arch argv matrix under a real QEMU', ({ arch }: { arch: Architecture }) => {
  const matrix = MATRICES[arch];
  const run = ARCH_RUNS[arch];

  it(`runs in ${QEMU_UNDER_TEST_BY_ARCH[arch]} everything except what this machine cannot, and says what that is`, () => {
    const notRun = Object.fromEntries(
      matrix.map((entry): [string, string[]] => {
        const { substitutions } = planOf(entry).launch;
        return [entry.name, substitutions.map((s) => (s.deviceId ? `${s.original[0]} ${s.properties[0]?.typename} (${s.deviceId})` : s.original.join(' ')))];
      }).filter(([, list]) => list.length > 0),
    );
    expect(notRun).toEqual(run.notRunHere);
  });

  describe.each(matrix.map((entry) => ({ name: entry.name, entry })))('$name', ({ entry }: { entry: MatrixEntry }) => {
    it('QEMU accepts the command line and has every device, property and setting it asks for', async () => {
      const local = new HostResources();
      try {
        const hugePagesBefore = hugePagesFree();
        const { config, paths, argv, plan, user, inherited, fdTaps, qemu } = await start(entry, local);
        expect(config.machine.arch).toBe(arch);
        expect(argv.args).toContain('-S');

        expect(await argvMismatches(qemu.qmp, qemu.pid, plan.args, argv.fds)).toEqual([]);
        const absent = plan.substitutions.flatMap((s) => (s.deviceId ? [s.deviceId] : []));
        const expectedUser = user ?? { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
        expect(await configMismatches(qemu.qmp, qemu.pid, config, paths, { absent, user: expectedUser })).toEqual([]);
        expect(await unconfirmedClaims(qemu.qmp, plan.substitutions)).toEqual([]);
        // The machine really is one of the config's architecture.
        expect(((await qemu.qmp.execute('query-cpus-fast')) as { target: string }[]).map((cpu) => cpu.target)).toEqual(Array(config.cpus.boot).fill(arch));

        inherited.forEach((entry, i) => expect(tapBehindFd(qemu.pid, entry.fd), `fd ${entry.fd}`).toBe(fdTaps[i]));
        if (config.memory.hotplug === 'dimm') expect(await hotAddDimm(qemu.qmp, config)).toMatchObject({ data: { id: 'dimm0', size: 128 * MiB } });
        if (config.memory.backing.type === 'hugepages') {
          // Preallocated on huge pages: the pool shrank by the whole boot memory.
          expect(hugePagesBefore - hugePagesFree()).toBeGreaterThanOrEqual((config.memory.bootMiB * MiB) / (2 * MiB));
        }
      } finally {
        await local.cleanup();
      }
    });
  });

  it(`QEMU hot-plugs a vCPU exactly where capabilities() says it can (cpuHotplug ${String(archProfile(arch).cpuHotplug)})`, async () => {
    const local = new HostResources();
    try {
      const entry = matrix.find((e) => e.name === run.vcpuEntry) as MatrixEntry;
      const { config, qemu } = await start(entry, local);
      const plugged = async () => ((await qemu.qmp.execute('query-cpus-fast')) as unknown[]).length;
      expect(await plugged()).toBe(config.cpus.boot);
      if (archProfile(arch).cpuHotplug) {
        // A slot for each possible vCPU, the boot ones taken; the next one plugs in.
        const slots = (await qemu.qmp.execute('query-hotpluggable-cpus')) as { type: string; 'qom-path'?: string; props: Record<string, number> }[];
        expect(slots).toHaveLength(config.cpus.max);
        expect(slots.filter((slot) => slot['qom-path'] !== undefined)).toHaveLength(config.cpus.boot);
        const free = slots.find((slot) => slot['qom-path'] === undefined);
        expect(free?.type).toBe(run.vcpuType);
        await qemu.qmp.execute('device_add', { driver: run.vcpuType, id: 'vcpu-extra', ...free?.props });
        expect(await plugged()).toBe(config.cpus.boot + 1);
      } else {
        expect(config.cpus.max).toBe(config.cpus.boot);
        await expect(qemu.qmp.execute('query-hotpluggable-cpus')).rejects.toThrow();
        await expect(qemu.qmp.execute('device_add', { driver: run.vcpuType, id: 'vcpu-extra', 'core-id': config.cpus.boot })).rejects.toThrow();
        expect(await plugged()).toBe(config.cpus.boot);
      }
    } finally {
      await local.cleanup();
    }
  });
});

// The checks themselves, once (on x86_64's QEMU): each difference they exist to find, they find.
describe('the argv matrix checks', () => {
  it('the checks report each difference between QEMU and a doctored argv, config or claim', async () => {
    const local = new HostResources();
    try {
      const entry = X86_64_MATRIX.find((e) => e.name === 'disk-cache-modes') as MatrixEntry;
      const { config, paths, argv, plan, qemu } = await start(entry, local);
      const doctored = plan.args.map((arg) =>
        arg
          .replace('serial=RO_1.0', 'serial=RO_2.0')
          .replace(/^size=256M$/, 'size=512M')
          .replace('id=wt,drive=drv-wt,bus=pcie.0,write-cache=off,addr=0x4', 'id=wt,drive=drv-wt,bus=pcie.0,write-cache=off,addr=0x9')
          .replace('node-name=drv-ro,read-only=on', 'node-name=drv-ro,read-only=off'),
      );
      expect(doctored).not.toEqual(plan.args);
      const argvProblems = await argvMismatches(qemu.qmp, qemu.pid, [...doctored, '-bogus', 'x=1'], argv.fds);
      expect(argvProblems).toHaveLength(6);
      for (const what of ['/machine/peripheral/ro serial', '-m size', '-m maxmem', '-device wt: QEMU placed it', 'drv-ro read-only', '-bogus: no check']) {
        expect(argvProblems.some((p) => p.includes(what)), what).toBe(true);
      }

      // The fds: told the QMP and console sockets' paths the wrong way round, the check names both fds.
      const [qmpFd, consoleFd] = argv.fds;
      if (qmpFd?.kind !== 'listen' || consoleFd?.kind !== 'listen') throw new Error(`unexpected fds ${JSON.stringify(argv.fds)}`);
      const swapped = [{ ...qmpFd, path: consoleFd.path }, { ...consoleFd, path: qmpFd.path }, ...argv.fds.slice(2)];
      const fdProblems = await argvMismatches(qemu.qmp, qemu.pid, plan.args, swapped);
      expect(fdProblems).toHaveLength(2);
      for (const what of [`-chardev fd ${qmpFd.fd} bound at: QEMU has ${JSON.stringify(qmpFd.path)}`, `-chardev fd ${consoleFd.fd} bound at: QEMU has ${JSON.stringify(consoleFd.path)}`]) {
        expect(fdProblems.some((p) => p.startsWith(what)), what).toBe(true);
      }

      const wrongConfig: SandboxConfig = { ...config, cpus: { boot: 2, max: 2 }, devices: config.devices.map((d) => (d.id === 'wb' ? { ...d, readOnly: true } : d)) };
      const configProblems = await configMismatches(qemu.qmp, qemu.pid, wrongConfig, paths, { user: { uid: 1, gid: 1 } });
      for (const what of ['boot vCPUs', 'possible vCPUs', 'wb: disk', 'uid', 'gid']) expect(configProblems.some((p) => p.startsWith(what)), what).toBe(true);
      expect(configProblems).toHaveLength(5);

      const claims = await unconfirmedClaims(qemu.qmp, [
        {
          original: ['-device', 'vhost-vsock-pci,…'],
          replacement: [],
          reason: 'test',
          types: ['vhost-vsock-pci', 'no-such-type'],
          properties: [
            { typename: 'vhost-vsock-pci', property: 'guest-cid', value: 'three' },
            { typename: 'vhost-vsock-pci', property: 'guest-cidr', value: '3' },
            { typename: 'vhost-vsock-pci', property: 'guest-cid', value: '3' },
          ],
        },
      ]);
      expect(claims).toHaveLength(3);
      expect(claims.join('\n')).toMatch(/no type no-such-type[\s\S]*is a uint64, which "three" is not[\s\S]*has no property guest-cidr/);
    } finally {
      await local.cleanup();
    }
  });
});
