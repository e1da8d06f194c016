// Fault injection against the QEMU backend: QEMU killed at every stage, the QMP connection dropped
// by QEMU's side, bad disks and devices QEMU refuses, and a guest kernel panic. Every pending call
// must reject with a typed error (not by running into its deadline), the exit must be reported,
// nothing may leak, and stopVM must still succeed.
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { QemuHypervisor } from '../../src/qemu/qemu-hypervisor.ts';
import { isProcessAlive } from '../../src/qemu/process/proc-fs.ts';
import { DeviceExistsError, HotplugError, VmExitedError, VmStartError, VmUnhealthyError } from '../../src/hypervisor/errors.ts';
import { QmpDisconnectedError } from '../../src/qmp/index.ts';
import { ConfigError } from '../../src/hypervisor/config/index.ts';
import type { HypervisorEvent, VmExitInfo } from '../../src/hypervisor/types.ts';
import { OperationTimeoutError } from '../../src/errors.ts';
import {
  connectAgent,
  expectLeasedIdentity,
  expectRunsAs,
  fakeQemu,
  giveTo,
  guestConfig,
  identityOf,
  leasesOnDisk,
  rawDisk,
  scratchDir,
} from './helpers/sandbox.ts';
import { useCleanups } from './helpers/cleanups.ts';

const { cleanups, track } = useCleanups();

const fdCount = () => readdirSync('/proc/self/fd').length;
const tick = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Asserts the VM is fully gone: no QEMU, no runtime directory, no uid lease, state stopped, stopVM still fine. */
async function expectCleanedUp(vm: QemuHypervisor, pid: number, dir: string): Promise<void> {
  expect(vm.state).toBe('stopped');
  expect(isProcessAlive(pid)).toBe(false);
  expect(existsSync(dir)).toBe(false);
  expect(leasesOnDisk(vm.id)).toEqual([]);
  expect(vm.getPids()).toEqual([]);
  await vm.stopVM();
}

/** The error a pending call got was the exit's, not its own deadline running out. */
function expectExited(error: unknown, operation: string): void {
  expect(error).toBeInstanceOf(VmExitedError);
  expect((error as VmExitedError).signal).toBe('SIGKILL');
  expect((error as Error).message).toContain(operation);
}

describe('QEMU killed with SIGKILL', () => {
  it('during start: startVM rejects with the signal, QEMU is reaped, nothing is left', async () => {
    const vm = track(new QemuHypervisor());
    await vm.createVM(guestConfig());
    const dir = vm.runtimeDir ?? '';
    const fds = fdCount();
    const starting = vm.startVM({ timeoutMs: 60_000 }).catch((e: unknown) => e);
    // Catch QEMU the moment it is spawned, long before its QMP socket is up.
    while (vm.getPids().length === 0 && vm.state === 'starting') await new Promise((resolve) => setImmediate(resolve));
    const [pid] = vm.getPids();
    expect(pid).toBeGreaterThan(0);
    process.kill(pid ?? -1, 'SIGKILL');
    const error = (await starting) as VmStartError;
    expect(error).toBeInstanceOf(VmStartError);
    expect(error.signal).toBe('SIGKILL');
    expect(error.message).toContain('QEMU exited during start');
    expect(error.cause).not.toBeInstanceOf(OperationTimeoutError);
    expect(vm.exitInfo).toMatchObject({ expected: false, signal: 'SIGKILL' });
    await expectCleanedUp(vm, pid ?? -1, dir);
    expect(fdCount()).toBeLessThanOrEqual(fds);
  });

  it('while a QMP command is pending: the call rejects with VmExitedError and the exit is reported', async () => {
    const vm = track(new QemuHypervisor());
    await vm.createVM(guestConfig());
    await vm.startVM({ paused: true });
    const dir = vm.runtimeDir ?? '';
    const [pid = -1] = vm.getPids();
    const exits: VmExitInfo[] = [];
    const reported = new Promise<void>((resolve) =>
      vm.onExit((info) => {
        exits.push(info);
        resolve();
      }),
    );
    // A stopped QEMU reads nothing: the command stays pending until QEMU is killed.
    process.kill(pid, 'SIGSTOP');
    const pending = vm.getThreadIds({ timeoutMs: 60_000 }).catch((e: unknown) => e);
    await tick(200);
    process.kill(pid, 'SIGKILL');
    expectExited(await pending, 'getThreadIds');
    // Pending calls are rejected first, then the VM is cleaned up and the exit reported, once.
    await reported;
    expect(exits).toEqual([expect.objectContaining({ expected: false, signal: 'SIGKILL' })]);
    await expect(vm.check()).rejects.toBeInstanceOf(VmUnhealthyError);
    await expectCleanedUp(vm, pid, dir);
  });

  it('during a hotplug: the hotplug rejects with VmExitedError and is not recorded', async () => {
    const scratch = scratchDir();
    cleanups.push(scratch.remove);
    const vm = track(new QemuHypervisor());
    await vm.createVM(guestConfig());
    await vm.startVM({ paused: true });
    const dir = vm.runtimeDir ?? '';
    const [pid = -1] = vm.getPids();
    const reported = new Promise((resolve) => vm.onExit(resolve));
    process.kill(pid, 'SIGSTOP');
    const pending = vm.hotplugAddDevice({ type: 'block', id: 'late', path: rawDisk(scratch.dir, 'late.img', 'L', identityOf(vm)) }, { timeoutMs: 60_000 }).catch((e: unknown) => e);
    await tick(200);
    process.kill(pid, 'SIGKILL');
    expectExited(await pending, 'hotplugAddDevice');
    expect(vm.devices().find((d) => d.id === 'late')).toBeUndefined();
    expect(await reported).toMatchObject({ expected: false, signal: 'SIGKILL' });
    await expectCleanedUp(vm, pid, dir);
  });

  it('many calls pending at once all reject, none by timeout, and file descriptors do not leak', async () => {
    const warm = new QemuHypervisor();
    await warm.createVM(guestConfig());
    await warm.startVM({ paused: true });
    await warm.stopVM();
    const fds = fdCount();
    const vm = track(new QemuHypervisor());
    await vm.createVM(guestConfig());
    await vm.startVM({ paused: true });
    const [pid = -1] = vm.getPids();
    process.kill(pid, 'SIGSTOP');
    const settled = Promise.allSettled<unknown>([vm.getThreadIds(), vm.resizeVCPUs(2), vm.resizeMemory(512), vm.pauseVM(), vm.hotplugRemoveDevice('nothing')]);
    await tick(200);
    process.kill(pid, 'SIGKILL');
    const results = await settled;
    const reasons = results.map((r) => (r.status === 'rejected' ? (r.reason as Error) : undefined));
    // pauseVM needs 'running' (the VM is paused) and the removal an existing device: those two are
    // refused at once; the three that reached QEMU end with its exit.
    expect(reasons.filter((r) => r instanceof VmExitedError)).toHaveLength(3);
    expect(reasons.some((r) => r instanceof OperationTimeoutError)).toBe(false);
    await vm.stopVM();
    expect(fdCount()).toBeLessThanOrEqual(fds);
  });
});

describe('the QMP connection closed by QEMU while it runs', () => {
  it('rejects the pending call with QmpDisconnectedError, then reconnects for the next one', async () => {
    const scratch = scratchDir();
    cleanups.push(scratch.remove);
    const vm = track(new QemuHypervisor());
    await vm.createVM({ ...guestConfig(), runtime: { qemuPath: fakeQemu(scratch.dir, ['query-cpus-fast']) } });
    await vm.startVM();
    const [pid = -1] = vm.getPids();
    // The stand-in is launched like QEMU: as the VM's own uid.
    expectRunsAs(pid, identityOf(vm));
    const events: HypervisorEvent[] = [];
    vm.onEvent((event) => events.push(event));
    const pending = vm.getThreadIds({ timeoutMs: 60_000 }).catch((e: unknown) => e);
    await tick(200);
    process.kill(pid, 'SIGUSR1');
    const error = await pending;
    expect(error).toBeInstanceOf(QmpDisconnectedError);
    expect((error as QmpDisconnectedError).command).toBe('query-cpus-fast');
    // QEMU still runs: the next call gets a fresh connection.
    expect(isProcessAlive(pid)).toBe(true);
    await vm.check();
    await vm.pauseVM();
    expect(events.map((e) => e.name)).toContain('STOP');
    expect(vm.state).toBe('paused');
    const dir = vm.runtimeDir ?? '';
    await vm.stopVM();
    expect(vm.exitInfo).toMatchObject({ expected: true, exitCode: 0 });
    expect(isProcessAlive(pid)).toBe(false);
    expect(existsSync(dir)).toBe(false);
    expect(leasesOnDisk(vm.id)).toEqual([]);
  });
});

describe('a QEMU that ignores quit', () => {
  it('is killed with SIGKILL and reaped, and the stop still succeeds', async () => {
    const scratch = scratchDir();
    cleanups.push(scratch.remove);
    const vm = track(new QemuHypervisor());
    await vm.createVM({ ...guestConfig(), runtime: { qemuPath: fakeQemu(scratch.dir, ['quit']) } });
    await vm.startVM();
    const [pid = -1] = vm.getPids();
    const dir = vm.runtimeDir ?? '';
    await vm.stopVM();
    expect(vm.exitInfo).toMatchObject({ expected: true, signal: 'SIGKILL' });
    await expectCleanedUp(vm, pid, dir);
  });
});

describe('devices that cannot be plugged', () => {
  it('a disk image deleted before the hotplug fails at blockdev-add in QEMU’s words, leaving the slot free', async () => {
    const scratch = scratchDir();
    cleanups.push(scratch.remove);
    const vm = track(new QemuHypervisor());
    await vm.createVM(guestConfig({ hotplug: { rootPorts: 1 } }));
    await vm.startVM({ paused: true });
    const path = rawDisk(scratch.dir, 'gone.img', 'G', identityOf(vm));
    rmSync(path);
    const error = (await vm.hotplugAddDevice({ type: 'block', id: 'gone', path }).catch((e: unknown) => e)) as HotplugError;
    expect(error).toBeInstanceOf(HotplugError);
    expect(error.step).toBe('blockdev-add');
    expect(error.message).toMatch(/gone\.img.*No such file or directory/);
    // The only root port is free again.
    const ok = await vm.hotplugAddDevice({ type: 'block', id: 'gone', path: rawDisk(scratch.dir, 'back.img', 'B', identityOf(vm)) });
    expect(ok.bus).toBe('rp0');
  });

  it('a disk given to another VM\'s uid cannot be opened by this VM\'s QEMU', async () => {
    const scratch = scratchDir();
    cleanups.push(scratch.remove);
    const vm = track(new QemuHypervisor());
    await vm.createVM(guestConfig({ hotplug: { rootPorts: 1 } }));
    await vm.startVM({ paused: true });
    // Another VM, only created: it has its own uid from then on.
    const other = track(new QemuHypervisor());
    await other.createVM(guestConfig());
    const mine = expectLeasedIdentity(vm.identity);
    const theirs = expectLeasedIdentity(other.identity);
    expect(theirs.uid).not.toBe(mine.uid);
    const path = rawDisk(scratch.dir, 'theirs.img', 'T', theirs);
    // Refused before QEMU is asked: the error names QEMU's uid and the owner that keeps it out.
    const error = (await vm.hotplugAddDevice({ type: 'block', id: 'theirs', path }).catch((e: unknown) => e)) as ConfigError;
    expect(error).toBeInstanceOf(ConfigError);
    expect(error.issues).toEqual([
      { path: 'device.path', message: `QEMU runs as uid ${mine.uid} (gid ${mine.gid}) and cannot write ${path}: it is mode 0600, owner ${theirs.uid}:${theirs.gid}` },
    ]);
    expect(vm.devices().some((d) => d.hotplugged)).toBe(false);
    // Given to this VM, the same image plugs, on the port the refusal left free.
    giveTo(path, mine);
    expect(await vm.hotplugAddDevice({ type: 'block', id: 'theirs', path })).toMatchObject({ bus: 'rp0' });
    await other.stopVM();
    expect(leasesOnDisk(other.id)).toEqual([]);
  });

  it('a reused id is refused, whether it names a cold-plugged device, a hot-plugged one, or a concurrent hotplug', async () => {
    const scratch = scratchDir();
    cleanups.push(scratch.remove);
    const vm = track(new QemuHypervisor());
    await vm.createVM(guestConfig());
    await vm.startVM({ paused: true });
    const disk = (name: string) => rawDisk(scratch.dir, `${name}.img`, name, identityOf(vm));
    await expect(vm.hotplugAddDevice({ type: 'block', id: 'agent', path: disk('a') })).rejects.toBeInstanceOf(DeviceExistsError);
    await vm.hotplugAddDevice({ type: 'block', id: 'd1', path: disk('b') });
    await expect(vm.hotplugAddDevice({ type: 'block', id: 'd1', path: disk('c') })).rejects.toBeInstanceOf(DeviceExistsError);
    const both = await Promise.allSettled([
      vm.hotplugAddDevice({ type: 'block', id: 'twin', path: disk('d') }),
      vm.hotplugAddDevice({ type: 'block', id: 'twin', path: disk('e') }),
    ]);
    expect(both.map((r) => r.status).sort()).toEqual(['fulfilled', 'rejected']);
    expect(both.find((r) => r.status === 'rejected')?.reason).toBeInstanceOf(DeviceExistsError);
    expect(vm.devices().filter((d) => d.id === 'twin')).toHaveLength(1);
  });

  it('a device QEMU refuses at hotplug carries QEMU’s reason, and nothing stays half-plugged', async () => {
    const vm = track(new QemuHypervisor());
    await vm.createVM(guestConfig({ hotplug: { rootPorts: 1 } }));
    await vm.startVM({ paused: true });
    const error = (await vm.hotplugAddDevice({ type: 'vfio', id: 'gpu', hostAddress: '0000:7f:1f.7' }).catch((e: unknown) => e)) as HotplugError;
    expect(error).toBeInstanceOf(HotplugError);
    expect(error.step).toBe('device_add');
    expect(error.message).toMatch(/0000:7f:1f\.7/);
    expect(vm.devices().some((d) => d.hotplugged)).toBe(false);
  });

  it('a cold-plugged device QEMU refuses fails the start with QEMU’s stderr', async () => {
    // No /dev/vhost-vsock on this machine: QEMU refuses the vsock device and exits.
    const vm = track(new QemuHypervisor());
    await vm.createVM(guestConfig({ devices: [{ type: 'vsock', id: 'vsock0', guestCid: 3 }] }));
    const error = (await vm.startVM().catch((e: unknown) => e)) as VmStartError;
    expect(error).toBeInstanceOf(VmStartError);
    expect(error.exitCode).toBe(1);
    expect(error.stderrTail).toMatch(/vhost-vsock/);
    expect(error.message).toMatch(/vhost-vsock/);
    expect(vm.state).toBe('stopped');
    expect(leasesOnDisk(vm.id)).toEqual([]);
  });
});

describe('a guest kernel panic', () => {
  it('surfaces as a GUEST_PANICKED event and through check(), and the VM still stops', async () => {
    const vm = track(new QemuHypervisor());
    const base = guestConfig();
    await vm.createVM({ ...base, devices: [...(base.devices ?? []), { type: 'pvpanic', id: 'panic0' }] });
    const panicked = new Promise<HypervisorEvent>((resolve) => vm.onEvent((e) => e.name === 'GUEST_PANICKED' && resolve(e)));
    await vm.startVM();
    const agent = await connectAgent(vm);
    cleanups.push(() => agent.close());
    await vm.check();
    // The guest dies mid-command: the agent never answers this one.
    void agent.run('echo c > /proc/sysrq-trigger', { timeoutMs: 60_000 }).catch(() => {});
    const event = await panicked;
    expect(event.data['action']).toBe('pause');
    const error = (await vm.check().catch((e: unknown) => e)) as VmUnhealthyError;
    expect(error).toBeInstanceOf(VmUnhealthyError);
    expect(error.status).toBe('guest-panicked');
    // QEMU's cont takes its run state out of guest-panicked; the guest is still dead.
    await vm.pauseVM();
    await vm.resumeVM();
    await expect(vm.check()).rejects.toMatchObject({ status: 'guest-panicked' });
    await agent.close();
    await vm.stopVM();
    expect(vm.state).toBe('stopped');
  });
});
