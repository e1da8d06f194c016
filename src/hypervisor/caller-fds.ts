// File descriptors a caller hands over in a device's config (a tap or macvtap per queue, vhost-net
// fds, a disk image): each must be open in this process with the access QEMU will use, checked
// before anything is started or sent, so that a mistake is a ConfigError naming the field instead
// of QEMU's "Bad file descriptor" halfway through a hotplug. Backend-neutral: the mock checks the same.
import { readFileSync } from 'node:fs';
import { ConfigError, type ConfigIssue } from './config/index.ts';
import type { DeviceConfig, SandboxConfig } from './config/index.ts';

type Access = 'read' | 'read-write';

export interface CallerFd {
  /** The field that names it, relative to the device (e.g. "tap.fds[1]"). */
  field: string;
  fd: number;
  access: Access;
}

/** The fds `device` hands over, in the order they are passed. */
export function callerFds(device: DeviceConfig): CallerFd[] {
  if (device.type === 'block' && device.fd !== undefined) return [{ field: 'fd', fd: device.fd, access: device.readOnly ? 'read' : 'read-write' }];
  if (device.type !== 'net') return [];
  const { tap } = device;
  if ('fd' in tap) return [{ field: 'tap.fd', fd: tap.fd, access: 'read-write' }];
  if (!('fds' in tap)) return [];
  return [
    ...tap.fds.map((fd, i) => ({ field: `tap.fds[${i}]`, fd, access: 'read-write' as const })),
    ...(tap.vhostFds ?? []).map((fd, i) => ({ field: `tap.vhostFds[${i}]`, fd, access: 'read-write' as const })),
  ];
}

/** Throws ConfigError naming (under `prefix`) every fd of `device` that is not open, or open with other access than QEMU needs. */
export function assertCallerFdsUsable(device: DeviceConfig, prefix: string): void {
  const issues = fdIssues(device, prefix);
  if (issues.length > 0) throw new ConfigError(issues);
}

/** The same for every cold-plugged device of a config (at createVM: the fds reach QEMU at start). */
export function assertConfigFdsUsable(config: SandboxConfig): void {
  const issues = config.devices.flatMap((device, i) => fdIssues(device, `devices[${i}].`));
  if (issues.length > 0) throw new ConfigError(issues);
}

function fdIssues(device: DeviceConfig, prefix: string): ConfigIssue[] {
  return callerFds(device).flatMap(({ field, fd, access }) => {
    const problem = fdProblem(fd, access);
    return problem ? [{ path: `${prefix}${field}`, message: problem }] : [];
  });
}

/** O_ACCMODE of each access mode, as /proc/self/fdinfo shows the flags (octal). */
const ACCESS_MODE: Record<Access, number> = { read: 0, 'read-write': 2 };
const MODE_NAMES = ['O_RDONLY', 'O_WRONLY', 'O_RDWR'];

function fdProblem(fd: number, access: Access): string | undefined {
  let info: string;
  try {
    info = readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
  } catch {
    return `fd ${fd} is not open in this process`;
  }
  const flags = /^flags:\s*([0-7]+)$/m.exec(info)?.[1];
  if (flags === undefined) return undefined;
  const mode = parseInt(flags, 8) & 3;
  const wanted = ACCESS_MODE[access];
  if (mode === wanted) return undefined;
  // QEMU opens a disk's fd set with the disk's own access mode, and takes only an fd of that mode.
  return `fd ${fd} is open ${MODE_NAMES[mode] ?? `with mode ${mode}`}, but must be open ${MODE_NAMES[wanted]}${access === 'read' ? ' (a readOnly disk)' : ''}`;
}
