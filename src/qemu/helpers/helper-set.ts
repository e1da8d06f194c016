// The helper daemons of one VM (today: virtiofsd per virtio-fs sharedDir). A cold share's starts
// before QEMU, a hot-plugged one's at its hot-plug (and stops at its removal); all are listed after
// QEMU by getPids, stop after it, and are saved for re-attach. A helper that dies
// while the VM runs takes the VM with it (the guest's file system would hang otherwise), as Kata
// stops a sandbox whose virtiofsd quit.
import { lstatSync, unlinkSync } from 'node:fs';
import type { SandboxConfig, VirtioFsDeviceConfig } from '../../hypervisor/config/index.ts';
import { sleep } from '../../util/deadline.ts';
import type { Logger } from '../../util/logger.ts';
import { AdoptedProcess, killAndWait, type ProcessExit, type VmmProcess } from '../process/vmm-process.ts';
import type { RuntimePaths } from '../runtime-paths.ts';
import type { VmIdentity } from '../../hypervisor/types.ts';
import { isManagedVirtioFs, removeVirtiofsdPidFile, startVirtiofsd } from './virtiofsd.ts';
import { virtiofsdFlavour } from './virtiofsd-flavour.ts';

/** What the state file keeps of a helper. */
export interface SavedHelper {
  name: string;
  deviceId: string;
  pid: number;
  startTime: number;
  /** The executable, checked against /proc/<pid>/exe before a new owner adopts the helper. */
  binary: string;
}

interface Helper {
  name: string;
  deviceId: string;
  binary: string;
  process: VmmProcess;
  /** What the daemon leaves behind outside the VM's directory, removed once it is gone. */
  cleanup: () => void;
  /** Its removal was asked for (a hot-plugged share going away): its exit is no failure. */
  stopping?: boolean;
}

/** What starting the helpers needs beyond the config. */
export interface HelperLaunch {
  launcher: string;
  /** virtiofsd's absolute path, resolved at createVM (or at the first hot-plugged share); undefined when no device needs it. */
  virtiofsd: string | undefined;
  qemuUser: VmIdentity | undefined;
  /** The VM's config: its runtime.detached and runtime.netns apply to helpers as to QEMU. */
  runtime: Pick<SandboxConfig['runtime'], 'detached' | 'netns'>;
  logger: Logger;
  signal: AbortSignal;
}

type ExitWatcher = (helper: { name: string; deviceId: string; stderrTail: string }, exit: ProcessExit) => void;

const TERM_WAIT_MS = 2_000;

export class HelperSet {
  readonly #helpers: Helper[] = [];
  #watcher: ExitWatcher | undefined;

  /** Starts every helper the config needs, in order; on failure the ones started are stopped. */
  async startAll(config: SandboxConfig, paths: RuntimePaths, launch: HelperLaunch): Promise<void> {
    try {
      for (const device of config.devices.filter(isManagedVirtioFs)) await this.add(device, paths, launch);
    } catch (error) {
      await this.stopAll();
      throw error;
    }
  }

  /**
   * Starts the virtiofsd of one share (cold at start, or hot-plugged) and resolves once its socket
   * is QEMU's to connect to. Watched like the others from then on.
   */
  async add(device: VirtioFsDeviceConfig & { sharedDir: string }, paths: RuntimePaths, launch: HelperLaunch): Promise<void> {
    const binary = launch.virtiofsd;
    if (!binary) throw new Error('virtiofsd was not resolved');
    const process = await startVirtiofsd({
      device,
      paths,
      binary,
      flavour: await virtiofsdFlavour(binary),
      launcher: launch.launcher,
      qemuUser: launch.qemuUser,
      detached: launch.runtime.detached,
      netns: launch.runtime.netns,
      logger: launch.logger.child({ component: 'virtiofsd', device: device.id }),
      signal: launch.signal,
    });
    const socket = paths.virtiofsSocket(device.id);
    const helper: Helper = { name: 'virtiofsd', deviceId: device.id, binary, process, cleanup: () => removeVirtiofsdPidFile(socket) };
    this.#helpers.push(helper);
    this.#watchOne(helper);
  }

  /** Whether a helper runs for this device. */
  has(deviceId: string): boolean {
    return this.#helpers.some((h) => h.deviceId === deviceId);
  }

  /**
   * Stops the helper of one device (its share was removed, or its hot-plug rolled back) and removes
   * what it leaves: its pid file and its socket. Its exit is expected, not a failure of the VM.
   */
  async stop(deviceId: string, paths: RuntimePaths): Promise<void> {
    const helper = this.#helpers.find((h) => h.deviceId === deviceId);
    if (helper) {
      helper.stopping = true;
      if (!(await stopHelper(helper))) throw new Error(`${helper.name} for ${deviceId} (pid ${helper.process.pid}) survived SIGKILL`);
      this.#helpers.splice(this.#helpers.indexOf(helper), 1);
    }
    // The VM's directory is root's alone: what is there is the daemon's socket, never a planted link.
    removeSocket(paths.virtiofsSocket(deviceId));
  }

  /** Pids of the helpers still running. */
  pids(): number[] {
    return this.#helpers.filter((h) => !h.process.hasExited).map((h) => h.process.pid);
  }

  /** Calls `onExit` for each helper that ends from now on, unless its removal was asked for (the caller knows whether it expected the rest). */
  watch(onExit: ExitWatcher): void {
    this.#watcher = onExit;
    for (const helper of this.#helpers) this.#watchOne(helper);
  }

  #watchOne(helper: Helper): void {
    const onExit = this.#watcher;
    if (!onExit) return;
    void helper.process.exited.then((exit) => {
      if (!helper.stopping) onExit({ name: helper.name, deviceId: helper.deviceId, stderrTail: helper.process.stderrTail() }, exit);
    });
  }

  /** SIGTERM, a short wait, then SIGKILL; resolves once every helper is gone. */
  async stopAll(): Promise<void> {
    await Promise.all(this.#helpers.map((helper) => stopHelper(helper)));
  }

  saved(): SavedHelper[] {
    return this.#helpers.map((h) => ({ name: h.name, deviceId: h.deviceId, pid: h.process.pid, startTime: h.process.startTime ?? -1, binary: h.binary }));
  }

  /** The helpers of a VM another process started, watched through /proc. */
  static adopt(saved: readonly SavedHelper[], paths: RuntimePaths): HelperSet {
    const set = new HelperSet();
    for (const h of saved) {
      const socket = paths.virtiofsSocket(h.deviceId);
      set.#helpers.push({
        name: h.name,
        deviceId: h.deviceId,
        binary: h.binary,
        process: new AdoptedProcess(h.pid, h.startTime, paths.helperStderr(h.deviceId)),
        cleanup: () => removeVirtiofsdPidFile(socket),
      });
    }
    return set;
  }
}

/** SIGTERM, a short wait, then SIGKILL; true once the helper is gone (and its leftovers removed). */
async function stopHelper({ process, cleanup }: Helper): Promise<boolean> {
  if (!process.hasExited) {
    process.signal('SIGTERM');
    const exited = await Promise.race([process.exited, sleep(TERM_WAIT_MS).then(() => undefined)]);
    if (!exited && !(await killAndWait(process))) return false;
  }
  cleanup();
  return true;
}

function removeSocket(path: string): void {
  try {
    if (lstatSync(path).isSocket()) unlinkSync(path);
  } catch {
    // Not there: the daemon never made it, or removed it itself.
  }
}
