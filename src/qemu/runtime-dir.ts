// Where VMs' directories live, and how one is made and removed. A VM's directory is root's: QEMU
// gets group access to traverse it (to reach virtiofsd's socket) and nothing else, so nothing in it
// is ever QEMU's to plant, swap or replace. Its default location is short, because socket paths
// inside it must fit in 108 bytes.
import { lstatSync, mkdirSync, renameSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { ConfigError } from '../hypervisor/config/index.ts';
import { directoryProblem, ensureTrustedDir } from '../util/safe-fs.ts';

/** Parent of the per-VM directories when the config names none. */
export function defaultRuntimeBase(): string {
  if (process.geteuid?.() === 0) return '/run/sandbox-vmm';
  const xdg = process.env['XDG_RUNTIME_DIR'];
  if (xdg && xdg.length < 40) return join(xdg, 'sandbox-vmm');
  return join(tmpdir(), `sandbox-vmm-${process.geteuid?.() ?? 'user'}`);
}

/** The uid lease files of every VM under `base`: names starting with '.' are never VM ids. */
export function leaseDirOf(base: string): string {
  return join(base, '.leases');
}

/**
 * The default base: created if missing and checked every time (a real directory owned by us,
 * writable by nobody else; as root 0711 so that each QEMU can traverse to its own directory, else
 * 0700), so that a base someone else made or opened up is refused, never used.
 */
export function ensureRuntimeBase(base: string): void {
  const asRoot = process.geteuid?.() === 0;
  mkdirSync(dirname(base), { recursive: true, mode: 0o755 });
  try {
    ensureTrustedDir(base, { mode: asRoot ? 0o711 : 0o700, create: true, exactMode: !asRoot });
  } catch (error) {
    throw new ConfigError([{ path: 'runtime.dir', message: (error as Error).message }], { cause: error });
  }
}

/**
 * A runtime.dir's parent must not let anyone else swap the name: a real directory, ours or root's,
 * not writable by others unless sticky like /tmp.
 */
export function checkRuntimeDirParent(parent: string): void {
  let stat;
  try {
    stat = lstatSync(parent);
  } catch (error) {
    throw new ConfigError([{ path: 'runtime.dir', message: `its parent ${parent} does not exist` }], { cause: error });
  }
  const problem = directoryProblem(stat, { owners: [process.geteuid?.() ?? 0, 0], allowSticky: true });
  if (problem) throw new ConfigError([{ path: 'runtime.dir', message: `its parent ${parent} ${problem}` }]);
}

/*
 * Names no VM id can have (ids never start with '.'), in the VM directory's own parent so that
 * rename(2) is atomic: `.new-<id>-<hex>` while a directory is being made, `.gone-<id>-<hex>` once it
 * is being removed. A removal cut short (the runtime killed mid-way) then leaves a name the orphan
 * sweep recognises, never a VM directory that has lost its owner and state files.
 */
const TRANSIENT_NAME = /^\.(new|gone)-(.+)-[0-9a-f]{12}$/;

export function stagingPathOf(dir: string): string {
  return join(dirname(dir), `.new-${basename(dir)}-${randomBytes(6).toString('hex')}`);
}

/**
 * Renames a VM directory to its `.gone-` name before it is removed; returns the path to remove
 * (the original one when it is already gone or cannot be renamed).
 */
export function moveAsideForRemoval(dir: string): string {
  const doomed = join(dirname(dir), `.gone-${basename(dir)}-${randomBytes(6).toString('hex')}`);
  try {
    renameSync(dir, doomed);
    return doomed;
  } catch {
    return dir;
  }
}

/** What an entry of the base holds: a VM's directory, or one being made or removed (and whose). */
export function classifyEntry(name: string): { kind: 'vm' | 'staging' | 'removing'; vmId: string } {
  const match = TRANSIENT_NAME.exec(name);
  if (!match) return { kind: 'vm', vmId: name };
  return { kind: match[1] === 'new' ? 'staging' : 'removing', vmId: match[2] ?? name };
}
