// Where a template's guest RAM lives and how each VM maps it: the one concern that varies with the
// QEMU version. A template VM writes its RAM to the template's file (share=on); a clone maps that
// file privately, so its writes stay its own and clones share every page they only read.
import type { QemuArgv } from '../argv/index.ts';
import { inheritAfter } from '../argv/fd-plan.ts';
import type { OptionProps } from '../argv/qemu-opts.ts';

export const TEMPLATE_RAM_FILE = 'memory';

/**
 * The backend's mapping for each role. A private copy is shared with nobody: mapped shared, its
 * writes cost no second page, and a vhost-user daemon sees them.
 */
const RAM_MAPPINGS: Record<'template' | CloneRamMode, OptionProps> = {
  template: { share: true },
  'map-read-only': { share: false, readonly: true, rom: false },
  'map-sealed': { share: false },
  'private-copy': { share: true },
};
/** A clone's own copy of the RAM, in its runtime directory, when its QEMU cannot map the template's read-only. */
export const CLONE_RAM_COPY = 'template-memory';

/**
 * How a clone maps the template's RAM file:
 * - 'map-read-only': QEMU opens the root-owned file read-only and maps it private and writable
 *   (memory-backend-file readonly=on,rom=off, QEMU 8.2 and later). Pages are shared until written.
 * - 'map-sealed': QEMU before 8.2 opens a memory-backend-file read-write whatever the mapping, and
 *   its readonly=on makes guest RAM read-only (the guest hangs). The clone maps privately a sealed
 *   in-memory copy of the file that no fd can change (sealed-ram.ts), made once for the clones of
 *   this process that run at a time: they share its pages until written, as above.
 * - 'private-copy': a copy of its own, made by the library (holes kept), owned by its uid and
 *   mapped shared: for a clone whose RAM a vhost-user daemon maps (see cloneRamMode).
 */
export type CloneRamMode = 'map-read-only' | 'map-sealed' | 'private-copy';

const CLONE_RAM_MODES: readonly { since: [number, number]; mode: CloneRamMode }[] = [
  { since: [8, 2], mode: 'map-read-only' },
  { since: [0, 0], mode: 'map-sealed' },
];

/**
 * `sharedMemory`: the clone's config asks for shared memory (memory.backing "shared", for virtio-fs).
 * A vhost-user daemon maps guest RAM from the fd QEMU hands it, MAP_SHARED: over a private mapping
 * of the template's file it would see the template's pages, never the clone's writes. Such a clone
 * gets a copy of its own, mapped shared, on every version.
 */
export function cloneRamMode(version: string, sharedMemory = false): CloneRamMode {
  if (sharedMemory) return 'private-copy';
  const [major = 0, minor = 0] = version.split('.').map(Number);
  const found = CLONE_RAM_MODES.find(({ since: [a, b] }) => major > a || (major === a && minor >= b));
  return found?.mode ?? 'map-sealed';
}

/** Where a clone's QEMU finds a sealed copy it inherited at fd `fd` (QEMU opens mem-path itself). */
export function inheritedRamPath(fd: number): string {
  return `/proc/self/fd/${fd}`;
}

/** `argv` with the sealed copy `from` (our fd) inherited at the next free fd, and the mem-path that names it. */
export function inheritSealedRam<A extends Pick<QemuArgv, 'fds'>>(argv: A, from: number): { argv: A; ramPath: string } {
  const inherited = inheritAfter(argv, from);
  return { argv: inherited.argv, ramPath: inheritedRamPath(inherited.fd) };
}

/** The boot RAM backend's props: the template's file shared, or a clone's mapping of it. */
export function templateRamProps(id: string, bytes: number, path: string, role: 'template' | CloneRamMode, prealloc: boolean): OptionProps {
  const mapping = RAM_MAPPINGS[role];
  return { 'qom-type': 'memory-backend-file', id, size: bytes, 'mem-path': path, ...mapping, prealloc: prealloc ? true : undefined };
}
