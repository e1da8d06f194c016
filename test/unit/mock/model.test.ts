// The mock's model of a QEMU VM: slot names and accounting, what the host must have, memory and
// vCPU rules, the events QEMU would send, capabilities, pids, and handing a VM over.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { SandboxConfigInput } from '../../../src/hypervisor/config/index.ts';
import {
  AttachError,
  HotplugError,
  NoFreeSlotError,
  ResourceLimitError,
  UnsupportedOperationError,
  VmStartError,
} from '../../../src/hypervisor/errors.ts';
import type { HypervisorEvent } from '../../../src/hypervisor/types.ts';
import { MockHypervisor, type MockHypervisorOptions } from '../../../src/mock/index.ts';
import { QemuHypervisor } from '../../../src/qemu/qemu-hypervisor.ts';

const dir = mkdtempSync(join(tmpdir(), 'svmm-mock-model-'));
const kernel = join(dir, 'vmlinuz');
writeFileSync(kernel, '');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const vms: { stopVM(): Promise<void> }[] = [];
afterEach(async () => {
  for (const vm of vms.splice(0)) await vm.stopVM();
});

function config(overrides: Partial<SandboxConfigInput> = {}): SandboxConfigInput {
  return { boot: { kernel }, hotplug: { rootPorts: 3 }, ...overrides };
}

function mock(options: MockHypervisorOptions = {}): MockHypervisor {
  const vm = new MockHypervisor(options);
  vms.push(vm);
  return vm;
}

async function running(overrides: Partial<SandboxConfigInput> = {}, options: MockHypervisorOptions = {}): Promise<MockHypervisor> {
  const vm = mock(options);
  await vm.createVM(config(overrides));
  await vm.startVM();
  return vm;
}

function image(name: string): string {
  const path = join(dir, name);
  writeFileSync(path, '');
  return path;
}

const disk = (id: string, extra: object = {}) => ({ type: 'block' as const, id, path: image(`${id}.img`), ...extra });
const rejection = (promise: Promise<unknown>) => promise.then(() => undefined, (error: unknown) => error);

describe('slots', () => {
  it('PCI devices take root ports rp0… in order; freed ports come after those never used, the least recently freed first', async () => {
    const vm = await running({}, { host: { vfioReady: () => true } });
    expect((await vm.hotplugAddDevice(disk('a'))).bus).toBe('rp0');
    expect((await vm.hotplugAddDevice({ type: 'vfio', id: 'gpu', hostAddress: '01:00.0' })).bus).toBe('rp1');
    expect((await vm.hotplugAddDevice(disk('c'))).bus).toBe('rp2');
    const error = (await rejection(vm.hotplugAddDevice(disk('d')))) as NoFreeSlotError;
    expect(error).toBeInstanceOf(NoFreeSlotError);
    expect(error.deviceId).toBe('d');
    await vm.hotplugRemoveDevice('gpu');
    expect((await vm.hotplugAddDevice(disk('d'))).bus).toBe('rp1');
    await vm.hotplugRemoveDevice('c');
    // Two distinct times, however fast the machine.
    await new Promise((resolve) => setTimeout(resolve, 5));
    await vm.hotplugRemoveDevice('a');
    expect([(await vm.hotplugAddDevice(disk('e'))).bus, (await vm.hotplugAddDevice(disk('f'))).bus]).toEqual(['rp2', 'rp0']);
  });

  it('the first hot SCSI disk brings the controller, which takes a root port and stays; its disks sit on scsi0.0', async () => {
    const vm = await running();
    const [a, b] = await Promise.all([vm.hotplugAddDevice(disk('s0', { driver: 'virtio-scsi' })), vm.hotplugAddDevice(disk('s1', { driver: 'virtio-scsi' }))]);
    expect([a.bus, b.bus]).toEqual(['scsi0.0', 'scsi0.0']);
    expect((await vm.hotplugAddDevice(disk('p0'))).bus).toBe('rp1');
    await vm.hotplugRemoveDevice('s0');
    await vm.hotplugRemoveDevice('s1');
    expect((await vm.hotplugAddDevice(disk('p1'))).bus).toBe('rp2');
    await expect(vm.hotplugAddDevice(disk('p2'))).rejects.toBeInstanceOf(NoFreeSlotError);
  });

  it('with a cold-plugged SCSI disk the controller is already there and takes no root port', async () => {
    const vm = await running({ devices: [disk('boot-scsi', { driver: 'virtio-scsi' })] });
    expect((await vm.hotplugAddDevice(disk('s0', { driver: 'virtio-scsi' }))).bus).toBe('scsi0.0');
    expect((await vm.hotplugAddDevice(disk('p0'))).bus).toBe('rp0');
  });

  it('a SCSI disk when no port is left for the controller is NoFreeSlotError, and nothing stays', async () => {
    const vm = await running({ hotplug: { rootPorts: 1 } });
    await vm.hotplugAddDevice(disk('p0'));
    await expect(vm.hotplugAddDevice(disk('s0', { driver: 'virtio-scsi' }))).rejects.toBeInstanceOf(NoFreeSlotError);
    expect(vm.devices().filter((d) => d.hotplugged).map((d) => d.id)).toEqual(['p0']);
  });
});

describe('the host', () => {
  it('a missing image fails the hotplug at blockdev-add, naming the path', async () => {
    const vm = await running();
    const path = join(dir, 'missing.img');
    const error = (await rejection(vm.hotplugAddDevice({ type: 'block', id: 'm', path }))) as HotplugError;
    expect(error).toBeInstanceOf(HotplugError);
    expect(error.step).toBe('blockdev-add');
    expect(error.message).toContain(path);
  });

  it('a tap that does not exist fails at netdev_add, a device not bound to vfio-pci at device_add', async () => {
    const vm = await running({}, { host: { tapExists: (name) => name === 'tap-ok', vfioReady: () => false } });
    expect((await vm.hotplugAddDevice({ type: 'net', id: 'n0', tap: { ifname: 'tap-ok' } })).bus).toBe('rp0');
    await expect(vm.hotplugAddDevice({ type: 'net', id: 'n1', tap: { ifname: 'tap-gone' } })).rejects.toMatchObject({ step: 'netdev_add' });
    await expect(vm.hotplugAddDevice({ type: 'vfio', id: 'g0', hostAddress: '0000:7f:00.0' })).rejects.toMatchObject({ step: 'device_add' });
    expect(vm.guest?.nics).toEqual(['n0']);
  });

  it('a missing kernel or cold disk fails the start as QEMU would: status 1 and a stderr naming it', async () => {
    const vm = mock();
    await vm.createVM(config({ boot: { kernel: join(dir, 'no-kernel') } }));
    const error = (await rejection(vm.startVM())) as VmStartError;
    expect(error).toBeInstanceOf(VmStartError);
    expect(error.exitCode).toBe(1);
    expect(error.stderrTail).toContain('no-kernel');
    const other = mock();
    await other.createVM(config({ devices: [{ type: 'block', id: 'gone', path: join(dir, 'gone.img') }] }));
    await expect(other.startVM()).rejects.toMatchObject({ exitCode: 1, stderrTail: expect.stringContaining('gone.img') as unknown });
  });

  it("with host.accessProblem, paths the VM's uid cannot reach are refused as QEMU's backend refuses them, before anything runs", async () => {
    // A probe that stands in for the stat-based check: every path under /locked is out of reach.
    const accessProblem = (path: string, _mode: unknown, identity: { uid: number }) => (path.startsWith(dir) && path.endsWith('.locked') ? `uid ${identity.uid} cannot reach ${path}` : undefined);
    const locked = image('k.locked');
    const vm = mock({ host: { accessProblem } });
    await vm.createVM(config({ boot: { kernel: locked } }));
    const uid = vm.identity?.uid;
    expect(uid).toBeDefined();
    await expect(vm.startVM()).rejects.toMatchObject({ code: 'CONFIG_INVALID', issues: [{ path: 'boot.kernel', message: `uid ${uid} cannot reach ${locked}` }] });
    expect(vm.state).toBe('created');
    const ok = await running({}, { host: { accessProblem } });
    const disk = image('d.locked');
    await expect(ok.hotplugAddDevice({ type: 'block', id: 'd', path: disk })).rejects.toMatchObject({ code: 'CONFIG_INVALID', issues: [{ path: 'device.path' }] });
    expect(ok.devices().some((d) => d.hotplugged)).toBe(false);
  });

  it('host: false accepts whatever the config names', async () => {
    const vm = mock({ host: false });
    await vm.createVM({ boot: { kernel: '/nowhere/vmlinuz' } });
    await vm.startVM();
    expect((await vm.hotplugAddDevice({ type: 'block', id: 'x', path: '/nowhere/x.img' })).bus).toBe('rp0');
  });
});

describe('memory', () => {
  it('virtio-mem requests align up to 2 MiB, and the guest plugs them only while it runs', async () => {
    const vm = await running({ memory: { bootMiB: 256, maxMiB: 1024, hotplug: 'virtio-mem' } });
    expect(await vm.resizeMemory(257)).toEqual({ previousMiB: 256, currentMiB: 258 });
    expect(vm.guest?.memoryMiB).toBe(258);
    await vm.pauseVM();
    const resize = vm.resizeMemory(1024);
    let settled = false;
    void resize.then(() => (settled = true));
    // Another call's round trip: the guest, paused, has plugged nothing meanwhile.
    await vm.getThreadIds();
    expect(settled).toBe(false);
    expect(vm.guest?.memoryMiB).toBe(258);
    await vm.resumeVM();
    expect(await resize).toEqual({ previousMiB: 258, currentMiB: 1024 });
    expect(vm.guest?.memoryMiB).toBe(1024);
  });

  it('DIMM steps are at most 48 times the memory the guest has; a run out of slots keeps the steps already taken', async () => {
    const vm = await running({ memory: { bootMiB: 128, maxMiB: 128 + 128 * 60, hotplug: 'dimm', slots: 1 } });
    const error = (await rejection(vm.resizeMemory(128 + 128 * 60))) as NoFreeSlotError;
    expect(error).toBeInstanceOf(NoFreeSlotError);
    expect(error.deviceId).toBe('dimm1');
    // The first step was 48 x 128 MiB = 6144 MiB, then no slot was left for the remaining 1536.
    expect(await vm.resizeMemory(128 + 6144)).toEqual({ previousMiB: 6272, currentMiB: 6272 });
  });

  it('memory.hotplug "none" cannot resize, and limits come first otherwise', async () => {
    const none = await running();
    await expect(none.resizeMemory(4096)).rejects.toBeInstanceOf(UnsupportedOperationError);
    const dimm = await running({ memory: { bootMiB: 256, maxMiB: 512, hotplug: 'dimm' } });
    await expect(dimm.resizeMemory(640)).rejects.toBeInstanceOf(ResourceLimitError);
    await expect(dimm.resizeMemory(200)).rejects.toBeInstanceOf(ResourceLimitError);
  });
});

describe('vCPUs and pids', () => {
  it('thread ids are stable per vCPU index, and the pid cannot be a real process', async () => {
    const vm = await running({ cpus: { boot: 1, max: 3 } });
    const [pid] = vm.getPids();
    expect(pid).toBeGreaterThanOrEqual(4 * 1024 * 1024);
    expect(() => process.kill(pid as number, 0)).toThrow(/ESRCH/);
    await vm.resizeVCPUs(3);
    const threads = await vm.getThreadIds();
    await vm.resizeVCPUs(2);
    await vm.resizeVCPUs(3);
    expect(await vm.getThreadIds()).toEqual(threads);
    expect(vm.guest?.onlineCpus).toBe(3);
    const other = await running();
    expect(other.getPids()[0]).not.toBe(pid);
  });
});

describe('events', () => {
  it('are the ones QEMU 7.2 sends: RESUME, STOP, DEVICE_DELETED per part, the lapic of a vCPU, memory size changes, SHUTDOWN', async () => {
    const vm = mock();
    const events: HypervisorEvent[] = [];
    vm.onEvent((event) => events.push(event));
    await vm.createVM(config({ cpus: { boot: 1, max: 2 }, memory: { bootMiB: 256, maxMiB: 512, hotplug: 'virtio-mem' } }));
    await vm.startVM();
    await vm.pauseVM();
    await vm.resumeVM();
    await vm.hotplugAddDevice(disk('b0'));
    await vm.hotplugRemoveDevice('b0');
    await vm.hotplugAddDevice(disk('s0', { driver: 'virtio-scsi' }));
    await vm.hotplugRemoveDevice('s0');
    await vm.resizeMemory(258);
    await vm.resizeVCPUs(2);
    await vm.resizeVCPUs(1);
    await vm.stopVM();
    const names = (e: HypervisorEvent) => (e.name === 'ACPI_DEVICE_OST' ? [] : [[e.name, e.data]]);
    expect(events.flatMap(names)).toEqual([
      ['RESUME', {}],
      ['STOP', {}],
      ['RESUME', {}],
      ['DEVICE_DELETED', { path: '/machine/peripheral/b0/virtio-backend' }],
      ['DEVICE_DELETED', { device: 'b0', path: '/machine/peripheral/b0' }],
      ['DEVICE_DELETED', { device: 's0', path: '/machine/peripheral/s0' }],
      ['MEMORY_DEVICE_SIZE_CHANGE', { size: 2 * 1024 * 1024, 'qom-path': '/machine/peripheral/vmem0', id: 'vmem0' }],
      ['DEVICE_DELETED', { path: '/machine/peripheral/vcpu1/lapic' }],
      ['SHUTDOWN', { guest: false, reason: 'host-qmp-quit' }],
    ]);
  });

  it('a graceful stop lets a running guest power off', async () => {
    const vm = await running();
    const events: string[] = [];
    vm.onEvent((event) => events.push(`${event.name}${event.name === 'SHUTDOWN' ? `:${String(event.data['reason'])}` : ''}`));
    await vm.stopVM({ gracefulTimeoutMs: 5_000 });
    expect(events).toEqual(['POWERDOWN', 'SHUTDOWN:guest-shutdown']);
    expect(vm.exitInfo).toMatchObject({ expected: true, exitCode: 0 });
  });
});

describe('capabilities', () => {
  it('are the QEMU backend’s for the same config', async () => {
    for (const memory of [{}, { bootMiB: 256, maxMiB: 512, hotplug: 'virtio-mem' as const }, { bootMiB: 256, maxMiB: 512, hotplug: 'dimm' as const }]) {
      const runtimeDir = mkdtempSync(join(tmpdir(), 'svmm-caps-'));
      const qemu = new QemuHypervisor();
      vms.push(qemu);
      const vm = mock();
      expect(vm.capabilities()).toEqual(qemu.capabilities());
      await qemu.createVM(config({ memory, runtime: { dir: join(runtimeDir, 'vm') } }));
      await vm.createVM(config({ memory }));
      expect(vm.capabilities()).toEqual(qemu.capabilities());
      await qemu.stopVM();
      rmSync(runtimeDir, { recursive: true, force: true });
    }
  });
});

describe('detach and attach', () => {
  it('another MockHypervisor takes over a detached VM with its devices, and stops it', async () => {
    const first = await running({ cpus: { boot: 1, max: 2 } });
    await first.hotplugAddDevice(disk('kept'));
    const [pid] = first.getPids();
    const runtimeDir = first.runtimeDir as string;
    await first.detach();
    expect(first.state).toBe('stopped');
    expect(first.getPids()).toEqual([]);

    const second = await MockHypervisor.attach(runtimeDir);
    vms.push(second);
    expect(second.state).toBe('running');
    expect(second.getPids()).toEqual([pid]);
    expect(second.devices().find((d) => d.id === 'kept')?.bus).toBe('rp0');
    await second.hotplugRemoveDevice('kept');
    await second.stopVM();
    expect(second.exitInfo?.expected).toBe(true);
    await expect(MockHypervisor.attach(runtimeDir)).rejects.toBeInstanceOf(AttachError);
  });

  it('refuses a directory nothing was detached to', async () => {
    await expect(MockHypervisor.attach('mock:nothing-here')).rejects.toBeInstanceOf(AttachError);
  });
});
