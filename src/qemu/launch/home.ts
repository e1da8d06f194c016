// A VM's home: its root-owned directory and the identity its QEMU runs as (a leased uid under
// root). Made by createVM, so that a runtime knows the uid before startVM (to give it taps and
// files); taken over by attach(); given back exactly once, after the VM's processes are gone.
import { chmod, chown, lstat, mkdir, rename } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { ConfigError, type SandboxConfig } from '../../hypervisor/config/index.ts';
import type { VmIdentity } from '../../hypervisor/types.ts';
import type { OperationOptions } from '../../util/deadline.ts';
import { removeTree, writeFileAtomic } from '../../util/safe-fs.ts';
import type { Logger } from '../../util/logger.ts';
import { resolveIdentity } from '../identity/identity.ts';
import { ownerIdentity, processesRunningAs } from '../identity/proc-uids.ts';
import { sleep } from '../../util/deadline.ts';

/** Rounds of SIGKILL for processes left under a VM's uid, and the wait after each. */
const SWEEP_ROUNDS = 20;
const SWEEP_WAIT_MS = 50;
import type { UidLeaseStore } from '../identity/uid-leases.ts';
import { checkRuntimeDirParent, moveAsideForRemoval, stagingPathOf } from '../runtime-dir.ts';
import type { RuntimePaths } from '../runtime-paths.ts';
import { writeStateFile } from '../state-file.ts';

export class VmHome {
  readonly paths: RuntimePaths;
  readonly identity: VmIdentity | undefined;
  readonly #vmId: string;
  /** The store holding this VM's uid lease, when the identity is leased. */
  readonly #leases: UidLeaseStore | undefined;
  /**
   * Without QEMU's seccomp filter, an escaped guest can fork: whatever still runs as the VM's own
   * uid is then killed before the uid goes back (with the filter, QEMU cannot make processes).
   */
  readonly #sweepUid: boolean;
  #released: Promise<void> | undefined;
  /** State writes, one after another (an older state never lands after a newer one). */
  #writes: Promise<void> = Promise.resolve();
  /** The last record queued, so that an unchanged one is not written again. */
  #lastSaved: string | undefined;

  private constructor(paths: RuntimePaths, identity: VmIdentity | undefined, vmId: string, leases: UidLeaseStore | undefined, seccomp: boolean) {
    this.paths = paths;
    this.identity = identity;
    this.#vmId = vmId;
    this.#leases = leases;
    this.#sweepUid = leases !== undefined && !seccomp;
  }

  get leased(): boolean {
    return this.#leases !== undefined;
  }

  /**
   * Resolves the identity (leasing a uid), then creates the directory under a temporary name,
   * records its owner in it and renames it into place: the directory never exists without an
   * owner file, so the orphan sweep can never take a VM that is being made for a dead one.
   */
  static async create(config: SandboxConfig, paths: RuntimePaths, leases: UidLeaseStore, options: OperationOptions = {}): Promise<VmHome> {
    const { identity, lease } = await resolveIdentity(config, leases, options);
    const home = new VmHome(paths, identity, config.id, lease ? leases : undefined, config.hardening.seccomp);
    try {
      await makeDirectory(paths, identity, config.id);
    } catch (error) {
      await home.#releaseLease();
      throw error;
    }
    return home;
  }

  /** The home of a VM another process made: its lease (if any) and its owner file become ours. */
  static async adopt(config: SandboxConfig, paths: RuntimePaths, identity: VmIdentity | undefined, leased: boolean, leases: UidLeaseStore, options: OperationOptions = {}): Promise<VmHome> {
    if (leased && identity) await leases.adopt(identity.uid, config.id, options);
    await writeFileAtomic(paths.ownerFile, ownerRecord(config.id, identity));
    return new VmHome(paths, identity, config.id, leased ? leases : undefined, config.hardening.seccomp);
  }

  /**
   * Removes the directory (never following a link) and gives the uid back. Call it only once every
   * process of the VM is gone; `processesGone: false` (one survived SIGKILL) keeps the lease, so
   * that the uid is not handed to another VM while that process lives. Idempotent.
   */
  release(processesGone: boolean, logger: Logger): Promise<void> {
    this.#released ??= (async () => {
      // A write under way would put a file back into the directory being removed.
      await this.#writes;
      // Renamed first, so that a removal cut short leaves a name the sweep removes.
      const doomed = moveAsideForRemoval(this.paths.dir);
      try {
        await removeTree(doomed);
      } catch (error) {
        logger.error({ err: error, dir: this.paths.dir, removing: doomed }, 'could not remove the runtime directory');
      }
      if (processesGone && (await this.#noneLeftRunning(logger))) await this.#releaseLease(logger);
      else logger.error({ uid: this.identity?.uid }, 'a VM process survived SIGKILL: its uid stays leased');
    })();
    return this.#released;
  }

  /** Kills what still runs as the VM's uid (see #sweepUid); true once nothing does. */
  async #noneLeftRunning(logger: Logger): Promise<boolean> {
    const uid = this.identity?.uid;
    if (!this.#sweepUid || uid === undefined) return true;
    for (let round = 0; round < SWEEP_ROUNDS; round++) {
      const pids = await processesRunningAs(uid);
      if (pids.length === 0) return true;
      logger.warn({ uid, pids }, 'processes outlived the VM under its uid: killing them');
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // Gone already.
        }
      }
      await sleep(SWEEP_WAIT_MS);
    }
    return (await processesRunningAs(uid)).length === 0;
  }

  /**
   * Queues a write of the state file (text taken when the change was made). Once release has
   * begun, nothing more is written; a write that fails is logged (re-attach will not see it).
   */
  saveState(text: string, logger: Logger): Promise<void> {
    // The same record again (a paused start records the pids, then the same once QMP is up) is
    // not written twice: in a start storm every write is a file created and renamed.
    if (text === this.#lastSaved) return this.#writes;
    this.#lastSaved = text;
    this.#writes = this.#writes.then(async () => {
      if (this.#released) return;
      try {
        await writeStateFile(this.paths.stateFile, text);
      } catch (error) {
        if (this.#lastSaved === text) this.#lastSaved = undefined;
        logger.error({ err: error }, 'could not save the VM state (re-attach will not see this change)');
      }
    });
    return this.#writes;
  }

  /** Resolves once every queued state write has landed. */
  settled(): Promise<void> {
    return this.#writes;
  }

  async #releaseLease(logger?: Logger): Promise<void> {
    if (!this.#leases || !this.identity) return;
    try {
      await this.#leases.release(this.identity.uid, this.#vmId);
    } catch (error) {
      // The sweep (reapOrphans) reclaims it once this process is gone.
      logger?.error({ err: error, uid: this.identity.uid }, 'could not release the uid lease');
    }
  }
}

/**
 * owner.json: the runtime process that owns the VM, and the VM's id and uid, so that the orphan
 * sweep can find a QEMU left running before any state was saved.
 */
function ownerRecord(vmId: string, identity: VmIdentity | undefined): string {
  return JSON.stringify({ ...ownerIdentity(), vmId, uid: identity?.uid ?? null });
}

function unlessMissing(error: unknown): undefined {
  if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
  throw error;
}

/** Asynchronous throughout: a start storm makes many at once, and none of it should hold the loop. */
async function makeDirectory(paths: RuntimePaths, identity: VmIdentity | undefined, vmId: string): Promise<void> {
  const parent = dirname(paths.dir);
  checkRuntimeDirParent(parent);
  const staging = stagingPathOf(paths.dir);
  await mkdir(staging, { mode: 0o700 });
  try {
    await writeFileAtomic(join(staging, basename(paths.ownerFile)), ownerRecord(vmId, identity));
    if (identity) {
      // Root's directory, QEMU's group: it may traverse to virtiofsd's socket, not list or write.
      await chown(staging, process.geteuid?.() ?? 0, identity.gid);
      await chmod(staging, 0o710);
    }
    // rename(2) replaces an empty directory: refuse any existing name first. (Another VM's
    // directory is never empty, so rename still cannot replace one that appears meanwhile.)
    if (await lstat(paths.dir).catch(unlessMissing)) throw Object.assign(new Error(`${paths.dir} exists`), { code: 'EEXIST' });
    await rename(staging, paths.dir);
  } catch (error) {
    await removeTree(staging);
    const code = (error as NodeJS.ErrnoException).code;
    const message = code === 'EEXIST' || code === 'ENOTEMPTY' ? `runtime directory ${paths.dir} already exists` : (error as Error).message;
    throw new ConfigError([{ path: 'runtime.dir', message }], { cause: error });
  }
}
