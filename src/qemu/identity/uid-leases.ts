// Leases on the uids (and equal gids) that each VM's QEMU runs as, so that no two VMs, and no VM and
// a leftover process, ever share an identity, even across several runtime processes on one host.
//
// One file per lease in a private directory, named by the decimal uid, holding a LeaseRecord as
// JSON. Creating one is exclusive by itself (written aside, then hard-linked to its name), so
// allocation takes no lock. What deletes or rewrites leases another process may be looking at,
// reclaiming stale ones and taking one over, runs under a host-wide lock: flock(2) on a file of
// the root-only directory (file-lock.ts), which the kernel releases when the holder dies, even by
// SIGKILL, and which no VM's QEMU can touch. A release needs no lock: only the lease's owner
// removes it, and only while it names that owner. A uid is free only when it has no lease file
// *and* no live process holds it (as any uid or gid, see proc-uids.ts): a detached QEMU whose
// runtime died keeps its uid even once its lease is reclaimed.
import { randomBytes } from 'node:crypto';
import { closeSync, constants, linkSync, lstatSync, mkdirSync, openSync, readdirSync, realpathSync, renameSync, unlinkSync, writeFileSync, type Stats } from 'node:fs';
import { readdir, rm, unlink } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { InvalidArgumentError, SandboxVmmError, type SandboxVmmErrorOptions } from '../../errors.ts';
import { Deadline, type OperationOptions } from '../../util/deadline.ts';
import { kindOf, readRegularFile, readRegularFileSync, UnsafePathError } from '../../util/safe-fs.ts';
import { withFileLock } from './file-lock.ts';
import { DEFAULT_UID_RANGE, UidRangeExhaustedError, type UidRange } from '../../hypervisor/identity.ts';
import { checkTimeoutMs } from '../../util/timeout.ts';
import { isOwnerAlive, ownerIdentity, processIdsInUse, recentIdsInUse } from './proc-uids.ts';

/** One uid lease, as its file holds it: which VM has the uid, and the runtime process answerable for it. */
export interface LeaseRecord {
  uid: number;
  vmId: string;
  /** The runtime process answerable for the VM: pid plus /proc start time (against pid reuse). */
  owner: { pid: number; startTime: number };
  /** ISO 8601, when the lease was first taken (an adopt keeps it). */
  createdAt: string;
}

/** The lease directory is missing and cannot be created, or is not private to this process's user. */
export class LeaseDirError extends SandboxVmmError<'LEASE_DIR_UNSAFE'> {
  readonly dir: string;
  readonly reason: string;

  constructor(dir: string, reason: string, options: SandboxVmmErrorOptions = {}) {
    super('LEASE_DIR_UNSAFE', `uid lease directory ${dir} ${reason}`, options);
    this.dir = dir;
    this.reason = reason;
  }
}

/** adopt() found no lease for the uid, a malformed one, or one naming another VM. */
export class UidLeaseNotHeldError extends SandboxVmmError<'UID_LEASE_NOT_HELD'> {
  readonly uid: number;
  readonly vmId: string;
  /** The VM the lease names, when it names another one. */
  readonly heldBy: string | undefined;

  constructor(uid: number, vmId: string, reason: string, heldBy?: string) {
    super('UID_LEASE_NOT_HELD', `cannot adopt uid ${uid} for VM ${vmId}: ${reason}`);
    this.uid = uid;
    this.vmId = vmId;
    this.heldBy = heldBy;
  }
}

/** (uid_t)-1 means "unchanged" to setresuid: never a uid. */
const MAX_UID = 0xfffffffe;
/** A lease file is read up to this size; a larger one is malformed. */
const MAX_LEASE_BYTES = 4096;
/** Keeps every record far below MAX_LEASE_BYTES, even with each character JSON-escaped. */
const MAX_VM_ID_LENGTH = 256;
const LEASE_NAME = /^(?:0|[1-9]\d{0,9})$/;
/** adopt()'s temporary files; any found by reclaimStale (which holds the lock) are leftovers of a crash. */
const TEMP_NAME = /^\.(?:0|[1-9]\d{0,9})\.tmp-[0-9a-f]{16}$/;
const DEFAULT_LOCK_TIMEOUT_MS = 5_000;
/** How long acquire() reuses a /proc scan of the uids in use (see recentIdsInUse). */
const DEFAULT_SCAN_REUSE_MS = 2_000;
/** The file flock(2)ed by every read-modify-write; its name is neither a lease nor a temp file. */
const LOCK_FILE = '.lock';

const isUid = (value: unknown): value is number => Number.isSafeInteger(value) && (value as number) >= 0 && (value as number) <= MAX_UID;
const isVmId = (value: unknown): value is string => typeof value === 'string' && value.length > 0 && value.length <= MAX_VM_ID_LENGTH;
const isCount = (value: unknown, min: number): value is number => Number.isSafeInteger(value) && (value as number) >= min;

type LeaseFile = { record: LeaseRecord } | { malformed: string };

function errnoCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}


/** The record in a lease file named `uid`, or why it is malformed. */
function parseLease(uid: number, text: string): LeaseFile {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { malformed: 'not JSON' };
  }
  if (typeof value !== 'object' || value === null) return { malformed: 'not a JSON object' };
  const { uid: recordUid, vmId, owner, createdAt } = value as Record<string, unknown>;
  if (!isUid(recordUid)) return { malformed: 'no valid uid' };
  if (recordUid !== uid) return { malformed: `its name says uid ${uid} but it holds uid ${recordUid}` };
  if (!isVmId(vmId)) return { malformed: 'no valid vmId' };
  if (typeof createdAt !== 'string') return { malformed: 'no createdAt' };
  if (typeof owner !== 'object' || owner === null) return { malformed: 'no owner' };
  const { pid, startTime } = owner as Record<string, unknown>;
  if (!isCount(pid, 1) || !isCount(startTime, 0)) return { malformed: 'no valid owner pid and startTime' };
  return { record: { uid, vmId, owner: { pid, startTime }, createdAt } };
}

function serialize(record: LeaseRecord): string {
  return `${JSON.stringify({ uid: record.uid, vmId: record.vmId, owner: { pid: record.owner.pid, startTime: record.owner.startTime }, createdAt: record.createdAt })}\n`;
}

/** The uids named by lease files among `names`, well-formed or not, within the range or not. */
function leaseUids(names: readonly string[]): number[] {
  return names
    .filter((name) => LEASE_NAME.test(name))
    .map(Number)
    .filter(isUid)
    .sort((a, b) => a - b);
}

function unlinkQuietSync(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // Gone already (a reclaim took it), or never made.
  }
}

export class UidLeaseStore {
  /** The lease directory as given, made absolute. */
  readonly dir: string;
  readonly range: UidRange;
  readonly #lockTimeoutMs: number;
  readonly #scanReuseMs: number;

  /** `scanReuseMs`: how old a scan of the uids processes hold may be for acquire() (0: always scan). */
  constructor(options: { dir: string; range?: UidRange; lockTimeoutMs?: number; scanReuseMs?: number }) {
    const range = options.range ?? DEFAULT_UID_RANGE;
    if (!isUid(range.first) || !isCount(range.count, 1) || range.first + range.count - 1 > MAX_UID) {
      throw new InvalidArgumentError('range', `${JSON.stringify(range)}: first and count must be integers, count at least 1, the last uid at most ${MAX_UID}`);
    }
    const lockTimeoutMs = options.lockTimeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS;
    checkTimeoutMs(lockTimeoutMs, 'lockTimeoutMs');
    this.dir = resolve(options.dir);
    this.range = Object.freeze({ first: range.first, count: range.count });
    this.#lockTimeoutMs = lockTimeoutMs;
    this.#scanReuseMs = checkTimeoutMs(options.scanReuseMs ?? DEFAULT_SCAN_REUSE_MS, 'scanReuseMs');
  }

  /**
   * Leases the lowest uid of the range that has no lease and that no live process holds as a uid
   * or gid; when there is none, reclaims stale leases and looks again. The lease names this process
   * as owner. Throws UidRangeExhaustedError (code RESOURCE_LIMIT) when the range is full.
   */
  async acquire(vmId: string, options: OperationOptions = {}): Promise<LeaseRecord> {
    if (!isVmId(vmId)) throw new InvalidArgumentError('vmId', `must be a string of 1 to ${MAX_VM_ID_LENGTH} characters`);
    // No lock on the way that almost always succeeds: creating a lease is exclusive by itself (see
    // #create), and a lease never changes hands while its owner lives. The /proc scan is shared by
    // a burst of callers (a process can only come to run as a range uid through a lease); the rest
    // is a few small synchronous steps, so that a burst's VMs go on to spawn together rather than
    // one thread-pool round trip at a time while the first QEMUs already compete for the CPUs.
    const deadline = new Deadline(`acquiring a uid lease for VM ${vmId} in ${this.dir}`, options);
    try {
      const inUse = await deadline.race(recentIdsInUse(this.#scanReuseMs));
      deadline.throwIfDone();
      this.#ensureDirSync();
      const record = this.#leaseLowestFree(vmId, inUse);
      if (record) return record;
    } finally {
      deadline.dispose();
    }
    // The range looks full: reclaim stale leases under the lock, and look again with a fresh scan.
    return this.#locked(`acquiring a uid lease for VM ${vmId}`, options, async (locked) => {
      await this.#reclaim(locked);
      const afterReclaim = this.#leaseLowestFree(vmId, await locked.race(processIdsInUse()));
      if (afterReclaim) return afterReclaim;
      throw new UidRangeExhaustedError(this.range, this.dir, vmId);
    });
  }

  /**
   * A restarted runtime taking a VM over: the lease for `uid` must exist and name `vmId` (else
   * UidLeaseNotHeldError); its owner becomes this process. The file is replaced atomically.
   */
  async adopt(uid: number, vmId: string, options: OperationOptions = {}): Promise<LeaseRecord> {
    if (!isUid(uid)) throw new UidLeaseNotHeldError(uid, vmId, 'it is not a valid uid');
    return this.#locked(`adopting uid ${uid} for VM ${vmId}`, options, async (deadline) => {
      const lease = await this.#readLease(uid);
      if (!lease) throw new UidLeaseNotHeldError(uid, vmId, `there is no lease for it in ${this.dir}`);
      if ('malformed' in lease) throw new UidLeaseNotHeldError(uid, vmId, `its lease file in ${this.dir} is malformed (${lease.malformed})`);
      if (lease.record.vmId !== vmId) {
        throw new UidLeaseNotHeldError(uid, vmId, `its lease in ${this.dir} names VM ${lease.record.vmId}`, lease.record.vmId);
      }
      const record: LeaseRecord = { uid, vmId, owner: { ...ownerIdentity() }, createdAt: lease.record.createdAt };
      deadline.throwIfDone();
      this.#replace(record);
      return record;
    });
  }

  /**
   * Removes the lease for `uid` if it still names `vmId` and this process as its owner; a no-op
   * otherwise. Without the lock (stopVM must stay cheap): allocation and reclaim never change a
   * lease whose owner lives, and only a process adopting this very VM could, which then owns it.
   */
  // Async for the contract's sake (a lock may come back); its two steps are synchronous on purpose.
  // eslint-disable-next-line @typescript-eslint/require-await
  async release(uid: number, vmId: string, _options: OperationOptions = {}): Promise<void> {
    this.#releaseSync(uid, vmId);
  }

  #releaseSync(uid: number, vmId: string): void {
    if (!isUid(uid)) return;
    this.#checkDirSync();
    // Two small synchronous steps (a bounded, non-blocking read of a 4 KiB file and an unlink):
    // stopVM waits for them, and the thread pool's round trips would cost more than the work.
    const path = this.#path(String(uid));
    let lease: LeaseFile;
    try {
      lease = parseLease(uid, readRegularFileSync(path, MAX_LEASE_BYTES));
    } catch (error) {
      if (errnoCode(error) === 'ENOENT' || error instanceof UnsafePathError) return;
      throw error;
    }
    if ('malformed' in lease || lease.record.vmId !== vmId) return;
    const self = ownerIdentity();
    if (lease.record.owner.pid !== self.pid || lease.record.owner.startTime !== self.startTime) return;
    try {
      unlinkSync(path);
    } catch (error) {
      if (errnoCode(error) !== 'ENOENT') throw error;
    }
  }

  /** The well-formed leases, by uid (malformed files are left out). Reads only: takes no lock. */
  async list(): Promise<LeaseRecord[]> {
    this.#ensureDirSync();
    const records: LeaseRecord[] = [];
    for (const uid of this.#leasedUids()) {
      const lease = await this.#readLease(uid);
      if (lease && 'record' in lease) records.push(lease.record);
    }
    return records;
  }

  /**
   * Removes every lease whose owner is gone (pid and start time no longer match a live, non-zombie
   * process) and whose uid no live process holds, unless `keep(record)` returns true; returns the
   * removed records by uid. Malformed lease files (not JSON, wrong shape, name and uid disagreeing,
   * not a regular file, over 4 KiB) are removed too but, having no record, are not returned; so are
   * temporary files an interrupted adopt left behind. Symbolic links are removed, never followed.
   */
  async reclaimStale(options: OperationOptions & { keep?: (record: LeaseRecord) => boolean } = {}): Promise<LeaseRecord[]> {
    return this.#locked('reclaiming stale uid leases', options, (deadline) => this.#reclaim(deadline, options.keep));
  }

  /**
   * Runs `body` under the host-wide lock of this directory, after checking the directory. The
   * caller's signal and timeoutMs bound the whole operation; waiting for the lock is also bounded
   * by lockTimeoutMs.
   */
  async #locked<T>(operation: string, options: OperationOptions, body: (deadline: Deadline) => Promise<T>): Promise<T> {
    const deadline = new Deadline(`${operation} in ${this.dir}`, options);
    try {
      this.#ensureDirSync();
      // The canonical path names the lock file: one lock however the directory is reached.
      const realDir = realpathSync(this.dir);
      const wait = new Deadline(`waiting for the uid lease lock of ${this.dir}`, { signal: deadline.signal, timeoutMs: this.#lockTimeoutMs });
      try {
        return await withFileLock(join(realDir, LOCK_FILE), wait, () => {
          deadline.throwIfDone();
          return body(deadline);
        });
      } finally {
        wait.dispose();
      }
    } finally {
      deadline.dispose();
    }
  }

  /**
   * Creates the directory if missing (0700; missing parents 0711, traversable but not listable),
   * then insists that it is a real directory, not a symbolic link, owned by our euid, with no
   * group or other permissions. A few small syscalls: synchronous.
   */
  #ensureDirSync(): void {
    // Looked at first, made only when missing: every acquire comes here, and a mkdir failing with
    // EEXIST would cost a thrown error each time.
    let stats: Stats | undefined;
    try {
      stats = lstatSync(this.dir);
    } catch (error) {
      if (errnoCode(error) !== 'ENOENT') throw new LeaseDirError(this.dir, `cannot be examined: ${(error as Error).message}`, { cause: error });
    }
    if (stats === undefined) {
      try {
        mkdirSync(dirname(this.dir), { recursive: true, mode: 0o711 });
        mkdirSync(this.dir, { mode: 0o700 });
      } catch (error) {
        if (errnoCode(error) !== 'EEXIST') throw new LeaseDirError(this.dir, `cannot be created: ${(error as Error).message}`, { cause: error });
      }
      this.#checkDirSync();
    } else {
      this.#checkStats(stats);
    }
  }

  /** The existing directory, checked the same way without creating it (release's quick path). */
  #checkDirSync(): void {
    let stats: Stats;
    try {
      stats = lstatSync(this.dir);
    } catch (error) {
      throw new LeaseDirError(this.dir, `cannot be examined: ${(error as Error).message}`, { cause: error });
    }
    this.#checkStats(stats);
  }

  #checkStats(stats: Stats): void {
    if (stats.isSymbolicLink()) throw new LeaseDirError(this.dir, 'is a symbolic link; it must be a real directory');
    if (!stats.isDirectory()) throw new LeaseDirError(this.dir, `is ${kindOf(stats)}, not a directory`);
    const euid = process.geteuid?.();
    if (stats.uid !== euid) throw new LeaseDirError(this.dir, `is owned by uid ${stats.uid}, not by this process's uid ${euid}`);
    if ((stats.mode & 0o077) !== 0) {
      throw new LeaseDirError(this.dir, `is open to group or others (mode ${(stats.mode & 0o7777).toString(8).padStart(4, '0')}); it must be 0700`);
    }
  }

  #path(name: string): string {
    return join(this.dir, name);
  }

  /** The uids that have a lease file, well-formed or not, within the range or not. */
  #leasedUids(): number[] {
    return leaseUids(readdirSync(this.dir));
  }




  /** Creates the lease of the lowest free uid, or returns undefined when there is none. */
  #leaseLowestFree(vmId: string, inUse: ReadonlySet<number>): LeaseRecord | undefined {
    const leased = new Set(this.#leasedUids());
    const end = this.range.first + this.range.count;
    for (let uid = this.range.first; uid < end; uid++) {
      if (leased.has(uid) || inUse.has(uid)) continue;
      const record: LeaseRecord = { uid, vmId, owner: { ...ownerIdentity() }, createdAt: new Date().toISOString() };
      if (this.#create(record)) return record;
    }
    return undefined;
  }

  /**
   * Creates the lease whole, or not at all: written to a temporary file, then hard-linked to its
   * name (link fails if the name exists, like O_EXCL), so a reader never sees a half-written lease
   * (reclaim would take an empty file for a malformed one). False when the uid was taken meanwhile.
   */
  #create(record: LeaseRecord): boolean {
    // A reclaim (under the lock) may remove our temporary file as a crash's leftover: try again.
    for (let attempt = 0; attempt < 3; attempt++) {
      const temp = this.#writeTemp(record);
      try {
        linkSync(temp, this.#path(String(record.uid)));
        return true;
      } catch (error) {
        if (errnoCode(error) === 'EEXIST') return false;
        if (errnoCode(error) !== 'ENOENT') throw error;
      } finally {
        unlinkQuietSync(temp);
      }
    }
    return false;
  }

  /** Writes a temporary file next to the lease and renames it over the lease. */
  #replace(record: LeaseRecord): void {
    const temp = this.#writeTemp(record);
    try {
      renameSync(temp, this.#path(String(record.uid)));
    } catch (error) {
      unlinkQuietSync(temp);
      throw error;
    }
  }

  /** A new file (O_EXCL, never through a link) holding the record, named like no lease. */
  #writeTemp(record: LeaseRecord): string {
    const temp = this.#path(`.${record.uid}.tmp-${randomBytes(8).toString('hex')}`);
    const fd = openSync(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    try {
      writeFileSync(fd, serialize(record));
    } catch (error) {
      closeSync(fd);
      unlinkQuietSync(temp);
      throw error;
    }
    closeSync(fd);
    return temp;
  }

  /** The lease file of `uid`: its record, why it is malformed, or undefined when there is none. */
  async #readLease(uid: number): Promise<LeaseFile | undefined> {
    try {
      // Never following a link nor blocking on a FIFO; anything but a small regular file is malformed.
      return parseLease(uid, await readRegularFile(this.#path(String(uid)), MAX_LEASE_BYTES));
    } catch (error) {
      if (errnoCode(error) === 'ENOENT') return undefined;
      if (error instanceof UnsafePathError) return { malformed: `it ${error.problem}` };
      throw error;
    }
  }

  async #unlinkQuiet(name: string): Promise<void> {
    try {
      await unlink(this.#path(name));
    } catch (error) {
      if (errnoCode(error) !== 'ENOENT') throw error;
    }
  }

  async #reclaim(deadline: Deadline, keep?: (record: LeaseRecord) => boolean): Promise<LeaseRecord[]> {
    const names = await readdir(this.dir);
    const inUse = await deadline.race(processIdsInUse());
    const removed: LeaseRecord[] = [];
    for (const name of names) {
      deadline.throwIfDone();
      if (TEMP_NAME.test(name)) {
        // rm never follows a symbolic link; recursive covers a directory of that name.
        await rm(this.#path(name), { recursive: true, force: true });
        continue;
      }
      const uid = LEASE_NAME.test(name) ? Number(name) : undefined;
      if (!isUid(uid)) continue;
      const lease = await this.#readLease(uid);
      if (!lease) continue;
      if ('malformed' in lease) {
        await rm(this.#path(name), { recursive: true, force: true });
        continue;
      }
      const { record } = lease;
      if (isOwnerAlive(record.owner) || inUse.has(record.uid) || keep?.(record) === true) continue;
      await this.#unlinkQuiet(name);
      removed.push(record);
    }
    return removed.sort((a, b) => a.uid - b.uid);
  }
}
