// The mock's guest readiness and how its VMs end: what the conformance suite cannot ask of every
// backend (the default set of channels a guest opens, a guest that powers off, a panic's reason).
import { describe, expect, it } from 'vitest';
import { MockHypervisor } from '../../../src/mock/index.ts';
import type { VmExitInfo } from '../../../src/hypervisor/types.ts';

const channels = [
  { type: 'channel', id: 'agent', name: 'agent.0' },
  { type: 'channel', id: 'logs', name: 'logs.0' },
] as const;
const config = { boot: { kernel: '/boot/vmlinuz' }, devices: [...channels] };

describe('mock guest readiness and exit reasons', () => {
  it('opens every channel of the config by default, once, after the guest first runs', async () => {
    const vm = new MockHypervisor({ host: false });
    await vm.createVM(config);
    const opened: unknown[] = [];
    vm.onEvent((event) => {
      if (event.name === 'VSERPORT_CHANGE') opened.push(event.data);
    });
    await vm.startVM({ waitForChannel: 'logs' });
    expect(opened).toEqual(expect.arrayContaining([{ id: 'agent', open: true }, { id: 'logs', open: true }]));
    await vm.pauseVM();
    await vm.resumeVM();
    expect(opened).toHaveLength(2);
    await vm.stopVM();
  });

  it("a guest that powers itself off ends the VM with reason 'guest-shutdown'", async () => {
    const vm = new MockHypervisor({ host: false });
    await vm.createVM(config);
    await vm.startVM({ waitForChannel: 'agent' });
    const exited = new Promise<VmExitInfo>((resolve) => vm.onExit(resolve));
    await vm.endGuest('guest-shutdown');
    expect(await exited).toEqual({ expected: false, exitCode: 0, signal: undefined, stderrTail: '', reason: 'guest-shutdown' });
    expect(vm.state).toBe('stopped');
  });

  it("a guest that panicked is stopped with reason 'guest-panic'", async () => {
    const vm = new MockHypervisor({ host: false });
    await vm.createVM({ ...config, devices: [...channels, { type: 'pvpanic', id: 'panic' }] });
    await vm.startVM();
    expect(await vm.panicGuest()).toBe(true);
    await vm.stopVM();
    expect(vm.exitInfo).toMatchObject({ expected: true, reason: 'guest-panic' });
  });

  it('a guest that resets while startVM waits for its channel fails the start at once, saying so', async () => {
    const vm = new MockHypervisor({ host: false, guestOpensChannels: [] });
    await vm.createVM(config);
    const starting = vm.startVM({ waitForChannel: 'agent' }).catch((error: unknown) => error);
    await new Promise((resolve) => setImmediate(resolve));
    await vm.endGuest('guest-reset');
    const error = await starting;
    expect(error).toMatchObject({ code: 'VM_START_FAILED', exitCode: 0 });
    expect(error).not.toHaveProperty('channel');
    expect(vm.exitInfo).toMatchObject({ reason: 'guest-reset' });
  });
});
