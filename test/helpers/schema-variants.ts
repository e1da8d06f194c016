// The free-form arguments the library's builders produce for blockdev-add, netdev_add and object-add,
// for every config variant: held against a QEMU's schema by the live schema test
// (test/integration/qmp-schema.test.ts) and against recorded schemas by the unit test.
import { blockDeviceSchema, netDeviceSchema, type BlockDeviceConfig, type MemoryBacking, type NetDeviceConfig } from '../../src/hypervisor/config/index.ts';
import type { HostProbe } from '../../src/qemu/devices/context.ts';
import { blockdevProps } from '../../src/qemu/devices/block.ts';
import { dimmIds, memoryBackendProps } from '../../src/qemu/devices/memory.ts';
import { netdevProps, tapFdNames } from '../../src/qemu/devices/net.ts';

/** Every value of a config enum: a value added to the config type and not here fails to compile. */
const valuesOf = <T extends string>(all: Record<T, true>) => Object.keys(all) as T[];

export const FORMATS = valuesOf<BlockDeviceConfig['format']>({ raw: true, qcow2: true });
export const CACHES = valuesOf<BlockDeviceConfig['cache']>({ none: true, writeback: true, writethrough: true, directsync: true, unsafe: true });
export const AIOS = valuesOf<BlockDeviceConfig['aio']>({ threads: true, native: true, io_uring: true });
export const BACKINGS = valuesOf<MemoryBacking['type']>({ anonymous: true, shared: true, file: true, hugepages: true });

/** A host on which every path is (or is not) a block device, so that both protocol drivers are produced. */
const hostOf = (blockDevice: boolean): HostProbe => ({ isBlockDevice: () => blockDevice, isBlockDeviceFd: () => blockDevice });

/** blockdev-add's arguments for every format, cache mode, aio mode, read-only flag, file or host device, path or fd set. */
export function blockdevVariants(): Record<string, unknown>[] {
  const variants: Record<string, unknown>[] = [];
  for (const format of FORMATS)
    for (const cache of CACHES)
      for (const aio of AIOS)
        for (const readOnly of [false, true])
          for (const blockDevice of [false, true])
            for (const source of [{ path: '/srv/disk.img' }, { fd: 7 }]) {
              const parsed = blockDeviceSchema.safeParse({ type: 'block', id: 'd0', format, cache, aio, readOnly, ...source });
              if (!parsed.success) continue; // a combination the config refuses (aio native without O_DIRECT)
              variants.push(blockdevProps(parsed.data, hostOf(blockDevice), 'fd' in source ? 3 : undefined));
            }
  return variants;
}

/** netdev_add's arguments for a tap by name (one or more queues) or by the caller's fds (with or without vhost fds). */
export function netdevVariants(): Record<string, unknown>[] {
  const inputs = [
    { tap: { ifname: 'tap0' } },
    { tap: { ifname: 'tap0' }, queues: 4, vhost: true },
    { tap: { fd: 7 } },
    { tap: { fds: [7] }, vhost: true },
    { tap: { fds: [7, 8], vhostFds: [9, 10] }, queues: 2, vhost: true },
    { tap: { fds: [7, 8, 9] }, queues: 3 },
  ];
  return inputs.map((input) => {
    const device: NetDeviceConfig = netDeviceSchema.parse({ type: 'net', id: 'n0', ...input });
    return 'ifname' in device.tap ? netdevProps(device) : netdevProps(device, tapFdNames(device));
  });
}

/** object-add's arguments of a DIMM's memory backend for every backing, with and without prealloc. */
export function memoryBackendVariants(): Record<string, unknown>[] {
  const backing = (type: MemoryBacking['type']): MemoryBacking => (type === 'file' || type === 'hugepages' ? { type, path: '/dev/hugepages' } : { type });
  return BACKINGS.flatMap((type) => [false, true].map((prealloc) => memoryBackendProps(dimmIds(0).backendId, 256, backing(type), prealloc)));
}

