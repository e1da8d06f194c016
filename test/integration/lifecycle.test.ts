// The QEMU backend's lifecycle against the real default guest under TCG, verified from inside the
// guest where the guest is involved, and from /proc where the host is.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, readdirSync, readlinkSync, realpathSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { QemuHypervisor } from '../../src/qemu/qemu-hypervisor.ts';
import { isProcessAlive } from '../../src/qemu/process/proc-fs.ts';
import {
  AttachError,
  GuestNotReadyError,
  InvalidStateError,
  VmExitedError,
  VmStartError,
  VmStoppingError,
  VmUnhealthyError,
} from '../../src/hypervisor/errors.ts';
import { ConfigError } from '../../src/hypervisor/config/index.ts';
import type { HypervisorEvent, VmExitInfo, VmIdentity } from '../../src/hypervisor/types.ts';
import { MIN_BOOT_MiB } from '../../src/hypervisor/config/schema.ts';
import type { GuestAgent } from '../guest/index.ts';
import {
  capabilities,
  connectAgent,
  dropLeases,
  expectLeasedIdentity,
  expectRunsAs,
  guestConfig,
  identityOf,
  leasesOnDisk,
  ownership,
  processesRunningAs,
  rawDisk,
  scratchDir,
} from './helpers/sandbox.ts';
import { useCleanups } from './helpers/cleanups.ts';
import { QEMU_UNDER_TEST } from '../helpers/qemu-under-test.ts';

const { cleanups, track } = useCleanups();

function trackAgent(agent: GuestAgent): GuestAgent {
  cleanups.push(() => agent.close());
  return agent;
}

async function waitUntil(predicate: () => boolean, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > end) throw new Error('condition not reached in time');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('QEMU lifecycle on the default guest', () => {
  it('boots, runs a command in the guest, pauses, resumes and stops leaving nothing behind', async () => {
    const vm = track(new QemuHypervisor());
    await vm.createVM(guestConfig({ cpus: { boot: 2, max: 4 } }));
    expect(vm.state).toBe('created');
    const id = vm.id ?? '';
    const dir = vm.runtimeDir ?? '';
    expect(vm.getPids()).toEqual([]);
    // createVM leased QEMU's own uid and made the VM's directory: root's, QEMU's group may only
    // traverse it, and nothing but the owner file is in it yet.
    const identity = expectLeasedIdentity(vm.identity);
    expect(leasesOnDisk(id)).toMatchObject([{ uid: identity.uid, owner: { pid: process.pid } }]);
    expect(dir).toBe(`/run/sandbox-vmm/${id}`);
    expect(ownership(dir)).toEqual({ uid: 0, gid: identity.gid, mode: 0o710 });
    expect(readdirSync(dir)).toEqual(['owner.json']);

    await vm.startVM({ timeoutMs: 30_000 });
    expect(vm.state).toBe('running');
    const [pid] = vm.getPids();
    expect(pid).toBeGreaterThan(0);
    expect(isProcessAlive(pid ?? -1)).toBe(true);
    // The QEMU of this run of the version matrix, not whichever one PATH finds.
    expect(readlinkSync(`/proc/${pid}/exe`)).toBe(realpathSync(QEMU_UNDER_TEST));
    // QEMU runs as the VM's uid, with no capability at all, and holds the sockets root created for
    // it as fds 3, 4, 5 (QMP, console, agent channel); there is no pidfile.
    expectRunsAs(pid ?? -1, identity);
    expect(capabilities(pid ?? -1)).toEqual({ CapInh: '0'.repeat(16), CapPrm: '0'.repeat(16), CapEff: '0'.repeat(16), CapBnd: '0'.repeat(16), CapAmb: '0'.repeat(16) });
    expect(readdirSync(dir).sort()).toEqual(['ch-agent.sock', 'console.sock', 'owner.json', 'qmp.sock', 'state.json']);
    for (const name of ['qmp.sock', 'console.sock', 'ch-agent.sock', 'state.json', 'owner.json']) {
      expect(ownership(join(dir, name)), name).toMatchObject({ uid: 0, gid: 0 });
    }
    for (const fd of [3, 4, 5]) expect(readlinkSync(`/proc/${pid}/fd/${fd}`)).toMatch(/^socket:\[\d+\]$/);
    expect(readlinkSync(`/proc/${pid}/fd/0`)).toBe('/dev/null');

    const agent = trackAgent(await connectAgent(vm));
    expect(await agent.onlineCpus()).toBe(2);
    const memKiB = await agent.memTotalKiB();
    expect(memKiB).toBeGreaterThan(150 * 1024);
    expect(memKiB).toBeLessThanOrEqual(256 * 1024);
    expect((await agent.run('exit 3')).exitCode).toBe(3);

    const threads = await vm.getThreadIds();
    expect([...threads.keys()].sort()).toEqual([0, 1]);
    // The vCPU threads are QEMU's and named by debug-threads=on.
    for (const tid of threads.values()) {
      expect(execFileSync('cat', [`/proc/${pid}/task/${tid}/comm`], { encoding: 'utf8' })).toMatch(/^CPU \d\/TCG/);
    }
    await vm.check();

    await vm.pauseVM();
    expect(vm.state).toBe('paused');
    const status = execFileSync('cat', [`/proc/${pid}/status`], { encoding: 'utf8' });
    expect(status).toContain('State:');
    await expect(vm.pauseVM()).rejects.toBeInstanceOf(InvalidStateError);
    await vm.resumeVM();
    expect(vm.state).toBe('running');
    expect(await agent.runOk('echo back')).toBe('back\n');

    await agent.close();
    await vm.stopVM();
    expect(vm.state).toBe('stopped');
    expect(vm.getPids()).toEqual([]);
    expect(isProcessAlive(pid ?? -1)).toBe(false);
    expect(existsSync(dir)).toBe(false);
    expect(leasesOnDisk(id)).toEqual([]);
    expect(vm.exitInfo?.expected).toBe(true);
    // Idempotent.
    await vm.stopVM();
  });

  it('rejects calls in the wrong state with an error naming the state', async () => {
    const vm = track(new QemuHypervisor());
    await expect(vm.startVM()).rejects.toMatchObject({ code: 'INVALID_STATE', state: 'new', message: expect.stringContaining('call createVM first') as unknown });
    await expect(vm.hotplugAddDevice({ type: 'block', id: 'early', path: '/nonexistent.img' })).rejects.toMatchObject({ code: 'INVALID_STATE', message: expect.stringContaining('call createVM first') as unknown });
    await vm.createVM(guestConfig());
    const error = await vm.pauseVM().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InvalidStateError);
    expect((error as InvalidStateError).state).toBe('created');
    expect((error as Error).message).toContain('created');
    await expect(vm.hotplugRemoveDevice('x')).rejects.toBeInstanceOf(InvalidStateError);
    await expect(vm.resizeVCPUs(2)).rejects.toBeInstanceOf(InvalidStateError);
    // A VM created and never started is stopped like any other: its directory and lease go.
    const dir = vm.runtimeDir ?? '';
    expect(existsSync(dir)).toBe(true);
    expect(leasesOnDisk(vm.id)).toHaveLength(1);
    await vm.stopVM();
    expect(existsSync(dir)).toBe(false);
    expect(leasesOnDisk(vm.id)).toEqual([]);
    await expect(vm.startVM()).rejects.toBeInstanceOf(InvalidStateError);
    await expect(vm.resumeVM()).rejects.toThrow(/stopped/);
  });

  it('turns a config error into a ConfigError before anything is created', async () => {
    const vm = new QemuHypervisor();
    const id = `lc-${randomUUID().slice(0, 8)}`;
    const error = await vm.createVM(guestConfig({ id, cpus: { boot: 4, max: 2 } })).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConfigError);
    expect(vm.runtimeDir).toBeUndefined();
    expect(vm.identity).toBeUndefined();
    expect(existsSync(`/run/sandbox-vmm/${id}`)).toBe(false);
    expect(leasesOnDisk(id)).toEqual([]);
  });

  it('refuses to run QEMU as root (user "current" under root) unless allowRoot says so', async () => {
    const id = `lc-${randomUUID().slice(0, 8)}`;
    const refused = new QemuHypervisor();
    const error = (await refused.createVM(guestConfig({ id, hardening: { user: 'current' } })).catch((e: unknown) => e)) as ConfigError;
    expect(error).toBeInstanceOf(ConfigError);
    expect(error.issues.map((issue) => issue.path)).toEqual(['hardening.user']);
    expect(error.message).toMatch(/allowRoot/);
    expect(refused.runtimeDir).toBeUndefined();
    expect(existsSync(`/run/sandbox-vmm/${id}`)).toBe(false);
    expect(leasesOnDisk(id)).toEqual([]);

    const vm = track(new QemuHypervisor());
    await vm.createVM(guestConfig({ id, hardening: { user: 'current', allowRoot: true } }));
    expect(vm.identity).toBeUndefined();
    expect(leasesOnDisk(id)).toEqual([]);
    await vm.startVM({ paused: true });
    const [pid = -1] = vm.getPids();
    expectRunsAs(pid, { uid: 0, gid: 0, groups: [] });
    await vm.stopVM();
    expect(isProcessAlive(pid)).toBe(false);
    expect(existsSync(`/run/sandbox-vmm/${id}`)).toBe(false);
  });

  it('a stopVM racing createVM leaves no directory and no lease, and a bad timeout is refused before anything changes', async () => {
    const id = `lc-${randomUUID().slice(0, 8)}`;
    const raced = new QemuHypervisor();
    const created = raced.createVM(guestConfig({ id }));
    await raced.stopVM();
    expect(await created.then(() => 'created', (e: unknown) => (e as { code?: string }).code)).toBe('VM_STOPPING');
    expect(raced.state).toBe('stopped');
    expect(existsSync(`/run/sandbox-vmm/${id}`)).toBe(false);
    expect(leasesOnDisk(id)).toEqual([]);

    const vm = track(new QemuHypervisor());
    await vm.createVM(guestConfig());
    await expect(vm.startVM({ timeoutMs: Number.NaN })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', argument: 'timeoutMs' });
    await expect(vm.stopVM({ gracefulTimeoutMs: -1 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', argument: 'gracefulTimeoutMs' });
    expect(vm.state).toBe('created');
    expect(vm.getPids()).toEqual([]);
    await vm.startVM({ paused: true });
    expect(vm.state).toBe('paused');
    await vm.stopVM();
  });

  it('fails a start that QEMU rejects with its exit status and stderr, and cleans up', async () => {
    const vm = track(new QemuHypervisor());
    const scratch = scratchDir();
    cleanups.push(scratch.remove);
    // A disk that does not exist: QEMU refuses the command line and exits.
    await vm.createVM(guestConfig({ devices: [{ type: 'block', id: 'gone', path: join(scratch.dir, 'missing.img') }] }));
    const dir = vm.runtimeDir ?? '';
    expect(leasesOnDisk(vm.id)).toHaveLength(1);
    const error = (await vm.startVM().catch((e: unknown) => e)) as VmStartError;
    expect(error).toBeInstanceOf(VmStartError);
    expect(error.code).toBe('VM_START_FAILED');
    expect(error.exitCode).toBe(1);
    expect(error.stderrTail).toContain('missing.img');
    expect(error.message).toContain('missing.img');
    expect(vm.state).toBe('stopped');
    expect(existsSync(dir)).toBe(false);
    expect(leasesOnDisk(vm.id)).toEqual([]);
    expect(vm.getPids()).toEqual([]);
  });

  it('kills and reaps QEMU when the start times out or is aborted', async () => {
    for (const options of [{ timeoutMs: 1 }, { signal: AbortSignal.abort(new Error('caller gave up')) }]) {
      const vm = track(new QemuHypervisor());
      await vm.createVM(guestConfig());
      const dir = vm.runtimeDir ?? '';
      const error = (await vm.startVM(options).catch((e: unknown) => e)) as VmStartError;
      expect(error).toBeInstanceOf(VmStartError);
      expect(vm.state).toBe('stopped');
      expect(existsSync(dir)).toBe(false);
      expect(leasesOnDisk(vm.id)).toEqual([]);
      expect(vm.exitInfo).toBeDefined();
    }
  });

  it('reports an unexpected QEMU exit, rejects pending calls, cleans up, and still stops', async () => {
    const vm = track(new QemuHypervisor());
    await vm.createVM(guestConfig());
    await vm.startVM({ paused: true });
    const dir = vm.runtimeDir ?? '';
    const [pid] = vm.getPids();
    const exited = new Promise((resolve) => vm.onExit(resolve));
    // A removal waits for a guest that is paused: it is pending when QEMU dies.
    const scratch = scratchDir();
    cleanups.push(scratch.remove);
    await vm.hotplugAddDevice({ type: 'block', id: 'd0', path: rawDisk(scratch.dir, 'd0.img', 'x', identityOf(vm)) });
    const pending = vm.hotplugRemoveDevice('d0', { timeoutMs: 60_000 }).catch((e: unknown) => e);
    await new Promise((resolve) => setTimeout(resolve, 200));
    process.kill(pid ?? -1, 'SIGKILL');
    const info = await exited;
    expect(info).toMatchObject({ expected: false, signal: 'SIGKILL' });
    const error = await pending;
    expect(error).toBeInstanceOf(VmExitedError);
    expect((error as VmExitedError).signal).toBe('SIGKILL');
    expect(vm.state).toBe('stopped');
    expect(existsSync(dir)).toBe(false);
    expect(leasesOnDisk(vm.id)).toEqual([]);
    await expect(vm.check()).rejects.toBeInstanceOf(VmUnhealthyError);
    await vm.stopVM();
  });

  it('the least boot memory boots the default guest; a guest that powers off ends with exitInfo.reason saying so', async () => {
    const vm = track(new QemuHypervisor());
    await vm.createVM(guestConfig({ memory: { bootMiB: MIN_BOOT_MiB, hotplug: 'none' } }));
    const exited = new Promise<VmExitInfo>((resolve) => vm.onExit(resolve));
    await vm.startVM({ waitForChannel: 'agent' });
    const agent = trackAgent(await connectAgent(vm));
    // The agent answers: the guest booted with the least memory the config allows.
    expect(Number((await agent.runOk("awk '/MemTotal/ { print $2 }' /proc/meminfo")).trim())).toBeGreaterThan(64 * 1024);
    await agent.run('poweroff -f', { timeoutMs: 2_000 }).catch(() => undefined);
    expect(await exited).toMatchObject({ expected: false, exitCode: 0, signal: undefined, reason: 'guest-shutdown' });
    expect(vm.state).toBe('stopped');
  });

  it('a guest that resets while startVM waits for its channel fails the start at once with the reason, and cleans up', async () => {
    const vm = track(new QemuHypervisor());
    const base = guestConfig();
    // No init to run: the kernel panics, and with panic=-1 it reboots at once (QEMU, -no-reboot, exits).
    const kernelParams = [...(base.boot?.kernelParams ?? []).filter((p) => !p.startsWith('panic=')), 'panic=-1', 'rdinit=/nonexistent'];
    await vm.createVM({ ...base, boot: { ...base.boot, kernel: base.boot?.kernel ?? '', kernelParams } });
    // No bound of its own: only QEMU's exit can end this start.
    const error = (await vm.startVM({ waitForChannel: 'agent', timeoutMs: Infinity }).catch((e: unknown) => e)) as VmStartError;
    expect(error).toBeInstanceOf(VmStartError);
    expect(error).not.toBeInstanceOf(GuestNotReadyError);
    expect(error).toMatchObject({ exitCode: 0 });
    expect(error.message).toContain('guest-reset');
    expect(vm.exitInfo).toMatchObject({ expected: false, exitCode: 0, reason: 'guest-reset' });
    expect(vm.state).toBe('stopped');
    expect(vm.getPids()).toEqual([]);
  });

  it('stopVM interrupts pending operations and concurrent stops share one result', async () => {
    const vm = track(new QemuHypervisor());
    await vm.createVM(guestConfig());
    await vm.startVM({ paused: true });
    const scratch = scratchDir();
    cleanups.push(scratch.remove);
    await vm.hotplugAddDevice({ type: 'block', id: 'd0', path: rawDisk(scratch.dir, 'd0.img', 'x', identityOf(vm)) });
    // Paused guest: the removal cannot complete and stays pending.
    const pending = vm.hotplugRemoveDevice('d0', { timeoutMs: 60_000 }).catch((e: unknown) => e);
    await new Promise((resolve) => setTimeout(resolve, 200));
    const first = vm.stopVM();
    const second = vm.stopVM();
    expect(second).toBe(first);
    await Promise.all([first, second]);
    const error = await pending;
    expect(error).toBeInstanceOf(VmStoppingError);
    expect((error as Error).message).toContain('hotplugRemoveDevice');
  });

  it('a graceful stop powers the guest off through ACPI before anything is forced', async () => {
    const vm = track(new QemuHypervisor());
    await vm.createVM(guestConfig());
    const shutdowns: HypervisorEvent[] = [];
    vm.onEvent((event) => event.name === 'SHUTDOWN' && shutdowns.push(event));
    await vm.startVM();
    const agent = trackAgent(await connectAgent(vm));
    expect((await agent.runOk('pidof acpid')).trim()).toMatch(/^\d+$/);
    await vm.stopVM({ gracefulTimeoutMs: 30_000 });
    // The guest shut itself down (its acpid ran poweroff): QEMU exited 0 without quit or a signal.
    expect(shutdowns.map((e) => e.data)).toEqual([{ guest: true, reason: 'guest-shutdown' }]);
    expect(vm.exitInfo).toMatchObject({ expected: true, exitCode: 0, signal: undefined, reason: 'guest-shutdown' });
  });

  it('a guest that cannot answer the power button is stopped with quit once the grace period ends', async () => {
    const vm = track(new QemuHypervisor());
    await vm.createVM(guestConfig());
    const shutdowns: HypervisorEvent[] = [];
    vm.onEvent((event) => event.name === 'SHUTDOWN' && shutdowns.push(event));
    // Paused vCPUs never see the button press.
    await vm.startVM({ paused: true });
    await vm.stopVM({ gracefulTimeoutMs: 300 });
    expect(shutdowns.map((e) => e.data)).toEqual([{ guest: false, reason: 'host-qmp-quit' }]);
    expect(vm.exitInfo).toMatchObject({ expected: true, exitCode: 0 });
  });

  it('does not leak processes, runtime directories, uid leases or file descriptors over 20 start/stop cycles', async () => {
    const fdCount = () => readdirSync('/proc/self/fd').length;
    // One warm-up cycle so lazily opened handles (libuv, pino) are not counted as a leak.
    const warm = new QemuHypervisor();
    await warm.createVM(guestConfig());
    await warm.startVM({ paused: true });
    await warm.stopVM();
    const before = fdCount();
    const pids: number[] = [];
    const dirs: string[] = [];
    const ids: string[] = [];
    const identities: VmIdentity[] = [];
    for (let i = 0; i < 20; i++) {
      const vm = new QemuHypervisor();
      await vm.createVM(guestConfig());
      ids.push(vm.id ?? '');
      identities.push(expectLeasedIdentity(vm.identity));
      await vm.startVM({ paused: true });
      pids.push(...vm.getPids());
      dirs.push(vm.runtimeDir ?? '');
      await vm.stopVM();
    }
    expect(pids).toHaveLength(20);
    expect(new Set(ids).size).toBe(20);
    expect(pids.filter((pid) => isProcessAlive(pid))).toEqual([]);
    expect(dirs.filter((dir) => existsSync(dir))).toEqual([]);
    // No lease names any of the 20 VMs (other runtimes on the host may hold leases of their own).
    expect(leasesOnDisk().filter((lease) => ids.includes(lease.vmId))).toEqual([]);
    // Nothing runs as any of their uids any more (unless another runtime leased that uid since).
    const leftovers = processesRunningAs(new Set(identities.map((identity) => identity.uid)));
    const leasedNow = new Set(leasesOnDisk().map((lease) => lease.uid));
    expect(leftovers.filter((p) => !leasedNow.has(p.uid) && isProcessAlive(p.pid))).toEqual([]);
    expect(fdCount()).toBeLessThanOrEqual(before);
  });
});

describe('process boundaries', () => {
  const owner = join(process.cwd(), 'test', 'integration', 'fixtures', 'owner.ts');

  interface Owned {
    child: ChildProcess;
    runtimeDir: string;
    pid: number;
    id: string;
    identity: VmIdentity | null;
  }

  function startOwner(config: object, mode: 'hold' | 'detach' | 'exit'): Promise<Owned> {
    // node itself (not the tsx wrapper, which would be a process in between) owns the VM.
    const child = spawn(process.execPath, ['--import', 'tsx', owner, JSON.stringify(config), mode], { stdio: ['ignore', 'pipe', 'inherit'] });
    cleanups.push(() => {
      child.kill('SIGKILL');
    });
    return new Promise((resolve, reject) => {
      let out = '';
      child.stdout?.on('data', (chunk: Buffer) => {
        out += chunk.toString();
        const line = out.split('\n')[0];
        if (out.includes('\n') && line) resolve({ child, ...(JSON.parse(line) as Omit<Owned, 'child'>) });
      });
      child.on('exit', (code) => {
        if (!out.includes('\n')) reject(new Error(`owner exited with ${code} before starting the VM`));
      });
    });
  }

  /**
   * If the test failed before a VM it took over was stopped (this runs after the VM's own cleanup),
   * kills the QEMU an owner left running and removes what its dead owner left: directory and lease.
   */
  function cleanUpAfter({ pid, runtimeDir, id }: Pick<Owned, 'pid' | 'runtimeDir' | 'id'>): void {
    cleanups.push(async () => {
      if (isProcessAlive(pid)) process.kill(pid, 'SIGKILL');
      await waitUntil(() => !isProcessAlive(pid));
      rmSync(runtimeDir, { recursive: true, force: true });
      dropLeases(id);
    });
  }

  it('QEMU dies when the Node process that owns it is killed with SIGKILL', async () => {
    const { child, runtimeDir, pid, id } = await startOwner(guestConfig(), 'hold');
    // What the orphan sweep (reapOrphans) reclaims once a runtime died: the directory and the lease.
    cleanUpAfter({ pid, runtimeDir, id });
    expect(isProcessAlive(pid)).toBe(true);
    child.kill('SIGKILL');
    await waitUntil(() => !isProcessAlive(pid));
    // Its directory is left behind, but nothing there can be taken over any more.
    const error = (await QemuHypervisor.attach(runtimeDir).catch((e: unknown) => e)) as AttachError;
    expect(error).toBeInstanceOf(AttachError);
    expect(error.message).toMatch(/no longer running/);
  });

  it('a new process re-attaches to a detached VM after its starter died, and the guest still answers', async () => {
    const { child, runtimeDir, pid, id, identity } = await startOwner(guestConfig({ runtime: { detached: true } }), 'exit');
    await new Promise((resolve) => child.on('exit', resolve));
    cleanUpAfter({ pid, runtimeDir, id });
    expect(isProcessAlive(pid)).toBe(true);
    const leased = expectLeasedIdentity(identity ?? undefined);
    expectRunsAs(pid, leased);
    // The lease still names the starter, which is gone.
    expect(leasesOnDisk(id)).toMatchObject([{ uid: leased.uid, owner: { pid: child.pid } }]);
    const vm = track(await QemuHypervisor.attach(runtimeDir));
    expect(vm.state).toBe('running');
    expect(vm.id).toBe(id);
    expect(vm.getPids()).toEqual([pid]);
    // The VM keeps its identity, and its lease is now this process's.
    expect(vm.identity).toEqual(leased);
    expect(leasesOnDisk(id)).toMatchObject([{ uid: leased.uid, owner: { pid: process.pid } }]);
    const agent = trackAgent(await connectAgent(vm));
    expect(await agent.runOk('echo attached')).toBe('attached\n');
    await agent.close();
    await vm.stopVM();
    expect(isProcessAlive(pid)).toBe(false);
    expect(existsSync(runtimeDir)).toBe(false);
    expect(leasesOnDisk(id)).toEqual([]);
  });

  it('a VM handed over by a live owner (detach) can be taken over and stopped by another process', async () => {
    const { runtimeDir, pid, id, identity } = await startOwner(guestConfig(), 'detach');
    cleanUpAfter({ pid, runtimeDir, id });
    const leased = expectLeasedIdentity(identity ?? undefined);
    const vm = track(await QemuHypervisor.attach(runtimeDir));
    expect(vm.getPids()).toEqual([pid]);
    expect(vm.identity).toEqual(leased);
    expectRunsAs(pid, leased);
    expect(leasesOnDisk(id)).toMatchObject([{ uid: leased.uid, owner: { pid: process.pid } }]);
    await vm.check();
    await vm.stopVM();
    expect(isProcessAlive(pid)).toBe(false);
    expect(existsSync(runtimeDir)).toBe(false);
    expect(leasesOnDisk(id)).toEqual([]);
  });

  it('hotplug state survives re-attach: plugged devices, their ports and what may be removed', async () => {
    const scratch = scratchDir();
    cleanups.push(scratch.remove);
    const { child, runtimeDir, pid, id, identity } = await startOwner(guestConfig({ runtime: { detached: true } }), 'exit');
    await new Promise((resolve) => child.on('exit', resolve));
    cleanUpAfter({ pid, runtimeDir, id });
    const first = await QemuHypervisor.attach(runtimeDir);
    const owned = identityOf(first);
    expect(owned).toEqual(identity);
    expect(await first.hotplugAddDevice({ type: 'block', id: 'kept', path: rawDisk(scratch.dir, 'kept.img', 'K', owned) })).toMatchObject({ bus: 'rp0' });
    await first.detach();
    const second = track(await QemuHypervisor.attach(runtimeDir));
    expect(second.identity).toEqual(owned);
    expect(second.devices().find((d) => d.id === 'kept')).toMatchObject({ hotplugged: true, bus: 'rp0' });
    // The port it holds is not handed out again, and it can be removed by its new owner.
    expect(await second.hotplugAddDevice({ type: 'block', id: 'new', path: rawDisk(scratch.dir, 'new.img', 'N', owned) })).toMatchObject({ bus: 'rp1' });
    const agent = trackAgent(await connectAgent(second));
    expect((await agent.runOk('ls /sys/block')).trim().split(/\s+/).sort()).toEqual(['vda', 'vdb']);
    await second.hotplugRemoveDevice('kept');
    expect(second.devices().find((d) => d.id === 'kept')).toBeUndefined();
    await agent.close();
    await second.stopVM();
    expect(isProcessAlive(pid)).toBe(false);
  });

  it('refuses to attach to a directory that holds no VM', async () => {
    const scratch = scratchDir();
    cleanups.push(scratch.remove);
    const error = (await QemuHypervisor.attach(scratch.dir).catch((e: unknown) => e)) as AttachError;
    expect(error).toBeInstanceOf(AttachError);
    expect(error.message).toMatch(/no state file/);
  });
});
