// The conformance suite against the mock backend: the same tests the QEMU backend passes on a real
// guest (test/integration/conformance-qemu.test.ts), with the mock's guest model as the probes.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { defineConformanceSuite } from '../../src/conformance/index.ts';
import { corruptMockTemplate, MockHypervisor, type MockGuestView } from '../../src/mock/index.ts';

const dir = mkdtempSync(join(tmpdir(), 'svmm-mock-conformance-'));
const kernel = join(dir, 'vmlinuz');
writeFileSync(kernel, '');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function guestOf(vm: MockHypervisor): MockGuestView {
  const guest = vm.guest;
  if (!guest) throw new Error('the mock VM does not run');
  return guest;
}

// As under KVM (everything allowed), as under TCG on QEMU 7.2 (vCPU removal refused, as QEMU would
// otherwise corrupt itself), as under TCG on QEMU 10 (removal allowed, hot-adds within the lifetime
// budget), and as aarch64's virt (no vCPU or DIMM hotplug): the mock must answer like QEMU in each.
const variants = [
  { label: 'kvm', machine: { accel: 'kvm' }, qemuVersion: undefined },
  { label: 'tcg, QEMU 7.2', machine: { accel: 'tcg' }, qemuVersion: { major: 7, minor: 2, micro: 22 } },
  { label: 'tcg, QEMU 10.0', machine: { accel: 'tcg' }, qemuVersion: { major: 10, minor: 0, micro: 2 } },
  { label: 'aarch64 tcg', machine: { arch: 'aarch64', accel: 'tcg' }, qemuVersion: undefined },
] as const;
for (const { label, machine, qemuVersion } of variants) {
  defineConformanceSuite<MockHypervisor>(
    { describe, it, beforeAll, afterAll },
    {
      name: `mock (${label})`,
      // Its guest opens the agent's channel, as the test guest does, and never the other one.
      create: (settings) =>
        new MockHypervisor({ deviceRemovalTimeoutMs: settings.deviceRemovalTimeoutMs, guestOpensChannels: ['agent'], ...(qemuVersion ? { qemuVersion } : {}) }),
      // The mock checks the host like QEMU: the kernel and the disk images must exist.
      config: () => ({
        boot: { kernel },
        machine,
        devices: [
          { type: 'channel', id: 'agent', name: 'agent.0' },
          { type: 'channel', id: 'silent', name: 'silent.0' },
        ],
      }),
      channels: { opened: 'agent', neverOpened: 'silent' },
      disk: (name) => {
        const path = join(dir, `${label.replace(/\W+/g, '-')}-${name}.img`);
        writeFileSync(path, '');
        return path;
      },
      // The mock checks that a share's directory exists, as virtiofsd would.
      shareDir: (name) => {
        const path = join(dir, `${label.replace(/\W+/g, '-')}-share-${name}`);
        mkdirSync(path);
        return path;
      },
      // The mock keeps templates in memory, by directory: a fresh name is all it needs.
      templateDir: (name) => join(dir, `${label.replace(/\W+/g, '-')}-template-${name}`),
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
        corruptTemplate: (templateDir) => corruptMockTemplate(templateDir),
      },
      timeouts: { testMs: 10_000, removalMs: 300, guestMs: 3_000, settleMs: 20 },
    },
  );
}
