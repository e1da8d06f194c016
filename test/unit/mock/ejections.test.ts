// The mock's guest ejecting a hot-plugged device on its own, with the QEMU backend's rules
// (test/unit/qemu/ejections.test.ts): the events QEMU would send, what counts as an ejection, and how
// it meets a removal the caller asked for.
import { describe, expect, it } from 'vitest';
import type { SandboxConfigInput } from '../../../src/hypervisor/config/index.ts';
import { DeviceNotFoundError, DeviceRemovalTimeoutError } from '../../../src/hypervisor/errors.ts';
import type { HypervisorEvent } from '../../../src/hypervisor/types.ts';
import { MockHypervisor } from '../../../src/mock/index.ts';
import { useMockVms } from './mock-vms.ts';

const { kernel, file, track } = useMockVms('svmm-mock-eject-');

async function running(overrides: Partial<SandboxConfigInput> = {}, removalTimeoutMs = 1_000): Promise<{ vm: MockHypervisor; events: HypervisorEvent[] }> {
  // The host is not asked: the tap and the VFIO device need not exist.
  const vm = new MockHypervisor({ deviceRemovalTimeoutMs: removalTimeoutMs, host: false });
  track(vm);
  const events: HypervisorEvent[] = [];
  vm.onEvent((event) => events.push(event));
  await vm.createVM({ boot: { kernel }, hotplug: { rootPorts: 3 }, ...overrides });
  await vm.startVM();
  return { vm, events };
}

const image = file;

const deviceEvents = (events: HypervisorEvent[]) => events.filter((e) => e.name === 'DEVICE_DELETED' || e.name === 'DEVICE_EJECTED');

describe('the mock guest ejecting a device', () => {
  it('reports DEVICE_DELETED as QEMU does, then DEVICE_EJECTED once the device is out of the books', async () => {
    const { vm, events } = await running();
    await vm.hotplugAddDevice({ type: 'net', id: 'n0', tap: { ifname: 'tap0' } });
    expect(await vm.ejectGuestDevice('n0')).toBe(true);
    expect(deviceEvents(events)).toEqual([
      { name: 'DEVICE_DELETED', data: { path: '/machine/peripheral/n0/virtio-backend' } },
      { name: 'DEVICE_DELETED', data: { device: 'n0', path: '/machine/peripheral/n0' } },
      { name: 'DEVICE_EJECTED', data: { id: 'n0', type: 'net', bus: 'rp0' } },
    ]);
    expect(vm.devices()).toEqual([]);
    expect(vm.guest?.nics).toEqual([]);
    await expect(vm.hotplugRemoveDevice('n0')).rejects.toBeInstanceOf(DeviceNotFoundError);
    // Its slot is free again, and handed out last: after the ports never used.
    const buses: string[] = [];
    for (const id of ['n0', 'n1', 'n2']) buses.push((await vm.hotplugAddDevice({ type: 'net', id, tap: { ifname: `tap-${id}` } })).bus);
    expect(buses).toEqual(['rp1', 'rp2', 'rp0']);
  });

  it('of a SCSI disk powers off the controller’s slot: every SCSI disk goes, and the next one adds a controller again', async () => {
    const { vm, events } = await running();
    await vm.hotplugAddDevice({ type: 'block', id: 's0', path: image('s0.img'), driver: 'virtio-scsi' });
    await vm.hotplugAddDevice({ type: 'block', id: 's1', path: image('s1.img'), driver: 'virtio-scsi' });
    await vm.hotplugAddDevice({ type: 'block', id: 'd0', path: image('d0.img') });
    expect(await vm.ejectGuestDevice('s1')).toBe(true);
    expect(events.filter((e) => e.name === 'DEVICE_EJECTED').map((e) => e.data['id'])).toEqual(['s0', 's1']);
    expect(events.some((e) => e.name === 'DEVICE_DELETED' && e.data['device'] === 'scsi0')).toBe(true);
    expect(vm.devices().map((d) => d.id)).toEqual(['d0']);
    // The controller's port (rp0) is free again, and handed out last: the next SCSI disk's
    // controller takes rp2, and the disk after it rp0.
    expect((await vm.hotplugAddDevice({ type: 'block', id: 's2', path: image('s2.img'), driver: 'virtio-scsi' })).bus).toBe('scsi0.0');
    expect((await vm.hotplugAddDevice({ type: 'block', id: 'd1', path: image('d1.img') })).bus).toBe('rp0');
  });

  it('cannot eject a cold-plugged device, a SCSI disk on a cold controller, or an unknown id', async () => {
    const { vm, events } = await running({ devices: [{ type: 'block', id: 'cold', path: image('cold.img'), driver: 'virtio-scsi' }] });
    await vm.hotplugAddDevice({ type: 'block', id: 's0', path: image('s0.img'), driver: 'virtio-scsi' });
    expect(await vm.ejectGuestDevice('cold')).toBe(false);
    expect(await vm.ejectGuestDevice('s0')).toBe(false);
    expect(await vm.ejectGuestDevice('nope')).toBe(false);
    expect(deviceEvents(events)).toEqual([]);
    expect(vm.devices().map((d) => d.id)).toEqual(['cold', 's0']);
  });

  it('waits for a paused guest to run again', async () => {
    const { vm, events } = await running();
    await vm.hotplugAddDevice({ type: 'vfio', id: 'g', hostAddress: '0000:01:00.0' });
    await vm.pauseVM();
    const ejecting = vm.ejectGuestDevice('g');
    await new Promise((resolve) => setImmediate(resolve));
    expect(deviceEvents(events)).toEqual([]);
    expect(vm.devices().map((d) => d.id)).toEqual(['g']);
    await vm.resumeVM();
    expect(await ejecting).toBe(true);
    expect(vm.devices()).toEqual([]);
  });

  it('while no process owns the VM: the next owner finds the device gone, and hears of it once it listens', async () => {
    const { vm, events } = await running();
    await vm.hotplugAddDevice({ type: 'block', id: 'd0', path: image('d0.img') });
    const runtimeDir = vm.runtimeDir as string;
    await vm.detach();
    // The guest runs on without an owner.
    expect(await vm.ejectGuestDevice('d0')).toBe(true);
    const owner = await MockHypervisor.attach(runtimeDir);
    track(owner);
    const heard: HypervisorEvent[] = [];
    owner.onEvent((event) => heard.push(event));
    expect(owner.devices()).toEqual([]);
    await new Promise((resolve) => setImmediate(resolve));
    expect(heard).toEqual([{ name: 'DEVICE_EJECTED', data: { id: 'd0', type: 'block', bus: 'rp0' } }]);
    expect(events.filter((e) => e.name === 'DEVICE_EJECTED')).toEqual([]);
  });
});

describe('a removal the caller asked for, meeting the guest’s ejection', () => {
  it('in flight: the ejection is that removal’s release, and no DEVICE_EJECTED is emitted', async () => {
    const { vm, events } = await running();
    await vm.hotplugAddDevice({ type: 'block', id: 'd0', path: image('d0.img') });
    vm.faults.timeOutNextRemoval({ deviceId: 'd0' });
    const removal = vm.hotplugRemoveDevice('d0');
    expect(await vm.ejectGuestDevice('d0')).toBe(true);
    await removal;
    expect(events.filter((e) => e.name === 'DEVICE_EJECTED')).toEqual([]);
    expect(vm.devices()).toEqual([]);
  });

  it('after it timed out: the guest letting go is no ejection, and the retry finishes the job', async () => {
    const { vm, events } = await running({}, 50);
    await vm.hotplugAddDevice({ type: 'block', id: 'd0', path: image('d0.img') });
    vm.faults.timeOutNextRemoval({ deviceId: 'd0' });
    await expect(vm.hotplugRemoveDevice('d0')).rejects.toBeInstanceOf(DeviceRemovalTimeoutError);
    expect(await vm.ejectGuestDevice('d0')).toBe(true);
    expect(events.filter((e) => e.name === 'DEVICE_EJECTED')).toEqual([]);
    expect(vm.devices().map((d) => d.id)).toEqual(['d0']);
    await vm.hotplugRemoveDevice('d0');
    expect(vm.devices()).toEqual([]);
  });
});
