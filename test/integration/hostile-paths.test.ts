// Paths with commas, '=', spaces and unicode reach QEMU unchanged, and an option spelled inside a
// file name never takes effect: QEMU opens exactly the file named, with the settings the config
// gave. One QEMU, started paused from a config full of such paths; decoy files sit where a split
// name would lead, so that opening the wrong one would show. QEMU is launched as the library
// launches it (svmm-launch binds the sockets), as a fixed unprivileged test identity that owns the
// scratch files: this test is about paths, and a fixed uid shows whose the sockets are.
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, copyFileSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readlinkSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseSandboxConfig, type SandboxConfig } from '../../src/hypervisor/config/index.ts';
import { buildQemuArgv } from '../../src/qemu/argv/index.ts';
import { runtimePaths, type RuntimePaths } from '../../src/qemu/runtime-paths.ts';
import { guestAssets } from '../guest/index.ts';
import { argvMismatches } from '../helpers/argv-realized.ts';
import { configMismatches } from '../helpers/config-realized.ts';
import { HostResources } from '../helpers/host-resources.ts';
import { launchPaused, testIdentity, type PausedQemu } from '../helpers/paused-qemu.ts';
import { blockDevice, blockNodes, listeningPathsHeld, procStatus, qomGet } from '../helpers/qemu-state.ts';

const resources = new HostResources();
const user = testIdentity();
let dir: string;
let config: SandboxConfig;
let paths: RuntimePaths;
let qemu: PausedQemu;
const file = (name: string) => join(dir, name);

/** Files QEMU has open, by path. */
function openFiles(pid: number): string[] {
  return readdirSync(`/proc/${pid}/fd`).flatMap((fd) => {
    try {
      return [readlinkSync(`/proc/${pid}/fd/${fd}`)];
    } catch {
      return []; // closed meanwhile
    }
  });
}

beforeAll(async () => {
  dir = mkdtempSync('/tmp/svmm-h,= ü');
  resources.onCleanup(`scratch dir ${dir}`, () => rmSync(dir, { recursive: true, force: true }));
  const guest = guestAssets();
  copyFileSync(guest.kernel, file('vmlinuz,initrd=x ü中.bin'));
  copyFileSync(guest.initrd, file('initrd ,,=.img'));
  resources.rawImage(file('dïsk one,two=three.img'), 16, 'HOSTILE');
  resources.rawImage(file('x.img,readonly=on'), 16, 'LITERAL');
  resources.rawImage(file('x.img'), 16, 'DECOY');
  resources.rawImage(file('a.img,file.driver=nbd'), 16, 'LITERAL-NBD');
  resources.rawImage(file('a.img'), 16, 'DECOY');
  resources.qcow2Image(file('q,cow=2 🙂.qcow2'));
  mkdirSync(file('share,readonly=on'));
  mkdirSync(file('share'));
  mkdirSync(file('mem,share=off'));
  // A path through a directory named 'entropy,filename=': split at the comma it would read /dev/zero.
  mkdirSync(file('entropy,filename=/dev'), { recursive: true });
  writeFileSync(file('entropy,filename=/dev/zero'), 'not random at all');
  const vfsSocket = file('v,fs=1.sock');
  // virtiofsd's own -o parser splits at commas, so its source stays plain; the socket is hostile.
  const vfsSource = mkdtempSync('/tmp/svmm-vfs');
  resources.onCleanup(`virtio-fs source ${vfsSource}`, () => rmSync(vfsSource, { recursive: true, force: true }));
  await resources.virtiofsd(vfsSocket, vfsSource);
  // Everything QEMU opens (or creates: the console log, the memory file) is its user's, the
  // virtio-fs socket included, as the library hands virtiofsd's socket to QEMU's user.
  execFileSync('chown', ['-R', `${user.uid}:${user.gid}`, dir]);
  // The runtime directory as the library makes it (launch/home.ts): ours, QEMU's group may only traverse it.
  const runtimeDir = file('run,x=y');
  mkdirSync(runtimeDir);
  chownSync(runtimeDir, process.geteuid?.() ?? 0, user.gid);
  chmodSync(runtimeDir, 0o710);
  paths = runtimePaths(runtimeDir);

  config = parseSandboxConfig({
    id: 'vm-hostile',
    machine: { accel: 'tcg' },
    boot: { kernel: file('vmlinuz,initrd=x ü中.bin'), initrd: file('initrd ,,=.img'), kernelParams: ['console=ttyS0', 'svmm.note=a,b=c'] },
    memory: { bootMiB: 128, backing: { type: 'file', path: file('mem,share=off') } },
    console: { socket: true, logFile: file('console,append=off.log') },
    devices: [
      { type: 'block', id: 'hostile', path: file('dïsk one,two=three.img') },
      { type: 'block', id: 'ro', path: file('x.img,readonly=on') },
      { type: 'block', id: 'nbd', path: file('a.img,file.driver=nbd'), driver: 'virtio-scsi' },
      { type: 'block', id: 'qcow', path: file('q,cow=2 🙂.qcow2'), format: 'qcow2' },
      { type: 'fs', driver: '9p', id: 'share0', tag: 'share', path: file('share,readonly=on') },
      { type: 'fs', driver: 'virtio-fs', id: 'vfs0', tag: 'vfs', socketPath: vfsSocket },
      { type: 'rng', id: 'rng0', source: file('entropy,filename=/dev/zero') },
      { type: 'channel', id: 'agent', name: 'agent.0' },
    ],
    hardening: { user },
  });
  const argv = buildQemuArgv(config, paths);
  qemu = await launchPaused({ args: argv.args, fds: argv.fds, qmpSocket: paths.qmpSocket, user });
  resources.onCleanup(`qemu ${qemu.pid}`, () => qemu.stop());
});

afterAll(() => resources.cleanup());

describe('hostile paths', () => {
  it('QEMU has every option and config setting as given (generic checks)', async () => {
    const { args, fds } = buildQemuArgv(config, paths);
    expect(await argvMismatches(qemu.qmp, qemu.pid, args, fds)).toEqual([]);
    expect(await configMismatches(qemu.qmp, qemu.pid, config, paths, { user })).toEqual([]);
  });

  it('the kernel and initrd are loaded from their exact paths (QEMU exits if it cannot load them)', async () => {
    expect(await qomGet(qemu.qmp, '/machine', 'kernel')).toBe(file('vmlinuz,initrd=x ü中.bin'));
    expect(await qomGet(qemu.qmp, '/machine', 'initrd')).toBe(file('initrd ,,=.img'));
    expect(await qomGet(qemu.qmp, '/machine', 'append')).toBe('console=ttyS0 svmm.note=a,b=c');
  });

  it('a disk named with commas, "=", spaces and unicode is that very file', async () => {
    const disk = await blockDevice(qemu.qmp, 'hostile');
    expect(disk?.inserted).toMatchObject({ file: file('dïsk one,two=three.img'), ro: false, drv: 'raw', image: { filename: file('dïsk one,two=three.img') } });
    const qcow = await blockDevice(qemu.qmp, 'qcow');
    expect(qcow?.inserted).toMatchObject({ file: file('q,cow=2 🙂.qcow2'), drv: 'qcow2' });
    expect(openFiles(qemu.pid)).toEqual(expect.arrayContaining([file('dïsk one,two=three.img'), file('q,cow=2 🙂.qcow2')]));
  });

  it("'x.img,readonly=on' opens that file, writable: the readonly in its name is not an option", async () => {
    const disk = await blockDevice(qemu.qmp, 'ro');
    expect(disk?.inserted).toMatchObject({ file: file('x.img,readonly=on'), ro: false });
    expect(await qomGet(qemu.qmp, '/machine/peripheral/ro', 'type')).toBe('virtio-blk-pci');
    const open = openFiles(qemu.pid);
    expect(open).toContain(file('x.img,readonly=on'));
    expect(open).not.toContain(file('x.img'));
  });

  it("'a.img,file.driver=nbd' is opened by the file driver under its literal name; no nbd node exists", async () => {
    const nodes = await blockNodes(qemu.qmp);
    const literal = nodes.filter((n) => n.file === file('a.img,file.driver=nbd'));
    expect(literal.map((n) => n.drv).sort()).toEqual(['file', 'raw']);
    expect(nodes.some((n) => n.drv === 'nbd')).toBe(false);
    expect(openFiles(qemu.pid)).not.toContain(file('a.img'));
  });

  it('the 9p share is the literal directory, not the decoy before the comma', () => {
    // The local fs driver keeps the share's root open.
    const open = openFiles(qemu.pid);
    expect(open).toContain(file('share,readonly=on'));
    expect(open).not.toContain(file('share'));
  });

  it('the memory backing, rng source and virtio-fs socket keep their literal names, and the injected settings do not apply', async () => {
    expect(await qomGet(qemu.qmp, '/objects/mem-ram', 'mem-path')).toBe(file('mem,share=off'));
    expect(await qomGet(qemu.qmp, '/objects/mem-ram', 'share')).toBe(true);
    expect(await qomGet(qemu.qmp, '/objects/rng-rng0', 'filename')).toBe(file('entropy,filename=/dev/zero'));
    expect(await qomGet(qemu.qmp, '/machine/peripheral/vfs0', 'tag')).toBe('vfs');
  });

  it('the console log and the listening sockets are created under their literal names, the sockets by root for QEMU to hold', () => {
    expect(existsSync(file('console,append=off.log'))).toBe(true);
    expect(existsSync(file('console'))).toBe(false);
    const sockets = [paths.qmpSocket, paths.consoleSocket, paths.channelSocket('agent')];
    // QEMU runs as the test identity, yet each socket is root's (0600): the launcher bound it before switching users.
    expect(procStatus(qemu.pid, 'Uid').split(/\s+/).map(Number)).toEqual(Array(4).fill(user.uid));
    for (const path of sockets) {
      const stat = lstatSync(path);
      expect({ path, socket: stat.isSocket(), uid: stat.uid, mode: (stat.mode & 0o777).toString(8) }).toEqual({ path, socket: true, uid: process.geteuid?.(), mode: '600' });
    }
    expect(listeningPathsHeld(qemu.pid)).toEqual(expect.arrayContaining(sockets));
    // Nothing else in the runtime directory (QEMU writes nothing there), and no directory named after a split.
    expect(readdirSync(paths.dir).sort()).toEqual(['ch-agent.sock', 'console.sock', 'qmp.sock']);
    expect(readdirSync(dir).filter((name) => name.startsWith('run'))).toEqual(['run,x=y']);
  });

  it('a kernel path QEMU cannot open makes the launch fail with QEMU naming that exact path', async () => {
    const missing = file('no such,kernel=yes');
    const runtime = mkdtempSync('/tmp/svmm-k');
    try {
      const bad = parseSandboxConfig({ id: 'vm-missing-kernel', machine: { accel: 'tcg' }, boot: { kernel: missing }, hardening: { user } });
      const p = runtimePaths(runtime);
      const argv = buildQemuArgv(bad, p);
      await expect(launchPaused({ args: argv.args, fds: argv.fds, qmpSocket: p.qmpSocket, user })).rejects.toThrow(`could not open kernel file '${missing}'`);
    } finally {
      rmSync(runtime, { recursive: true, force: true });
    }
  });
});
