// Where VM directories live: the default base (made 0711 by root, refused when someone else could
// swap or fill it) and the checks on a configured runtime.dir's parent.
import { chmodSync, chownSync, lstatSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ConfigError } from '../../../src/hypervisor/config/index.ts';
import { checkRuntimeDirParent, classifyEntry, defaultRuntimeBase, ensureRuntimeBase, leaseDirOf, moveAsideForRemoval, stagingPathOf } from '../../../src/qemu/runtime-dir.ts';
import { UnsafePathError } from '../../../src/util/safe-fs.ts';

const OTHER_UID = 4321;

let tmp: string;
let savedXdg: string | undefined;

beforeEach(() => {
  tmp = mkdtempSync(join(tmpdir(), 'svmm-runtime-dir-'));
  savedXdg = process.env['XDG_RUNTIME_DIR'];
});

afterEach(() => {
  vi.restoreAllMocks();
  if (savedXdg === undefined) delete process.env['XDG_RUNTIME_DIR'];
  else process.env['XDG_RUNTIME_DIR'] = savedXdg;
  rmSync(tmp, { recursive: true, force: true });
});

const asUid = (uid: number) => vi.spyOn(process, 'geteuid').mockReturnValue(uid);

function dir(name: string, mode: number, uid = 0): string {
  const path = join(tmp, name);
  mkdirSync(path);
  chmodSync(path, mode);
  if (uid !== 0) chownSync(path, uid, uid);
  return path;
}

function configError(fn: () => void): ConfigError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    const configError = error as ConfigError;
    expect(configError.paths).toEqual(['runtime.dir']);
    return configError;
  }
  throw new Error('no ConfigError was thrown');
}

const mode = (path: string): number => lstatSync(path).mode & 0o7777;

describe('defaultRuntimeBase', () => {
  it('is /run/sandbox-vmm as root, whatever XDG_RUNTIME_DIR says', () => {
    process.env['XDG_RUNTIME_DIR'] = '/run/user/0';
    expect(defaultRuntimeBase()).toBe('/run/sandbox-vmm');
  });

  it("is under a short XDG_RUNTIME_DIR for another user", () => {
    asUid(1000);
    process.env['XDG_RUNTIME_DIR'] = '/run/user/1000';
    expect(defaultRuntimeBase()).toBe('/run/user/1000/sandbox-vmm');
  });

  it('takes an XDG_RUNTIME_DIR of 39 characters but not one of 40', () => {
    asUid(1000);
    const xdg39 = `/${'x'.repeat(38)}`;
    process.env['XDG_RUNTIME_DIR'] = xdg39;
    expect(defaultRuntimeBase()).toBe(`${xdg39}/sandbox-vmm`);
    process.env['XDG_RUNTIME_DIR'] = `${xdg39}y`;
    expect(defaultRuntimeBase()).toBe(join(tmpdir(), 'sandbox-vmm-1000'));
  });

  it('falls back to a per-uid name in the temp dir without XDG_RUNTIME_DIR (or an empty one)', () => {
    asUid(1000);
    delete process.env['XDG_RUNTIME_DIR'];
    expect(defaultRuntimeBase()).toBe(join(tmpdir(), 'sandbox-vmm-1000'));
    process.env['XDG_RUNTIME_DIR'] = '';
    expect(defaultRuntimeBase()).toBe(join(tmpdir(), 'sandbox-vmm-1000'));
  });
});

describe('leaseDirOf', () => {
  it('is .leases in the base (a name no VM id can have)', () => {
    expect(leaseDirOf('/run/sandbox-vmm')).toBe('/run/sandbox-vmm/.leases');
  });
});

describe('ensureRuntimeBase (as root)', () => {
  it('creates the base, and missing parents, with exactly 0711', () => {
    const base = join(tmp, 'a', 'b', 'base');
    const umask = process.umask(0o077);
    try {
      ensureRuntimeBase(base);
    } finally {
      process.umask(umask);
    }
    const stats = lstatSync(base);
    expect(stats.isDirectory()).toBe(true);
    expect(stats.mode & 0o7777).toBe(0o711);
    expect(stats.uid).toBe(0);
    expect(lstatSync(join(tmp, 'a', 'b')).isDirectory()).toBe(true);
  });

  it('accepts it again, and an existing root directory closed to writes by others (0700, 0755)', () => {
    const base = join(tmp, 'base');
    ensureRuntimeBase(base);
    ensureRuntimeBase(base);
    expect(mode(base)).toBe(0o711);
    chmodSync(base, 0o700);
    ensureRuntimeBase(base);
    expect(mode(base)).toBe(0o700);
    chmodSync(base, 0o755);
    ensureRuntimeBase(base);
    expect(mode(base)).toBe(0o755);
  });

  it.each([0o775, 0o757, 0o777, 0o1777])('refuses a base of mode %o', (bits) => {
    const base = dir('base', bits);
    const error = configError(() => ensureRuntimeBase(base));
    expect(error.issues[0]?.message).toBe(`unsafe path ${base}: mode 0${bits.toString(8)} is writable by group or others`);
    expect(error.cause).toBeInstanceOf(UnsafePathError);
    expect(mode(base)).toBe(bits);
  });

  it('refuses a symlink to a good directory', () => {
    const real = dir('real', 0o711);
    const base = join(tmp, 'base');
    symlinkSync(real, base);
    const error = configError(() => ensureRuntimeBase(base));
    expect(error.issues[0]?.message).toBe(`unsafe path ${base}: is a symlink, not a directory`);
    expect(error.cause).toBeInstanceOf(UnsafePathError);
  });

  it('refuses a base another user owns', () => {
    const base = dir('base', 0o711, OTHER_UID);
    const error = configError(() => ensureRuntimeBase(base));
    expect(error.issues[0]?.message).toBe(`unsafe path ${base}: is owned by uid ${OTHER_UID}, not 0`);
  });

  it('refuses a file at the name', () => {
    const base = join(tmp, 'base');
    writeFileSync(base, '');
    const error = configError(() => ensureRuntimeBase(base));
    expect(error.cause).toBeInstanceOf(UnsafePathError);
  });
});

describe('ensureRuntimeBase (not root)', () => {
  it('accepts its own base of exactly 0700', () => {
    const base = dir('base', 0o700, 1000);
    asUid(1000);
    ensureRuntimeBase(base);
    expect(mode(base)).toBe(0o700);
  });

  it('refuses its own base of any other mode, even 0711', () => {
    const base = dir('base', 0o711, 1000);
    asUid(1000);
    expect(configError(() => ensureRuntimeBase(base)).issues[0]?.message).toBe(`unsafe path ${base}: mode 0711 is not 0700`);
  });

  it("refuses root's base", () => {
    const base = dir('base', 0o700);
    asUid(1000);
    expect(configError(() => ensureRuntimeBase(base)).issues[0]?.message).toBe(`unsafe path ${base}: is owned by uid 0, not 1000`);
  });
});

describe('checkRuntimeDirParent', () => {
  it('accepts a root directory closed to others (0700, 0755, 0711)', () => {
    for (const bits of [0o700, 0o755, 0o711]) {
      const parent = dir(`p${bits.toString(8)}`, bits);
      expect(() => checkRuntimeDirParent(parent)).not.toThrow();
    }
  });

  it('accepts a sticky world-writable directory like /tmp', () => {
    const parent = dir('sticky', 0o1777);
    expect(() => checkRuntimeDirParent(parent)).not.toThrow();
    expect(() => checkRuntimeDirParent(dir('sticky-group', 0o1770))).not.toThrow();
  });

  it('refuses a missing parent, keeping the cause', () => {
    const parent = join(tmp, 'missing');
    const error = configError(() => checkRuntimeDirParent(parent));
    expect(error.issues[0]?.message).toBe(`its parent ${parent} does not exist`);
    expect(error.cause).toMatchObject({ code: 'ENOENT' });
  });

  it('refuses a symlink to a good directory', () => {
    const parent = join(tmp, 'link');
    symlinkSync(dir('real', 0o755), parent);
    expect(configError(() => checkRuntimeDirParent(parent)).issues[0]?.message).toBe(`its parent ${parent} is not a directory (a symlink is refused)`);
  });

  it('refuses a file', () => {
    const parent = join(tmp, 'file');
    writeFileSync(parent, '');
    expect(configError(() => checkRuntimeDirParent(parent)).issues[0]?.message).toBe(`its parent ${parent} is not a directory (a symlink is refused)`);
  });

  it('refuses a directory another user owns, even sticky', () => {
    const parent = dir('other', 0o755, OTHER_UID);
    expect(configError(() => checkRuntimeDirParent(parent)).issues[0]?.message).toBe(`its parent ${parent} is owned by uid ${OTHER_UID}, not by us or root`);
    const sticky = dir('other-sticky', 0o1777, OTHER_UID);
    expect(configError(() => checkRuntimeDirParent(sticky)).issues[0]?.message).toBe(`its parent ${sticky} is owned by uid ${OTHER_UID}, not by us or root`);
  });

  it.each([
    [0o777, '777'],
    [0o775, '775'],
    [0o770, '770'],
    [0o757, '757'],
    [0o2777, '2777'],
  ])('refuses mode %o without the sticky bit', (bits, shown) => {
    const parent = dir('open', bits);
    expect(configError(() => checkRuntimeDirParent(parent)).issues[0]?.message).toBe(`its parent ${parent} is writable by others (mode ${shown}) without the sticky bit`);
  });

  it("accepts its own directory or root's when not root, refuses another user's", () => {
    const own = dir('own', 0o700, 1000);
    const roots = dir('roots', 0o755);
    const others = dir('others', 0o755, 2000);
    asUid(1000);
    expect(() => checkRuntimeDirParent(own)).not.toThrow();
    expect(() => checkRuntimeDirParent(roots)).not.toThrow();
    expect(configError(() => checkRuntimeDirParent(others)).issues[0]?.message).toBe(`its parent ${others} is owned by uid 2000, not by us or root`);
  });
});

describe('transient names of VM directories', () => {
  it('stages beside the directory under a name no VM id has, and classifies it back', () => {
    const staging = stagingPathOf(join(tmp, 'vm-a'));
    expect(staging).toMatch(new RegExp(`^${tmp}/\\.new-vm-a-[0-9a-f]{12}$`));
    expect(stagingPathOf(join(tmp, 'vm-a'))).not.toBe(staging);
    expect(classifyEntry(staging.slice(tmp.length + 1))).toEqual({ kind: 'staging', vmId: 'vm-a' });
  });

  it('renames a directory aside for removal, contents and all', () => {
    mkdirSync(join(tmp, 'vm-b'));
    writeFileSync(join(tmp, 'vm-b', 'state.json'), '{}');
    const doomed = moveAsideForRemoval(join(tmp, 'vm-b'));
    expect(doomed).toMatch(new RegExp(`^${tmp}/\\.gone-vm-b-[0-9a-f]{12}$`));
    expect(lstatSync(join(tmp, 'vm-b'), { throwIfNoEntry: false })).toBeUndefined();
    expect(lstatSync(join(doomed, 'state.json')).isFile()).toBe(true);
    expect(classifyEntry(doomed.slice(tmp.length + 1))).toEqual({ kind: 'removing', vmId: 'vm-b' });
  });

  it('returns the path itself when there is nothing to rename', () => {
    expect(moveAsideForRemoval(join(tmp, 'missing'))).toBe(join(tmp, 'missing'));
  });

  it('takes every other name for a VM id, including ones that only look transient', () => {
    expect(classifyEntry('vm-c')).toEqual({ kind: 'vm', vmId: 'vm-c' });
    expect(classifyEntry('.gone-vm-c-0123456789a')).toEqual({ kind: 'vm', vmId: '.gone-vm-c-0123456789a' });
    expect(classifyEntry('.gone-vm-c-0123456789ag')).toEqual({ kind: 'vm', vmId: '.gone-vm-c-0123456789ag' });
    expect(classifyEntry('x.gone-vm-c-0123456789ab')).toEqual({ kind: 'vm', vmId: 'x.gone-vm-c-0123456789ab' });
    expect(classifyEntry('.old-vm-c-0123456789ab')).toEqual({ kind: 'vm', vmId: '.old-vm-c-0123456789ab' });
    expect(classifyEntry('.gone-a-b-0123456789ab')).toEqual({ kind: 'removing', vmId: 'a-b' });
  });
});
