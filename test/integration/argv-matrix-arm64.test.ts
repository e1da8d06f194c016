// Every aarch64 matrix config (test/helpers/argv-matrix-arm64.ts), built with paths to real files,
// is started paused (-S) by a real qemu-system-aarch64, as the x86_64 matrix is by
// qemu-system-x86_64 (argv-matrix.test.ts): QEMU must accept the command line, then confirm over
// QMP and /proc that each option took effect and that the config reached it. No guest is needed:
// the kernel and initramfs are only loaded, never run.
// The binary: the qemu-system-aarch64 of the version under test (test/helpers/qemu-under-test.ts).
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseSandboxConfig, type SandboxConfig } from '../../src/hypervisor/config/index.ts';
import { identityRequest } from '../../src/hypervisor/identity.ts';
import type { VmIdentity } from '../../src/hypervisor/types.ts';
import { buildQemuArgv } from '../../src/qemu/argv/index.ts';
import { identityOfLease } from '../../src/qemu/identity/identity.ts';
import { runtimePaths } from '../../src/qemu/runtime-paths.ts';
import { virtioFsSourceDir, type MatrixEntry, type MatrixEnv } from '../helpers/argv-matrix.ts';
import { ARM64_MATRIX } from '../helpers/argv-matrix-arm64.ts';
import { argvMismatches } from '../helpers/argv-realized.ts';
import { AARCH64_QEMU_UNDER_TEST } from '../helpers/qemu-under-test.ts';
import { configMismatches } from '../helpers/config-realized.ts';
import { HostResources } from '../helpers/host-resources.ts';
import { planLaunch, unconfirmedClaims } from '../helpers/launch-plan.ts';
import { launchPaused, TEST_QEMU_UID } from '../helpers/paused-qemu.ts';

const QEMU = AARCH64_QEMU_UNDER_TEST;

/** What each config cannot run here; every other config runs exactly as built. */
const NOT_RUN_HERE: Readonly<Record<string, string[]>> = {
  'arm64-every-device-kind': ['-device vfio-pci (gpu0)', '-device vhost-vsock-pci (vsock0)'],
  'arm64-kvm': ['-machine virt,gic-version=host', '-accel kvm', '-cpu host'],
};

const shared = new HostResources();
let env: MatrixEnv;

beforeAll(() => {
  const dir = mkdtempSync('/tmp/svmm-a');
  shared.onCleanup(`scratch dir ${dir}`, () => rmSync(dir, { recursive: true, force: true }));
  // A leased identity (the default user) must read the boot files.
  chmodSync(dir, 0o755);
  const kernel = join(dir, 'Image');
  const initrd = join(dir, 'initrd.img');
  // Loaded as a raw image, never run: the guest stays paused.
  writeFileSync(kernel, Buffer.alloc(64 * 1024, 0x5a), { mode: 0o644 });
  writeFileSync(initrd, Buffer.alloc(16 * 1024, 0xa5), { mode: 0o644 });
  const tag = String(process.pid % 100_000);
  env = {
    guest: { kernel, initrd, kernelParams: [] },
    dir,
    // No aarch64 config uses a host block device or huge pages.
    blockDevice: '/dev/null',
    taps: { multiQueue: `sva${tag}q`, single: shared.tap(`sva${tag}t`), byFd: `sva${tag}f` },
    tapFd: 7,
    hugepages: '/dev/hugepages',
  };
});

afterAll(() => shared.cleanup());

async function prepareHost(config: SandboxConfig, resources: HostResources): Promise<void> {
  if (config.boot.image) resources.rawImage(config.boot.image, 16, 'ROOTFS');
  for (const device of config.devices) {
    if (device.type === 'block' && device.path !== undefined) {
      if (device.format === 'qcow2') resources.qcow2Image(device.path);
      else resources.rawImage(device.path);
    }
    if (device.type === 'fs' && device.driver === '9p') mkdirSync(device.path, { recursive: true });
    if (device.type === 'fs' && device.driver === 'virtio-fs' && device.socketPath) await resources.virtiofsd(device.socketPath, virtioFsSourceDir(device.socketPath));
  }
}

/** As in argv-matrix.test.ts: a fixed test uid stands in where the library would lease one. */
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

function plan(entry: MatrixEntry) {
  const config = parseSandboxConfig(entry.config(env));
  return { config, launch: planLaunch(buildQemuArgv(config, runtimePaths('/run/x')).args, config.machine.arch) };
}

describe(`the aarch64 argv matrix under a real QEMU (${QEMU})`, () => {
  it('runs everything except what this machine cannot, and says what that is', () => {
    const notRun = Object.fromEntries(
      ARM64_MATRIX.map((entry): [string, string[]] => {
        const { substitutions } = plan(entry).launch;
        return [entry.name, substitutions.map((s) => (s.deviceId ? `${s.original[0]} ${s.properties[0]?.typename} (${s.deviceId})` : s.original.join(' ')))];
      }).filter(([, list]) => list.length > 0),
    );
    expect(notRun).toEqual(NOT_RUN_HERE);
  });

  describe.each(ARM64_MATRIX.map((entry) => ({ name: entry.name, entry })))('$name', ({ entry }: { entry: MatrixEntry }) => {
    it('QEMU accepts the command line and has every device, property and setting it asks for', async () => {
      const local = new HostResources();
      try {
        const config = parseSandboxConfig(entry.config(env));
        expect(config.machine.arch).toBe('aarch64');
        const runtimeDir = mkdtempSync('/tmp/svmm-r');
        local.onCleanup(`runtime dir ${runtimeDir}`, () => rmSync(runtimeDir, { recursive: true, force: true }));
        const user = identityFor(config);
        if (user) {
          chownSync(runtimeDir, process.geteuid?.() ?? 0, user.gid);
          chmodSync(runtimeDir, 0o710);
        }
        const paths = runtimePaths(runtimeDir);
        const argv = buildQemuArgv(config, paths);
        const launch = planLaunch(argv.args, config.machine.arch);
        await prepareHost(config, local);
        expect(argv.fds.every((entry) => entry.kind === 'listen')).toBe(true);
        const qemu = await launchPaused({ args: launch.args, fds: argv.fds, qmpSocket: paths.qmpSocket, user, qemuPath: QEMU });
        local.onCleanup(`qemu ${qemu.pid}`, () => qemu.stop());

        expect(await argvMismatches(qemu.qmp, qemu.pid, launch.args, argv.fds)).toEqual([]);
        const absent = launch.substitutions.flatMap((s) => (s.deviceId ? [s.deviceId] : []));
        const expectedUser = user ?? { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
        expect(await configMismatches(qemu.qmp, qemu.pid, config, paths, { absent, user: expectedUser })).toEqual([]);
        expect(await unconfirmedClaims(qemu.qmp, launch.substitutions)).toEqual([]);
        // The machine really is an aarch64 virt board.
        expect(((await qemu.qmp.execute('query-cpus-fast')) as { target: string }[]).map((cpu) => cpu.target)).toEqual(Array(config.cpus.boot).fill('aarch64'));
      } finally {
        await local.cleanup();
      }
    });
  });

  it('QEMU refuses to hot-plug a vCPU on virt, as capabilities() says (cpuHotplug false)', async () => {
    const local = new HostResources();
    try {
      const entry = ARM64_MATRIX.find((e) => e.name === 'arm64-initrd-boot') as MatrixEntry;
      const config = parseSandboxConfig(entry.config(env));
      const runtimeDir = mkdtempSync('/tmp/svmm-r');
      local.onCleanup(`runtime dir ${runtimeDir}`, () => rmSync(runtimeDir, { recursive: true, force: true }));
      const paths = runtimePaths(runtimeDir);
      const argv = buildQemuArgv(config, paths);
      const qemu = await launchPaused({ args: argv.args, fds: argv.fds, qmpSocket: paths.qmpSocket, user: undefined, qemuPath: QEMU });
      local.onCleanup(`qemu ${qemu.pid}`, () => qemu.stop());
      await expect(qemu.qmp.execute('query-hotpluggable-cpus')).rejects.toThrow();
      await expect(qemu.qmp.execute('device_add', { driver: 'max-arm-cpu', id: 'vcpu2', 'core-id': 2 })).rejects.toThrow();
      expect((await qemu.qmp.execute('query-cpus-fast')) as unknown[]).toHaveLength(2);
    } finally {
      await local.cleanup();
    }
  });
});
