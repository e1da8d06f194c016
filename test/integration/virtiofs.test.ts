// virtio-fs on the real guest: the backend runs virtiofsd for a shared directory (a helper daemon,
// listed by getPids and stopped with the VM), the guest mounts it and reads and writes host files;
// a virtiofsd the caller runs works the same way; a helper that dies takes the VM down, reported; a
// share hot-plugged into a running VM gets a daemon of its own, which its removal stops.
import { spawn } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { QemuHypervisor } from '../../src/qemu/qemu-hypervisor.ts';
import { isProcessAlive } from '../../src/qemu/process/proc-fs.ts';
import { HelperError, VmExitedError, VmStartError } from '../../src/hypervisor/errors.ts';
import { ConfigError, type SandboxConfigInput } from '../../src/hypervisor/config/index.ts';
import { eventually } from './helpers/eventually.ts';
import type { VmExitInfo, VmIdentity } from '../../src/hypervisor/types.ts';
import { runtimePaths } from '../../src/qemu/runtime-paths.ts';
import {
  connectAgent,
  dropLeases,
  expectLeasedIdentity,
  expectRunsAs,
  guestConfig,
  identityOf,
  leasesOnDisk,
  ownership,
  processIds,
  scratchDir,
} from './helpers/sandbox.ts';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function sharedConfig(fs: Record<string, unknown>): SandboxConfigInput {
  const base = guestConfig();
  return {
    ...base,
    memory: { bootMiB: 256, backing: { type: 'shared' } },
    devices: [...(base.devices ?? []), { type: 'fs', driver: 'virtio-fs', id: 'share', tag: 'hostshare', ...fs } as never],
  };
}

function shareDir(): string {
  const scratch = scratchDir();
  cleanups.push(scratch.remove);
  const dir = join(scratch.dir, 'shared');
  mkdirSync(dir);
  writeFileSync(join(dir, 'from-host.txt'), 'written on the host\n');
  return dir;
}

const comm = (pid: number) => readFileSync(`/proc/${pid}/comm`, 'utf8').trim();

describe('virtio-fs', () => {
  it('runs virtiofsd for a sharedDir: the guest reads and writes host files, and getPids lists the daemon after QEMU', async () => {
    const dir = shareDir();
    const vm = new QemuHypervisor();
    cleanups.push(() => vm.stopVM());
    await vm.createVM(sharedConfig({ sharedDir: dir }));
    const identity = expectLeasedIdentity(vm.identity);
    await vm.startVM();
    const pids = vm.getPids();
    expect(pids).toHaveLength(2);
    const [qemu = -1, daemon = -1] = pids;
    expect(comm(qemu)).toMatch(/^qemu-system/);
    expect(comm(daemon)).toBe('virtiofsd');
    // QEMU runs as the VM's uid; virtiofsd stays root (it builds its own sandbox) and its socket, in
    // the root-owned directory QEMU's group may only traverse, is handed to QEMU's uid.
    expectRunsAs(qemu, identity);
    expect(processIds(daemon).uids[0]).toBe(0);
    const paths = runtimePaths(vm.runtimeDir ?? '');
    expect(ownership(paths.dir)).toEqual({ uid: 0, gid: identity.gid, mode: 0o710 });
    expect(ownership(paths.virtiofsSocket('share'))).toMatchObject({ uid: identity.uid, gid: identity.gid });
    const agent = await connectAgent(vm);
    cleanups.push(() => agent.close());
    expect(await agent.runOk('mkdir -p /mnt/host && mount -t virtiofs hostshare /mnt/host && cat /mnt/host/from-host.txt')).toBe('written on the host\n');
    await agent.runOk('echo written in the guest > /mnt/host/from-guest.txt && sync');
    expect(readFileSync(join(dir, 'from-guest.txt'), 'utf8')).toBe('written in the guest\n');
    await agent.close();
    const runtimeDir = vm.runtimeDir ?? '';
    // Debian's C virtiofsd records its pid outside the VM's directory, named after the socket.
    const pidFile = `/run/virtiofsd/${paths.virtiofsSocket('share').replaceAll('/', '.')}.pid`;
    expect(existsSync(pidFile), `${pidFile} while the daemon runs`).toBe(true);
    await vm.stopVM();
    expect(isProcessAlive(qemu)).toBe(false);
    expect(isProcessAlive(daemon)).toBe(false);
    expect(existsSync(runtimeDir)).toBe(false);
    expect(existsSync(pidFile), `${pidFile} is removed with the daemon`).toBe(false);
    expect(leasesOnDisk(vm.id)).toEqual([]);
    expect(vm.getPids()).toEqual([]);
  });

  it('works with a virtiofsd the caller runs (socketPath), which is not the backend\'s helper', async () => {
    const dir = shareDir();
    const socket = join(dir, '..', 'vfs.sock');
    const daemon = spawn('/usr/lib/qemu/virtiofsd', [`--socket-path=${socket}`, '-o', `source=${dir}`], { stdio: 'ignore' });
    cleanups.push(() => daemon.kill('SIGKILL'));
    while (!existsSync(socket)) await new Promise((resolve) => setTimeout(resolve, 10));
    const vm = new QemuHypervisor();
    cleanups.push(() => vm.stopVM());
    // As a runtime does: create the VM, then give its uid the socket (root's until then).
    await vm.createVM(sharedConfig({ socketPath: socket }));
    const identity = identityOf(vm);
    chownSync(socket, identity.uid, identity.gid);
    await vm.startVM();
    expect(vm.getPids()).toHaveLength(1);
    expectRunsAs(vm.getPids()[0] ?? -1, identity);
    const agent = await connectAgent(vm);
    cleanups.push(() => agent.close());
    expect(await agent.runOk('mkdir -p /mnt/host && mount -t virtiofs hostshare /mnt/host && cat /mnt/host/from-host.txt')).toBe('written on the host\n');
  });

  it('a virtiofsd that dies takes the VM down, and the exit says why', async () => {
    const vm = new QemuHypervisor();
    cleanups.push(() => vm.stopVM());
    await vm.createVM(sharedConfig({ sharedDir: shareDir() }));
    await vm.startVM({ paused: true });
    const [qemu = -1, daemon = -1] = vm.getPids();
    const exited = new Promise<VmExitInfo>((resolve) => vm.onExit(resolve));
    // A frozen QEMU keeps this call pending until the VM goes down.
    process.kill(qemu, 'SIGSTOP');
    const pending = vm.getThreadIds({ timeoutMs: 60_000 }).catch((e: unknown) => e);
    process.kill(daemon, 'SIGKILL');
    const info = await exited;
    expect(info).toMatchObject({ expected: false, signal: 'SIGKILL', reason: 'virtiofsd for share was killed by SIGKILL' });
    const error = (await pending) as VmExitedError;
    expect(error).toBeInstanceOf(VmExitedError);
    expect(error.message).toContain('because virtiofsd for share was killed by SIGKILL');
    expect(vm.state).toBe('stopped');
    expect(isProcessAlive(qemu)).toBe(false);
    await vm.stopVM();
  });

  it('a process that re-attaches to a detached VM lists and stops its virtiofsd too', async () => {
    const owner = join(process.cwd(), 'test', 'integration', 'fixtures', 'owner.ts');
    const base = sharedConfig({ sharedDir: shareDir() });
    const config = { ...base, runtime: { ...base.runtime, detached: true } };
    const child = spawn(process.execPath, ['--import', 'tsx', owner, JSON.stringify(config), 'exit'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    await new Promise((resolve) => child.on('exit', resolve));
    const { runtimeDir, id, identity, pid } = JSON.parse(out.split('\n')[0] ?? '{}') as { runtimeDir: string; id: string; identity: VmIdentity | null; pid: number };
    // Runs after the VM's own cleanup: what is left if the test failed before it was stopped.
    cleanups.push(() => {
      if (isProcessAlive(pid)) process.kill(pid, 'SIGKILL');
      rmSync(runtimeDir, { recursive: true, force: true });
      dropLeases(id);
    });
    const vm = await QemuHypervisor.attach(runtimeDir);
    cleanups.push(() => vm.stopVM());
    const [qemu = -1, daemon = -1] = vm.getPids();
    expect(comm(daemon)).toBe('virtiofsd');
    expect(vm.identity).toEqual(expectLeasedIdentity(identity ?? undefined));
    expectRunsAs(qemu, identityOf(vm));
    const agent = await connectAgent(vm);
    cleanups.push(() => agent.close());
    expect(await agent.runOk('mkdir -p /mnt/host && mount -t virtiofs hostshare /mnt/host && cat /mnt/host/from-host.txt')).toBe('written on the host\n');
    await agent.close();
    await vm.stopVM();
    expect(isProcessAlive(qemu)).toBe(false);
    expect(isProcessAlive(daemon)).toBe(false);
    expect(existsSync(runtimeDir)).toBe(false);
    expect(leasesOnDisk(id)).toEqual([]);
  });

  it('hot-plugs a share into a running VM: its virtiofsd starts, the guest mounts it, reads and writes; removal stops the daemon and leaves nothing', async () => {
    const dir = shareDir();
    const base = guestConfig();
    const vm = new QemuHypervisor();
    cleanups.push(() => vm.stopVM());
    await vm.createVM({ ...base, memory: { bootMiB: 256, backing: { type: 'shared' } } });
    expect(vm.capabilities().fsHotplug).toBe(true);
    await vm.startVM();
    const agent = await connectAgent(vm);
    cleanups.push(() => agent.close());
    const [qemu = -1] = vm.getPids();
    expect(vm.getPids()).toHaveLength(1);
    const paths = runtimePaths(vm.runtimeDir ?? '');
    const socket = paths.virtiofsSocket('hotshare');
    const pidFile = `/run/virtiofsd/${socket.replaceAll('/', '.')}.pid`;

    const result = await vm.hotplugAddDevice({ type: 'fs', driver: 'virtio-fs', id: 'hotshare', tag: 'hottag', sharedDir: dir });
    expect(result).toMatchObject({ id: 'hotshare', type: 'fs', bus: 'rp0' });
    const pids = vm.getPids();
    expect(pids).toHaveLength(2);
    const daemon = pids[1] ?? -1;
    expect(comm(daemon)).toBe('virtiofsd');
    expect(processIds(daemon).uids[0]).toBe(0);
    expect(ownership(socket)).toMatchObject({ uid: identityOf(vm).uid, gid: identityOf(vm).gid });
    // The guest finds the share once its PCI hotplug has been handled: mounting is retried until then.
    const mount = 'mkdir -p /mnt/hot && mount -t virtiofs hottag /mnt/hot && cat /mnt/hot/from-host.txt';
    const read = await eventually(() => agent.run(mount), (r) => r.exitCode === 0, 30_000);
    expect(read).toEqual({ exitCode: 0, output: 'written on the host\n' });
    await agent.runOk('echo written in the guest > /mnt/hot/from-guest.txt && sync && umount /mnt/hot');
    expect(readFileSync(join(dir, 'from-guest.txt'), 'utf8')).toBe('written in the guest\n');

    await vm.hotplugRemoveDevice('hotshare');
    expect(vm.devices().some((d) => d.id === 'hotshare')).toBe(false);
    expect(vm.getPids()).toEqual([qemu]);
    expect(isProcessAlive(daemon)).toBe(false);
    expect(existsSync(socket), 'the daemon\'s socket is gone').toBe(false);
    expect(existsSync(pidFile), 'its pid file is gone').toBe(false);
    expect(await agent.runOk('grep -c hottag /proc/mounts || true')).toBe('0\n');
    // The port and the tag are free again, and the VM carries on (the next add takes a port never
    // used before the freed one: hotplug/slots.ts).
    expect(vm.devices().some((d) => d.bus === 'rp0')).toBe(false);
    const again = await vm.hotplugAddDevice({ type: 'fs', driver: 'virtio-fs', id: 'hotshare2', tag: 'hottag', sharedDir: dir });
    expect(again.bus).toBe('rp1');
    const daemon2 = vm.getPids()[1] ?? -1;
    await agent.close();
    await vm.stopVM();
    expect(isProcessAlive(daemon2)).toBe(false);
    expect(existsSync(paths.dir)).toBe(false);
  });

  it('a share hot-plugged before a re-attach is the new instance\'s: listed, still mounted in the guest, removed through it (its daemon stops), and stop leaves nothing', async () => {
    const dir = shareDir();
    const base = guestConfig();
    const first = new QemuHypervisor();
    cleanups.push(() => first.stopVM());
    await first.createVM({ ...base, memory: { bootMiB: 256, backing: { type: 'shared' } }, runtime: { ...base.runtime, detached: true } });
    await first.startVM();
    await first.hotplugAddDevice({ type: 'fs', driver: 'virtio-fs', id: 'hotshare', tag: 'hottag', sharedDir: dir });
    const firstAgent = await connectAgent(first);
    const mount = 'mkdir -p /mnt/hot && mount -t virtiofs hottag /mnt/hot && cat /mnt/hot/from-host.txt';
    expect(await eventually(() => firstAgent.run(mount), (r) => r.exitCode === 0, 30_000)).toEqual({ exitCode: 0, output: 'written on the host\n' });
    await firstAgent.close();
    const pids = first.getPids();
    expect(pids).toHaveLength(2);
    const [qemu = -1, daemon = -1] = pids;
    const runtimeDir = first.runtimeDir ?? '';
    const socket = runtimePaths(runtimeDir).virtiofsSocket('hotshare');
    await first.detach();

    const vm = await QemuHypervisor.attach(runtimeDir, { timeoutMs: 30_000 });
    cleanups.push(() => vm.stopVM());
    expect(vm.getPids()).toEqual(pids);
    expect(vm.devices().find((d) => d.id === 'hotshare')).toMatchObject({ type: 'fs', bus: 'rp0' });
    const agent = await connectAgent(vm);
    cleanups.push(() => agent.close());
    await agent.runOk('echo after the re-attach > /mnt/hot/from-guest.txt && sync && umount /mnt/hot');
    expect(readFileSync(join(dir, 'from-guest.txt'), 'utf8')).toBe('after the re-attach\n');

    await vm.hotplugRemoveDevice('hotshare');
    expect(vm.getPids()).toEqual([qemu]);
    expect(isProcessAlive(daemon)).toBe(false);
    expect(existsSync(socket), 'the daemon\'s socket is gone').toBe(false);
    await agent.close();
    await vm.stopVM();
    expect(isProcessAlive(qemu)).toBe(false);
    expect(existsSync(runtimeDir)).toBe(false);
    expect(leasesOnDisk(vm.id)).toEqual([]);
  });

  it('a hot-plugged share whose virtiofsd cannot start is HelperError; no daemon, chardev or socket is left and the VM runs on', async () => {
    const vm = new QemuHypervisor();
    cleanups.push(() => vm.stopVM());
    await vm.createVM({ ...guestConfig(), memory: { bootMiB: 256, backing: { type: 'shared' } } });
    await vm.startVM({ paused: true });
    const error = await vm.hotplugAddDevice({ type: 'fs', driver: 'virtio-fs', id: 'bad', tag: 'bad', sharedDir: '/nonexistent/share' }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HelperError);
    expect(vm.getPids()).toHaveLength(1);
    expect(existsSync(runtimePaths(vm.runtimeDir ?? '').virtiofsSocket('bad'))).toBe(false);
    expect(vm.devices().some((d) => d.id === 'bad')).toBe(false);
    await vm.check();
  });

  it('a hot-plugged share on anonymous guest memory is refused with ConfigError naming device.driver', async () => {
    const vm = new QemuHypervisor();
    cleanups.push(() => vm.stopVM());
    await vm.createVM(guestConfig());
    expect(vm.capabilities().fsHotplug).toBe(false);
    await vm.startVM({ paused: true });
    const error = (await vm.hotplugAddDevice({ type: 'fs', driver: 'virtio-fs', id: 'anon', tag: 'anon', sharedDir: shareDir() }).catch((e: unknown) => e)) as ConfigError;
    expect(error).toBeInstanceOf(ConfigError);
    expect(error.paths).toEqual(['device.driver']);
    expect(vm.getPids()).toHaveLength(1);
  });

  it('a virtiofsd that cannot start fails the start with its own words, and nothing is left running', async () => {
    const vm = new QemuHypervisor();
    await vm.createVM(sharedConfig({ sharedDir: '/nonexistent/share' }));
    const dir = vm.runtimeDir ?? '';
    const error = (await vm.startVM().catch((e: unknown) => e)) as VmStartError;
    expect(error).toBeInstanceOf(VmStartError);
    expect(error.cause).toBeInstanceOf(HelperError);
    expect(error.message).toMatch(/virtiofsd for share exited before it was ready/);
    expect(error.message).toMatch(/nonexistent/);
    expect(vm.getPids()).toEqual([]);
    expect(vm.state).toBe('stopped');
    expect(existsSync(dir)).toBe(false);
    expect(leasesOnDisk(vm.id)).toEqual([]);
  });
});
