// The QEMU binary the integration tests run (and give the library as runtime.qemuPath):
// SANDBOX_VMM_QEMU, which vitest.config.ts sets for each version of the matrix (or the user, to
// test another QEMU), else Debian's own.
import { SYSTEM_QEMU } from '../../scripts/qemu-versions.mjs';

export const QEMU_UNDER_TEST: string = process.env['SANDBOX_VMM_QEMU'] || SYSTEM_QEMU;
