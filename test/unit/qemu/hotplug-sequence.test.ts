// The QMP sequences of hotplug, unplug and resize, checked command by command against a fake QMP
// server: what a real QEMU cannot show here (no VFIO device), rollback after each failing step, and
// the event orderings QEMU allows (DEVICE_DELETED before the device_del reply).
import { vcpuRules } from '../../../src/hypervisor/resources.ts';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseSandboxConfig, type SandboxConfigInput } from '../../../src/hypervisor/config/index.ts';
import { DeviceRemovalTimeoutError, HotplugError, NoFreeSlotError, ResizeIncompleteError } from '../../../src/hypervisor/errors.ts';
import { QmpClient } from '../../../src/qmp/index.ts';
import type { HotplugContext } from '../../../src/qemu/hotplug/context.ts';
import { resizeVcpus } from '../../../src/qemu/hotplug/cpus.ts';
import { hotplugDevice, unplugDevice } from '../../../src/qemu/hotplug/devices.ts';
import { resizeMemory } from '../../../src/qemu/hotplug/memory.ts';
import { emptyHotplugState } from '../../../src/qemu/hotplug/state.ts';
import { Deadline } from '../../../src/util/deadline.ts';
import { silentLogger } from '../../../src/util/logger.ts';
import { FakeQmpServer, NO_REPLY, QmpErrorReply } from '../../helpers/fake-qmp-server.ts';

let server: FakeQmpServer;
let qmp: QmpClient;
const deadlines: Deadline[] = [];

beforeEach(async () => {
  server = await FakeQmpServer.start();
  qmp = await QmpClient.connect(server.path);
});

afterEach(async () => {
  for (const d of deadlines.splice(0)) d.dispose();
  await qmp.close();
  await server.close();
});

function context(config: Partial<SandboxConfigInput> = {}, options: { timeoutMs?: number; removalTimeoutMs?: number } = {}): HotplugContext {
  const deadline = new Deadline('test', { timeoutMs: options.timeoutMs ?? 5_000 });
  deadlines.push(deadline);
  return {
    qmp,
    config: parseSandboxConfig({ boot: { kernel: '/k' }, hotplug: { rootPorts: 2 }, ...config }),
    state: emptyHotplugState(),
    vcpuRules: vcpuRules(parseSandboxConfig({ boot: { kernel: '/k' }, hotplug: { rootPorts: 2 }, ...config }), undefined),
    deadline,
    logger: silentLogger,
    removalTimeoutMs: options.removalTimeoutMs ?? 2_000,
    freedSlotSettleMs: 2_000,
  };
}

/** The commands the server got after negotiation, as [name, arguments]. */
const sent = (): [string, Record<string, unknown> | undefined][] => server.received.filter((c) => c.execute !== 'qmp_capabilities').map((c) => [c.execute, c.arguments]);

/** device_del answered with DEVICE_DELETED *before* its reply, as QEMU may do. */
function deleteWithEventFirst(extraPathEvent = false): void {
  server.handle('device_del', (args) => {
    const id = String(args?.['id']);
    if (extraPathEvent) server.sendEvent('DEVICE_DELETED', { path: `/machine/peripheral/${id}/virtio-backend` });
    server.sendEvent('DEVICE_DELETED', { device: id, path: `/machine/peripheral/${id}` });
    return {};
  });
}

describe('VFIO hotplug', () => {
  it('adds vfio-pci on a free root port with the normalized host address, and removes it', async () => {
    const ctx = context();
    server.handle('device_add', () => ({}));
    expect(await hotplugDevice(ctx, { type: 'vfio', id: 'gpu0', hostAddress: '01:00.0' })).toEqual({ id: 'gpu0', type: 'vfio', bus: 'rp0' });
    deleteWithEventFirst(true);
    await unplugDevice(ctx, 'gpu0');
    expect(sent()).toEqual([
      ['device_add', { driver: 'vfio-pci', id: 'gpu0', host: '0000:01:00.0', bus: 'rp0' }],
      ['device_del', { id: 'gpu0' }],
    ]);
    expect(ctx.state.devices).toEqual([]);
  });

  it('a refused vfio-pci is a HotplugError at device_add and frees its port', async () => {
    const ctx = context();
    server.handle('device_add', () => {
      throw new QmpErrorReply('GenericError', 'vfio 0000:01:00.0: no such host device');
    });
    const error = (await hotplugDevice(ctx, { type: 'vfio', id: 'gpu0', hostAddress: '0000:01:00.0' }).catch((e: unknown) => e)) as HotplugError;
    expect(error).toBeInstanceOf(HotplugError);
    expect(error.step).toBe('device_add');
    expect(error.message).toContain('no such host device');
    expect(ctx.state.devices).toEqual([]);
  });
});

describe('block and net hotplug', () => {
  it('sends blockdev-add then device_add, and on removal device_del, DEVICE_DELETED, blockdev-del', async () => {
    const ctx = context();
    for (const c of ['blockdev-add', 'device_add', 'blockdev-del']) server.handle(c, () => ({}));
    await hotplugDevice(ctx, { type: 'block', id: 'd0', path: '/var/d0.qcow2', format: 'qcow2', readOnly: true, cache: 'none', serial: 'S0' });
    deleteWithEventFirst();
    await unplugDevice(ctx, 'd0');
    const cache = { direct: true, 'no-flush': false };
    expect(sent()).toEqual([
      ['blockdev-add', { driver: 'qcow2', 'node-name': 'drv-d0', 'read-only': true, cache, file: { driver: 'file', filename: '/var/d0.qcow2', aio: 'threads', 'read-only': true, cache } }],
      ['device_add', { driver: 'virtio-blk-pci', id: 'd0', drive: 'drv-d0', bus: 'rp0', 'write-cache': 'on', serial: 'S0' }],
      ['device_del', { id: 'd0' }],
      ['blockdev-del', { 'node-name': 'drv-d0' }],
    ]);
  });

  it('rolls the blockdev back when device_add fails', async () => {
    const ctx = context();
    server.handle('blockdev-add', () => ({})).handle('blockdev-del', () => ({}));
    server.handle('device_add', () => {
      throw new QmpErrorReply('GenericError', 'Bus rp0 is full');
    });
    const error = (await hotplugDevice(ctx, { type: 'block', id: 'd0', path: '/var/d0.img' }).catch((e: unknown) => e)) as HotplugError;
    expect(error.step).toBe('device_add');
    const cache = { direct: false, 'no-flush': false };
    expect(sent()).toEqual([
      ['blockdev-add', { driver: 'raw', 'node-name': 'drv-d0', 'read-only': false, cache, file: { driver: 'file', filename: '/var/d0.img', aio: 'threads', 'read-only': false, cache } }],
      ['device_add', { driver: 'virtio-blk-pci', id: 'd0', drive: 'drv-d0', bus: 'rp0', 'write-cache': 'on' }],
      ['blockdev-del', { 'node-name': 'drv-d0' }],
    ]);
    expect(ctx.state.devices).toEqual([]);
  });

  it('rolls the netdev back when device_add fails, and sends the multi-queue properties', async () => {
    const ctx = context();
    server.handle('netdev_add', () => ({})).handle('netdev_del', () => ({}));
    server.handle('device_add', () => {
      throw new QmpErrorReply('GenericError', 'nope');
    });
    await expect(hotplugDevice(ctx, { type: 'net', id: 'n0', tap: { ifname: 'tap0' }, mac: '52:54:00:AA:BB:CC', queues: 2 })).rejects.toBeInstanceOf(HotplugError);
    expect(sent()).toEqual([
      ['netdev_add', { type: 'tap', id: 'net-n0', ifname: 'tap0', script: 'no', downscript: 'no', queues: 2 }],
      ['device_add', { driver: 'virtio-net-pci', id: 'n0', netdev: 'net-n0', bus: 'rp0', mac: '52:54:00:aa:bb:cc', mq: true, vectors: 6 }],
      ['netdev_del', { id: 'net-n0' }],
    ]);
  });

  it('the first SCSI disk adds the controller on a root port once, even for concurrent disks', async () => {
    const ctx = context();
    for (const c of ['blockdev-add', 'device_add']) server.handle(c, () => ({}));
    const results = await Promise.all([
      hotplugDevice(ctx, { type: 'block', id: 's0', path: '/var/s0.img', driver: 'virtio-scsi' }),
      hotplugDevice(ctx, { type: 'block', id: 's1', path: '/var/s1.img', driver: 'virtio-scsi' }),
    ]);
    expect(results.map((r) => r.bus)).toEqual(['scsi0.0', 'scsi0.0']);
    const adds = sent().filter(([name]) => name === 'device_add').map(([, args]) => args?.['driver']);
    expect(adds.filter((d) => d === 'virtio-scsi-pci')).toHaveLength(1);
    expect(adds.filter((d) => d === 'scsi-hd')).toHaveLength(2);
    expect(ctx.state.infrastructure).toEqual([{ id: 'scsi0', bus: 'rp0' }]);
  });

  it('concurrent hotplugs are handed distinct ports, and one too many gets NoFreeSlotError', async () => {
    const ctx = context({ hotplug: { rootPorts: 2 } });
    // Slow answers, so that all three calls are in flight together.
    server.handle('device_add', () => new Promise((resolve) => setTimeout(() => resolve({}), 50)));
    const results = await Promise.allSettled(['a', 'b', 'c'].map((id) => hotplugDevice(ctx, { type: 'vfio', id, hostAddress: '0000:01:00.0' })));
    const buses = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value.bus] : []));
    expect(buses.sort()).toEqual(['rp0', 'rp1']);
    const reasons = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
    expect(reasons).toEqual([expect.any(NoFreeSlotError)]);
  });
});

describe('removal', () => {
  it('times out with DeviceRemovalTimeoutError keeping the device, and a later call finishes the job', async () => {
    const ctx = context({}, { removalTimeoutMs: 100 });
    for (const c of ['blockdev-add', 'device_add', 'blockdev-del']) server.handle(c, () => ({}));
    await hotplugDevice(ctx, { type: 'block', id: 'd0', path: '/var/d0.img' });
    server.handle('device_del', () => ({})); // the guest never lets go
    await expect(unplugDevice(ctx, 'd0')).rejects.toBeInstanceOf(DeviceRemovalTimeoutError);
    expect(ctx.state.devices.map((d) => d.id)).toEqual(['d0']);
    expect(sent().map(([name]) => name)).not.toContain('blockdev-del');
    // Later the guest has let go: QEMU no longer knows the device.
    server.handle('device_del', () => {
      throw new QmpErrorReply('DeviceNotFound', "Device 'd0' not found");
    });
    await unplugDevice(ctx, 'd0');
    expect(sent().at(-1)).toEqual(['blockdev-del', { 'node-name': 'drv-d0' }]);
    expect(ctx.state.devices).toEqual([]);
  });

  it('keeps waiting when QEMU says the unplug is already in progress', async () => {
    const ctx = context();
    server.handle('device_add', () => ({}));
    await hotplugDevice(ctx, { type: 'vfio', id: 'g', hostAddress: '0000:01:00.0' });
    server.handle('device_del', () => {
      setTimeout(() => server.sendEvent('DEVICE_DELETED', { device: 'g', path: '/machine/peripheral/g' }), 50);
      throw new QmpErrorReply('GenericError', 'Device g is already in the process of unplug');
    });
    await unplugDevice(ctx, 'g');
    expect(ctx.state.devices).toEqual([]);
  });

  it('does not take a child device’s DEVICE_DELETED for the device’s own', async () => {
    const ctx = context({}, { removalTimeoutMs: 200 });
    server.handle('device_add', () => ({}));
    await hotplugDevice(ctx, { type: 'vfio', id: 'g', hostAddress: '0000:01:00.0' });
    server.handle('device_del', () => {
      server.sendEvent('DEVICE_DELETED', { path: '/machine/peripheral/g/virtio-backend' });
      return {};
    });
    await expect(unplugDevice(ctx, 'g')).rejects.toBeInstanceOf(DeviceRemovalTimeoutError);
  });
});

describe('vCPU resize', () => {
  const slots = (plugged: number[]) =>
    [3, 2, 1, 0].map((core) => ({
      type: 'max-x86_64-cpu',
      'vcpus-count': 1,
      props: { 'core-id': core, 'thread-id': 0, 'socket-id': 0, 'node-id': 0 },
      ...(plugged.includes(core) ? { 'qom-path': core === 0 ? '/machine/unattached/device[0]' : `/machine/peripheral/vcpu${core}` } : {}),
    }));

  it('adds with exactly the props QEMU offers, lowest core first, and removes newest first on the lapic event', async () => {
    const ctx = context({ cpus: { boot: 1, max: 4 } });
    const plugged = [0];
    server.handle('query-hotpluggable-cpus', () => slots(plugged));
    server.handle('device_add', (args) => {
      plugged.push(Number(args?.['core-id']));
      return {};
    });
    expect(await resizeVcpus(ctx, 3)).toEqual({ previous: 1, current: 3 });
    const adds = sent().filter(([name]) => name === 'device_add');
    expect(adds).toEqual([
      ['device_add', { driver: 'max-x86_64-cpu', id: 'vcpu1', 'core-id': 1, 'thread-id': 0, 'socket-id': 0, 'node-id': 0 }],
      ['device_add', { driver: 'max-x86_64-cpu', id: 'vcpu2', 'core-id': 2, 'thread-id': 0, 'socket-id': 0, 'node-id': 0 }],
    ]);
    // QEMU 7.2 names only the lapic child in DEVICE_DELETED when an x86 vCPU goes.
    server.handle('device_del', (args) => {
      const id = String(args?.['id']);
      setTimeout(() => {
        plugged.splice(plugged.indexOf(Number(id.slice(4))), 1);
        server.sendEvent('DEVICE_DELETED', { path: `/machine/peripheral/${id}/lapic` });
      }, 20);
      return {};
    });
    server.handle('query-cpus-fast', () => plugged.map((core) => ({ 'cpu-index': core, 'thread-id': 100 + core, 'qom-path': core === 0 ? '/machine/unattached/device[0]' : `/machine/peripheral/vcpu${core}` })));
    expect(await resizeVcpus(ctx, 1)).toEqual({ previous: 3, current: 1 });
    expect(sent().filter(([name]) => name === 'device_del').map(([, args]) => args?.['id'])).toEqual(['vcpu2', 'vcpu1']);
  });
});

describe('memory resize', () => {
  const MiB = 1024 * 1024;

  it('virtio-mem: asks for the aligned size and resolves when MEMORY_DEVICE_SIZE_CHANGE reaches it', async () => {
    const ctx = context({ memory: { bootMiB: 256, maxMiB: 1280, hotplug: 'virtio-mem' } });
    server.handle('qom-get', (args) => (args?.['property'] === 'block-size' ? 2 * MiB : 0));
    server.handle('qom-set', (args) => {
      const target = Number(args?.['value']);
      setTimeout(() => server.sendEvent('MEMORY_DEVICE_SIZE_CHANGE', { id: 'vmem0', size: target / 2, 'qom-path': '/machine/peripheral/vmem0' }), 10);
      setTimeout(() => server.sendEvent('MEMORY_DEVICE_SIZE_CHANGE', { id: 'vmem0', size: target, 'qom-path': '/machine/peripheral/vmem0' }), 30);
      return {};
    });
    expect(await resizeMemory(ctx, 767)).toEqual({ previousMiB: 256, currentMiB: 768 });
    expect(sent().find(([name]) => name === 'qom-set')).toEqual(['qom-set', { path: 'vmem0', property: 'requested-size', value: 512 * MiB }]);
  });

  it('virtio-mem: a guest that does not get there yields ResizeIncompleteError with the size reached', async () => {
    const ctx = context({ memory: { bootMiB: 256, maxMiB: 1280, hotplug: 'virtio-mem' } }, { timeoutMs: 300 });
    server.handle('qom-get', (args) => (args?.['property'] === 'block-size' ? 2 * MiB : 128 * MiB));
    server.handle('qom-set', () => ({}));
    const error = (await resizeMemory(ctx, 1280).catch((e: unknown) => e)) as ResizeIncompleteError;
    expect(error).toBeInstanceOf(ResizeIncompleteError);
    expect(error.targetMiB).toBe(1280);
    expect(error.reachedMiB).toBe(256 + 128);
    // It says what the guest must do: be booted, and online what is plugged.
    expect(error.message).toContain('stopped at 384 MiB: virtio-mem plugs only what the guest accepts');
    expect(error.message).toContain('memhp_default_state=online_movable');
  });

  it('dimm: grows in steps of at most 48x the current size, one pc-dimm per step, rolling back a refused one', async () => {
    const ctx = context({ memory: { bootMiB: 128, maxMiB: 128 + 128 * 60, hotplug: 'dimm', slots: 4 } });
    server.handle('object-add', () => ({})).handle('device_add', () => ({}));
    expect(await resizeMemory(ctx, 128 + 128 * 60)).toEqual({ previousMiB: 128, currentMiB: 128 + 128 * 60 });
    const sizes = sent().filter(([name]) => name === 'object-add').map(([, args]) => Number(args?.['size']) / MiB);
    expect(sizes).toEqual([128 * 48, 128 * 12]);
    expect(sent().filter(([name]) => name === 'device_add').map(([, a]) => a)).toEqual([
      { driver: 'pc-dimm', id: 'dimm0', memdev: 'mem-dimm0' },
      { driver: 'pc-dimm', id: 'dimm1', memdev: 'mem-dimm1' },
    ]);
  });

  it('dimm: a refused pc-dimm deletes its backend object', async () => {
    const ctx = context({ memory: { bootMiB: 256, maxMiB: 512, hotplug: 'dimm' } });
    server.handle('object-add', () => ({})).handle('object-del', () => ({}));
    server.handle('device_add', () => {
      throw new QmpErrorReply('GenericError', 'not enough space');
    });
    await expect(resizeMemory(ctx, 512)).rejects.toBeInstanceOf(HotplugError);
    expect(sent()).toEqual([
      ['object-add', { 'qom-type': 'memory-backend-ram', id: 'mem-dimm0', size: 256 * MiB }],
      ['device_add', { driver: 'pc-dimm', id: 'dimm0', memdev: 'mem-dimm0' }],
      ['object-del', { id: 'mem-dimm0' }],
    ]);
    expect(ctx.state.dimms).toEqual([]);
  });

  it('a QEMU that never answers runs into the operation deadline, and nothing is recorded', async () => {
    const ctx = context({}, { timeoutMs: 100 });
    server.handle('device_add', () => NO_REPLY);
    await expect(hotplugDevice(ctx, { type: 'vfio', id: 'g', hostAddress: '0000:01:00.0' })).rejects.toMatchObject({ code: 'TIMEOUT' });
    expect(ctx.state.devices).toEqual([]);
  });
});
