import { join } from 'node:path';
import { ConfigError, MAX_SOCKET_PATH_BYTES, type SandboxConfig } from '../hypervisor/config/index.ts';
import { isManagedVirtioFs } from './helpers/virtiofsd.ts';

/**
 * Every file a VM owns lives in one directory that root owns and QEMU can only traverse (to reach
 * virtiofsd's socket): QEMU can create, rename or replace nothing in it. These are their names.
 */
export interface RuntimePaths {
  dir: string;
  /** Listening sockets the launcher creates as root; QEMU holds them as fds. */
  qmpSocket: string;
  consoleSocket: string;
  /** Saved config and device state, read back when another process re-attaches. */
  stateFile: string;
  /** Which runtime process owns the VM (pid and start time), for the orphan sweep. */
  ownerFile: string;
  /** QEMU's stderr when the VM is detached (a pipe to a dead parent would break). */
  stderrFile: string;
  /** The unix socket behind a virtio-serial channel device with this id. */
  channelSocket(deviceId: string): string;
  /** The vhost-user socket of the virtiofsd the backend runs for a virtio-fs device. */
  virtiofsSocket(deviceId: string): string;
  /** Where a helper daemon's stderr goes when the VM is detached. */
  helperStderr(deviceId: string): string;
}

/** The paths of the files a VM keeps in its runtime directory `dir` (`vm.runtimeDir`). */
export function runtimePaths(dir: string): RuntimePaths {
  return {
    dir,
    qmpSocket: join(dir, 'qmp.sock'),
    consoleSocket: join(dir, 'console.sock'),
    stateFile: join(dir, 'state.json'),
    ownerFile: join(dir, 'owner.json'),
    stderrFile: join(dir, 'qemu.stderr'),
    channelSocket: (deviceId) => join(dir, `ch-${deviceId}.sock`),
    virtiofsSocket: (deviceId) => join(dir, `fs-${deviceId}.sock`),
    helperStderr: (deviceId) => join(dir, `helper-${deviceId}.stderr`),
  };
}

/** A socket made for a device while the VM runs must fit in sun_path too; ConfigError names `field`. */
export function checkSocketPath(socket: string, field: string): void {
  if (Buffer.byteLength(socket) > MAX_SOCKET_PATH_BYTES) {
    throw new ConfigError([{ path: field, message: `socket path ${socket} is longer than ${MAX_SOCKET_PATH_BYTES} bytes (a shorter id or runtime.dir makes it fit)` }]);
  }
}

/** Every unix socket of the VM must fit in sun_path. */
export function checkSocketPaths(config: SandboxConfig, paths: RuntimePaths, defaulted: boolean): void {
  const sockets = [
    paths.qmpSocket,
    paths.consoleSocket,
    ...config.devices.filter((d) => d.type === 'channel').map((d) => paths.channelSocket(d.id)),
    ...config.devices.filter(isManagedVirtioFs).map((d) => paths.virtiofsSocket(d.id)),
  ];
  const tooLong = sockets.find((s) => Buffer.byteLength(s) > MAX_SOCKET_PATH_BYTES);
  if (tooLong) {
    const hint = defaulted ? ' (the default runtime directory is too deep here: set runtime.dir to a short path)' : '';
    throw new ConfigError([
      { path: 'runtime.dir', message: `socket path ${tooLong} is longer than ${MAX_SOCKET_PATH_BYTES} bytes${hint}` },
    ]);
  }
}
