// Can the hypervisor's user reach the host paths it will open? Root cannot ask access(2) on another
// uid's behalf, so the answer is computed from stat() of each path component: owner, group and mode
// against the VM's uid, gid and supplementary groups, as the kernel's DAC check does for a process
// without capabilities (QEMU runs with none). POSIX ACLs, LSMs (SELinux, AppArmor) and read-only
// mounts are not modelled: a path they deny still fails in QEMU with its own message. Nothing is
// opened: stat() follows symlinks as QEMU's open() would, and a path that does not exist is left
// for QEMU to report.
import { statSync, realpathSync, type Stats } from 'node:fs';
import { dirname } from 'node:path';
import type { HotplugDeviceConfig, DeviceConfig, SandboxConfig } from './config/index.ts';
import { ConfigError, hotplugDeviceSchema, type ConfigIssue } from './config/index.ts';
import type { VmIdentity } from './types.ts';

/**
 * How the hypervisor opens a path: a file read or read-write, a unix socket connected to, a directory
 * listed or written into, or a file it may create: appended to (a log), or read-write (memory
 * backing, where a directory means a file QEMU creates in it).
 */
export type AccessMode = 'read' | 'read-write' | 'connect' | 'dir-read' | 'dir-write' | 'append' | 'create-rw';

/** One path the hypervisor opens by name, and the config field that makes it do so. */
export interface PathNeed {
  field: string;
  path: string;
  mode: AccessMode;
}

type Creating = 'append' | 'create-rw';
const R = 4;
const W = 2;
const X = 1;
/** The permission bits each mode needs on the path itself. */
const BITS: Record<Exclude<AccessMode, Creating>, number> = { read: R, 'read-write': R | W, connect: W, 'dir-read': R | X, 'dir-write': R | W | X };

/** Every path QEMU opens by name at start, keyed by the field that names it (device fds are not paths). */
export function startPathNeeds(config: SandboxConfig): PathNeed[] {
  const needs: PathNeed[] = [{ field: 'boot.kernel', path: config.boot.kernel, mode: 'read' }];
  if (config.boot.initrd) needs.push({ field: 'boot.initrd', path: config.boot.initrd, mode: 'read' });
  if (config.boot.image) needs.push({ field: 'boot.image', path: config.boot.image, mode: 'read' });
  if (config.machine.accel === 'kvm') needs.push({ field: 'machine.accel', path: '/dev/kvm', mode: 'read-write' });
  if (config.console.logFile) needs.push({ field: 'console.logFile', path: config.console.logFile, mode: 'append' });
  const backing = config.memory.backing;
  if (backing.type === 'file') needs.push({ field: 'memory.backing.path', path: backing.path, mode: 'create-rw' });
  if (backing.type === 'hugepages') needs.push({ field: 'memory.backing.path', path: backing.path, mode: 'dir-write' });
  config.devices.forEach((device, index) => needs.push(...devicePathNeeds(device, `devices[${index}]`)));
  return needs;
}

/** The paths QEMU opens for one device; `field` prefixes each field (`devices[2]`, or `device` for hotplug). */
export function devicePathNeeds(device: DeviceConfig | HotplugDeviceConfig, field: string): PathNeed[] {
  switch (device.type) {
    case 'block':
      return device.path === undefined ? [] : [{ field: `${field}.path`, path: device.path, mode: device.readOnly ? 'read' : 'read-write' }];
    case 'net': {
      const needs: PathNeed[] = [];
      if ('ifname' in device.tap) needs.push({ field: `${field}.tap.ifname`, path: '/dev/net/tun', mode: 'read-write' });
      const ownVhost = 'fds' in device.tap && device.tap.vhostFds !== undefined;
      if (device.vhost && !ownVhost) needs.push({ field: `${field}.vhost`, path: '/dev/vhost-net', mode: 'read-write' });
      return needs;
    }
    case 'vsock':
      return [{ field: `${field}.type`, path: '/dev/vhost-vsock', mode: 'read-write' }];
    case 'fs':
      // QEMU opens the shared directory itself; what the guest may write inside is decided per file, later.
      if (device.driver === '9p') return [{ field: `${field}.path`, path: device.path, mode: 'dir-read' }];
      // connect() to a unix socket needs write permission on it; a sharedDir is virtiofsd's, not QEMU's.
      return device.socketPath === undefined ? [] : [{ field: `${field}.socketPath`, path: device.socketPath, mode: 'connect' }];
    case 'rng':
      return [{ field: `${field}.source`, path: device.source, mode: 'read' }];
    default:
      return [];
  }
}

/**
 * The paths QEMU opens for a device about to be hot-plugged, its fields under `device`. A device
 * that does not validate needs none here: the backend's own validation refuses it with its error.
 */
export function hotplugPathNeeds(input: unknown): PathNeed[] {
  const parsed = hotplugDeviceSchema.safeParse(input);
  return parsed.success ? devicePathNeeds(parsed.data, 'device') : [];
}

/**
 * Throws a ConfigError listing each path `identity` cannot reach, by field; an undefined identity
 * (QEMU runs as this process's user, whose own open() will say it) checks nothing.
 */
export function assertPathsReachable(needs: readonly PathNeed[], identity: VmIdentity | undefined, problem?: AccessProblemFn): void {
  if (identity === undefined) return;
  // The paths of one start share their directories (a kernel and its initrd side by side): within
  // one check each is stat'ed once. Never across checks: the host may change between two starts.
  const statOnce = memoized(statSync);
  const check = problem ?? ((path: string, mode: AccessMode, who: VmIdentity) => accessProblem(path, mode, who, statOnce));
  const issues: ConfigIssue[] = [];
  for (const need of needs) {
    const why = check(need.path, need.mode, identity);
    if (why !== undefined) issues.push({ path: need.field, message: why });
  }
  if (issues.length > 0) throw new ConfigError(issues);
}

/** How `accessProblem` reads a path's metadata (`fs.statSync` by default). */
export type StatFn = (path: string) => Stats;

/** `stat`, answering each path once: its Stats, or the same error again. */
function memoized(stat: StatFn): StatFn {
  const seen = new Map<string, { stats: Stats } | { error: unknown }>();
  return (path) => {
    let entry = seen.get(path);
    if (entry === undefined) {
      try {
        entry = { stats: stat(path) };
      } catch (error) {
        entry = { error };
      }
      seen.set(path, entry);
    }
    if ('error' in entry) throw entry.error;
    return entry.stats;
  };
}
/** accessProblem's shape, for a backend that answers from elsewhere (the mock's host probe). */
export type AccessProblemFn = (path: string, mode: AccessMode, identity: VmIdentity) => string | undefined;

/**
 * Why `identity` cannot open `path` with `mode`, or undefined when it can (or when the path is
 * missing: QEMU's own error says so). The message is whole: "QEMU runs as uid N (gid G) and cannot …".
 */
export function accessProblem(path: string, mode: AccessMode, identity: VmIdentity, stat: StatFn = statSync): string | undefined {
  const who = `QEMU runs as uid ${identity.uid} (gid ${identity.gid}${identity.groups.length > 0 ? `, groups ${identity.groups.join(',')}` : ''})`;
  const creating = mode === 'append' || mode === 'create-rw';
  const verb = mode === 'read' || mode === 'dir-read' ? 'read' : creating ? 'create or write' : 'write';
  const cannot = (why: string) => `${who} and cannot ${verb} ${path}: ${why}`;
  const target = lookup(path, stat);
  if (target === 'missing' && !creating) return undefined;
  // A file that is not there yet is created in its directory: that must be searchable and writable.
  const created = target === 'missing';
  const searched = searchProblem(created ? dirname(path) : path, identity, stat);
  if (searched) return cannot(searched);
  if (created) {
    const parent = lookup(dirname(path), stat);
    if (parent === 'missing') return undefined;
    return allowed(parent, identity, W | X) ? undefined : cannot(`it does not exist, and its directory ${dirname(path)} is ${describe(parent)}, not writable by that user`);
  }
  const bits = !creating ? BITS[mode] : target.isDirectory() ? W | X : mode === 'append' ? W : R | W;
  if (allowed(target, identity, bits)) return undefined;
  return cannot(`it is ${describe(target)}`);
}

/** The first directory on the way to `path` (as given, then as resolved) that `identity` may not search. */
function searchProblem(path: string, identity: VmIdentity, stat: StatFn): string | undefined {
  const routes = [path];
  try {
    // One realpath(3) call; the JS realpathSync lstat()s every component itself.
    const real = realpathSync.native(path);
    if (real !== path) routes.push(real);
  } catch {
    // Unresolvable: the walk along the given path is what can be said.
  }
  for (const route of routes) {
    for (const dir of ancestors(route)) {
      const info = lookup(dir, stat);
      if (info === 'missing') return undefined;
      if (!allowed(info, identity, X)) return `the directory ${dir} is ${describe(info)}, without search (x) permission for that user`;
    }
  }
  return undefined;
}

/** "/a/b/c" → ["/", "/a", "/a/b"]. */
function ancestors(path: string): string[] {
  const parts = path.split('/').filter((part) => part !== '');
  const dirs = ['/'];
  for (let i = 1; i < parts.length; i++) dirs.push(`/${parts.slice(0, i).join('/')}`);
  return dirs;
}

function lookup(path: string, stat: StatFn): Stats | 'missing' {
  try {
    return stat(path);
  } catch {
    return 'missing';
  }
}

/** The kernel's DAC rule: the owner class if the uid owns it, else the group class if any group matches, else other. */
function allowed(info: Stats, identity: VmIdentity, bits: number): boolean {
  const klass = info.uid === identity.uid ? 6 : info.gid === identity.gid || identity.groups.includes(info.gid) ? 3 : 0;
  return ((info.mode >> klass) & bits) === bits;
}

function describe(info: Stats): string {
  return `mode ${(info.mode & 0o7777).toString(8).padStart(4, '0')}, owner ${info.uid}:${info.gid}`;
}
