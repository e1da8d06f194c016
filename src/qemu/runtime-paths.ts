import { join } from 'node:path';

/** Every file a VM owns lives in one private runtime directory; these are their names. */
export interface RuntimePaths {
  dir: string;
  qmpSocket: string;
  pidFile: string;
  consoleSocket: string;
  /** Saved config and device state, read back when another process re-attaches. */
  stateFile: string;
  /** The unix socket behind a virtio-serial channel device with this id. */
  channelSocket(deviceId: string): string;
  /** The vhost-user socket of the virtiofsd the backend runs for a virtio-fs device. */
  virtiofsSocket(deviceId: string): string;
  /** Where a helper daemon's stderr goes when the VM is detached. */
  helperStderr(deviceId: string): string;
}

export function runtimePaths(dir: string): RuntimePaths {
  return {
    dir,
    qmpSocket: join(dir, 'qmp.sock'),
    pidFile: join(dir, 'qemu.pid'),
    consoleSocket: join(dir, 'console.sock'),
    stateFile: join(dir, 'state.json'),
    channelSocket: (deviceId) => join(dir, `ch-${deviceId}.sock`),
    virtiofsSocket: (deviceId) => join(dir, `fs-${deviceId}.sock`),
    helperStderr: (deviceId) => join(dir, `helper-${deviceId}.stderr`),
  };
}

/** sun_path holds 108 bytes including the trailing NUL. */
export const MAX_SOCKET_PATH_BYTES = 107;
