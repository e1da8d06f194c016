// The conformance suite against the QEMU backend on the arm64 test guest, in qemu-system-aarch64's
// virt machine under TCG (the aarch64 binary of the version under test): the same checks from
// inside the guest as on x86_64, gated on what capabilities() says virt can do (no vCPU or DIMM
// hotplug). The arm64 cloud kernel has no pvpanic driver, so the guest-panic test is not registered.
import { defineQemuConformance } from './helpers/qemu-conformance.ts';
import { guestBoot, guestConfig } from './helpers/sandbox.ts';
import { AARCH64_QEMU_UNDER_TEST } from '../helpers/qemu-under-test.ts';

defineQemuConformance(
  'qemu aarch64',
  () =>
    guestConfig({
      machine: { arch: 'aarch64', accel: 'tcg' },
      boot: guestBoot('aarch64'),
      cpus: { boot: 1, max: 1 },
      runtime: { qemuPath: AARCH64_QEMU_UNDER_TEST },
    }),
  false,
);
