// The VM's private runtime directory: created before launch (mode 0700, owned by the user QEMU
// runs as), removed on stop. Its default location is short, because socket paths inside it must
// fit in 108 bytes.
import { chownSync, existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DropPrivileges } from './process/vmm-process.ts';

/** Parent of the per-VM directories when the config names none. */
export function defaultRuntimeBase(): string {
  if (process.getuid?.() === 0) return '/run/sandbox-vmm';
  const xdg = process.env['XDG_RUNTIME_DIR'];
  if (xdg && xdg.length < 40) return join(xdg, 'sandbox-vmm');
  return join(tmpdir(), `sandbox-vmm-${process.getuid?.() ?? 'user'}`);
}

export class RuntimeDirExistsError extends Error {}

/** Creates the VM's directory; refuses one that exists (another VM with the same id). */
export function createRuntimeDir(dir: string, owner: DropPrivileges | undefined): void {
  const parent = join(dir, '..');
  // The parent must be traversable by an unprivileged QEMU, but not listable by everyone.
  mkdirSync(parent, { recursive: true, mode: 0o711 });
  if (existsSync(dir)) throw new RuntimeDirExistsError(`runtime directory ${dir} already exists`);
  mkdirSync(dir, { mode: 0o700 });
  if (owner) chownSync(dir, owner.uid, owner.gid);
}

export function removeRuntimeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

function lookupId(file: string, name: string): number | undefined {
  try {
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      const fields = line.split(':');
      if (fields[0] === name && fields[2] !== undefined) return Number(fields[2]);
    }
  } catch {
    // No such database: fall back to the caller's default.
  }
  return undefined;
}

export type UserSetting = 'auto' | 'current' | { uid: number; gid: number; groups?: number[] | undefined };

/**
 * Who QEMU runs as. 'auto' drops root to `nobody` (65534) — plus the kvm group when KVM is used —
 * and keeps any other user as it is.
 */
export function resolveQemuUser(setting: UserSetting, accel: string): DropPrivileges | undefined {
  if (setting === 'current') return undefined;
  if (setting !== 'auto') return { uid: setting.uid, gid: setting.gid, groups: setting.groups ?? [] };
  if (process.getuid?.() !== 0) return undefined;
  const uid = lookupId('/etc/passwd', 'nobody') ?? 65534;
  const gid = lookupId('/etc/group', 'nogroup') ?? lookupId('/etc/group', 'nobody') ?? 65534;
  const kvm = accel === 'kvm' ? lookupId('/etc/group', 'kvm') : undefined;
  return { uid, gid, groups: kvm === undefined ? [] : [kvm] };
}
