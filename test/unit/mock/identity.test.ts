// Who the mock's hypervisor "runs as": the QEMU backend's rules (hypervisor/identity.ts), with fake
// uids leased from the same range, one per VM from createVM until the VM is gone.
import { describe, expect, it } from 'vitest';
import { ConfigError, type SandboxConfigInput } from '../../../src/hypervisor/config/index.ts';
import { VmStartError } from '../../../src/hypervisor/errors.ts';
import type { VmIdentity } from '../../../src/hypervisor/types.ts';
import { MockHypervisor, type MockHypervisorOptions } from '../../../src/mock/index.ts';
import { DEFAULT_UID_RANGE } from '../../../src/hypervisor/identity.ts';
import { useMockVms } from './mock-vms.ts';

const { kernel, track } = useMockVms('svmm-mock-identity-');

function mock(options: MockHypervisorOptions = {}): MockHypervisor {
  const vm = new MockHypervisor(options);
  track(vm);
  return vm;
}

async function created(overrides: Partial<SandboxConfigInput> = {}, options: MockHypervisorOptions = {}): Promise<MockHypervisor> {
  const vm = mock(options);
  await vm.createVM({ boot: { kernel }, ...overrides });
  return vm;
}

function expectLeased(identity: VmIdentity | undefined): VmIdentity {
  expect(identity).toBeDefined();
  const { uid, gid, groups } = identity as VmIdentity;
  expect(DEFAULT_UID_RANGE.first).toBe(1_900_000_000);
  expect(uid).toBeGreaterThanOrEqual(DEFAULT_UID_RANGE.first);
  expect(uid).toBeLessThan(DEFAULT_UID_RANGE.first + DEFAULT_UID_RANGE.count);
  expect({ gid, groups }).toEqual({ gid: uid, groups: [] });
  return identity as VmIdentity;
}

describe('the mock hypervisor identity', () => {
  it('as root, each VM gets a uid of its own from createVM on, and keeps it while it runs', async () => {
    const vm = mock();
    expect(vm.identity).toBeUndefined();
    await vm.createVM({ boot: { kernel } });
    const identity = expectLeased(vm.identity);
    expect(identity.uid).not.toBe(65534);
    const other = expectLeased((await created()).identity);
    expect(other.uid).not.toBe(identity.uid);
    await vm.startVM();
    expect(vm.identity).toEqual(identity);
  });

  it('hands out a copy of the identity (as the QEMU backend does): a caller cannot change the record', async () => {
    const vm = await created();
    const { uid, gid } = expectLeased(vm.identity);
    const copy = vm.identity as VmIdentity;
    copy.groups.push(1);
    expect(vm.identity).toEqual({ uid, gid, groups: [] });
  });

  it('a uid goes back once its VM is stopped, whether it ran, never started, failed to start or crashed', async () => {
    const free = async () => {
      const probe = await created();
      const uid = expectLeased(probe.identity).uid;
      await probe.stopVM();
      return uid;
    };
    const lowest = await free();
    // Stopped after running.
    const ran = await created();
    expect(ran.identity?.uid).toBe(lowest);
    await ran.startVM();
    await ran.stopVM();
    expect(await free()).toBe(lowest);
    // Created, never started: stopVM releases it.
    const idle = await created();
    expect(idle.identity?.uid).toBe(lowest);
    expect((await created()).identity?.uid).not.toBe(lowest);
    await idle.stopVM();
    // A start that fails.
    const failing = await created();
    expect(failing.identity?.uid).toBe(lowest);
    failing.faults.failNextStart({ exitCode: 1 });
    await expect(failing.startVM()).rejects.toBeInstanceOf(VmStartError);
    // The hypervisor dying on its own.
    const crashing = await created();
    expect(crashing.identity?.uid).toBe(lowest);
    await crashing.startVM();
    await crashing.crashVmm();
    expect(crashing.state).toBe('stopped');
    const next = await created();
    expect(next.identity?.uid).toBe(lowest);
  });

  it('a VM handed over (detach, attach) keeps its identity, and its uid is released once the new owner stops it', async () => {
    const first = await created();
    const identity = expectLeased(first.identity);
    await first.startVM();
    await first.detach();
    const second = await MockHypervisor.attach(first.runtimeDir as string);
    track(second);
    expect(second.identity).toEqual(identity);
    // Still leased while the new owner runs it.
    expect((await created()).identity?.uid).not.toBe(identity.uid);
    await second.stopVM();
    const after = await created();
    expect(after.identity?.uid).toBe(identity.uid);
  });

  it('refuses to run the hypervisor as root unless hardening.allowRoot says so', async () => {
    const refused = mock();
    const error = (await refused.createVM({ boot: { kernel }, hardening: { user: 'current' } }).catch((e: unknown) => e)) as ConfigError;
    expect(error).toBeInstanceOf(ConfigError);
    expect(error.issues.map((issue) => issue.path)).toEqual(['hardening.user']);
    expect(refused.config).toBeUndefined();
    const uid0 = mock();
    await expect(uid0.createVM({ boot: { kernel }, hardening: { user: { uid: 0, gid: 0 } } })).rejects.toBeInstanceOf(ConfigError);

    const root = await created({ hardening: { user: 'current', allowRoot: true } });
    expect(root.identity).toBeUndefined();
    await root.startVM();
    expect(root.identity).toBeUndefined();
  });

  it('a fixed user is used as given; anyone but root runs the hypervisor as itself', async () => {
    const fixed = await created({ hardening: { user: { uid: 4242, gid: 4343, groups: [7] } } });
    expect(fixed.identity).toEqual({ uid: 4242, gid: 4343, groups: [7] });
    const unprivileged = await created({}, { processUid: 1000 });
    expect(unprivileged.identity).toBeUndefined();
    const other = mock({ processUid: 1000 });
    await expect(other.createVM({ boot: { kernel }, hardening: { user: { uid: 4242, gid: 4242 } } })).rejects.toBeInstanceOf(ConfigError);
  });
});
