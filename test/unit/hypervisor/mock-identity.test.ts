// The mock's identities, through MockHypervisor: the same rules as the QEMU backend (a uid of the
// VM's own under root, 'current' only with allowRoot), held from createVM until the VM is gone, and
// handed over with detach()/attach(). The table lives in the module, shared by this file's tests:
// every VM is stopped after each test, so each test starts with the whole range free.
import { describe, expect, afterEach, it } from 'vitest';
import { ConfigError, type SandboxConfigInput } from '../../../src/hypervisor/config/index.ts';
import { VmStartError } from '../../../src/hypervisor/errors.ts';
import { MockHypervisor, type MockHypervisorOptions } from '../../../src/mock/index.ts';
import { DEFAULT_UID_RANGE } from '../../../src/hypervisor/identity.ts';

const FIRST = DEFAULT_UID_RANGE.first;
const leased = (uid: number) => ({ uid, gid: uid, groups: [] });

const vms: MockHypervisor[] = [];

afterEach(async () => {
  for (const vm of vms.splice(0)) await vm.stopVM();
});

function mock(options: MockHypervisorOptions = {}): MockHypervisor {
  const vm = new MockHypervisor({ host: false, ...options });
  vms.push(vm);
  return vm;
}

let next = 0;
function config(hardening: SandboxConfigInput['hardening'] = {}): SandboxConfigInput {
  next += 1;
  return { id: `mock-id-${next}`, boot: { kernel: '/boot/vmlinuz' }, hardening };
}

async function created(hardening: SandboxConfigInput['hardening'] = {}, options: MockHypervisorOptions = {}): Promise<MockHypervisor> {
  const vm = mock(options);
  await vm.createVM(config(hardening));
  return vm;
}

async function running(hardening: SandboxConfigInput['hardening'] = {}, options: MockHypervisorOptions = {}): Promise<MockHypervisor> {
  const vm = await created(hardening, options);
  await vm.startVM();
  return vm;
}

async function refused(vm: MockHypervisor, hardening: SandboxConfigInput['hardening']): Promise<ConfigError> {
  const error = await vm.createVM(config(hardening)).catch((e: unknown) => e);
  expect(error).toBeInstanceOf(ConfigError);
  expect((error as ConfigError).paths).toEqual(['hardening.user']);
  expect(vm.config).toBeUndefined();
  expect(vm.identity).toBeUndefined();
  return error as ConfigError;
}

describe('mock identities (the mock as root, its default)', () => {
  it('has no identity before createVM', () => {
    expect(mock().identity).toBeUndefined();
  });

  it('gives two VMs distinct uids from the default range, known from createVM on', async () => {
    const a = await created();
    const b = await created();
    expect(a.identity).toEqual(leased(FIRST));
    expect(b.identity).toEqual(leased(FIRST + 1));
    await a.startVM();
    expect(a.identity).toEqual(leased(FIRST));
  });

  it("reuses a stopped VM's uid", async () => {
    const a = await running();
    const b = await running();
    await a.stopVM();
    expect(a.identity).toBeUndefined();
    const c = await created();
    expect(c.identity).toEqual(leased(FIRST));
    expect(b.identity).toEqual(leased(FIRST + 1));
  });

  it('gives the uid back when a VM that never started is stopped', async () => {
    const a = await created();
    await a.stopVM();
    expect((await created()).identity).toEqual(leased(FIRST));
  });

  it('gives the uid back when the start fails', async () => {
    const a = await created();
    a.faults.failNextStart();
    await expect(a.startVM()).rejects.toBeInstanceOf(VmStartError);
    expect(a.identity).toBeUndefined();
    expect((await created()).identity).toEqual(leased(FIRST));
  });

  it('gives the uid back when the hypervisor dies', async () => {
    const a = await running();
    await a.crashVmm();
    expect(a.state).toBe('stopped');
    expect(a.identity).toBeUndefined();
    expect((await created()).identity).toEqual(leased(FIRST));
  });

  it("refuses 'current' as root without allowRoot, taking no uid", async () => {
    const error = await refused(mock(), { user: 'current' });
    expect(error.issues[0]?.message).toMatch(/^QEMU would run as root \("current" while this process is root\)/);
    expect(error.issues[0]?.message).toMatch(/set hardening\.allowRoot: true to accept that\)$/);
    await refused(mock({ processUid: 0 }), { user: 'current' });
    expect((await created()).identity).toEqual(leased(FIRST));
  });

  it("accepts 'current' as root with allowRoot: no identity, no uid taken", async () => {
    const vm = await running({ user: 'current', allowRoot: true }, { processUid: 0 });
    expect(vm.identity).toBeUndefined();
    expect((await created()).identity).toEqual(leased(FIRST));
  });

  it('takes a fixed identity as given, outside the range', async () => {
    const vm = await running({ user: { uid: 4242, gid: 4343, groups: [7] } });
    expect(vm.identity).toEqual({ uid: 4242, gid: 4343, groups: [7] });
    expect((await created()).identity).toEqual(leased(FIRST));
  });

  it('refuses uid 0 without allowRoot', async () => {
    await refused(mock(), { user: { uid: 0, gid: 0 } });
  });
});

describe('mock identities as another user (processUid 1000)', () => {
  const user = { processUid: 1000 };

  it("accepts 'current' without allowRoot: no identity", async () => {
    expect((await running({ user: 'current' }, user)).identity).toBeUndefined();
  });

  it("runs 'auto' as that user: no identity, no uid taken", async () => {
    expect((await running({ user: 'auto' }, user)).identity).toBeUndefined();
    expect((await created()).identity).toEqual(leased(FIRST));
  });

  it('accepts its own uid and refuses another', async () => {
    expect((await running({ user: { uid: 1000, gid: 1000 } }, user)).identity).toEqual({ uid: 1000, gid: 1000, groups: [] });
    const error = await refused(mock(user), { user: { uid: 1001, gid: 1000 } });
    expect(error.issues[0]?.message).toBe('only root can run the hypervisor as another user (this process is uid 1000)');
  });
});

describe('mock identities across detach and attach', () => {
  it('keep the identity for the attaching instance, and give it back when that one stops', async () => {
    const vm = await running();
    const runtimeDir = vm.runtimeDir as string;
    expect(vm.identity).toEqual(leased(FIRST));
    await vm.detach();
    // Detached, the VM still runs as its uid: nobody else gets it, and stopping the old instance does not free it.
    expect(vm.identity).toEqual(leased(FIRST));
    await vm.stopVM();
    expect((await created()).identity).toEqual(leased(FIRST + 1));

    const attached = await MockHypervisor.attach(runtimeDir, { host: false });
    vms.push(attached);
    expect(attached.state).toBe('running');
    expect(attached.id).toBe(vm.id);
    expect(attached.identity).toEqual(leased(FIRST));
    expect((await created()).identity).toEqual(leased(FIRST + 2));

    await attached.stopVM();
    expect(attached.identity).toBeUndefined();
    expect((await created()).identity).toEqual(leased(FIRST));
  });

  it('keeps the identity of a paused VM across the hand-over', async () => {
    const vm = await running({}, {});
    await vm.pauseVM();
    await vm.detach();
    const attached = await MockHypervisor.attach(vm.runtimeDir as string, { host: false });
    vms.push(attached);
    expect(attached.state).toBe('paused');
    expect(attached.identity).toEqual(leased(FIRST));
  });
});
