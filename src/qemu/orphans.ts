// The sweep a runtime runs at start-up: what a runtime process that died (even by SIGKILL) left
// behind. Its owner-bound QEMU and helpers died with it, but their directories and uid leases stay.
// A directory is an orphan only when its owner is gone AND no QEMU of its own still runs (a detached
// VM waiting for re-attach is never one); nothing is followed, and only processes whose pid, start
// time and executable match what the VM recorded are killed.
import { readdir } from 'node:fs/promises';
import { lstatSync } from 'node:fs';
import { basename, join } from 'node:path';
import { z } from 'zod';
import type { OperationOptions } from '../util/deadline.ts';
import { silentLogger, type Logger } from '../util/logger.ts';
import { directoryProblem, readRegularFile, removeTree } from '../util/safe-fs.ts';
import { isOwnerAlive, processesRunningAs } from './identity/proc-uids.ts';
import { UidLeaseStore, type LeaseRecord } from './identity/uid-leases.ts';
import { DEFAULT_UID_RANGE, type UidRange } from '../hypervisor/identity.ts';
import { isProcessAlive, readExe, readUids } from './process/proc-fs.ts';
import { classifyEntry, defaultRuntimeBase, ensureRuntimeBase, leaseDirOf } from './runtime-dir.ts';
import { runtimePaths } from './runtime-paths.ts';
import { readStateFile, type SavedVmState } from './state-file.ts';

export interface ReapOptions extends OperationOptions {
  /** The directory holding VM directories. Default: the library's default base. */
  base?: string;
  /** Default: <default base>/.leases, as QemuHypervisor uses. */
  leaseDir?: string;
  uidRange?: UidRange;
  logger?: Logger;
}

/** What `reapOrphans` removed or killed. */
export interface OrphanReport {
  /** VM directories removed: their runtime process is gone and no QEMU of theirs runs. */
  removed: { vmId: string; dir: string }[];
  /** Leftover processes of those VMs that were killed (helpers, or anything running as their uid). */
  killed: number[];
  /** Uid leases given back. */
  leases: LeaseRecord[];
  /** Entries left alone because they are not what this library makes. */
  skipped: { dir: string; reason: string }[];
}

const ownerSchema = z.strictObject({
  pid: z.int().min(1),
  startTime: z.int().min(0),
  vmId: z.string().optional(),
  /** The VM's uid (null: it runs as the runtime's user), for a QEMU left before any state was saved. */
  uid: z.int().min(0).max(0xfffffffe).nullable().optional(),
});
type Owner = z.infer<typeof ownerSchema>;

/**
 * The sweep a runtime runs at start-up: removes the directories and uid leases of VMs whose runtime
 * process died, and kills what still ran as them; never touches a detached VM whose QEMU runs.
 */
export async function reapOrphans(options: ReapOptions = {}): Promise<OrphanReport> {
  const logger = options.logger ?? silentLogger;
  const base = options.base ?? defaultRuntimeBase();
  ensureRuntimeBase(base);
  const leases = new UidLeaseStore({ dir: options.leaseDir ?? leaseDirOf(base), range: options.uidRange ?? DEFAULT_UID_RANGE });
  const report: OrphanReport = { removed: [], killed: [], leases: [], skipped: [] };
  const live = new Set<string>();
  const leaseHolders = new Map((await leases.list()).map((record) => [record.uid, record.vmId]));
  for (const name of await readdir(base)) {
    if (name === '.leases') continue;
    const dir = join(base, name);
    const verdict = await judge(dir);
    if (verdict.kind === 'skip') {
      report.skipped.push({ dir, reason: verdict.reason });
    } else if (verdict.kind === 'live') {
      live.add(verdict.vmId);
    } else {
      report.killed.push(...(await killLeftovers(verdict, leaseHolders)));
      await removeTree(dir);
      report.removed.push({ vmId: verdict.vmId, dir });
      logger.info({ dir, vmId: verdict.vmId }, 'removed an orphaned VM directory');
    }
  }
  report.leases = await leases.reclaimStale({
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
    keep: (record) => live.has(record.vmId),
  });
  for (const lease of report.leases) logger.info({ uid: lease.uid, vmId: lease.vmId }, 'released an orphaned uid lease');
  return report;
}

type Verdict =
  | { kind: 'skip'; reason: string }
  | { kind: 'live'; vmId: string }
  | { kind: 'orphan'; vmId: string; state: SavedVmState | undefined; owner: Owner | undefined };

async function judge(dir: string): Promise<Verdict> {
  const stat = lstatSync(dir);
  const problem = directoryProblem(stat);
  if (problem) return { kind: 'skip', reason: problem };
  const paths = runtimePaths(dir);
  const entry = classifyEntry(basename(dir));
  const vmId = entry.vmId;
  // Renamed for removal only once every process of the VM was gone: whatever is left is debris.
  if (entry.kind === 'removing') return { kind: 'orphan', vmId, state: undefined, owner: undefined };
  const owner = await readJson(paths.ownerFile, ownerSchema);
  if (owner && isOwnerAlive(owner)) return { kind: 'live', vmId };
  let state: SavedVmState | undefined;
  try {
    state = await readStateFile(paths.stateFile);
  } catch {
    state = undefined;
  }
  if (state && isOurQemu(state)) return { kind: 'live', vmId: state.id };
  if (!owner && !state) return { kind: 'skip', reason: 'neither an owner file nor a state file: not a VM directory' };
  return { kind: 'orphan', vmId: state?.id ?? vmId, state, owner };
}

/** The VM's QEMU still runs: same pid and start time, same executable, same uid. */
function isOurQemu(state: SavedVmState): boolean {
  if (!isProcessAlive(state.pid, state.startTime) || readExe(state.pid) !== state.qemuPath) return false;
  const uid = state.identity?.uid;
  return uid === undefined || (readUids(state.pid)?.every((u) => u === uid) ?? false);
}

/**
 * Helpers that outlived their VM, and anything still running as the VM's own leased uid (from the
 * state file, or from owner.json when the owner died before any state was saved).
 */
async function killLeftovers(orphan: { vmId: string; state: SavedVmState | undefined; owner: Owner | undefined }, leaseHolders: ReadonlyMap<number, string>): Promise<number[]> {
  const { state, owner } = orphan;
  const killed: number[] = [];
  for (const helper of state?.helpers ?? []) {
    if (isProcessAlive(helper.pid, helper.startTime) && readExe(helper.pid) === helper.binary && signal(helper.pid)) killed.push(helper.pid);
  }
  // A leased uid is the VM's alone while its lease names it: whatever still runs as it is the VM's.
  const uid = state ? (state.leased ? state.identity?.uid : undefined) : (owner?.uid ?? undefined);
  if (uid !== undefined && leaseHolders.get(uid) === orphan.vmId) {
    for (const pid of await processesRunningAs(uid)) if (signal(pid)) killed.push(pid);
  }
  return killed;
}

function signal(pid: number): boolean {
  try {
    process.kill(pid, 'SIGKILL');
    return true;
  } catch {
    return false;
  }
}

async function readJson<T>(path: string, schema: z.ZodType<T>): Promise<T | undefined> {
  try {
    const parsed = schema.safeParse(JSON.parse(await readRegularFile(path, 4096)));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}
