// Taking over a VM another process launched (a restarted runtime): the directory must be root's
// and closed to others, the state file must validate, and every process it names must be the one
// this VM's config would have started (pid + start time, /proc/<pid>/exe, the exact command line,
// the uid) before anything is signalled or handed to the caller. Then the lease becomes ours.
import { lstatSync, statSync } from 'node:fs';
import { AttachError } from '../../hypervisor/errors.ts';
import { directoryProblem } from '../../util/safe-fs.ts';
import type { OperationOptions } from '../../util/deadline.ts';
import type { SavedHelper } from '../helpers/helper-set.ts';
import { HelperSet } from '../helpers/helper-set.ts';
import { isManagedVirtioFs } from '../helpers/virtiofsd.ts';
import { virtiofsdArgs } from '../helpers/virtiofsd-flavour.ts';
import { isProcessAlive, readCmdline, readExe, readNetnsInode, readUids } from '../process/proc-fs.ts';
import { AdoptedProcess } from '../process/vmm-process.ts';
import type { UidLeaseStore } from '../identity/uid-leases.ts';
import { runtimePaths } from '../runtime-paths.ts';
import { readStateFile, type SavedVmState } from '../state-file.ts';
import { VmHome } from './home.ts';
import { planVm, virtiofsdOf, type LaunchPlan } from './plan.ts';
import type { VirtioFsDeviceConfig } from '../../hypervisor/config/index.ts';
import { VmSession, type SessionOptions } from './session.ts';

export interface Adopted {
  plan: LaunchPlan;
  saved: SavedVmState;
  session: VmSession;
}

export async function adoptVm(dir: string, leases: UidLeaseStore, options: SessionOptions & OperationOptions): Promise<Adopted> {
  const fail = (why: string, cause?: unknown): never => {
    throw new AttachError(dir, why, cause === undefined ? {} : { cause });
  };
  checkDirectory(dir, fail);
  const paths = runtimePaths(dir);
  let saved: SavedVmState;
  try {
    saved = await readStateFile(paths.stateFile);
  } catch (error) {
    const missing = (error as NodeJS.ErrnoException).code === 'ENOENT';
    return fail(missing ? 'no state file (was the VM started?)' : `the state file is not valid: ${(error as Error).message}`, error);
  }
  let plan: LaunchPlan;
  try {
    plan = planVm(saved.config, dir);
  } catch (error) {
    return fail(`the saved config cannot be launched here: ${(error as Error).message}`, error);
  }
  if (!isProcessAlive(saved.pid, saved.startTime)) fail(`QEMU (pid ${saved.pid}) is no longer running`);
  const qemuProblem = processMismatch(saved.pid, plan.qemuPath, [plan.qemuPath, ...plan.argv.args], saved.identity?.uid ?? process.geteuid?.());
  if (qemuProblem) fail(`pid ${saved.pid} is not this VM's QEMU: ${qemuProblem}`);
  const netnsProblem = netnsMismatch(saved.pid, plan.config.runtime.netns);
  if (netnsProblem) fail(`pid ${saved.pid} is not this VM's QEMU: ${netnsProblem}`);
  if (saved.qemuPath !== plan.qemuPath) fail(`the state file names QEMU ${saved.qemuPath}, the config resolves to ${plan.qemuPath}`);
  // A hot-plugged share's daemon is checked against the device the state file recorded.
  const shares = [...plan.config.devices, ...saved.hotplug.devices.map((d) => d.device)].filter(isManagedVirtioFs);
  if (saved.helpers.length > 0) plan.virtiofsdPath ??= virtiofsdOrNothing(plan.config);
  for (const helper of saved.helpers) {
    const problem = helperMismatch(helper, plan, shares);
    if (problem) fail(`helper ${helper.name} for ${helper.deviceId} (pid ${helper.pid}): ${problem}`);
  }
  const home = await VmHome.adopt(plan.config, paths, saved.identity ?? undefined, saved.leased, leases, options).catch((error: unknown) =>
    fail(`its uid lease cannot be taken over: ${(error as Error).message}`, error),
  );
  const qemu = new AdoptedProcess(saved.pid, saved.startTime, paths.stderrFile);
  const session = new VmSession(qemu, HelperSet.adopt(saved.helpers, paths), home, options);
  return { plan, saved, session };
}

/** Our own directory, closed to other writers (as VmHome makes it). */
function checkDirectory(dir: string, fail: (why: string) => never): void {
  let stat;
  try {
    stat = lstatSync(dir);
  } catch {
    fail('the runtime directory does not exist');
    return;
  }
  const problem = directoryProblem(stat);
  if (problem) fail(`the runtime directory ${problem}`);
}

/** Why `pid` is not the process that `argv` started as `uid`, or undefined when it is. */
function processMismatch(pid: number, exe: string, argv: readonly string[], uid: number | undefined): string | undefined {
  const actualExe = readExe(pid);
  if (actualExe !== exe) return `it runs ${actualExe ?? '(unreadable)'}, not ${exe}`;
  const cmdline = readCmdline(pid);
  if (!cmdline || cmdline.length !== argv.length || cmdline.some((arg, i) => arg !== argv[i])) return 'its command line is not the one this config builds';
  const uids = readUids(pid);
  if (uid !== undefined && (!uids || uids.some((u) => u !== uid))) return `it runs as uid ${uids?.join('/') ?? '?'}, not ${uid}`;
  return undefined;
}

/** QEMU must still be in the namespace the config names (planVm has checked that the file is one). */
function netnsMismatch(pid: number, netns: string | undefined): string | undefined {
  if (netns === undefined) return undefined;
  const inQemu = readNetnsInode(pid);
  let expected: number;
  try {
    expected = statSync(netns).ino;
  } catch (error) {
    return `its network namespace ${netns} cannot be read (${(error as NodeJS.ErrnoException).code ?? String(error)})`;
  }
  return inQemu === expected ? undefined : `it runs in another network namespace than ${netns}`;
}

function virtiofsdOrNothing(config: LaunchPlan['config']): string | undefined {
  try {
    return virtiofsdOf(config);
  } catch {
    return undefined;
  }
}

function helperMismatch(helper: SavedHelper, plan: LaunchPlan, shares: readonly (VirtioFsDeviceConfig & { sharedDir: string })[]): string | undefined {
  const device = shares.find((d) => d.id === helper.deviceId);
  if (!device) return 'the config has no such virtio-fs device';
  if (plan.virtiofsdPath !== helper.binary) return `the state file names ${helper.binary}, the config resolves to ${plan.virtiofsdPath ?? 'nothing'}`;
  if (!isProcessAlive(helper.pid, helper.startTime)) return 'it is no longer running';
  // virtiofsd runs as root (the user the library runs as): its own sandbox drops what it must.
  // Started with the options of its flavour: either form is this device's daemon (an upgrade may
  // have replaced the binary's flavour since).
  const socket = plan.paths.virtiofsSocket(device.id);
  const mismatch = (flavour: 'rust' | 'c') => processMismatch(helper.pid, helper.binary, [helper.binary, ...virtiofsdArgs(device, socket, flavour)], process.geteuid?.());
  const asC = mismatch('c');
  return asC === undefined ? undefined : mismatch('rust') === undefined ? undefined : asC;
}
