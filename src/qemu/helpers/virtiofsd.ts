// virtiofsd, the helper daemon behind a virtio-fs device with a sharedDir: started before QEMU (QEMU
// connects to its socket at start), as the user the library runs as (it needs root for its own
// sandbox), bound to its owner like QEMU, and its socket handed to the user QEMU runs as.
import { chownSync, existsSync } from 'node:fs';
import type { VirtioFsDeviceConfig } from '../../hypervisor/config/index.ts';
import { HelperError } from '../../hypervisor/errors.ts';
import { sleep } from '../../util/deadline.ts';
import type { Logger } from '../../util/logger.ts';
import type { RuntimePaths } from '../runtime-paths.ts';
import { SpawnedProcess, type DropPrivileges, type VmmProcess } from '../process/vmm-process.ts';

/** Where distributions put it: the Rust virtiofsd in /usr/libexec, Debian 12's C one with QEMU. */
const CANDIDATES = ['/usr/libexec/virtiofsd', '/usr/lib/qemu/virtiofsd', '/usr/bin/virtiofsd'];
const SOCKET_POLL_MS = 5;

export interface VirtiofsdSpec {
  device: VirtioFsDeviceConfig & { sharedDir: string };
  paths: RuntimePaths;
  /** The configured binary, else the first candidate that exists. */
  binary: string | undefined;
  /** QEMU's user, who must be able to connect to the socket. */
  qemuUser: DropPrivileges | undefined;
  detached: boolean;
  logger: Logger;
  signal: AbortSignal;
}

export function isManagedVirtioFs(device: { type: string; driver?: string; sharedDir?: string | undefined }): device is VirtioFsDeviceConfig & { sharedDir: string } {
  return device.type === 'fs' && device.driver === 'virtio-fs' && device.sharedDir !== undefined;
}

/** The options both the C and the Rust virtiofsd accept. */
export function virtiofsdArgs(device: VirtiofsdSpec['device'], socket: string): string[] {
  return [`--socket-path=${socket}`, '-o', `source=${device.sharedDir}`, '-o', `cache=${device.cache ?? 'auto'}`];
}

export function findVirtiofsd(configured: string | undefined): string | undefined {
  return configured ?? CANDIDATES.find((path) => existsSync(path));
}

/** Starts virtiofsd and resolves once its socket exists and QEMU's user may use it. */
export async function startVirtiofsd(spec: VirtiofsdSpec): Promise<VmmProcess> {
  const { device, paths } = spec;
  if (!spec.binary) throw new HelperError('virtiofsd', device.id, `is not installed (looked in ${CANDIDATES.join(', ')}; set runtime.virtiofsdPath)`);
  const socket = paths.virtiofsSocket(device.id);
  const proc = SpawnedProcess.spawn({
    file: spec.binary,
    args: virtiofsdArgs(device, socket),
    passFds: [],
    user: undefined,
    detached: spec.detached,
    stderrFile: paths.helperStderr(device.id),
    logger: spec.logger,
  });
  try {
    while (!existsSync(socket)) {
      if (proc.hasExited) {
        const exit = await proc.exited;
        throw new HelperError('virtiofsd', device.id, 'exited before it was ready', { ...exit, stderrTail: proc.stderrTail() });
      }
      await sleep(SOCKET_POLL_MS, spec.signal);
    }
    if (spec.qemuUser) chownSync(socket, spec.qemuUser.uid, spec.qemuUser.gid);
  } catch (error) {
    proc.signal('SIGKILL');
    await proc.exited;
    throw error;
  }
  spec.logger.debug({ pid: proc.pid, socket }, 'virtiofsd ready');
  return proc;
}
