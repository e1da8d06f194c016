// Which uids and gids live processes hold, from /proc, and who this process is. Used by the uid
// lease store: an id some process still runs as (a detached QEMU whose runtime died, a leftover
// helper) is never handed out again, whatever the lease files say.
//
// /proc only shows the processes of our pid namespace, and only all of them when it is mounted
// without hidepid (or we are root): the runtime must run in the host's pid namespace for the scan
// to be complete.
import { readdir, readFile } from 'node:fs/promises';
import { isProcessAlive, readProcStat } from '../process/proc-fs.ts';

/** A process's identity: its pid plus its /proc start time, which tells a recycled pid apart. */
export interface ProcessIdentity {
  pid: number;
  startTime: number;
}

/** Every id a process holds: real, effective, saved and filesystem uid and gid, and its supplementary groups. */
function idsFromStatus(text: string): number[] {
  const ids: number[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('Uid:') && !line.startsWith('Gid:') && !line.startsWith('Groups:')) continue;
    for (const field of line.slice(line.indexOf(':') + 1).trim().split(/\s+/)) {
      if (/^\d+$/.test(field)) ids.push(Number(field));
    }
  }
  return ids;
}

/** The status of every process, keyed by pid; processes that end during the scan are left out. */
async function readAllStatuses(): Promise<Map<number, string>> {
  const pids = (await readdir('/proc')).filter((name) => /^[1-9]\d*$/.test(name)).map(Number);
  const statuses = new Map<number, string>();
  const BATCH = 64;
  for (let i = 0; i < pids.length; i += BATCH) {
    await Promise.all(
      pids.slice(i, i + BATCH).map(async (pid) => {
        try {
          statuses.set(pid, await readFile(`/proc/${pid}/status`, 'utf8'));
        } catch (error) {
          // The process ended between readdir and the read: it holds nothing any more. Anything
          // else (EACCES, EIO) is thrown: an id must not look free because we could not look.
          const code = (error as NodeJS.ErrnoException).code;
          if (code !== 'ENOENT' && code !== 'ESRCH') throw error;
        }
      }),
    );
  }
  return statuses;
}

/**
 * Every uid and gid (real, effective, saved, filesystem, and supplementary groups) that some
 * process in /proc holds. Zombies count too (their ids are still listed; they go when reaped),
 * which errs on the side of not handing an id out.
 */
export async function processIdsInUse(): Promise<Set<number>> {
  const ids = new Set<number>();
  for (const text of (await readAllStatuses()).values()) {
    for (const id of idsFromStatus(text)) ids.add(id);
  }
  return ids;
}

let lastScan: { at: number; ids: Promise<Set<number>> } | undefined;

/**
 * processIdsInUse, shared by callers within `maxAgeMs` of each other (a scan costs several ms per
 * hundred processes). Only for the free-uid search: within the library a process can only come to
 * run as a range uid through a lease, which that search checks under the lock, so a scan a moment
 * old misses nothing but a process someone else started with a reserved uid meanwhile. A failed
 * scan is not reused.
 */
export function recentIdsInUse(maxAgeMs: number, now = Date.now()): Promise<Set<number>> {
  if (lastScan && now - lastScan.at < maxAgeMs) return lastScan.ids;
  const ids = processIdsInUse();
  const scan = { at: now, ids };
  lastScan = scan;
  ids.catch(() => {
    if (lastScan === scan) lastScan = undefined;
  });
  return ids;
}

/**
 * The pids of processes holding `id` as any of their uids, or as any of their gids (each VM's gid
 * equals its uid, so a process left with only the group still counts).
 */
export async function processesRunningAs(id: number): Promise<number[]> {
  const pids: number[] = [];
  for (const [pid, text] of await readAllStatuses()) {
    if (idsFromStatus(text).includes(id)) pids.push(pid);
  }
  return pids.sort((a, b) => a - b);
}

let self: ProcessIdentity | undefined;

/** This process, as it names itself in the leases it owns. */
export function ownerIdentity(): ProcessIdentity {
  if (!self) {
    const stat = readProcStat(process.pid);
    if (!stat) throw new Error(`cannot read /proc/${process.pid}/stat`);
    self = { pid: process.pid, startTime: stat.startTime };
  }
  return self;
}

/** True while the owner still runs: same pid, same start time, not a zombie. */
export function isOwnerAlive(owner: ProcessIdentity): boolean {
  return isProcessAlive(owner.pid, owner.startTime);
}
