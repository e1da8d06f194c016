// Shared fixtures for integration tests that boot the default guest through the library.
import { execFileSync } from 'node:child_process';
import { chownSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { SandboxConfigInput } from '../../../src/hypervisor/config/index.ts';
import { afterAll, beforeAll } from 'vitest';
import { QemuHypervisor, type QemuHypervisorOptions } from '../../../src/qemu/qemu-hypervisor.ts';
import { runtimePaths } from '../../../src/qemu/runtime-paths.ts';
import { GuestAgent, guestAssets } from '../../guest/index.ts';

/** The unprivileged user QEMU drops to when the tests run as root ('auto'). */
export const QEMU_UID = 65534;
export const QEMU_GID = 65534;
export const AGENT_DEVICE_ID = 'agent';

export function guestConfig(overrides: Partial<SandboxConfigInput> = {}): SandboxConfigInput {
  const guest = guestAssets();
  return {
    machine: { accel: 'tcg' },
    boot: { kernel: guest.kernel, initrd: guest.initrd, kernelParams: guest.kernelParams },
    cpus: { boot: 1, max: 4 },
    memory: { bootMiB: 256, maxMiB: 1280, hotplug: 'virtio-mem' },
    hotplug: { rootPorts: 4 },
    devices: [{ type: 'channel', id: AGENT_DEVICE_ID, name: 'agent.0' }],
    ...overrides,
  };
}

/** Connects to the guest agent of a started VM (waits for the guest to boot). */
export async function connectAgent(vm: QemuHypervisor, timeoutMs = 60_000): Promise<GuestAgent> {
  const dir = vm.runtimeDir;
  if (!dir) throw new Error('the VM has no runtime directory');
  return GuestAgent.connect(runtimePaths(dir).channelSocket(AGENT_DEVICE_ID), { timeoutMs });
}

/** A short scratch directory (socket paths must stay under 108 bytes) QEMU's user can read. */
export function scratchDir(): { readonly dir: string; remove: () => void } {
  // Made on first use: a describe block skipped by a filter never runs its afterAll to remove it.
  let dir: string | undefined;
  return {
    get dir() {
      if (dir === undefined) {
        dir = mkdtempSync('/tmp/svmm-');
        chownSync(dir, QEMU_UID, QEMU_GID);
      }
      return dir;
    },
    remove: () => {
      if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A raw disk image whose first bytes are `marker`, owned by QEMU's user. */
export function rawDisk(dir: string, name: string, marker: string, sizeMiB = 16): string {
  const path = join(dir, name);
  writeFileSync(path, Buffer.alloc(0));
  execFileSync('truncate', ['-s', `${sizeMiB}M`, path]);
  execFileSync('dd', [`of=${path}`, 'conv=notrunc', 'status=none'], { input: Buffer.from(marker) });
  chownSync(path, QEMU_UID, QEMU_GID);
  return path;
}

/** A qcow2 image whose guest-visible first bytes are `marker`, owned by QEMU's user. */
export function qcow2Disk(dir: string, name: string, marker: string, sizeMiB = 16): string {
  const raw = rawDisk(dir, `${name}.raw`, marker, sizeMiB);
  const path = join(dir, name);
  execFileSync('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', raw, path]);
  rmSync(raw);
  chownSync(path, QEMU_UID, QEMU_GID);
  return path;
}

/** A persistent tap owned by QEMU's user, so an unprivileged QEMU can open it by name. */
export function createTap(name: string): () => void {
  execFileSync('ip', ['tuntap', 'add', 'dev', name, 'mode', 'tap', 'user', String(QEMU_UID)]);
  return () => {
    try {
      execFileSync('ip', ['link', 'del', name], { stdio: 'ignore' });
    } catch {
      // Already gone.
    }
  };
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
