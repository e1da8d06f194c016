// The helper daemons of one VM (today: virtiofsd per virtio-fs sharedDir). They start before QEMU,
// are listed after it by getPids, stop after it, and are saved for re-attach. A helper that dies
// while the VM runs takes the VM with it (the guest's file system would hang otherwise), as Kata
// stops a sandbox whose virtiofsd quit.
import type { SandboxConfig } from '../../hypervisor/config/index.ts';
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
}

/** What starting the helpers needs beyond the config. */
export interface HelperLaunch {
  launcher: string;
  /** virtiofsd's absolute path, resolved at createVM; undefined when no device needs it. */
  virtiofsd: string | undefined;
  qemuUser: VmIdentity | undefined;
  logger: Logger;
  signal: AbortSignal;
}

const TERM_WAIT_MS = 2_000;

export class HelperSet {
  readonly #helpers: Helper[] = [];

  /** Starts every helper the config needs, in order; on failure the ones started are stopped. */
  async startAll(config: SandboxConfig, paths: RuntimePaths, launch: HelperLaunch): Promise<void> {
    try {
      for (const device of config.devices.filter(isManagedVirtioFs)) {
        const binary = launch.virtiofsd;
        if (!binary) throw new Error('virtiofsd was not resolved at createVM');
        const process = await startVirtiofsd({
          device,
          paths,
          binary,
          flavour: await virtiofsdFlavour(binary),
          launcher: launch.launcher,
          qemuUser: launch.qemuUser,
          detached: config.runtime.detached,
          netns: config.runtime.netns,
          logger: launch.logger.child({ component: 'virtiofsd', device: device.id }),
          signal: launch.signal,
        });
        const socket = paths.virtiofsSocket(device.id);
        this.#helpers.push({ name: 'virtiofsd', deviceId: device.id, binary, process, cleanup: () => removeVirtiofsdPidFile(socket) });
      }
    } catch (error) {
      await this.stopAll();
      throw error;
    }
  }

  /** Pids of the helpers still running. */
  pids(): number[] {
    return this.#helpers.filter((h) => !h.process.hasExited).map((h) => h.process.pid);
  }

  /** Calls `onExit` for each helper that ends from now on (the caller knows whether it expected it). */
  watch(onExit: (helper: { name: string; deviceId: string; stderrTail: string }, exit: ProcessExit) => void): void {
    for (const helper of this.#helpers) {
      void helper.process.exited.then((exit) => onExit({ name: helper.name, deviceId: helper.deviceId, stderrTail: helper.process.stderrTail() }, exit));
    }
  }

  /** SIGTERM, a short wait, then SIGKILL; resolves once every helper is gone. */
  async stopAll(): Promise<void> {
    await Promise.all(
      this.#helpers.map(async ({ process, cleanup }) => {
        if (!process.hasExited) {
          process.signal('SIGTERM');
          const exited = await Promise.race([process.exited, sleep(TERM_WAIT_MS).then(() => undefined)]);
          if (!exited && !(await killAndWait(process))) return;
        }
        cleanup();
      }),
    );
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
