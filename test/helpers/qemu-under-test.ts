// The QEMU binary the integration tests run (and give the library as runtime.qemuPath):
// SANDBOX_VMM_QEMU, which vitest.config.ts sets for each version of the matrix (or the user, to
// test another QEMU), else Debian's own.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { SYSTEM_QEMU } from '../../scripts/qemu-versions.mjs';
import type { Architecture } from '../../src/hypervisor/arch-profiles.ts';

export const QEMU_UNDER_TEST: string = process.env['SANDBOX_VMM_QEMU'] || SYSTEM_QEMU;

/**
 * The aarch64 QEMU of the same version: SANDBOX_VMM_QEMU_AARCH64 when set, else the
 * qemu-system-aarch64 beside the x86 binary under test (Debian's /usr/bin one for the system QEMU,
 * the side-by-side install's own for the others), so each project of the matrix runs its version.
 */
export const AARCH64_QEMU_UNDER_TEST: string = process.env['SANDBOX_VMM_QEMU_AARCH64'] || siblingAarch64(QEMU_UNDER_TEST);

function siblingAarch64(x86: string): string {
  const sibling = join(dirname(x86), 'qemu-system-aarch64');
  if (!existsSync(sibling)) throw new Error(`no qemu-system-aarch64 beside ${x86}: install Debian's qemu-system-arm (npm test does) or set SANDBOX_VMM_QEMU_AARCH64`);
  return sibling;
}

/** The QEMU under test of each guest architecture: a config of that architecture runs on it. */
export const QEMU_UNDER_TEST_BY_ARCH: Readonly<Record<Architecture, string>> = { x86_64: QEMU_UNDER_TEST, aarch64: AARCH64_QEMU_UNDER_TEST };
