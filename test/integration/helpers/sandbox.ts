// Shared fixtures for integration tests that boot the default guest through the library.
//
// Under root every VM's QEMU runs as a uid and gid of its own, leased at createVM and known from
// then on as `vm.identity`. The fixtures follow the flow a runtime follows: create the VM, read its
// identity, then hand it the disks and taps it may use (owned by that uid, mode 0600: no other VM's
// QEMU can open them).
import { QMP_SURFACE } from '../../../src/qmp/surface.ts';
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, lstatSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { SandboxConfigInput } from '../../../src/hypervisor/config/index.ts';
import type { VmIdentity } from '../../../src/hypervisor/types.ts';
import { afterAll, beforeAll, expect } from 'vitest';
import { QemuHypervisor, type QemuHypervisorOptions } from '../../../src/qemu/qemu-hypervisor.ts';
import { runtimePaths } from '../../../src/qemu/runtime-paths.ts';
import { GuestAgent, guestAssets, type GuestArch } from '../../guest/index.ts';
import { QEMU_UNDER_TEST } from '../../helpers/qemu-under-test.ts';

export const AGENT_DEVICE_ID = 'agent';
/** Where VMs' directories live when the tests run as root (the library's default base). */
export const RUNTIME_BASE = '/run/sandbox-vmm';
/** The uid leases shared by every runtime process of the host. */
export const LEASE_DIR = join(RUNTIME_BASE, '.leases');
/** The range QEMU's uids (and equal gids) are leased from by default. */
export const LEASED_UIDS = { first: 1_900_000_000, count: 65_536 } as const;
/** Who owns a file or a tap given to a VM: its identity, or another uid (to prove it is refused). */
export type Owner = Pick<VmIdentity, 'uid' | 'gid'>;

/** The boot section for the test guest of `arch` (test/guest/build.sh builds one per architecture). */
export function guestBoot(arch: GuestArch = 'x86_64'): SandboxConfigInput['boot'] {
  const guest = guestAssets(arch);
  return { kernel: guest.kernel, initrd: guest.initrd, kernelParams: guest.kernelParams };
}

export function guestConfig(overrides: Partial<SandboxConfigInput> = {}): SandboxConfigInput {
  return {
    machine: { accel: 'tcg' },
    boot: guestBoot(),
    cpus: { boot: 1, max: 4 },
    memory: { bootMiB: 256, maxMiB: 1280, hotplug: 'virtio-mem' },
    hotplug: { rootPorts: 4 },
    devices: [{ type: 'channel', id: AGENT_DEVICE_ID, name: 'agent.0' }],
    ...overrides,
    // The QEMU of this run of the version matrix; a test's own runtime settings add to it.
    runtime: { qemuPath: QEMU_UNDER_TEST, ...overrides.runtime },
  };
}

/** The identity a created VM's QEMU runs as; throws when it has none (created as 'current', or not created). */
export function identityOf(vm: { readonly identity: VmIdentity | undefined }): VmIdentity {
  const identity = vm.identity;
  if (!identity) throw new Error('the VM has no identity of its own (not created, or running as this process)');
  return identity;
}

/** A leased identity under tcg: a uid of the range, a gid of the same number, no supplementary group. */
export function expectLeasedIdentity(identity: VmIdentity | undefined): VmIdentity {
  expect(identity).toBeDefined();
  const { uid, gid, groups } = identity as VmIdentity;
  expect(uid).toBeGreaterThanOrEqual(LEASED_UIDS.first);
  expect(uid).toBeLessThan(LEASED_UIDS.first + LEASED_UIDS.count);
  expect({ gid, groups }).toEqual({ gid: uid, groups: [] });
  return identity as VmIdentity;
}

/** Connects to the guest agent of a started VM (waits for the guest to boot). */
export async function connectAgent(vm: QemuHypervisor, timeoutMs = 60_000): Promise<GuestAgent> {
  const dir = vm.runtimeDir;
  if (!dir) throw new Error('the VM has no runtime directory');
  return GuestAgent.connect(runtimePaths(dir).channelSocket(AGENT_DEVICE_ID), { timeoutMs });
}

/**
 * A short scratch directory (socket paths must stay under 108 bytes), root's and mode 0755: every
 * VM's QEMU may traverse it, and the files in it are each given to the VM that uses them.
 */
export function scratchDir(): { readonly dir: string; remove: () => void } {
  // Made on first use: a describe block skipped by a filter never runs its afterAll to remove it.
  let dir: string | undefined;
  return {
    get dir() {
      if (dir === undefined) {
        dir = mkdtempSync('/tmp/svmm-');
        chmodSync(dir, 0o755);
      }
      return dir;
    },
    remove: () => {
      if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Gives `path` to `owner` alone (mode 0600), as a runtime hands a VM its files. */
export function giveTo(path: string, owner: Owner): string {
  chownSync(path, owner.uid, owner.gid);
  chmodSync(path, 0o600);
  return path;
}

/** A raw disk image whose first bytes are `marker`, owned by `owner` (the VM's identity) alone. */
export function rawDisk(dir: string, name: string, marker: string, owner: Owner, sizeMiB = 16): string {
  const path = join(dir, name);
  writeFileSync(path, Buffer.alloc(0));
  execFileSync('truncate', ['-s', `${sizeMiB}M`, path]);
  execFileSync('dd', [`of=${path}`, 'conv=notrunc', 'status=none'], { input: Buffer.from(marker) });
  return giveTo(path, owner);
}

/** A qcow2 image whose guest-visible first bytes are `marker`, owned by `owner` alone. */
export function qcow2Disk(dir: string, name: string, marker: string, owner: Owner, sizeMiB = 16): string {
  const raw = rawDisk(dir, `${name}.raw`, marker, { uid: 0, gid: 0 }, sizeMiB);
  const path = join(dir, name);
  execFileSync('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', raw, path]);
  rmSync(raw);
  return giveTo(path, owner);
}

/** test/fixtures/fake-qemu.mjs: a QMP-only stand-in for QEMU that misbehaves on request. */
export const FAKE_QEMU = join(process.cwd(), 'test', 'fixtures', 'fake-qemu.mjs');

/**
 * An executable for runtime.qemuPath that runs the fake QEMU, never answering the commands in
 * `silent` and lacking those in `withoutCommands` (as an older QEMU would). The library starts QEMU with an empty environment, so the setting lives in this
 * wrapper (root's, 0755, in `dir`: every VM's uid may run it, none may change it).
 */
export function fakeQemu(dir: string, silent: readonly string[] = [], withoutCommands: readonly string[] = []): string {
  const quote = (text: string) => `'${text.replaceAll("'", "'\\''")}'`;
  const path = join(dir, `fake-qemu-${silent.join('-') || 'plain'}${withoutCommands.length > 0 ? `-without-${withoutCommands.join('-')}` : ''}`);
  // The feature probe asks for the schema: the stand-in offers every command the library sends, but those `withoutCommands` names.
  const commands = Object.keys(QMP_SURFACE)
    .filter((name) => !withoutCommands.includes(name))
    .join(',');
  writeFileSync(path, `#!/bin/sh\nFAKE_QEMU_SILENT=${quote(silent.join(','))} FAKE_QEMU_COMMANDS=${quote(commands)} exec ${quote(process.execPath)} ${quote(FAKE_QEMU)} "$@"\n`, {
    mode: 0o755,
  });
  chmodSync(path, 0o755);
  return path;
}

/** A persistent tap owned by `uid` (the VM's), so that its unprivileged QEMU can open it by name. */
export function createTap(name: string, uid: number): () => void {
  execFileSync('ip', ['tuntap', 'add', 'dev', name, 'mode', 'tap', 'user', String(uid)]);
  return () => {
    try {
      execFileSync('ip', ['link', 'del', name], { stdio: 'ignore' });
    } catch {
      // Already gone.
    }
  };
}

/** The owner uid of a persistent tap, as the kernel reports it. */
export function tapOwner(name: string): number {
  return Number(readFileSync(`/sys/class/net/${name}/owner`, 'utf8').trim());
}

/** QEMU processes still alive (state not Z) whose pid is in `pids`. */
export function livePids(pids: number[]): number[] {
  return pids.filter((pid) => {
    try {
      const stat = execFileSync('cat', [`/proc/${pid}/stat`], { encoding: 'utf8' });
      return !/\) Z /.test(stat);
    } catch {
      return false;
    }
  });
}

/** Real, effective, saved and filesystem ids of a process, from /proc/<pid>/status. */
export function processIds(pid: number): { uids: number[]; gids: number[]; groups: number[] } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string) =>
    (new RegExp(`^${name}:[ \\t]*([^\\n]*)$`, 'm').exec(status)?.[1] ?? '')
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
  return { uids: field('Uid'), gids: field('Gid'), groups: field('Groups').sort((a, b) => a - b) };
}

/** Asserts that `pid` runs with every uid and gid (real, effective, saved, fs) of `identity`, and its groups only. */
export function expectRunsAs(pid: number, identity: VmIdentity): void {
  const { uid, gid } = identity;
  expect(processIds(pid)).toEqual({ uids: [uid, uid, uid, uid], gids: [gid, gid, gid, gid], groups: [...identity.groups].sort((a, b) => a - b) });
}

/** Live processes whose real or effective uid is one of `uids`. */
export function processesRunningAs(uids: ReadonlySet<number>): { pid: number; uid: number }[] {
  const found: { pid: number; uid: number }[] = [];
  for (const name of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      const [real, effective] = processIds(Number(name)).uids;
      const uid = [real, effective].find((u) => u !== undefined && uids.has(u));
      if (uid !== undefined) found.push({ pid: Number(name), uid });
    } catch {
      // Gone while we looked.
    }
  }
  return found;
}

/** The capability sets of a process (CapInh, CapPrm, CapEff, CapBnd, CapAmb) as hex strings. */
export function capabilities(pid: number): Record<string, string> {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Object.fromEntries([...status.matchAll(/^(Cap\w+):\s*([0-9a-f]+)$/gm)].map((m) => [m[1] ?? '', m[2] ?? '']));
}

export interface LeaseOnDisk {
  uid: number;
  vmId: string;
  owner: { pid: number; startTime: number };
}

/**
 * The uid leases on disk (read directly, not through the library): all of them, or those naming
 * `vmId`. Other runtime processes may hold leases of their own meanwhile, so tests look at theirs.
 */
export function leasesOnDisk(vmId?: string): LeaseOnDisk[] {
  let names: string[];
  try {
    names = readdirSync(LEASE_DIR);
  } catch {
    return [];
  }
  const leases: LeaseOnDisk[] = [];
  for (const name of names.filter((n) => /^\d+$/.test(n))) {
    try {
      const record = JSON.parse(readFileSync(join(LEASE_DIR, name), 'utf8')) as LeaseOnDisk;
      if (vmId === undefined || record.vmId === vmId) leases.push({ uid: record.uid, vmId: record.vmId, owner: record.owner });
    } catch {
      // Released (or being replaced) while we listed.
    }
  }
  return leases;
}

/** Removes the lease files naming `vmId` (a test's leftovers when its runtime process was killed). */
export function dropLeases(vmId: string): void {
  for (const lease of leasesOnDisk(vmId)) rmSync(join(LEASE_DIR, String(lease.uid)), { force: true });
}

/** Who owns a path and with what mode (the low 12 bits), without following a link. */
export function ownership(path: string): { uid: number; gid: number; mode: number } {
  const stat = lstatSync(path);
  return { uid: stat.uid, gid: stat.gid, mode: stat.mode & 0o7777 };
}

/**
 * One booted guest shared by a describe block: created, started and connected to in beforeAll
 * (handed to `onBooted`), and in afterAll its agent closed, the VM stopped, then `cleanups` run.
 */
export function guestPerSuite(
  config: SandboxConfigInput,
  options: QemuHypervisorOptions,
  onBooted: (booted: { vm: QemuHypervisor; agent: GuestAgent }) => void,
  cleanups: (() => void)[] = [],
): void {
  let vm: QemuHypervisor | undefined;
  let agent: GuestAgent | undefined;
  beforeAll(async () => {
    vm = new QemuHypervisor(options);
    await vm.createVM(config);
    await vm.startVM();
    agent = await connectAgent(vm);
    onBooted({ vm, agent });
  });
  afterAll(async () => {
    await agent?.close();
    await vm?.stopVM();
    for (const cleanup of cleanups) cleanup();
  });
}
