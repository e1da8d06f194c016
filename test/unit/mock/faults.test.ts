// The mock's failure injection: each armed fault produces the error a runtime would get from a real
// hypervisor failing that way, and leaves the VM in the state the QEMU backend would.
import { afterEach, describe, expect, it } from 'vitest';
import { OperationAbortedError, OperationTimeoutError } from '../../../src/errors.ts';
import type { SandboxConfigInput } from '../../../src/hypervisor/config/index.ts';
import {
  DeviceRemovalTimeoutError,
  HotplugError,
  NoFreeSlotError,
  VmExitedError,
  VmStartError,
  VmStoppingError,
  VmUnhealthyError,
} from '../../../src/hypervisor/errors.ts';
import type { HypervisorEvent, VmExitInfo } from '../../../src/hypervisor/types.ts';
import { MockHypervisor, type MockHypervisorOptions } from '../../../src/mock/index.ts';

const vms: MockHypervisor[] = [];
afterEach(async () => {
  for (const vm of vms.splice(0)) await vm.stopVM();
});

function config(overrides: Partial<SandboxConfigInput> = {}): SandboxConfigInput {
  return { boot: { kernel: '/boot/vmlinuz' }, hotplug: { rootPorts: 2 }, ...overrides };
}

/** A mock on a host where every file exists, so that only the armed faults fail. */
function mock(options: MockHypervisorOptions = {}): MockHypervisor {
  const vm = new MockHypervisor({ host: false, ...options });
  vms.push(vm);
  return vm;
}

async function running(options: MockHypervisorOptions = {}, overrides: Partial<SandboxConfigInput> = {}, paused = false): Promise<MockHypervisor> {
  const vm = mock(options);
  await vm.createVM(config(overrides));
  await vm.startVM({ paused });
  return vm;
}

const disk = (id: string, extra: object = {}) => ({ type: 'block' as const, id, path: `/disks/${id}.img`, ...extra });
const rejection = (promise: Promise<unknown>) => promise.then(() => undefined, (error: unknown) => error);

describe('start failures', () => {
  it('an armed start failure is a VmStartError with the exit status and stderr, and the VM is left stopped and clean', async () => {
    const vm = mock();
    await vm.createVM(config());
    vm.faults.failNextStart({ exitCode: 1, stderr: 'qemu-system-x86_64: -machine q35: unsupported' });
    const error = (await rejection(vm.startVM())) as VmStartError;
    expect(error).toBeInstanceOf(VmStartError);
    expect(error.exitCode).toBe(1);
    expect(error.stderrTail).toBe('qemu-system-x86_64: -machine q35: unsupported');
    expect(error.message).toContain('unsupported');
    expect(vm.state).toBe('stopped');
    expect(vm.getPids()).toEqual([]);
    expect(vm.exitInfo).toEqual({ expected: true, exitCode: 1, signal: undefined, stderrTail: 'qemu-system-x86_64: -machine q35: unsupported' });
    expect(vm.faults.armed).toBe(0);
  });

  it('a start failure by signal reports the signal', async () => {
    const vm = mock();
    await vm.createVM(config());
    vm.faults.failNextStart({ signal: 'SIGSEGV' });
    const error = (await rejection(vm.startVM())) as VmStartError;
    expect(error.signal).toBe('SIGSEGV');
    expect(error.message).toContain('SIGSEGV');
  });

  it('a start that hangs runs into its timeout as a VmStartError caused by the timeout', async () => {
    const vm = mock();
    await vm.createVM(config());
    vm.faults.hangNext('startVM');
    const error = (await rejection(vm.startVM({ timeoutMs: 30 }))) as VmStartError;
    expect(error).toBeInstanceOf(VmStartError);
    expect(error.cause).toBeInstanceOf(OperationTimeoutError);
    expect(vm.state).toBe('stopped');
    expect(vm.getPids()).toEqual([]);
  });

  it('the hypervisor dying while it starts fails the start', async () => {
    const vm = mock({ latencyMs: { startVM: 10_000 } });
    await vm.createVM(config());
    const start = rejection(vm.startVM());
    expect(vm.getPids()).toHaveLength(1);
    await vm.crashVmm({ exitCode: 3, stderr: 'out of memory' });
    const error = (await start) as VmStartError;
    expect(error).toBeInstanceOf(VmStartError);
    expect(error.exitCode).toBe(3);
    expect(error.stderrTail).toBe('out of memory');
    expect(vm.state).toBe('stopped');
  });
});

describe('hotplug failures', () => {
  it('a failing step is a HotplugError naming it; nothing stays plugged and the slot is free again', async () => {
    const vm = await running();
    vm.faults.failNextHotplug({ message: 'Duplicate node name' });
    const error = (await rejection(vm.hotplugAddDevice(disk('d0')))) as HotplugError;
    expect(error).toBeInstanceOf(HotplugError);
    expect(error.deviceId).toBe('d0');
    expect(error.step).toBe('device_add');
    expect(error.message).toContain('Duplicate node name');
    expect(vm.devices().filter((d) => d.hotplugged)).toEqual([]);
    expect(await vm.hotplugAddDevice(disk('d0'))).toEqual({ id: 'd0', type: 'block', bus: 'rp0', pci: { path: '01/00', sysfs: '0000:00:01.0/0000:01:00.0' } });
  });

  it('a fault for another device, or a step the device does not go through, stays armed', async () => {
    const vm = await running();
    vm.faults.failNextHotplug({ deviceId: 'other' }).failNextHotplug({ step: 'netdev_add' });
    await vm.hotplugAddDevice(disk('d0'));
    expect(vm.faults.armed).toBe(2);
    const error = (await rejection(vm.hotplugAddDevice({ type: 'net', id: 'n0', tap: { ifname: 'tap0' } }))) as HotplugError;
    expect(error.step).toBe('netdev_add');
    expect(vm.faults.armed).toBe(1);
  });

  it('a failing SCSI controller takes its root port back, so every port is free again', async () => {
    const vm = await running();
    vm.faults.failNextHotplug({ step: 'device_add virtio-scsi-pci' });
    const error = (await rejection(vm.hotplugAddDevice(disk('s0', { driver: 'virtio-scsi' })))) as HotplugError;
    expect(error.step).toBe('device_add virtio-scsi-pci');
    expect((await vm.hotplugAddDevice(disk('d0'))).bus).toBe('rp0');
    expect((await vm.hotplugAddDevice(disk('d1'))).bus).toBe('rp1');
  });

  it('a failing DIMM is a HotplugError and the memory does not grow', async () => {
    const vm = await running({}, { memory: { bootMiB: 256, maxMiB: 1024, hotplug: 'dimm' } });
    vm.faults.failNextHotplug({ deviceId: 'dimm0', step: 'object-add' });
    const error = (await rejection(vm.resizeMemory(512))) as HotplugError;
    expect(error).toBeInstanceOf(HotplugError);
    expect(error.deviceId).toBe('dimm0');
    expect(await vm.resizeMemory(256)).toEqual({ previousMiB: 256, currentMiB: 256 });
  });
});

describe('removals the guest does not complete', () => {
  it('time out after the removal timeout; the device keeps its slot, and a later removal succeeds', async () => {
    const vm = await running({ deviceRemovalTimeoutMs: 50 }, { hotplug: { rootPorts: 1 } });
    await vm.hotplugAddDevice(disk('stuck'));
    vm.faults.timeOutNextRemoval({ deviceId: 'stuck' });
    const error = (await rejection(vm.hotplugRemoveDevice('stuck'))) as DeviceRemovalTimeoutError;
    expect(error).toBeInstanceOf(DeviceRemovalTimeoutError);
    expect(error.timeoutMs).toBe(50);
    expect(vm.devices().find((d) => d.id === 'stuck')?.bus).toBe('rp0');
    expect(vm.guest?.disks).toContain('stuck');
    await expect(vm.hotplugAddDevice(disk('other'))).rejects.toBeInstanceOf(NoFreeSlotError);
    await vm.hotplugRemoveDevice('stuck');
    expect(vm.devices().find((d) => d.id === 'stuck')).toBeUndefined();
    expect(vm.guest?.disks).not.toContain('stuck');
  });

  it('a vCPU the guest keeps times out under its vcpu<N> id and stays counted', async () => {
    const vm = await running({ deviceRemovalTimeoutMs: 50 }, { cpus: { boot: 1, max: 2 } });
    await vm.resizeVCPUs(2);
    vm.faults.timeOutNextRemoval({ deviceId: 'vcpu1' });
    const error = (await rejection(vm.resizeVCPUs(1))) as DeviceRemovalTimeoutError;
    expect(error.deviceId).toBe('vcpu1');
    expect((await vm.getThreadIds()).size).toBe(2);
    expect(await vm.resizeVCPUs(1)).toEqual({ previous: 2, current: 1 });
  });
});

describe('operations that hang', () => {
  it('reject at their timeout, on abort, or when stopVM interrupts them', async () => {
    const vm = await running();
    vm.faults.hangNext('pauseVM');
    const timedOut = await rejection(vm.pauseVM({ timeoutMs: 20 }));
    expect(timedOut).toBeInstanceOf(OperationTimeoutError);
    expect((timedOut as Error).message).toContain('pauseVM');
    expect(vm.state).toBe('running');

    vm.faults.hangNext('resizeVCPUs');
    const controller = new AbortController();
    const aborted = rejection(vm.resizeVCPUs(1, { signal: controller.signal }));
    controller.abort(new Error('caller gave up'));
    expect(await aborted).toBeInstanceOf(OperationAbortedError);

    vm.faults.hangNext('check');
    const pending = rejection(vm.check());
    await vm.stopVM();
    const stopped = await pending;
    expect(stopped).toBeInstanceOf(VmStoppingError);
    expect((stopped as Error).message).toContain('check');
  });

  it('a slow hotplug holds its slot while in flight, and stopVM takes it back', async () => {
    const vm = await running({ latencyMs: { hotplugAddDevice: 10_000 } });
    const pending = rejection(vm.hotplugAddDevice(disk('slow')));
    expect(vm.devices().find((d) => d.id === 'slow')?.bus).toBe('rp0');
    await vm.stopVM();
    expect(await pending).toBeInstanceOf(VmStoppingError);
    expect(vm.devices().find((d) => d.id === 'slow')).toBeUndefined();
  });
});

describe('the hypervisor dying', () => {
  it('rejects pending calls with VmExitedError, calls onExit once with expected: false, and leaves the VM stopped and unhealthy', async () => {
    const vm = await running();
    const exits: VmExitInfo[] = [];
    vm.onExit((info) => exits.push(info));
    vm.faults.hangNext('resizeMemory');
    const pending = rejection(vm.resizeMemory(2048));
    await vm.crashVmm({ stderr: 'Segmentation fault' });
    const error = (await pending) as VmExitedError;
    expect(error).toBeInstanceOf(VmExitedError);
    expect(error.signal).toBe('SIGKILL');
    expect(exits).toEqual([{ expected: false, exitCode: undefined, signal: 'SIGKILL', stderrTail: 'Segmentation fault' }]);
    expect(vm.state).toBe('stopped');
    expect(vm.getPids()).toEqual([]);
    await expect(vm.check()).rejects.toBeInstanceOf(VmUnhealthyError);
    await vm.stopVM();
    expect(vm.exitInfo?.expected).toBe(false);
    expect(exits).toHaveLength(1);
  });

  it('an exit status is reported as such', async () => {
    const vm = await running();
    await vm.crashVmm({ exitCode: 1 });
    expect(vm.exitInfo).toMatchObject({ expected: false, exitCode: 1, signal: undefined });
  });
});

describe('a guest panic', () => {
  it('with a pvpanic device: a GUEST_PANICKED event, and check() rejects with guest-panicked even after a resume', async () => {
    const vm = await running({}, { devices: [{ type: 'pvpanic', id: 'panic0' }] });
    const events: HypervisorEvent[] = [];
    vm.onEvent((event) => events.push(event));
    expect(await vm.panicGuest()).toBe(true);
    expect(events).toEqual([
      { name: 'GUEST_PANICKED', data: { action: 'pause' } },
      { name: 'STOP', data: {} },
    ]);
    const error = (await rejection(vm.check())) as VmUnhealthyError;
    expect(error).toBeInstanceOf(VmUnhealthyError);
    expect(error.status).toBe('guest-panicked');
    await vm.pauseVM();
    await vm.resumeVM();
    await expect(vm.check()).rejects.toMatchObject({ status: 'guest-panicked' });
    expect(vm.guest?.running).toBe(false);
  });

  it('without one the hypervisor does not notice, but the guest no longer releases anything', async () => {
    const vm = await running({ deviceRemovalTimeoutMs: 50 });
    await vm.hotplugAddDevice(disk('d0'));
    expect(await vm.panicGuest()).toBe(false);
    await vm.check();
    await expect(vm.hotplugRemoveDevice('d0')).rejects.toBeInstanceOf(DeviceRemovalTimeoutError);
  });
});
