// The uid lease store against the real kernel: lease files in a temporary directory, processes
// really running as the uids (setpriv, as root), and other Node processes contending for the lock.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { chmod, chown, lstat, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { OperationAbortedError, OperationTimeoutError } from '../../../src/errors.ts';
import { isOwnerAlive, ownerIdentity, processesRunningAs, processIdsInUse } from '../../../src/qemu/identity/proc-uids.ts';
import {
  LeaseDirError,
  UidLeaseNotHeldError,
  UidLeaseStore,
  type LeaseRecord,
} from '../../../src/qemu/identity/uid-leases.ts';
import { UidRangeExhaustedError, type UidRange } from '../../../src/hypervisor/identity.ts';
import { readProcStat } from '../../../src/qemu/process/proc-fs.ts';

const FIRST = 1_950_000_000;
const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
const worker = join(repoRoot, 'test/fixtures/lease-worker.ts');

let tmp: string;
let dir: string;
const children: ChildProcess[] = [];

beforeEach(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'uid-leases-'));
  dir = join(tmp, 'leases');
});

afterEach(async () => {
  for (const child of children.splice(0)) await kill(child);
  await rm(tmp, { recursive: true, force: true });
});

const store = (count = 4, options: { lockTimeoutMs?: number; dir?: string } = {}): UidLeaseStore =>
  // scanReuseMs 0: these tests start processes with range uids and expect the next scan to see them.
  new UidLeaseStore({ dir: options.dir ?? dir, range: { first: FIRST, count }, scanReuseMs: 0, ...(options.lockTimeoutMs === undefined ? {} : { lockTimeoutMs: options.lockTimeoutMs }) });

async function kill(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGKILL');
  await exited;
}

/** `sleep 30` under setpriv with `args`, once it runs with its new ids (after setpriv's exec). */
async function runAs(...args: string[]): Promise<ChildProcess> {
  const child = spawn('setpriv', [...args, '--', 'sleep', '30'], { stdio: 'ignore' });
  children.push(child);
  await once(child, 'spawn');
  const pid = child.pid as number;
  for (;;) {
    const comm = await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '');
    if (comm.trim() === 'sleep') return child;
    if (child.exitCode !== null) throw new Error(`setpriv ${args.join(' ')} exited with ${child.exitCode}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** The identity of a process that has since exited and been reaped. */
async function deadOwner(): Promise<LeaseRecord['owner']> {
  const child = spawn('sleep', ['30'], { stdio: 'ignore' });
  await once(child, 'spawn');
  const pid = child.pid as number;
  const stat = readProcStat(pid);
  if (!stat) throw new Error('no /proc stat for the child');
  await kill(child);
  const owner = { pid, startTime: stat.startTime };
  expect(isOwnerAlive(owner)).toBe(false);
  return owner;
}

const lease = (uid: number, vmId: string, owner: LeaseRecord['owner']): LeaseRecord => ({ uid, vmId, owner, createdAt: '2024-01-01T00:00:00.000Z' });

async function writeLease(record: LeaseRecord, name = String(record.uid)): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await writeFile(join(dir, name), JSON.stringify(record), { mode: 0o600 });
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected a rejection');
}

describe('acquire', () => {
  it('creates a private directory and hands out the lowest free uid, one 0600 file per lease naming this process', async () => {
    dir = join(tmp, 'missing', 'leases');
    const leases = store();
    const a = await leases.acquire('vm-a');
    const b = await leases.acquire('vm-b');
    expect([a.uid, b.uid]).toEqual([FIRST, FIRST + 1]);
    expect(a.owner).toEqual(ownerIdentity());
    expect(a.owner.pid).toBe(process.pid);
    expect(a.vmId).toBe('vm-a');
    expect(Number.isNaN(Date.parse(a.createdAt))).toBe(false);

    const dirStat = await lstat(dir);
    expect(dirStat.isDirectory()).toBe(true);
    expect(dirStat.mode & 0o777).toBe(0o700);
    expect((await readdir(dir)).filter((name) => name !== '.lock').sort()).toEqual([String(FIRST), String(FIRST + 1)]);
    const fileStat = await lstat(join(dir, String(FIRST)));
    expect(fileStat.mode & 0o777).toBe(0o600);
    expect(JSON.parse(await readFile(join(dir, String(FIRST)), 'utf8'))).toEqual(a);
    expect(await leases.list()).toEqual([a, b]);

    // A freed uid below the others is the next one handed out.
    await leases.release(FIRST, 'vm-a');
    expect((await leases.acquire('vm-c')).uid).toBe(FIRST);
  });

  it('skips uids that a live process holds as any uid or gid', async () => {
    const both = await runAs(`--reuid=${FIRST}`, `--regid=${FIRST}`, '--clear-groups');
    await runAs(`--regid=${FIRST + 1}`, '--clear-groups');
    await runAs(`--euid=${FIRST + 2}`);
    expect(await processesRunningAs(FIRST)).toEqual([both.pid]);
    const inUse = await processIdsInUse();
    for (const uid of [FIRST, FIRST + 1, FIRST + 2]) expect(inUse.has(uid)).toBe(true);
    expect(inUse.has(FIRST + 3)).toBe(false);

    const leases = store(4);
    expect((await leases.acquire('vm-a')).uid).toBe(FIRST + 3);
    await expect(leases.acquire('vm-b')).rejects.toBeInstanceOf(UidRangeExhaustedError);
    expect((await leases.list()).map((r) => r.uid)).toEqual([FIRST + 3]);

    // Once the process is gone, its uid is free again.
    await kill(both);
    expect(await processesRunningAs(FIRST)).toEqual([]);
    expect((await leases.acquire('vm-b')).uid).toBe(FIRST);
  });

  it('fails with a typed error naming the range when every uid is taken, leaving no lease behind', async () => {
    const leases = store(2);
    await leases.acquire('vm-a');
    await leases.acquire('vm-b');
    const error = await rejection(leases.acquire('vm-c'));
    expect(error).toBeInstanceOf(UidRangeExhaustedError);
    expect(error).toMatchObject({ code: 'RESOURCE_LIMIT', range: { first: FIRST, count: 2 }, dir });
    expect((error as Error).message).toContain(`${FIRST}–${FIRST + 1}`);
    expect((error as Error).message).toContain('vm-c');
    expect((await leases.list()).map((r) => r.vmId)).toEqual(['vm-a', 'vm-b']);
  });

  it('reclaims stale leases when the range is full, then hands out the lowest freed uid', async () => {
    const leases = store(3);
    await writeLease(lease(FIRST, 'vm-gone', await deadOwner()));
    await writeLease(lease(FIRST + 1, 'vm-live', ownerIdentity()));
    await writeFile(join(dir, String(FIRST + 2)), '{ not json');
    const record = await leases.acquire('vm-new');
    expect(record.uid).toBe(FIRST);
    expect((await leases.list()).map((r) => [r.uid, r.vmId])).toEqual([
      [FIRST, 'vm-new'],
      [FIRST + 1, 'vm-live'],
    ]);
    expect(await readdir(dir)).not.toContain(String(FIRST + 2));
  });

  it('refuses an invalid vmId or range with INVALID_ARGUMENT', async () => {
    await expect(store().acquire('')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(store().acquire('x'.repeat(257))).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    const bad: UidRange[] = [
      { first: -1, count: 4 },
      { first: FIRST, count: 0 },
      { first: 0xfffffffe, count: 2 },
      { first: 1.5, count: 2 },
    ];
    for (const range of bad) {
      let error: unknown;
      try {
        new UidLeaseStore({ dir, range });
      } catch (caught) {
        error = caught;
      }
      expect(error).toMatchObject({ code: 'INVALID_ARGUMENT' });
    }
  });

  it('hands two stores of one process distinct uids when they race', async () => {
    const one = store(20);
    const two = store(20);
    const records = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? one : two).acquire(`vm-${i}`)));
    expect(new Set(records.map((r) => r.uid)).size).toBe(20);
  });
});

describe('release', () => {
  it('removes the lease only when it still names the VM', async () => {
    const leases = store();
    const a = await leases.acquire('vm-a');
    await leases.release(a.uid, 'vm-other');
    await leases.release(FIRST + 3, 'vm-a');
    await leases.release(-1, 'vm-a');
    expect(await leases.list()).toEqual([a]);
    await leases.release(a.uid, 'vm-a');
    expect(await leases.list()).toEqual([]);
    await leases.release(a.uid, 'vm-a');
  });
});

describe('adopt', () => {
  it("makes this process the owner of an existing lease, keeping the rest, atomically", async () => {
    const leases = store();
    const old = lease(FIRST + 1, 'vm-a', await deadOwner());
    await writeLease(old);
    const adopted = await leases.adopt(FIRST + 1, 'vm-a');
    expect(adopted).toEqual({ ...old, owner: ownerIdentity() });
    expect(await leases.list()).toEqual([adopted]);
    expect((await readdir(dir)).filter((name) => name !== '.lock')).toEqual([String(FIRST + 1)]);
    expect((await lstat(join(dir, String(FIRST + 1)))).mode & 0o777).toBe(0o600);
    // Owned by a live process now: no longer stale.
    expect(await leases.reclaimStale()).toEqual([]);
  });

  it('refuses a lease naming another VM, a missing lease and a malformed one, changing nothing', async () => {
    const leases = store();
    const old = lease(FIRST, 'vm-a', await deadOwner());
    await writeLease(old);
    const before = await readFile(join(dir, String(FIRST)), 'utf8');

    const wrong = await rejection(leases.adopt(FIRST, 'vm-b'));
    expect(wrong).toBeInstanceOf(UidLeaseNotHeldError);
    expect(wrong).toMatchObject({ code: 'UID_LEASE_NOT_HELD', uid: FIRST, vmId: 'vm-b', heldBy: 'vm-a' });
    expect((wrong as Error).message).toContain('vm-a');

    const missing = await rejection(leases.adopt(FIRST + 1, 'vm-a'));
    expect(missing).toBeInstanceOf(UidLeaseNotHeldError);
    expect((missing as Error).message).toContain(dir);

    await writeFile(join(dir, String(FIRST + 2)), JSON.stringify({ ...lease(FIRST + 3, 'vm-c', ownerIdentity()) }));
    await expect(leases.adopt(FIRST + 2, 'vm-c')).rejects.toBeInstanceOf(UidLeaseNotHeldError);

    expect(await readFile(join(dir, String(FIRST)), 'utf8')).toBe(before);
    expect((await readdir(dir)).filter((name) => name !== '.lock').sort()).toEqual([String(FIRST), String(FIRST + 2)]);
  });
});

describe('reclaimStale', () => {
  it('removes leases of dead owners, keeping live owners, uids a process still runs as, and what keep() asks for', async () => {
    const leases = store(8);
    const dead = await deadOwner();
    const self = readProcStat(process.pid);
    const reusedPid = { pid: process.pid, startTime: (self?.startTime ?? 0) + 1 };
    await writeLease(lease(FIRST, 'vm-dead', dead));
    await writeLease(lease(FIRST + 1, 'vm-pid-reused', reusedPid));
    await writeLease(lease(FIRST + 2, 'vm-owner-alive', ownerIdentity()));
    await writeLease(lease(FIRST + 3, 'vm-detached', dead));
    await writeLease(lease(FIRST + 4, 'vm-kept', dead));
    const detachedQemu = await runAs(`--reuid=${FIRST + 3}`, `--regid=${FIRST + 3}`, '--clear-groups');

    const asked: LeaseRecord[] = [];
    const removed = await leases.reclaimStale({
      keep: (record) => {
        asked.push(record);
        return record.vmId === 'vm-kept';
      },
    });
    expect(removed.map((r) => r.vmId)).toEqual(['vm-dead', 'vm-pid-reused']);
    expect(removed[0]).toEqual(lease(FIRST, 'vm-dead', dead));
    expect(asked.map((r) => r.vmId).sort()).toEqual(['vm-dead', 'vm-kept', 'vm-pid-reused']);
    expect((await leases.list()).map((r) => r.vmId)).toEqual(['vm-owner-alive', 'vm-detached', 'vm-kept']);

    // The detached VM's process ends: now its lease goes too.
    await kill(detachedQemu);
    expect((await leases.reclaimStale()).map((r) => r.vmId)).toEqual(['vm-detached', 'vm-kept']);
    expect((await leases.list()).map((r) => r.vmId)).toEqual(['vm-owner-alive']);
  });

  it('removes malformed lease files and leftovers without following symlinks', async () => {
    const leases = store(8);
    await mkdir(dir, { mode: 0o700 });
    const canary = join(tmp, 'canary');
    // The canary holds a well-formed lease: following the symlink would make it count.
    const canaryText = JSON.stringify(lease(FIRST + 5, 'vm-canary', ownerIdentity()));
    await writeFile(canary, canaryText, { mode: 0o644 });
    await writeFile(join(dir, String(FIRST)), 'not json');
    await writeFile(join(dir, String(FIRST + 1)), JSON.stringify({ uid: FIRST + 1, vmId: 'vm-x' }));
    await writeFile(join(dir, String(FIRST + 2)), JSON.stringify(lease(FIRST + 6, 'vm-renamed', ownerIdentity())));
    await mkdir(join(dir, String(FIRST + 3)));
    await writeFile(join(dir, String(FIRST + 3), 'inside'), 'x');
    expect(spawnSync('mkfifo', [join(dir, String(FIRST + 4))]).status).toBe(0);
    await symlink(canary, join(dir, String(FIRST + 5)));
    await writeFile(join(dir, String(FIRST + 6)), JSON.stringify(lease(FIRST + 6, 'vm-big', ownerIdentity())) + ' '.repeat(5000));
    await writeFile(join(dir, `.${FIRST + 1}.tmp-0123456789abcdef`), 'half a lease');
    await writeFile(join(dir, 'README'), 'not ours to judge');

    // None of them is a valid lease, none is free either (and the FIFO does not block the reads).
    expect(await leases.list()).toEqual([]);
    await expect(leases.adopt(FIRST + 5, 'vm-canary')).rejects.toBeInstanceOf(UidLeaseNotHeldError);
    await leases.release(FIRST + 5, 'vm-canary');
    const mine = await leases.acquire('vm-new');
    expect(mine.uid).toBe(FIRST + 7);

    expect(await leases.reclaimStale()).toEqual([]);
    expect((await readdir(dir)).filter((name) => name !== '.lock').sort()).toEqual([String(FIRST + 7), 'README']);
    expect(await readFile(canary, 'utf8')).toBe(canaryText);
    expect((await stat(canary)).mode & 0o777).toBe(0o644);
    expect(await leases.list()).toEqual([mine]);
  });
});

describe('the lease directory', () => {
  async function expectRefused(leases: UidLeaseStore, problem: RegExp): Promise<void> {
    const attempts = [
      () => leases.acquire('vm-a'),
      () => leases.adopt(FIRST, 'vm-a'),
      () => leases.release(FIRST, 'vm-a'),
      () => leases.list(),
      () => leases.reclaimStale(),
    ];
    for (const attempt of attempts) {
      const error = await rejection(attempt());
      expect(error).toBeInstanceOf(LeaseDirError);
      expect(error).toMatchObject({ code: 'LEASE_DIR_UNSAFE', dir: leases.dir });
      expect((error as Error).message).toContain(leases.dir);
      expect((error as Error).message).toMatch(problem);
    }
  }

  it('is refused when it is a symlink, even to a good directory', async () => {
    const real = join(tmp, 'real');
    await mkdir(real, { mode: 0o700 });
    await symlink(real, dir);
    await expectRefused(store(), /symbolic link/);
    expect(await readdir(real)).toEqual([]);
  });

  it('is refused when group or others have any permission', async () => {
    await mkdir(dir, { mode: 0o700 });
    for (const mode of [0o750, 0o701, 0o702, 0o1700 | 0o070]) {
      await chmod(dir, mode);
      await expectRefused(store(), /open to group or others/);
    }
    await chmod(dir, 0o700);
    expect((await store().acquire('vm-a')).uid).toBe(FIRST);
  });

  it('is refused when another uid owns it, or when it is not a directory', async () => {
    await mkdir(dir, { mode: 0o700 });
    await chown(dir, 12345, 12345);
    await expectRefused(store(), /owned by uid 12345/);
    expect(await readdir(dir)).toEqual([]);
    await rm(dir, { recursive: true });
    await writeFile(dir, '');
    await expectRefused(store(), /not a directory/);
  });
});

describe('the host-wide lock', () => {
  function startWorker(...args: string[]): { child: ChildProcess; lines: AsyncIterator<string> } {
    const child = spawn(process.execPath, ['--import', 'tsx', worker, ...args], { cwd: repoRoot, stdio: ['pipe', 'pipe', 'inherit'] });
    children.push(child);
    const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream })[Symbol.asyncIterator]();
    return { child, lines };
  }

  async function nextLine(lines: AsyncIterator<string>): Promise<string> {
    const result = await lines.next();
    if (result.done === true) throw new Error('the worker ended without a reply');
    return result.value;
  }

  it("cannot be taken or held by an unprivileged process (a VM's QEMU): the lock file is root's alone", async () => {
    await store(4).reclaimStale();
    const lockFile = join(dir, '.lock');
    expect((await lstat(lockFile)).isFile()).toBe(true);
    // As QEMU would be: another uid, no capabilities. flock cannot even open the file.
    const squat = spawnSync('setpriv', ['--reuid=1950000999', '--regid=1950000999', '--clear-groups', 'flock', '--exclusive', '--nonblock', lockFile, 'true'], { encoding: 'utf8' });
    expect(squat.status).not.toBe(0);
    expect(squat.stderr).toMatch(/Permission denied/);
    const quick = store(4, { lockTimeoutMs: 500 });
    expect(await quick.reclaimStale()).toEqual([]);
    expect((await quick.acquire('vm-second')).uid).toBe(FIRST);
  });

  it('keeps two processes each acquiring 20 uids at once from ever getting the same uid', async () => {
    const workers = [startWorker('acquire', dir, String(FIRST), '40', '20'), startWorker('acquire', dir, String(FIRST), '40', '20')];
    for (const w of workers) expect(await nextLine(w.lines)).toBe('ready');
    for (const w of workers) w.child.stdin?.write('go\n');
    const results = await Promise.all(workers.map(async (w) => JSON.parse(await nextLine(w.lines)) as number[]));
    for (const uids of results) expect(new Set(uids).size).toBe(20);
    const union = new Set(results.flat());
    expect(union.size).toBe(40);
    expect([...union].sort((a, b) => a - b)).toEqual(Array.from({ length: 40 }, (_, i) => FIRST + i));

    const leases = await store(40).list();
    expect(leases).toHaveLength(40);
    for (const [i, w] of workers.entries()) {
      expect(leases.filter((r) => r.owner.pid === w.child.pid).map((r) => r.uid).sort((a, b) => a - b)).toEqual(results[i]?.sort((a, b) => a - b));
    }
  });

  it('never lets a reclaim in another process take a lease being created (leases appear whole)', async () => {
    const reclaimer = startWorker('reclaim', dir, String(FIRST), '40');
    expect(await nextLine(reclaimer.lines)).toBe('ready');
    // This process stays alive, so none of its leases is ever stale: a reclaim may remove none.
    const leases = store(40);
    const records = await Promise.all(Array.from({ length: 30 }, (_, i) => leases.acquire(`vm-${i}`)));
    reclaimer.child.stdin?.end();
    expect(JSON.parse(await nextLine(reclaimer.lines))).toEqual([]);
    const uids = records.map((r) => r.uid).sort((a, b) => a - b);
    expect(new Set(uids).size).toBe(30);
    expect((await leases.list()).map((r) => r.uid)).toEqual(uids);
  });

  it('makes every writer wait for a holder, however it reaches the directory, and is free at once when the holder is SIGKILLed', async () => {
    const stale = lease(FIRST + 1, 'vm-stale', await deadOwner());
    await writeLease(stale);
    const holder = startWorker('hold', dir, String(FIRST), '4');
    expect(await nextLine(holder.lines)).toBe('locked');

    const leases = store(4, { lockTimeoutMs: 50 });
    // An acquire that needs a reclaim (its range holds only the stale lease) waits for the lock too.
    const full = new UidLeaseStore({ dir, range: { first: FIRST + 1, count: 1 }, scanReuseMs: 0, lockTimeoutMs: 50 });
    const attempts = [() => full.acquire('vm-a'), () => leases.adopt(FIRST + 1, 'vm-stale'), () => leases.reclaimStale()];
    for (const attempt of attempts) {
      const error = await rejection(attempt());
      expect(error).toBeInstanceOf(OperationTimeoutError);
      expect(error).toMatchObject({ code: 'TIMEOUT' });
      expect((error as Error).message).toContain(dir);
    }
    // The same directory through a symlinked parent is the same lock.
    await symlink(tmp, join(tmp, 'alias'));
    await expect(store(4, { lockTimeoutMs: 50, dir: join(tmp, 'alias', 'leases') }).reclaimStale()).rejects.toBeInstanceOf(OperationTimeoutError);
    // The caller's own bounds apply while waiting too.
    const patient = new UidLeaseStore({ dir, range: { first: FIRST + 1, count: 1 }, scanReuseMs: 0, lockTimeoutMs: 60_000 });
    const bounded = await rejection(patient.acquire('vm-a', { timeoutMs: 50 }));
    expect(bounded).toBeInstanceOf(OperationTimeoutError);
    expect((bounded as Error).message).toContain('vm-a');
    const controller = new AbortController();
    const aborted = patient.adopt(FIRST + 1, 'vm-stale', { signal: controller.signal });
    controller.abort(new Error('caller gave up'));
    expect(await rejection(aborted)).toBeInstanceOf(OperationAbortedError);
    // A release takes no lock, but removes only a lease this process owns: not the stale one.
    await leases.release(FIRST + 1, 'vm-stale');
    // Reading needs no lock, and nothing was written while it was held.
    expect(await leases.list()).toEqual([stale]);
    // Where a uid is free, an acquire needs no lock: creating a lease is exclusive by itself.
    const record = await leases.acquire('vm-a');
    expect(record.uid).toBe(FIRST);

    await kill(holder.child);
    expect(await store(4).reclaimStale()).toEqual([stale]);
  });
});
