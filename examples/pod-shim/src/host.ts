// What the shim does on the host around the VM: the pod's network namespace and tap (the part a CNI
// plugin does for a real pod), and the scratch volumes. Each step returns its undo.
import { execFile } from 'node:child_process';
import { closeSync, ftruncateSync, mkdirSync, openSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { VmIdentity } from 'sandbox-vmm';

const execFileAsync = promisify(execFile);
export type Undo = () => Promise<void> | void;

/** Runs `ip` (no shell); a failure carries ip's own message. */
async function ip(...args: string[]): Promise<void> {
  try {
    await execFileAsync('ip', args);
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr?.trim();
    throw new Error(`ip ${args.join(' ')} failed: ${stderr || String(error)}`, { cause: error });
  }
}

/** `ip netns add`: a namespace file /run/netns/<name>, which QEMU is started in. */
export async function createNetns(name: string): Promise<{ path: string; undo: Undo }> {
  await ip('netns', 'add', name);
  return { path: `/run/netns/${name}`, undo: () => ip('netns', 'del', name) };
}

/**
 * A persistent tap inside the namespace, owned by the VM's uid so that its unprivileged QEMU can
 * open it by name, with the netns side's address. Inside its own namespace every pod's tap can
 * have the same name.
 */
export async function createTap(netns: string, name: string, owner: VmIdentity, address: string): Promise<Undo> {
  await ip('-n', netns, 'tuntap', 'add', 'dev', name, 'mode', 'tap', 'user', String(owner.uid), 'group', String(owner.gid));
  const undo = () => ip('-n', netns, 'link', 'del', name);
  try {
    await ip('-n', netns, 'addr', 'add', address, 'dev', name);
    await ip('-n', netns, 'link', 'set', name, 'up');
  } catch (error) {
    await undo();
    throw error;
  }
  return undo;
}

/**
 * The pod's own directory (root's; mode 0711, so the VM's uid can reach the files given to it but
 * list or create nothing), removed with everything in it.
 */
export function createPodDir(path: string): Undo {
  mkdirSync(join(path, '..'), { recursive: true, mode: 0o711 });
  mkdirSync(path, { mode: 0o711 });
  return () => rmSync(path, { recursive: true, force: true });
}

/** A sparse raw disk of `sizeMiB`, root's alone (mode 0600): QEMU gets it as an fd, never by path. */
export function createVolume(path: string, sizeMiB: number): void {
  const fd = openSync(path, 'wx', 0o600);
  try {
    ftruncateSync(fd, sizeMiB * 1024 * 1024);
  } finally {
    closeSync(fd);
  }
}
