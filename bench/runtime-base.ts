// Where the benchmarks' VM directories live, the library's and the raw baseline's alike. A runtime's
// base is /run/sandbox-vmm, and /run is a tmpfs on any systemd host. Where it is not (the machines
// these figures were taken on have /run on their ext4 root disk), every file or directory created
// there costs far more: 50 VM homes (each a uid lease, a directory and its owner file) took 45-55 ms
// there against 11 ms on tmpfs. The library makes a few such entries per VM, the raw baseline one,
// so a storm's figures would measure the disk. There both sides get a tmpfs base instead, and the
// results say which base was used.
import { chmodSync, mkdtempSync, rmSync, statfsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { SandboxConfigInput } from '../src/hypervisor/config/index.ts';
import { QemuHypervisor } from '../src/qemu/qemu-hypervisor.ts';
import { defaultRuntimeBase, leaseDirOf } from '../src/qemu/runtime-dir.ts';

const TMPFS_MAGIC = 0x01021994;

interface BenchRuntime {
  /** Where the library's VM directories go; undefined: its default base. */
  base: string | undefined;
  /** Where the raw baseline makes its directories. */
  rawParent: string;
  /** Which base the figures were taken with. */
  label: string;
}

let chosen: BenchRuntime | undefined;
let vmCount = 0;

function onTmpfs(path: string): boolean {
  try {
    return statfsSync(path).type === TMPFS_MAGIC;
  } catch {
    return false;
  }
}

export function benchRuntime(): BenchRuntime {
  if (chosen) return chosen;
  const defaultBase = defaultRuntimeBase();
  if (onTmpfs(dirname(defaultBase))) {
    chosen = { base: undefined, rawParent: '/dev/shm', label: `${defaultBase} (tmpfs)` };
  } else {
    const base = mkdtempSync('/dev/shm/svmm-run-');
    // As the library makes its default base as root: each QEMU may traverse it to its own directory.
    chmodSync(base, 0o711);
    chosen = { base, rawParent: base, label: `a tmpfs under /dev/shm (${dirname(defaultBase)} is not one here)` };
  }
  return chosen;
}

/** A library VM whose uid lease lives in the benchmark's base. */
export function benchHypervisor(): QemuHypervisor {
  const { base } = benchRuntime();
  return new QemuHypervisor(base === undefined ? {} : { leaseDir: leaseDirOf(base) });
}

/** `input` with its VM directory in the benchmark's base. */
export function inBenchRuntime(input: SandboxConfigInput): SandboxConfigInput {
  const { base } = benchRuntime();
  if (base === undefined) return input;
  return { ...input, runtime: { ...input.runtime, dir: join(base, `vm${++vmCount}`) } };
}

/** Removes a tmpfs base made for the benchmark (with what the VMs left in it, which should be nothing). */
export function benchRuntimeCleanup(): void {
  if (chosen?.base !== undefined) rmSync(chosen.base, { recursive: true, force: true });
  chosen = undefined;
}
