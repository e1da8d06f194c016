// What the QEMU backend refuses before it sends anything: cold-plug-only types, a tap fd that is not open,
// ids already taken, and device changes after a vCPU was removed under tcg. Each refusal is a typed
// error, no QMP command goes out, and the state (ports included) is left as it was.
import { describe, expect, it } from 'vitest';
import { DeviceExistsError, MissingFeatureError, NoFreeSlotError, UnsupportedOperationError } from '../../../src/hypervisor/errors.ts';
import { DEVICE_OPTION_KEYS } from '../../../src/qemu/features/needs.ts';
import { assertDevice, type QemuFeatures } from '../../../src/qemu/features/qemu-features.ts';
import type { HotplugDevice } from '../../../src/hypervisor/types.ts';
import type { HotplugContext } from '../../../src/qemu/hotplug/context.ts';
import { resizeVcpus } from '../../../src/qemu/hotplug/cpus.ts';
import { hotplugDevice, unplugDevice } from '../../../src/qemu/hotplug/devices.ts';
import { resizeMemory } from '../../../src/qemu/hotplug/memory.ts';
import { emptyHotplugState } from '../../../src/qemu/hotplug/state.ts';
import { useHotplugHarness } from '../../helpers/hotplug-harness.ts';

const h = useHotplugHarness();

async function refusal(ctx: HotplugContext, device: unknown): Promise<unknown> {
  const before = structuredClone(ctx.state);
  const error = await hotplugDevice(ctx, device as HotplugDevice).catch((e: unknown) => e);
  expect(h.sent()).toEqual([]);
  expect(ctx.state).toEqual(before);
  return error;
}

/** The version the tcg refusals were found on (hypervisor/version-rules.ts). */
const QEMU_7_2 = { major: 7, minor: 2, micro: 22 };

describe('cold-plug-only device types', () => {
  it.each([
    ['vsock', { type: 'vsock', id: 'v0', guestCid: 3 }],
    ['rng', { type: 'rng', id: 'r0' }],
    ['balloon', { type: 'balloon', id: 'b0' }],
    ['channel', { type: 'channel', id: 'c0', name: 'agent' }],
    ['pvpanic', { type: 'pvpanic', id: 'p0' }],
  ])('%s is refused as cold-plug-only, before its fields are even checked', async (type, device) => {
    const error = await refusal(h.context(), device);
    expect(error).toBeInstanceOf(UnsupportedOperationError);
    expect(error).toMatchObject({
      operation: 'hotplugAddDevice',
      message: `hotplugAddDevice is not supported: ${type} devices can only be cold-plugged (list them in the config's devices)`,
    });
  });

  it('a type that is no device type at all is a config error, not a cold-plug refusal', async () => {
    const error = await refusal(h.context(), { type: 'gpu', id: 'g0' });
    expect(error).toMatchObject({ code: 'CONFIG_INVALID' });
  });
});

describe('a tap given as an fd that is not open here', () => {
  it('is a ConfigError naming the fd, before anything is sent', async () => {
    // fd 1023 is not open in the test process (vitest workers hold far fewer).
    const error = await refusal(h.context(), { type: 'net', id: 'n0', tap: { fd: 1023 } });
    expect(error).toMatchObject({ code: 'CONFIG_INVALID', issues: [{ path: 'device.tap.fd', message: 'fd 1023 is not open in this process' }] });
  });
});

describe('ids already taken', () => {
  const vfio = (id: string) => ({ type: 'vfio', id, hostAddress: '0000:01:00.0' }) as const;

  it('a cold-plugged device’s id, even when it is not the first device in the config', async () => {
    const ctx = h.context({
      devices: [
        { type: 'block', id: 'disk0', path: '/var/disk0.img' },
        { type: 'vsock', id: 'sock', guestCid: 3 },
      ],
    });
    const error = await refusal(ctx, vfio('sock'));
    expect(error).toBeInstanceOf(DeviceExistsError);
    expect(error).toMatchObject({ deviceId: 'sock' });
  });

  it('a hot-added device’s id, with its port and record untouched', async () => {
    const ctx = h.context({ hotplug: { rootPorts: 3 } });
    h.server.handle('device_add', () => ({}));
    await hotplugDevice(ctx, vfio('a'));
    await hotplugDevice(ctx, vfio('b'));
    h.server.received.length = 0;
    const error = await refusal(ctx, { type: 'block', id: 'b', path: '/var/b.img' });
    expect(error).toBeInstanceOf(DeviceExistsError);
    expect(error).toMatchObject({ deviceId: 'b' });
    expect(ctx.state.devices.map((d) => [d.id, d.bus])).toEqual([
      ['a', 'rp0'],
      ['b', 'rp1'],
    ]);
  });

  it('a device the backend added for itself', async () => {
    const ctx = h.context();
    ctx.state.infrastructure.push({ id: 'ctl', bus: 'rp1' });
    const error = await refusal(ctx, vfio('ctl'));
    expect(error).toBeInstanceOf(DeviceExistsError);
    expect(error).toMatchObject({ deviceId: 'ctl' });
  });

  it('rootfs, when boot.image attaches the root filesystem under that id', async () => {
    const ctx = h.context({ boot: { kernel: '/k', image: '/var/rootfs.img' } });
    const error = await refusal(ctx, { type: 'block', id: 'rootfs', path: '/var/other.img' });
    expect(error).toBeInstanceOf(DeviceExistsError);
    expect(error).toMatchObject({ deviceId: 'rootfs' });
  });

  it('rootfs is an ordinary id without boot.image, and other ids are free with one', async () => {
    const plain = h.context();
    h.server.handle('device_add', () => ({}));
    expect(await hotplugDevice(plain, vfio('rootfs'))).toEqual({ id: 'rootfs', type: 'vfio', bus: 'rp0' });
    const withImage = h.context({ boot: { kernel: '/k', image: '/var/rootfs.img' } });
    expect(await hotplugDevice(withImage, vfio('gpu'))).toEqual({ id: 'gpu', type: 'vfio', bus: 'rp0' });
  });
});

describe('root ports', () => {
  it('a port the backend took for its own device is not handed out again', async () => {
    const ctx = h.context({ hotplug: { rootPorts: 2 } });
    for (const c of ['blockdev-add', 'device_add']) h.server.handle(c, () => ({}));
    await hotplugDevice(ctx, { type: 'block', id: 's0', path: '/var/s0.img', driver: 'virtio-scsi' });
    expect(await hotplugDevice(ctx, { type: 'vfio', id: 'gpu', hostAddress: '0000:01:00.0' })).toEqual({ id: 'gpu', type: 'vfio', bus: 'rp1' });
    const error = await hotplugDevice(ctx, { type: 'vfio', id: 'gpu2', hostAddress: '0000:02:00.0' }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(NoFreeSlotError);
    expect(error).toMatchObject({ deviceId: 'gpu2' });
  });
});

describe('device changes after a vCPU was removed under tcg', () => {
  /** A tcg VM that has just lost its hot-added vCPU (the config allows it), with one disk plugged before. */
  async function afterVcpuRemoval(config: Parameters<typeof h.context>[0] = {}): Promise<HotplugContext> {
    const ctx = h.context({ machine: { accel: 'tcg' }, cpus: { boot: 1, max: 2 }, hotplug: { rootPorts: 2, tcgVcpuUnplug: true }, ...config }, { qemuVersion: QEMU_7_2 });
    let plugged = false;
    h.server.handle('query-hotpluggable-cpus', () => [
      { type: 'max-x86_64-cpu', 'vcpus-count': 1, props: { 'core-id': 1 }, ...(plugged ? { 'qom-path': '/machine/peripheral/vcpu1' } : {}) },
      { type: 'max-x86_64-cpu', 'vcpus-count': 1, props: { 'core-id': 0 }, 'qom-path': '/machine/unattached/device[0]' },
    ]);
    h.server.handle('device_add', (args) => {
      if (args?.['driver'] === 'max-x86_64-cpu') plugged = true;
      return {};
    });
    h.server.handle('blockdev-add', () => ({}));
    h.server.handle('device_del', (args) => {
      h.server.sendEvent('DEVICE_DELETED', { device: String(args?.['id']), path: `/machine/peripheral/${String(args?.['id'])}` });
      return {};
    });
    h.server.handle('query-cpus-fast', () => [{ 'cpu-index': 0, 'qom-path': '/machine/unattached/device[0]', 'thread-id': 1 }]);
    await hotplugDevice(ctx, { type: 'block', id: 'd0', path: '/var/d0.img' });
    await resizeVcpus(ctx, 2);
    expect(await resizeVcpus(ctx, 1)).toEqual({ previous: 2, current: 1 });
    h.server.received.length = 0;
    return ctx;
  }

  const tcgRefusal = (operation: string) => ({
    operation,
    message: `${operation} is not supported: a vCPU was removed from this VM under tcg, after which QEMU 7.2.22 (below 10) crashes on any device_add or device_del`,
  });

  it('hotplugAddDevice, hotplugRemoveDevice and growing vCPUs are refused, with nothing sent', async () => {
    const ctx = await afterVcpuRemoval();
    await expect(hotplugDevice(ctx, { type: 'vfio', id: 'gpu', hostAddress: '0000:01:00.0' })).rejects.toMatchObject(tcgRefusal('hotplugAddDevice'));
    await expect(unplugDevice(ctx, 'd0')).rejects.toMatchObject(tcgRefusal('hotplugRemoveDevice'));
    await expect(resizeVcpus(ctx, 2)).rejects.toMatchObject(tcgRefusal('resizeVCPUs'));
    expect(h.sent()).toEqual([]);
    expect(ctx.state.devices.map((d) => d.id)).toEqual(['d0']);
    expect(ctx.state.cpus).toEqual([]);
  });

  it('a resize to the current count changes nothing and is not refused', async () => {
    const ctx = await afterVcpuRemoval();
    expect(await resizeVcpus(ctx, 1)).toEqual({ previous: 1, current: 1 });
    expect(h.sent()).toEqual([]);
  });

  it('growing DIMM memory is refused; a resize to the current size is not', async () => {
    const ctx = await afterVcpuRemoval({ memory: { bootMiB: 256, maxMiB: 512, hotplug: 'dimm' } });
    await expect(resizeMemory(ctx, 384)).rejects.toMatchObject(tcgRefusal('resizeMemory'));
    expect(await resizeMemory(ctx, 256)).toEqual({ previousMiB: 256, currentMiB: 256 });
    expect(h.sent()).toEqual([]);
  });

  it('under kvm nothing is refused after a vCPU removal', async () => {
    const ctx = h.context({ machine: { accel: 'kvm' } });
    ctx.state.vcpuRemoved = true;
    h.server.handle('device_add', () => ({}));
    expect(await hotplugDevice(ctx, { type: 'vfio', id: 'gpu', hostAddress: '0000:01:00.0' })).toEqual({ id: 'gpu', type: 'vfio', bus: 'rp0' });
  });

  it('a fresh VM under tcg has removed no vCPU, so devices come and go', async () => {
    const ctx = h.context({ machine: { accel: 'tcg' } }, { qemuVersion: QEMU_7_2 });
    expect(ctx.state).toEqual(emptyHotplugState());
    h.server.handle('device_add', () => ({}));
    h.server.handle('device_del', () => {
      h.server.sendEvent('DEVICE_DELETED', { device: 'gpu', path: '/machine/peripheral/gpu' });
      return {};
    });
    await hotplugDevice(ctx, { type: 'vfio', id: 'gpu', hostAddress: '0000:01:00.0' });
    await unplugDevice(ctx, 'gpu');
    expect(h.sent().map(([name]) => name)).toEqual(['device_add', 'device_del']);
  });
});

describe('removing vCPUs under tcg', () => {
  it('is refused without the config’s consent, before anything is sent; growing is still allowed', async () => {
    const ctx = h.context({ machine: { accel: 'tcg' }, cpus: { boot: 1, max: 3 } }, { qemuVersion: QEMU_7_2 });
    let plugged = false;
    h.server.handle('query-hotpluggable-cpus', () => [
      { type: 'max-x86_64-cpu', 'vcpus-count': 1, props: { 'core-id': 0 }, 'qom-path': '/machine/unattached/device[0]' },
      { type: 'max-x86_64-cpu', 'vcpus-count': 1, props: { 'core-id': 1 }, ...(plugged ? { 'qom-path': '/machine/peripheral/vcpu1' } : {}) },
    ]);
    h.server.handle('device_add', () => {
      plugged = true;
      return {};
    });
    expect(await resizeVcpus(ctx, 2)).toEqual({ previous: 1, current: 2 });
    expect(await resizeVcpus(ctx, 2)).toEqual({ previous: 2, current: 2 });
    h.server.received.length = 0;
    const error = await resizeVcpus(ctx, 1).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UnsupportedOperationError);
    expect(error).toMatchObject({ operation: 'resizeVCPUs' });
    expect((error as Error).message).toContain('removing vCPUs under tcg corrupts QEMU 7.2');
    expect(h.sent()).toEqual([]);
    expect(ctx.state.cpus).toEqual([{ qemuId: 'vcpu1', coreId: 1 }]);
    expect(ctx.state.vcpuRemoved).toBe(false);
  });
});

describe('devices this QEMU cannot plug (the feature probe)', () => {
  const binary = '/usr/bin/qemu-system-x86_64';
  const features: QemuFeatures = {
    version: { major: 6, minor: 2, micro: 0 },
    commands: new Set(),
    migrationToFile: false,
    devices: new Map([
      ['virtio-blk-pci', new Set(['drive', 'addr', 'write-cache'])],
      ['virtio-net-pci', new Set(['netdev', 'addr'])],
      ['vfio-pci', null],
    ]),
    machines: new Map(),
  };

  function probedContext(): HotplugContext {
    return { ...h.context(), checkDevice: (props) => assertDevice(binary, features, props.driver, Object.keys(props).filter((key) => !DEVICE_OPTION_KEYS.has(key))) };
  }

  it('a driver QEMU lacks is refused before anything is sent, naming it and the binary', async () => {
    const error = await refusal(probedContext(), { type: 'vfio', id: 'gpu', hostAddress: '0000:01:00.0' });
    expect(error).toBeInstanceOf(MissingFeatureError);
    expect(error).toMatchObject({ kind: 'device', feature: 'vfio-pci', binary });
  });

  it('a property the device would be given that QEMU lacks is refused the same way', async () => {
    const error = await refusal(probedContext(), { type: 'net', id: 'n0', tap: { ifname: 'tap0' }, mac: '52:54:00:12:34:56' });
    expect(error).toMatchObject({ kind: 'device-property', feature: 'virtio-net-pci.mac' });
    expect((error as Error).message).toBe(`${binary} (QEMU 6.2.0) lacks the device property virtio-net-pci.mac, which this VM needs`);
  });
});
