// Guest RAM: the boot memory backend, the virtio-mem device that grows and shrinks it, and the
// backend objects of DIMMs. All of them follow the config's backing (anonymous, memfd, file, huge
// pages), so shared memory stays shared when it grows.
import type { MemoryBacking } from '../../hypervisor/config/index.ts';
import type { ObjectAddProps, Props } from './context.ts';

export const BOOT_MEMORY_ID = 'mem-ram';
export const VIRTIO_MEM_ID = 'vmem0';
export const VIRTIO_MEM_BACKEND_ID = 'mem-vmem0';
const MiB = 1024 * 1024;

/** object-add arguments of a memory backend of `sizeMiB` with the config's backing. */
export function memoryBackendProps(id: string, sizeMiB: number, backing: MemoryBacking, prealloc: boolean): ObjectAddProps {
  const props: ObjectAddProps = { id, size: sizeMiB * MiB, ...backingProps(backing) };
  if (prealloc) props['prealloc'] = true;
  return props;
}

function backingProps(backing: MemoryBacking): { 'qom-type': string } & Props {
  switch (backing.type) {
    case 'anonymous':
      return { 'qom-type': 'memory-backend-ram' };
    case 'shared':
      return { 'qom-type': 'memory-backend-memfd', share: true };
    case 'file':
    case 'hugepages':
      // A directory: QEMU creates (and unlinks) a file of its own in it for each backend.
      return { 'qom-type': 'memory-backend-file', 'mem-path': backing.path, share: true };
  }
}

/** The boot RAM needs an explicit backend only when it is not plain anonymous memory. */
export function needsBootBackend(backing: MemoryBacking, prealloc: boolean): boolean {
  return backing.type !== 'anonymous' || prealloc;
}

/** Names of a hot-added DIMM and of its backend, by slot index. */
export function dimmIds(index: number): { qemuId: string; backendId: string } {
  return { qemuId: `dimm${index}`, backendId: `mem-dimm${index}` };
}
