// virtiofsd, the helper daemon behind a virtio-fs device with a sharedDir: started before QEMU (QEMU
// connects to its socket at start), as the user the library runs as (it needs root for its own
// sandbox), through the same launcher as QEMU (no inherited fd, no environment, no-new-privs,
// bound to its owner), and its socket handed to the user QEMU runs as.
import { existsSync, lchownSync, lstatSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { VirtioFsDeviceConfig } from '../../hypervisor/config/index.ts';
import { HelperError } from '../../hypervisor/errors.ts';
import { sleep } from '../../util/deadline.ts';
import type { Logger } from '../../util/logger.ts';
import type { RuntimePaths } from '../runtime-paths.ts';
import { SpawnedProcess, type VmmProcess } from '../process/vmm-process.ts';
import type { VmIdentity } from '../../hypervisor/types.ts';
import type { LaunchSpec } from '../launch/launcher.ts';
import { virtiofsdArgs, type VirtiofsdFlavour } from './virtiofsd-flavour.ts';

/** Where distributions put it: the Rust virtiofsd in /usr/libexec, Debian 12's C one with QEMU. */
const CANDIDATES = ['/usr/libexec/virtiofsd', '/usr/lib/qemu/virtiofsd', '/usr/bin/virtiofsd'];
const SOCKET_POLL_MS = 5;
const C_VIRTIOFSD_PID_DIR = '/run/virtiofsd';

export interface VirtiofsdSpec {
  device: VirtioFsDeviceConfig & { sharedDir: string };
  paths: RuntimePaths;
  /** Its absolute path, resolved at createVM. */
  binary: string;
  /** Which virtiofsd it is (its --help tells): the form its options take. */
  flavour: VirtiofsdFlavour;
  launcher: string;
  /** QEMU's user, who must be able to connect to the socket. */
  qemuUser: VmIdentity | undefined;
  detached: boolean;
  /** The pod's network namespace, entered like QEMU's. */
  netns: string | undefined;
  logger: Logger;
  signal: AbortSignal;
}

export function isManagedVirtioFs(device: { type: string; driver?: string; sharedDir?: string | undefined }): device is VirtioFsDeviceConfig & { sharedDir: string } {
  return device.type === 'fs' && device.driver === 'virtio-fs' && device.sharedDir !== undefined;
}


/** The configured binary (a path or a name), else the first usual location that exists. */
export function findVirtiofsd(configured: string | undefined): string | undefined {
  return configured ?? CANDIDATES.find((path) => existsSync(path));
}

export const VIRTIOFSD_CANDIDATES: readonly string[] = CANDIDATES;

/** How the launcher starts virtiofsd: as root, in the pod's network namespace like QEMU. */
export function virtiofsdLaunchSpec(spec: Pick<VirtiofsdSpec, 'device' | 'paths' | 'binary' | 'flavour' | 'detached' | 'netns'>): LaunchSpec {
  const socket = spec.paths.virtiofsSocket(spec.device.id);
  // It keeps root's capabilities: it needs them to build its own sandbox (namespaces, seccomp).
  return { program: spec.binary, args: virtiofsdArgs(spec.device, socket, spec.flavour), fds: [], user: undefined, dropCapabilities: false, dieWithParent: !spec.detached, netns: spec.netns };
}

/** Starts virtiofsd and resolves once its socket exists and QEMU's user may use it. */
export async function startVirtiofsd(spec: VirtiofsdSpec): Promise<VmmProcess> {
  const { device, paths } = spec;
  const socket = paths.virtiofsSocket(device.id);
  const proc = SpawnedProcess.spawn({
    launcher: spec.launcher,
    launch: virtiofsdLaunchSpec(spec),
    detached: spec.detached,
    stderrFile: paths.helperStderr(device.id),
    logger: spec.logger,
  });
  try {
    while (!isSocket(socket)) {
      if (proc.hasExited) {
        const exit = await proc.exited;
        throw new HelperError('virtiofsd', device.id, 'exited before it was ready', { ...exit, stderrTail: proc.stderrTail() });
      }
      await sleep(SOCKET_POLL_MS, spec.signal);
    }
    // The VM's directory is root's alone, so the path cannot have been swapped; lchown all the same.
    if (spec.qemuUser) lchownSync(socket, spec.qemuUser.uid, spec.qemuUser.gid);
  } catch (error) {
    proc.signal('SIGKILL');
    await proc.exited;
    throw error;
  }
  spec.logger.debug({ pid: proc.pid, socket }, 'virtiofsd ready');
  return proc;
}

/**
 * Once the daemon is gone, its pid file: Debian's C virtiofsd leaves /run/virtiofsd/<socket path,
 * '/' as '.'>.pid, the Rust one <socket>.pid beside the socket, in the VM's own directory. Both
 * directories are root's alone (nothing there is QEMU's to plant); only a regular file is removed.
 */
export function removeVirtiofsdPidFile(socket: string): void {
  for (const pidFile of [join(C_VIRTIOFSD_PID_DIR, `${socket.replaceAll('/', '.')}.pid`), `${socket}.pid`]) {
    try {
      if (lstatSync(pidFile).isFile()) unlinkSync(pidFile);
    } catch {
      // None: this flavour did not write one there.
    }
  }
}

function isSocket(path: string): boolean {
  try {
    return lstatSync(path).isSocket();
  } catch {
    return false;
  }
}
