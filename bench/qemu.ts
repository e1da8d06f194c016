// The QEMU one benchmark process measures: SANDBOX_VMM_QEMU, which bench/run.ts sets for each
// QEMU of the version matrix (scripts/qemu-versions.mjs) in a child process of its own, else
// Debian's. Results are written per version ("7.2", "10.0": major.minor of its --version).
import { SYSTEM_QEMU, qemuVersionOf } from '../scripts/qemu-versions.mjs';

export const BENCH_QEMU: string = process.env['SANDBOX_VMM_QEMU'] || SYSTEM_QEMU;

/** "major.minor" of BENCH_QEMU, as vitest.config.ts labels its integration projects. */
export function benchQemuLabel(): string {
  const version = qemuVersionOf(BENCH_QEMU);
  if (version === undefined) throw new Error(`${BENCH_QEMU} --version names no QEMU version: run \`npm run bench\`, which installs the QEMUs of the version matrix`);
  return version.split('.').slice(0, 2).join('.');
}
