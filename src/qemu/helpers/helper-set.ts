// The helper daemons of one VM (today: virtiofsd per virtio-fs sharedDir). They start before QEMU,
// are listed after it by getPids, stop after it, and are saved for re-attach. A helper that dies
// while the VM runs takes the VM with it (the guest's file system would hang otherwise), as Kata
// stops a sandbox whose virtiofsd quit.
import type { SandboxConfig } from '../../hypervisor/config/index.ts';
import { sleep } from '../../util/deadline.ts';
import type { Logger } from '../../util/logger.ts';
import { AdoptedProcess, killAndWait, type DropPrivileges, type ProcessExit, type VmmProcess } from '../process/vmm-process.ts';
import type { RuntimePaths } from '../runtime-paths.ts';
import { findVirtiofsd, isManagedVirtioFs, startVirtiofsd } from './virtiofsd.ts';

/** What the state file keeps of a helper. */
export interface SavedHelper {
  name: string;
  deviceId: string;
  pid: number;
  startTime: number | undefined;
}

interface Helper {
  name: string;
  deviceId: string;
  process: VmmProcess;
}

const TERM_WAIT_MS = 2_000;

export class HelperSet {
  readonly #helpers: Helper[] = [];

  /** Starts every helper the config needs, in order; on failure the ones started are stopped. */
  async startAll(config: SandboxConfig, paths: RuntimePaths, qemuUser: DropPrivileges | undefined, logger: Logger, signal: AbortSignal): Promise<void> {
    const binary = findVirtiofsd(config.runtime.virtiofsdPath);
    try {
      for (const device of config.devices.filter(isManagedVirtioFs)) {
        const process = await startVirtiofsd({
          device,
          paths,
          binary,
          qemuUser,
          detached: config.runtime.detached,
          logger: logger.child({ component: 'virtiofsd', device: device.id }),
          signal,
        });
        this.#helpers.push({ name: 'virtiofsd', deviceId: device.id, process });
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
      this.#helpers.map(async ({ process }) => {
        if (process.hasExited) return;
        process.signal('SIGTERM');
        const exited = await Promise.race([process.exited, sleep(TERM_WAIT_MS).then(() => undefined)]);
        if (!exited) await killAndWait(process);
      }),
    );
  }

  saved(): SavedHelper[] {
    return this.#helpers.map((h) => ({ name: h.name, deviceId: h.deviceId, pid: h.process.pid, startTime: h.process.startTime }));
  }

  /** The helpers of a VM another process started, watched through /proc. */
  static adopt(saved: readonly SavedHelper[], paths: RuntimePaths): HelperSet {
    const set = new HelperSet();
    for (const h of saved) {
      set.#helpers.push({ name: h.name, deviceId: h.deviceId, process: new AdoptedProcess(h.pid, h.startTime, paths.helperStderr(h.deviceId)) });
    }
    return set;
  }
}
