// host-access: whether QEMU's user can reach the paths it opens, computed from stat() of real files
// with real modes and owners (the tests run as root, so they can chown).
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, parseSandboxConfig, validateHotplugDevice } from '../../../src/hypervisor/config/index.ts';
import { accessProblem, assertPathsReachable, devicePathNeeds, hotplugPathNeeds, startPathNeeds } from '../../../src/hypervisor/host-access.ts';
import type { VmIdentity } from '../../../src/hypervisor/types.ts';

const VM: VmIdentity = { uid: 1_900_123_456, gid: 1_900_123_456, groups: [] };
const WHO = `QEMU runs as uid ${VM.uid} (gid ${VM.gid})`;
const OTHER_GROUP = 1_900_123_999;

let dir: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'svmm-access-'));
  chmodSync(dir, 0o755);
});

afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** A file of `owner` (uid:gid) with `mode`. */
function file(name: string, mode: number, owner: [number, number] = [0, 0]): string {
  const path = join(dir, name);
  writeFileSync(path, 'x');
  chownSync(path, ...owner);
  chmodSync(path, mode);
  return path;
}

function directory(name: string, mode: number, owner: [number, number] = [0, 0]): string {
  const path = join(dir, name);
  mkdirSync(path);
  chownSync(path, ...owner);
  chmodSync(path, mode);
  return path;
}

describe('accessProblem', () => {
  it("refuses a root file without read for others, naming QEMU's uid, gid, the mode and the owner", () => {
    const kernel = file('vmlinuz', 0o600);
    expect(accessProblem(kernel, 'read', VM)).toBe(`${WHO} and cannot read ${kernel}: it is mode 0600, owner 0:0`);
  });

  it('lets others read a 0644 file but not write it', () => {
    const disk = file('disk.img', 0o644);
    expect(accessProblem(disk, 'read', VM)).toBeUndefined();
    expect(accessProblem(disk, 'read-write', VM)).toBe(`${WHO} and cannot write ${disk}: it is mode 0644, owner 0:0`);
  });

  it("uses the owner's bits alone when the VM's uid owns the file, as the kernel does", () => {
    const odd = file('odd.img', 0o066, [VM.uid, 0]);
    expect(accessProblem(odd, 'read', VM)).toBe(`${WHO} and cannot read ${odd}: it is mode 0066, owner ${VM.uid}:0`);
    expect(accessProblem(file('own.img', 0o600, [VM.uid, 0]), 'read-write', VM)).toBeUndefined();
  });

  it("grants the group's bits through the VM's gid or a supplementary group, and not otherwise", () => {
    const shared = file('shared.img', 0o660, [0, OTHER_GROUP]);
    expect(accessProblem(shared, 'read-write', VM)).toBe(`${WHO} and cannot write ${shared}: it is mode 0660, owner 0:${OTHER_GROUP}`);
    expect(accessProblem(shared, 'read-write', { ...VM, groups: [OTHER_GROUP] })).toBeUndefined();
    expect(accessProblem(file('mine.img', 0o660, [0, VM.gid]), 'read-write', VM)).toBeUndefined();
  });

  it('names the directory on the way that others cannot search', () => {
    const closed = directory('root-only', 0o700);
    const kernel = join(closed, 'vmlinuz');
    writeFileSync(kernel, 'x');
    chmodSync(kernel, 0o644);
    expect(accessProblem(kernel, 'read', VM)).toBe(`${WHO} and cannot read ${kernel}: the directory ${closed} is mode 0700, owner 0:0, without search (x) permission for that user`);
    // Read without x is not search permission either.
    chmodSync(closed, 0o744);
    expect(accessProblem(kernel, 'read', VM)).toMatch(/without search \(x\) permission/);
    chmodSync(closed, 0o711);
    expect(accessProblem(kernel, 'read', VM)).toBeUndefined();
  });

  it('follows a symlink as QEMU would: a link in an open directory to a file in a closed one is refused', () => {
    const closed = directory('closed', 0o700);
    const target = join(closed, 'initrd');
    writeFileSync(target, 'x');
    chmodSync(target, 0o644);
    const link = join(dir, 'initrd-link');
    symlinkSync(target, link);
    expect(accessProblem(link, 'read', VM)).toBe(`${WHO} and cannot read ${link}: the directory ${closed} is mode 0700, owner 0:0, without search (x) permission for that user`);
  });

  it('leaves a missing file for QEMU to report', () => {
    expect(accessProblem(join(dir, 'absent'), 'read', VM)).toBeUndefined();
    expect(accessProblem(join(dir, 'no', 'such', 'path'), 'read-write', VM)).toBeUndefined();
  });

  it("needs a missing log file's directory writable, an existing one only writable", () => {
    const rootDir = directory('logs', 0o755);
    const log = join(rootDir, 'console.log');
    expect(accessProblem(log, 'append', VM)).toBe(`${WHO} and cannot create or write ${log}: it does not exist, and its directory ${rootDir} is mode 0755, owner 0:0, not writable by that user`);
    chownSync(rootDir, VM.uid, VM.gid);
    expect(accessProblem(log, 'append', VM)).toBeUndefined();
    const existing = file('existing.log', 0o200, [VM.uid, VM.gid]);
    expect(accessProblem(existing, 'append', VM)).toBeUndefined();
    expect(accessProblem(file('root.log', 0o644), 'append', VM)).toMatch(/cannot create or write .*root\.log: it is mode 0644, owner 0:0$/);
  });

  it('needs a memory backing file read-write, and a backing directory writable and searchable', () => {
    expect(accessProblem(file('mem', 0o200, [VM.uid, VM.gid]), 'create-rw', VM)).toMatch(/it is mode 0200/);
    expect(accessProblem(directory('hp', 0o755), 'create-rw', VM)).toMatch(/it is mode 0755, owner 0:0$/);
    expect(accessProblem(directory('hp2', 0o1777), 'dir-write', VM)).toBeUndefined();
    expect(accessProblem(directory('hp3', 0o755), 'dir-write', VM)).toMatch(/cannot write .*hp3: it is mode 0755/);
  });

  it('needs only write permission to connect to a socket path', () => {
    expect(accessProblem(file('sock', 0o222), 'connect', VM)).toBeUndefined();
    expect(accessProblem(file('sock2', 0o755), 'connect', VM)).toMatch(/cannot write/);
  });
});

describe('the paths QEMU opens', () => {
  it('lists each path with the field that names it; fds are not paths', () => {
    const config = parseSandboxConfig({
      id: 'vm',
      machine: { accel: 'kvm' },
      boot: { kernel: '/k', initrd: '/i' },
      console: { logFile: '/var/log/c.log' },
      memory: { backing: { type: 'hugepages' } },
      devices: [
        { type: 'block', id: 'ro', path: '/ro.img', readOnly: true },
        { type: 'block', id: 'fd', fd: 0 },
        { type: 'block', id: 'rw', path: '/rw.img' },
        { type: 'net', id: 'n', tap: { ifname: 'tap0' }, vhost: true },
        { type: 'fs', driver: '9p', id: 'p', tag: 'p', path: '/share' },
        { type: 'rng', id: 'r' },
        { type: 'vsock', id: 'v', guestCid: 3 },
      ],
    });
    expect(startPathNeeds(config)).toEqual([
      { field: 'boot.kernel', path: '/k', mode: 'read' },
      { field: 'boot.initrd', path: '/i', mode: 'read' },
      { field: 'machine.accel', path: '/dev/kvm', mode: 'read-write' },
      { field: 'console.logFile', path: '/var/log/c.log', mode: 'append' },
      { field: 'memory.backing.path', path: '/dev/hugepages', mode: 'dir-write' },
      { field: 'devices[0].path', path: '/ro.img', mode: 'read' },
      { field: 'devices[2].path', path: '/rw.img', mode: 'read-write' },
      { field: 'devices[3].tap.ifname', path: '/dev/net/tun', mode: 'read-write' },
      { field: 'devices[3].vhost', path: '/dev/vhost-net', mode: 'read-write' },
      { field: 'devices[4].path', path: '/share', mode: 'dir-read' },
      { field: 'devices[5].source', path: '/dev/urandom', mode: 'read' },
      { field: 'devices[6].type', path: '/dev/vhost-vsock', mode: 'read-write' },
    ]);
  });

  it('names a hot-plugged device\'s fields under "device"; taps given as fds need no /dev/net/tun', () => {
    expect(hotplugPathNeeds({ type: 'block', id: 'd', path: '/d.img' })).toEqual([{ field: 'device.path', path: '/d.img', mode: 'read-write' }]);
    expect(hotplugPathNeeds({ type: 'net', id: 'n', tap: { fds: [3], vhostFds: [4] }, vhost: true })).toEqual([]);
    expect(devicePathNeeds(validateHotplugDevice({ type: 'net', id: 'n', tap: { ifname: 'tap0' } }), 'device')).toEqual([{ field: 'device.tap.ifname', path: '/dev/net/tun', mode: 'read-write' }]);
  });

  it('needs nothing for a device that does not validate: the backend refuses it with its own error', () => {
    expect(hotplugPathNeeds({ type: 'vsock', id: 'v', guestCid: 3 })).toEqual([]);
    expect(hotplugPathNeeds({ type: 'block', id: 'd', path: 'relative.img' })).toEqual([]);
  });
});

describe('assertPathsReachable', () => {
  it('throws one ConfigError listing every unreachable path by its field', () => {
    const kernel = file('vmlinuz', 0o600);
    const disk = file('disk.img', 0o644);
    const fine = file('initrd', 0o644);
    const needs = [
      { field: 'boot.kernel', path: kernel, mode: 'read' as const },
      { field: 'boot.initrd', path: fine, mode: 'read' as const },
      { field: 'devices[1].path', path: disk, mode: 'read-write' as const },
    ];
    let caught: unknown;
    try {
      assertPathsReachable(needs, VM);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(ConfigError);
    const error = caught as ConfigError;
    expect(error.code).toBe('CONFIG_INVALID');
    expect(error.issues).toEqual([
      { path: 'boot.kernel', message: `${WHO} and cannot read ${kernel}: it is mode 0600, owner 0:0` },
      { path: 'devices[1].path', message: `${WHO} and cannot write ${disk}: it is mode 0644, owner 0:0` },
    ]);
  });

  it('reports every path under a shared closed directory, and judges each path of one check on its own', () => {
    const closed = directory('closed', 0o700);
    const kernel = join(closed, 'vmlinuz');
    const initrd = join(closed, 'initrd');
    for (const path of [kernel, initrd]) {
      writeFileSync(path, 'x');
      chmodSync(path, 0o644);
    }
    const needs = [
      { field: 'boot.kernel', path: kernel, mode: 'read' as const },
      { field: 'boot.initrd', path: initrd, mode: 'read' as const },
      // Beside a file it may read: missing (QEMU says so itself), and one it may not read.
      { field: 'devices[0].path', path: join(dir, 'absent.img'), mode: 'read' as const },
      { field: 'devices[1].path', path: file('private.img', 0o600), mode: 'read' as const },
      { field: 'devices[2].path', path: file('public.img', 0o644), mode: 'read' as const },
    ];
    const why = `the directory ${closed} is mode 0700, owner 0:0, without search (x) permission for that user`;
    expect(() => assertPathsReachable(needs, VM)).toThrow(
      expect.objectContaining({
        issues: [
          { path: 'boot.kernel', message: `${WHO} and cannot read ${kernel}: ${why}` },
          { path: 'boot.initrd', message: `${WHO} and cannot read ${initrd}: ${why}` },
          { path: 'devices[1].path', message: `${WHO} and cannot read ${join(dir, 'private.img')}: it is mode 0600, owner 0:0` },
        ],
      }),
    );
    // A second check sees the host as it is now, not as the first one found it.
    chmodSync(closed, 0o711);
    chmodSync(join(dir, 'private.img'), 0o644);
    expect(() => assertPathsReachable(needs, VM)).not.toThrow();
  });

  it('checks nothing when QEMU runs as this process (no identity of its own)', () => {
    expect(() => assertPathsReachable([{ field: 'boot.kernel', path: file('k', 0o600), mode: 'read' }], undefined)).not.toThrow();
  });

  it('lists supplementary groups in the message', () => {
    expect(accessProblem(file('k', 0o600), 'read', { ...VM, groups: [36] })).toMatch(new RegExp(`^QEMU runs as uid ${VM.uid} \\(gid ${VM.gid}, groups 36\\) and cannot read`));
  });
});
