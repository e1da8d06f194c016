// The conformance suite against the QEMU backend on the real default (x86_64) guest under TCG
// (test/integration/helpers/qemu-conformance.ts).
import { defineQemuConformance } from './helpers/qemu-conformance.ts';
import { guestConfig } from './helpers/sandbox.ts';

defineQemuConformance('qemu', () => guestConfig(), true);
