// What the VM benchmark does differently per guest architecture, in one table: which QEMU runs the
// guest, where its figures go, how the README labels them, and which figures it measures. The
// machine itself (virt or q35, vCPU hotplug or not) comes from the architecture's profile.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { archProfile, type Architecture } from '../src/hypervisor/arch-profiles.ts';
import { BENCH_QEMU } from './qemu.ts';

/** Figure groups besides start, boot, block hotplug and stop, which every architecture measures. */
export type OptionalFigures = 'nic' | 'memory-round-trip' | 'memory-grow-shrink' | 'scale';

export interface BenchArch {
  readonly arch: Architecture;
  /** The benchmark's name and result file: bench/<name>.bench.ts, bench/results/<name>.qemu-<version>.json. */
  readonly name: string;
  /** What the README table puts before each figure's name (x86_64's figures have none). */
  readonly figurePrefix: string;
  /** How the README's notes name its figures. */
  readonly notesName: string;
  /** The QEMU binary of the version under benchmark (BENCH_QEMU is x86_64's). */
  qemu(): string;
  /** The optional figures measured (vCPU hotplug where the profile has it). */
  readonly figures: readonly OptionalFigures[];
}

/**
 * The aarch64 QEMU of the version under benchmark: SANDBOX_VMM_QEMU_AARCH64 when set (as the tests
 * take it), else the one beside BENCH_QEMU (Debian's, or the side-by-side install's).
 */
function aarch64Qemu(): string {
  const path = process.env['SANDBOX_VMM_QEMU_AARCH64'] || join(dirname(BENCH_QEMU), archProfile('aarch64').qemuBinary);
  if (!existsSync(path)) throw new Error(`no ${archProfile('aarch64').qemuBinary} beside ${BENCH_QEMU}: install Debian's qemu-system-arm (npm run bench does) or set SANDBOX_VMM_QEMU_AARCH64`);
  return path;
}

export const BENCH_ARCHES: Readonly<Record<Architecture, BenchArch>> = {
  x86_64: { arch: 'x86_64', name: 'vm', figurePrefix: '', notesName: 'VM figures', qemu: () => BENCH_QEMU, figures: ['nic', 'memory-round-trip', 'scale'] },
  // Removal waits for virt's native PCIe hotplug (about 6 s each): block hotplug only. The shrink
  // is a figure of its own (grow about 0.5 s, shrink about 1 s in the measure).
  aarch64: { arch: 'aarch64', name: 'vm-arm64', figurePrefix: 'arm64: ', notesName: 'arm64 VM figures (virt, the arm64 test guest)', qemu: aarch64Qemu, figures: ['memory-grow-shrink'] },
};
