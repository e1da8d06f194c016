// A real guest giving up hot-plugged devices on its own (pciehp powering their slot off), on QEMU
// 7.2 under TCG: the backend settles the books (event, devices(), slot, backend, saved state), and
// each effect is checked where it shows: in the guest, in QEMU itself, and in a re-attached process.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DeviceNotFoundError } from '../../src/hypervisor/errors.ts';
import type { HypervisorEvent } from '../../src/hypervisor/types.ts';
import { QmpClient } from '../../src/qmp/index.ts';
import { QemuHypervisor } from '../../src/qemu/qemu-hypervisor.ts';
import { runtimePaths } from '../../src/qemu/runtime-paths.ts';
import type { GuestAgent } from '../guest/index.ts';
import { diskWithMarker, nicWithMac, powerOffSlotOf } from './helpers/eject.ts';
import { connectAgent, createTap, guestConfig, identityOf, rawDisk, scratchDir } from './helpers/sandbox.ts';
import { eventually } from './helpers/eventually.ts';


const named = (events: HypervisorEvent[], name: string, id: string, key = 'id') => events.filter((e) => e.name === name && e.data[key] === id);

describe('a device the guest ejects on its own', () => {
  const scratch = scratchDir();
  const removeTaps: (() => void)[] = [];
  let vm: QemuHypervisor;
  let agent: GuestAgent;
  let events: HypervisorEvent[] = [];

  beforeAll(async () => {
    vm = new QemuHypervisor({ deviceRemovalTimeoutMs: 15_000 });
    await vm.createVM(guestConfig({ hotplug: { rootPorts: 2 } }));
    await vm.startVM();
    agent = await connectAgent(vm);
    vm.onEvent((event) => events.push(event));
  });

  afterAll(async () => {
    await agent.close();
    await vm.stopVM();
    for (const remove of removeTaps) remove();
    scratch.remove();
  });

  it('a disk whose slot the guest powers off: reported once settled, gone from devices(), its slot and node name free again', async () => {
    const marker = 'MARKER-EJECT-001';
    const plugged = await vm.hotplugAddDevice({ type: 'block', id: 'ej0', path: rawDisk(scratch.dir, 'ej0.img', marker, identityOf(vm)) });
    expect(plugged.bus).toBe('rp0');
    const disk = await eventually(() => diskWithMarker(agent, marker), (d) => d !== undefined);
    expect(disk).toBeDefined();

    const { slot, address } = await powerOffSlotOf(agent, `/sys/block/${disk}/device`);
    expect(slot.length).toBeGreaterThan(0);
    const reported = await eventually(() => named(events, 'DEVICE_EJECTED', 'ej0'), (list) => list.length > 0);
    expect(reported).toEqual([{ name: 'DEVICE_EJECTED', data: { id: 'ej0', type: 'block', bus: 'rp0' } }]);
    // QEMU's own event passes through as before.
    expect(named(events, 'DEVICE_DELETED', 'ej0', 'device')).toHaveLength(1);
    expect(vm.devices().find((d) => d.id === 'ej0')).toBeUndefined();
    await expect(vm.hotplugRemoveDevice('ej0')).rejects.toBeInstanceOf(DeviceNotFoundError);
    // Inside the guest: the disk and its PCI function are gone.
    expect(await diskWithMarker(agent, marker)).toBeUndefined();
    expect((await agent.run(`[ -e /sys/bus/pci/devices/${address} ]`)).exitCode).not.toBe(0);

    // The same id (so the same blockdev node name): QEMU refuses a duplicate node name, so this
    // passes only if the old backend is gone. The slot never used comes before the one just freed.
    const marker2 = 'MARKER-EJECT-002';
    const again = await vm.hotplugAddDevice({ type: 'block', id: 'ej0', path: rawDisk(scratch.dir, 'ej0b.img', marker2, identityOf(vm)) });
    expect(again.bus).toBe('rp1');
    expect(await eventually(() => diskWithMarker(agent, marker2), (d) => d !== undefined)).toBeDefined();
    await vm.hotplugRemoveDevice('ej0');
    expect(await eventually(() => diskWithMarker(agent, marker2), (d) => d === undefined)).toBeUndefined();
    expect(named(events, 'DEVICE_EJECTED', 'ej0')).toHaveLength(1);
  });

  it('a NIC ejected while owned, and a disk ejected while no process owns the VM: QEMU, the saved state and a re-attached process agree', async () => {
    removeTaps.push(createTap('svmmej0', identityOf(vm).uid));
    const mac = '52:54:00:e1:ec:01';
    const nicPort = await vm.hotplugAddDevice({ type: 'net', id: 'ejnic', tap: { ifname: 'svmmej0' }, mac });
    const lateMarker = 'MARKER-EJECT-003';
    const diskPort = await vm.hotplugAddDevice({ type: 'block', id: 'late0', path: rawDisk(scratch.dir, 'late0.img', lateMarker, identityOf(vm)) });
    const nic = await eventually(() => nicWithMac(agent, mac), (n) => n !== undefined);
    expect(nic).toBeDefined();
    const lateDisk = await eventually(() => diskWithMarker(agent, lateMarker), (d) => d !== undefined);
    expect(lateDisk).toBeDefined();

    await powerOffSlotOf(agent, `/sys/class/net/${nic}/device`);
    expect(await eventually(() => named(events, 'DEVICE_EJECTED', 'ejnic'), (list) => list.length > 0)).toEqual([
      { name: 'DEVICE_EJECTED', data: { id: 'ejnic', type: 'net', bus: nicPort.bus } },
    ]);
    expect(await nicWithMac(agent, mac)).toBeUndefined();

    // No process owns the VM now: QEMU is asked directly, through its monitor.
    const runtimeDir = vm.runtimeDir as string;
    await vm.detach();
    const peripherals = async (qmp: QmpClient) => ((await qmp.execute('qom-list', { path: '/machine/peripheral' })) as { name: string }[]).map((p) => p.name);
    const nodeNames = async (qmp: QmpClient) => ((await qmp.executeUntyped('query-named-block-nodes')) as { 'node-name': string }[]).map((n) => n['node-name']);
    const qmp = await QmpClient.connect(runtimePaths(runtimeDir).qmpSocket, { timeoutMs: 10_000 });
    try {
      expect(await peripherals(qmp)).not.toContain('ejnic');
      expect(await peripherals(qmp)).not.toContain('ej0');
      expect(await nodeNames(qmp)).not.toContain('drv-ej0');
      // netdev_del of a netdev QEMU no longer has fails: the ejection deleted it already.
      await expect(qmp.execute('netdev_del', { id: 'net-ejnic' })).rejects.toThrow(/not found/i);

      // The guest ejects the disk while nobody listens: QEMU drops the device, its node stays.
      await powerOffSlotOf(agent, `/sys/block/${lateDisk}/device`);
      expect(await eventually(() => peripherals(qmp), (names) => !names.includes('late0'))).not.toContain('late0');
      expect(await nodeNames(qmp)).toContain('drv-late0');
    } finally {
      await qmp.close();
    }

    // A new process: the saved state still lists late0, so attach checks what QEMU has and settles it.
    vm = await QemuHypervisor.attach(runtimeDir, { timeoutMs: 10_000, deviceRemovalTimeoutMs: 15_000 });
    events = [];
    vm.onEvent((event) => events.push(event));
    expect(vm.devices().filter((d) => d.hotplugged)).toEqual([]);
    expect(await eventually(() => named(events, 'DEVICE_EJECTED', 'late0'), (list) => list.length > 0)).toEqual([
      { name: 'DEVICE_EJECTED', data: { id: 'late0', type: 'block', bus: diskPort.bus } },
    ]);
    // Both ports are free again, and late0's node name too (QEMU refuses a duplicate).
    const marker = 'MARKER-EJECT-004';
    const first = await vm.hotplugAddDevice({ type: 'block', id: 'late0', path: rawDisk(scratch.dir, 'late0b.img', marker, identityOf(vm)) });
    const second = await vm.hotplugAddDevice({ type: 'block', id: 'after1', path: rawDisk(scratch.dir, 'after1.img', 'MARKER-EJECT-005', identityOf(vm)) });
    expect([first.bus, second.bus].sort()).toEqual(['rp0', 'rp1']);
    expect(await eventually(() => diskWithMarker(agent, marker), (d) => d !== undefined)).toBeDefined();
    await vm.hotplugRemoveDevice('late0');
    await vm.hotplugRemoveDevice('after1');
    expect(events.filter((e) => e.name === 'DEVICE_EJECTED').map((e) => e.data['id'])).toEqual(['late0']);
  });
  it('the SCSI controller whose slot the guest powers off takes its disks with it; its port is free, and the next SCSI disk brings a new one', async () => {
    events = [];
    const markers = ['MARKER-EJECT-S01', 'MARKER-EJECT-S02'];
    for (const [i, marker] of markers.entries()) {
      expect((await vm.hotplugAddDevice({ type: 'block', id: `s${i}`, driver: 'virtio-scsi', path: rawDisk(scratch.dir, `s${i}.img`, marker, identityOf(vm)) })).bus).toBe('scsi0.0');
    }
    const disks = await Promise.all(markers.map((marker) => eventually(() => diskWithMarker(agent, marker), (d) => d !== undefined)));
    expect(disks.every((d) => d?.startsWith('sd'))).toBe(true);

    await powerOffSlotOf(agent, `/sys/block/${disks[0]}/device`);
    // QEMU names the disks (in an order of its own) before the controller.
    const reported = await eventually(() => events.filter((e) => e.name === 'DEVICE_EJECTED'), (list) => list.length >= 2);
    expect(reported.sort((a, b) => String(a.data['id']).localeCompare(String(b.data['id'])))).toEqual([
      { name: 'DEVICE_EJECTED', data: { id: 's0', type: 'block', bus: 'scsi0.0' } },
      { name: 'DEVICE_EJECTED', data: { id: 's1', type: 'block', bus: 'scsi0.0' } },
    ]);
    expect(vm.devices().filter((d) => d.hotplugged)).toEqual([]);
    for (const marker of markers) expect(await diskWithMarker(agent, marker)).toBeUndefined();

    // Both ports are free: the controller's too.
    const ports = [];
    for (const id of ['v0', 'v1']) ports.push((await vm.hotplugAddDevice({ type: 'block', id, path: rawDisk(scratch.dir, `${id}.img`, `MARKER-${id}`, identityOf(vm)) })).bus);
    expect(ports.sort()).toEqual(['rp0', 'rp1']);
    await vm.hotplugRemoveDevice('v0');
    // A new SCSI disk adds a controller again (on the port just freed), and reuses its id and node name.
    const again = await vm.hotplugAddDevice({ type: 'block', id: 's0', driver: 'virtio-scsi', path: rawDisk(scratch.dir, 's0b.img', 'MARKER-EJECT-S03', identityOf(vm)) });
    expect(again.bus).toBe('scsi0.0');
    expect(await eventually(() => diskWithMarker(agent, 'MARKER-EJECT-S03'), (d) => d !== undefined)).toBeDefined();
    await vm.hotplugRemoveDevice('s0');
    await vm.hotplugRemoveDevice('v1');
    expect(events.filter((e) => e.name === 'DEVICE_EJECTED')).toHaveLength(2);
  });
});
