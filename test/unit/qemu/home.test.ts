// VmHome: a VM's root-owned directory (made under a staging name and renamed into place with its
// owner file in it) and the uid lease it holds, given back exactly once, or taken over by attach().
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync, type Stats } from 'node:fs';
import { spawn, type ChildProcess } from 'node:child_process';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { pino, type Logger } from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ConfigError, parseSandboxConfig, type SandboxConfigInput } from '../../../src/hypervisor/config/index.ts';
import { ownerIdentity } from '../../../src/qemu/identity/proc-uids.ts';
import { UidLeaseNotHeldError, UidLeaseStore, type LeaseRecord } from '../../../src/qemu/identity/uid-leases.ts';
import { VmHome } from '../../../src/qemu/launch/home.ts';
import { readProcStat } from '../../../src/qemu/process/proc-fs.ts';
import { runtimePaths, type RuntimePaths } from '../../../src/qemu/runtime-paths.ts';

// What a directory looked like at the moment it was renamed into place, and unlinks to fail.
const hooks = vi.hoisted(() => ({
  renamed: [] as { from: string; to: string; entries: string[]; stats: Stats }[],
  failUnlink: undefined as string | undefined,
}));

vi.mock('node:fs', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs')>();
  return {
    ...real,
    renameSync: ((from: string, to: string) => {
      const stats = real.lstatSync(from);
      if (stats.isDirectory()) hooks.renamed.push({ from, to, entries: real.readdirSync(from).sort(), stats });
      real.renameSync(from, to);
    }) as typeof real.renameSync,
    unlinkSync: ((path: Parameters<typeof real.unlinkSync>[0]) => {
      if (hooks.failUnlink !== undefined && String(path).endsWith(hooks.failUnlink)) throw Object.assign(new Error(`EPERM: operation not permitted, unlink '${String(path)}'`), { code: 'EPERM' });
      real.unlinkSync(path);
    }) as typeof real.unlinkSync,
  };
});

vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs/promises')>();
  return {
    ...real,
    rename: (async (from: Parameters<typeof real.rename>[0], to: Parameters<typeof real.rename>[1]) => {
      const stats = await real.lstat(from);
      if (stats.isDirectory()) hooks.renamed.push({ from: String(from), to: String(to), entries: (await real.readdir(from)).sort(), stats });
      return real.rename(from, to);
    }) as typeof real.rename,
    unlink: ((path: Parameters<typeof real.unlink>[0]) => {
      if (hooks.failUnlink !== undefined && String(path).endsWith(hooks.failUnlink)) return Promise.reject(Object.assign(new Error(`EPERM: operation not permitted, unlink '${String(path)}'`), { code: 'EPERM' }));
      return real.unlink(path);
    }) as typeof real.unlink,
  };
});

const FIRST = 1_960_000_100;
const STRANGER = { pid: 4_000_000, startTime: 1 };

let tmp: string;
let parent: string;
let leaseDir: string;
let leases: UidLeaseStore;

beforeEach(() => {
  tmp = mkdtempSync(join(tmpdir(), 'svmm-home-'));
  parent = join(tmp, 'vms');
  mkdirSync(parent, { mode: 0o711 });
  leaseDir = join(tmp, 'leases');
  leases = new UidLeaseStore({ dir: leaseDir, range: { first: FIRST, count: 3 } });
  hooks.renamed = [];
  hooks.failUnlink = undefined;
});

afterEach(() => {
  rmSync(tmp, { recursive: true, force: true });
});

function config(id: string, hardening: SandboxConfigInput['hardening'] = {}) {
  return parseSandboxConfig({ id, boot: { kernel: '/boot/vmlinuz' }, machine: { accel: 'tcg' }, hardening, runtime: { dir: join(parent, id) } });
}

function pathsOf(id: string): RuntimePaths {
  return runtimePaths(join(parent, id));
}

function recordingLogger(): { logger: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>) });
  return { logger, lines };
}

const errorsLogged = (lines: Record<string, unknown>[]) => lines.filter((line) => line['level'] === 50).map((line) => line['msg']);

/** owner.json as this process writes it for VM `vmId` running as `uid` (null: as the runtime's user). */
const thisProcess = (vmId: string, uid: number | null) => ({ pid: process.pid, startTime: readProcStat(process.pid)?.startTime, vmId, uid });

const readJson = (path: string): unknown => JSON.parse(readFileSync(path, 'utf8'));

async function createError(promise: Promise<unknown>): Promise<ConfigError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ConfigError);
  expect((error as ConfigError).paths).toEqual(['runtime.dir']);
  return error as ConfigError;
}

function writeLease(record: LeaseRecord): void {
  writeFileSync(join(leaseDir, String(record.uid)), JSON.stringify(record), { mode: 0o600 });
}

describe('VmHome.create', () => {
  it("under 'auto': leases a uid and makes the directory root:<gid> 0710 holding only owner.json", async () => {
    const paths = pathsOf('vm-a');
    const home = await VmHome.create(config('vm-a'), paths, leases);
    expect(home.identity).toEqual({ uid: FIRST, gid: FIRST, groups: [] });
    expect(home.leased).toBe(true);
    expect(home.paths).toBe(paths);
    const stats = lstatSync(paths.dir);
    expect(stats.isDirectory()).toBe(true);
    expect(stats.mode & 0o7777).toBe(0o710);
    expect(stats.uid).toBe(0);
    expect(stats.gid).toBe(FIRST);
    expect(readdirSync(paths.dir)).toEqual(['owner.json']);
    expect(readJson(paths.ownerFile)).toEqual(thisProcess('vm-a', FIRST));
    expect(lstatSync(paths.ownerFile).mode & 0o777).toBe(0o600);
    expect(readdirSync(parent)).toEqual(['vm-a']);
    expect(await leases.list()).toEqual([expect.objectContaining({ uid: FIRST, vmId: 'vm-a', owner: ownerIdentity() })]);
  });

  it('renames a complete staging directory into place (owner file, owner and mode already set)', async () => {
    const paths = pathsOf('vm-a');
    await VmHome.create(config('vm-a'), paths, leases);
    expect(hooks.renamed).toHaveLength(1);
    const [rename] = hooks.renamed;
    expect(rename?.to).toBe(paths.dir);
    expect(rename?.from.startsWith(`${parent}/.new-vm-a-`)).toBe(true);
    expect(rename?.from).toMatch(/\/\.new-vm-a-[0-9a-f]{12}$/);
    expect(rename?.entries).toEqual(['owner.json']);
    expect((rename?.stats.mode ?? 0) & 0o7777).toBe(0o710);
    expect(rename?.stats.gid).toBe(FIRST);
  });

  it("with 'current' and allowRoot: no lease, the directory 0700 and root's group", async () => {
    const paths = pathsOf('vm-c');
    const home = await VmHome.create(config('vm-c', { user: 'current', allowRoot: true }), paths, leases);
    expect(home.identity).toBeUndefined();
    expect(home.leased).toBe(false);
    const stats = lstatSync(paths.dir);
    expect(stats.mode & 0o7777).toBe(0o700);
    expect(stats.uid).toBe(0);
    expect(stats.gid).toBe(process.getegid?.());
    expect(readJson(paths.ownerFile)).toEqual(thisProcess('vm-c', null));
    expect(existsSync(leaseDir) ? readdirSync(leaseDir) : []).toEqual([]);
  });

  it('with a fixed identity: no lease, the directory 0710 in its group', async () => {
    const paths = pathsOf('vm-f');
    const home = await VmHome.create(config('vm-f', { user: { uid: 4242, gid: 4343 } }), paths, leases);
    expect(home.identity).toEqual({ uid: 4242, gid: 4343, groups: [] });
    expect(home.leased).toBe(false);
    const stats = lstatSync(paths.dir);
    expect(stats.mode & 0o7777).toBe(0o710);
    expect([stats.uid, stats.gid]).toEqual([0, 4343]);
  });

  it("refuses 'current' as root without allowRoot before making anything", async () => {
    const error = await VmHome.create(config('vm-c', { user: 'current' }), pathsOf('vm-c'), leases).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).paths).toEqual(['hardening.user']);
    expect(readdirSync(parent)).toEqual([]);
  });

  it('refuses an existing directory, leaving it as it was, and gives the lease back', async () => {
    const paths = pathsOf('vm-a');
    mkdirSync(paths.dir);
    writeFileSync(join(paths.dir, 'keep'), 'theirs');
    const error = await createError(VmHome.create(config('vm-a'), paths, leases));
    expect(error.issues[0]?.message).toBe(`runtime directory ${paths.dir} already exists`);
    // rename(2) over a non-empty directory: ENOTEMPTY (POSIX also allows EEXIST).
    expect(['ENOTEMPTY', 'EEXIST']).toContain((error.cause as NodeJS.ErrnoException).code);
    expect(readdirSync(paths.dir)).toEqual(['keep']);
    expect(readFileSync(join(paths.dir, 'keep'), 'utf8')).toBe('theirs');
    expect(readdirSync(parent)).toEqual(['vm-a']);
    expect(await leases.list()).toEqual([]);
  });

  it("refuses another VM's directory (a second create of the same id), which keeps its lease", async () => {
    const paths = pathsOf('vm-a');
    const first = await VmHome.create(config('vm-a'), paths, leases);
    const error = await createError(VmHome.create(config('vm-a'), paths, leases));
    expect(error.issues[0]?.message).toBe(`runtime directory ${paths.dir} already exists`);
    expect(readdirSync(parent)).toEqual(['vm-a']);
    expect((await leases.list()).map((lease) => lease.uid)).toEqual([first.identity?.uid]);
  });

  it('refuses a symlink at the name without touching its target, and gives the lease back', async () => {
    const paths = pathsOf('vm-a');
    const target = join(tmp, 'target');
    mkdirSync(target);
    symlinkSync(target, paths.dir);
    const error = await createError(VmHome.create(config('vm-a'), paths, leases));
    // rename(2) says ENOTDIR; a check before the rename would call it taken: either way, refused.
    const code = (error.cause as NodeJS.ErrnoException).code;
    expect(['ENOTDIR', 'EEXIST']).toContain(code);
    expect(error.issues[0]?.message).toMatch(code === 'ENOTDIR' ? /^ENOTDIR: not a directory, rename / : /already exists$/);
    expect(lstatSync(paths.dir).isSymbolicLink()).toBe(true);
    expect(readdirSync(target)).toEqual([]);
    expect(readdirSync(parent)).toEqual(['vm-a']);
    expect(await leases.list()).toEqual([]);
  });

  it('refuses a parent another user owns, makes nothing there, and gives the lease back', async () => {
    chownSync(parent, 4321, 4321);
    const error = await createError(VmHome.create(config('vm-a'), pathsOf('vm-a'), leases));
    expect(error.issues[0]?.message).toBe(`its parent ${parent} is owned by uid 4321, not by us or root`);
    expect(readdirSync(parent)).toEqual([]);
    expect(await leases.list()).toEqual([]);
  });

  it('refuses a writable parent without the sticky bit, and a missing one', async () => {
    chmodSync(parent, 0o777);
    const open = await createError(VmHome.create(config('vm-a'), pathsOf('vm-a'), leases));
    expect(open.issues[0]?.message).toBe(`its parent ${parent} is writable by others (mode 777) without the sticky bit`);
    rmSync(parent, { recursive: true });
    const missing = await createError(VmHome.create(config('vm-a'), pathsOf('vm-a'), leases));
    expect(missing.issues[0]?.message).toBe(`its parent ${parent} does not exist`);
    expect(await leases.list()).toEqual([]);
  });

  it('accepts a sticky world-writable parent', async () => {
    chmodSync(parent, 0o1777);
    const home = await VmHome.create(config('vm-a'), pathsOf('vm-a'), leases);
    expect(lstatSync(home.paths.dir).isDirectory()).toBe(true);
  });
});

describe('VmHome.release', () => {
  it('removes the directory and gives the uid back, once', async () => {
    const { logger, lines } = recordingLogger();
    const paths = pathsOf('vm-a');
    const home = await VmHome.create(config('vm-a'), paths, leases);
    writeFileSync(join(paths.dir, 'state.json'), '{}');
    mkdirSync(join(paths.dir, 'sub'));
    const released = home.release(true, logger);
    await released;
    expect(existsSync(paths.dir)).toBe(false);
    // Nothing else is left in the parent either: not the `.gone-` name it was removed under.
    expect(readdirSync(dirname(paths.dir)).filter((name) => name.includes('vm-a'))).toEqual([]);
    expect(await leases.list()).toEqual([]);
    expect(home.release(true, logger)).toBe(released);
    expect(home.release(false, logger)).toBe(released);
    await released;
    expect(errorsLogged(lines)).toEqual([]);
    const next = await VmHome.create(config('vm-b'), pathsOf('vm-b'), leases);
    expect(next.identity?.uid).toBe(FIRST);
  });

  it('lets a state write under way land before the directory goes, and writes nothing after', async () => {
    const { logger, lines } = recordingLogger();
    const paths = pathsOf('vm-a');
    const home = await VmHome.create(config('vm-a'), paths, leases);
    const writing = home.saveState('{"n":1}', logger);
    const released = home.release(true, logger);
    await Promise.all([writing, released]);
    expect(existsSync(paths.dir)).toBe(false);
    await home.saveState('{"n":2}', logger);
    expect(existsSync(paths.dir)).toBe(false);
    expect(errorsLogged(lines)).toEqual([]);
    expect(await leases.list()).toEqual([]);
  });

  it('writes queued states in order, the last one winning', async () => {
    const { logger } = recordingLogger();
    const paths = pathsOf('vm-a');
    const home = await VmHome.create(config('vm-a'), paths, leases);
    await Promise.all([home.saveState('{"n":1}', logger), home.saveState('{"n":2}', logger), home.saveState('{"n":3}', logger)]);
    await home.settled();
    expect(readJson(paths.stateFile)).toEqual({ n: 3 });
    await home.release(true, logger);
  });

  it('writes an unchanged record once: the file is not replaced again until it changes', async () => {
    const { logger } = recordingLogger();
    const paths = pathsOf('vm-a');
    const home = await VmHome.create(config('vm-a'), paths, leases);
    await home.saveState('{"n":1}', logger);
    const first = lstatSync(paths.stateFile).ino;
    await home.saveState('{"n":1}', logger);
    expect(lstatSync(paths.stateFile).ino).toBe(first);
    await home.saveState('{"n":2}', logger);
    const second = lstatSync(paths.stateFile).ino;
    expect(second).not.toBe(first);
    await home.saveState('{"n":1}', logger);
    expect(lstatSync(paths.stateFile).ino).not.toBe(second);
    expect(readJson(paths.stateFile)).toEqual({ n: 1 });
    await home.release(true, logger);
  });

  it('keeps the lease when a process survived, and says so', async () => {
    const { logger, lines } = recordingLogger();
    const paths = pathsOf('vm-a');
    const home = await VmHome.create(config('vm-a'), paths, leases);
    await home.release(false, logger);
    expect(existsSync(paths.dir)).toBe(false);
    expect(await leases.list()).toEqual([expect.objectContaining({ uid: FIRST, vmId: 'vm-a' })]);
    expect(errorsLogged(lines)).toEqual(['a VM process survived SIGKILL: its uid stays leased']);
    expect(lines[0]?.['uid']).toBe(FIRST);
    const next = await VmHome.create(config('vm-b'), pathsOf('vm-b'), leases);
    expect(next.identity?.uid).toBe(FIRST + 1);
  });

  it('without seccomp, kills what still runs as the VM uid before giving it back; with seccomp, does not look', async () => {
    const { logger } = recordingLogger();
    const start = (uid: number) => spawn('setpriv', [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', 'sleep', '60'], { stdio: 'ignore' });
    const exited = (child: ChildProcess) => new Promise<string | null>((resolve) => child.once('exit', (_code, signal) => resolve(signal)));

    const open = await VmHome.create(config('vm-a', { seccomp: false }), pathsOf('vm-a'), leases);
    const uid = open.identity?.uid ?? -1;
    const leftover = start(uid);
    const leftoverExit = exited(leftover);
    await vi.waitFor(() => expect(readProcStat(leftover.pid ?? -1)?.state).toMatch(/[SR]/));
    await open.release(true, logger);
    expect(await leftoverExit).toBe('SIGKILL');
    expect(await leases.list()).toEqual([]);

    const sealed = await VmHome.create(config('vm-b'), pathsOf('vm-b'), leases);
    const bystander = start(sealed.identity?.uid ?? -1);
    const bystanderExit = exited(bystander);
    try {
      await vi.waitFor(() => expect(readProcStat(bystander.pid ?? -1)?.state).toMatch(/[SR]/));
      await sealed.release(true, logger);
      expect(readProcStat(bystander.pid ?? -1)?.state).toMatch(/[SR]/);
    } finally {
      bystander.kill('SIGKILL');
      await bystanderExit;
    }
  });

  it('gives nothing back for an identity that is not leased', async () => {
    const { logger, lines } = recordingLogger();
    const held = await leases.acquire('vm-f');
    const home = await VmHome.create(config('vm-f', { user: { uid: held.uid, gid: held.uid } }), pathsOf('vm-f'), leases);
    await home.release(true, logger);
    expect(existsSync(pathsOf('vm-f').dir)).toBe(false);
    expect(await leases.list()).toEqual([held]);
    expect(errorsLogged(lines)).toEqual([]);
  });

  it('still gives the uid back when the directory cannot be removed, logging why', async () => {
    const { logger, lines } = recordingLogger();
    const paths = pathsOf('vm-a');
    const home = await VmHome.create(config('vm-a'), paths, leases);
    hooks.failUnlink = '/owner.json';
    await home.release(true, logger);
    expect(errorsLogged(lines)).toEqual(['could not remove the runtime directory']);
    expect(lines[0]?.['dir']).toBe(paths.dir);
    // What is left sits under the name the orphan sweep removes, not under the VM's own name.
    const leftover = String(lines[0]?.['removing']);
    expect(leftover).toMatch(/\/\.gone-vm-a-[0-9a-f]{12}$/);
    expect(dirname(leftover)).toBe(dirname(paths.dir));
    expect(existsSync(join(leftover, 'owner.json'))).toBe(true);
    expect(existsSync(paths.dir)).toBe(false);
    expect(await leases.list()).toEqual([]);
  });

  it('resolves, logging, when the lease cannot be released', async () => {
    const { logger, lines } = recordingLogger();
    const home = await VmHome.create(config('vm-a'), pathsOf('vm-a'), leases);
    chmodSync(leaseDir, 0o755);
    await home.release(true, logger);
    expect(errorsLogged(lines)).toEqual(['could not release the uid lease']);
    expect(lines[0]?.['uid']).toBe(FIRST);
    expect(lines[0]?.['err']).toMatchObject({ type: 'LeaseDirError' });
    chmodSync(leaseDir, 0o700);
    expect(await leases.list()).toEqual([expect.objectContaining({ uid: FIRST, vmId: 'vm-a' })]);
  });
});

describe('VmHome.adopt', () => {
  async function madeByAnother(): Promise<{ paths: RuntimePaths; uid: number }> {
    const paths = pathsOf('vm-a');
    const home = await VmHome.create(config('vm-a'), paths, leases);
    const uid = home.identity?.uid ?? -1;
    writeLease({ uid, vmId: 'vm-a', owner: STRANGER, createdAt: '2024-01-01T00:00:00.000Z' });
    writeFileSync(paths.ownerFile, JSON.stringify(STRANGER));
    return { paths, uid };
  }

  it('takes the lease and the owner file over', async () => {
    const { paths, uid } = await madeByAnother();
    const identity = { uid, gid: uid, groups: [] };
    const home = await VmHome.adopt(config('vm-a'), paths, identity, true, leases);
    expect(home.identity).toBe(identity);
    expect(home.paths).toBe(paths);
    expect(home.leased).toBe(true);
    expect(readJson(paths.ownerFile)).toEqual(thisProcess('vm-a', uid));
    expect(await leases.list()).toEqual([{ uid, vmId: 'vm-a', owner: ownerIdentity(), createdAt: '2024-01-01T00:00:00.000Z' }]);
    await home.release(true, recordingLogger().logger);
    expect(await leases.list()).toEqual([]);
    expect(existsSync(paths.dir)).toBe(false);
  });

  it('refuses a lease held by another VM id, changing nothing', async () => {
    const { paths, uid } = await madeByAnother();
    writeLease({ uid, vmId: 'vm-b', owner: STRANGER, createdAt: '2024-01-01T00:00:00.000Z' });
    const error = await VmHome.adopt(config('vm-a'), paths, { uid, gid: uid, groups: [] }, true, leases).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UidLeaseNotHeldError);
    expect(error).toMatchObject({ code: 'UID_LEASE_NOT_HELD', uid, vmId: 'vm-a', heldBy: 'vm-b' });
    expect(readJson(paths.ownerFile)).toEqual(STRANGER);
    expect(await leases.list()).toEqual([expect.objectContaining({ uid, vmId: 'vm-b', owner: STRANGER })]);
  });

  it('refuses a uid without a lease', async () => {
    const { paths, uid } = await madeByAnother();
    const error = await VmHome.adopt(config('vm-a'), paths, { uid: uid + 1, gid: uid + 1, groups: [] }, true, leases).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UidLeaseNotHeldError);
    expect(error).toMatchObject({ uid: uid + 1, heldBy: undefined });
    expect(readJson(paths.ownerFile)).toEqual(STRANGER);
  });

  it('leaves leases alone for an identity that is not leased, and on release', async () => {
    const { paths, uid } = await madeByAnother();
    const home = await VmHome.adopt(config('vm-a'), paths, { uid, gid: uid, groups: [] }, false, leases);
    expect(home.leased).toBe(false);
    expect(readJson(paths.ownerFile)).toEqual(thisProcess('vm-a', uid));
    expect(await leases.list()).toEqual([expect.objectContaining({ uid, owner: STRANGER })]);
    await home.release(true, recordingLogger().logger);
    expect(await leases.list()).toEqual([expect.objectContaining({ uid, owner: STRANGER })]);
  });

  it('adopts a VM that runs as this process, with no identity', async () => {
    const paths = pathsOf('vm-c');
    await VmHome.create(config('vm-c', { user: 'current', allowRoot: true }), paths, leases);
    writeFileSync(paths.ownerFile, JSON.stringify(STRANGER));
    const home = await VmHome.adopt(config('vm-c', { user: 'current', allowRoot: true }), paths, undefined, false, leases);
    expect(home.identity).toBeUndefined();
    expect(readJson(paths.ownerFile)).toEqual(thisProcess('vm-c', null));
  });
});
