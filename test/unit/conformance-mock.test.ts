// The conformance suite against the mock backend: the same tests the QEMU backend passes on a real
// guest (test/integration/conformance-qemu.test.ts), with the mock's guest model as the probes.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { defineConformanceSuite } from '../../src/conformance/index.ts';
import { MockHypervisor, type MockGuestView } from '../../src/mock/index.ts';

const dir = mkdtempSync(join(tmpdir(), 'svmm-mock-conformance-'));
const kernel = join(dir, 'vmlinuz');
writeFileSync(kernel, '');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function guestOf(vm: MockHypervisor): MockGuestView {
  const guest = vm.guest;
  if (!guest) throw new Error('the mock VM does not run');
  return guest;
}

// Once as under KVM (everything allowed) and once as under TCG (vCPU removal refused, as QEMU 7.2
// would otherwise corrupt itself): the mock must answer like QEMU in both.
for (const accel of ['kvm', 'tcg'] as const) {
  defineConformanceSuite(
    { describe, it, beforeAll, afterAll },
    {
      name: `mock (${accel})`,
      // Its guest opens the agent's channel, as the test guest does, and never the other one.
      create: (settings) => new MockHypervisor({ deviceRemovalTimeoutMs: settings.deviceRemovalTimeoutMs, guestOpensChannels: ['agent'] }),
      // The mock checks the host like QEMU: the kernel and the disk images must exist.
      config: () => ({
        boot: { kernel },
        machine: { accel },
        devices: [
          { type: 'channel', id: 'agent', name: 'agent.0' },
          { type: 'channel', id: 'silent', name: 'silent.0' },
        ],
      }),
      channels: { opened: 'agent', neverOpened: 'silent' },
      disk: (name) => {
        const path = join(dir, `${accel}-${name}.img`);
        writeFileSync(path, '');
        return path;
      },
      guest: {
        diskCount: (vm) => Promise.resolve(guestOf(vm).disks.length),
        onlineCpus: (vm) => Promise.resolve(guestOf(vm).onlineCpus),
        memoryMiB: (vm) => Promise.resolve(guestOf(vm).memoryMiB),
      },
      faults: {
        crash: (vm) => vm.crashVmm(),
        panic: async (vm) => void (await vm.panicGuest()),
        resetGuest: (vm) => vm.endGuest('guest-reset'),
        ejectDevice: async (vm, id) => {
          if (!(await vm.ejectGuestDevice(id))) throw new Error(`the mock guest did not eject ${id}`);
        },
      },
      timeouts: { testMs: 10_000, removalMs: 300, guestMs: 3_000, settleMs: 20 },
    },
  );
}
