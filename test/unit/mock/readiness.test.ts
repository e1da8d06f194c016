// The mock's guest readiness: what the conformance suite cannot ask of every backend (the default
// set of channels a guest opens).
import { describe, expect, it } from 'vitest';
import { MockHypervisor } from '../../../src/mock/index.ts';

const channels = [
  { type: 'channel', id: 'agent', name: 'agent.0' },
  { type: 'channel', id: 'logs', name: 'logs.0' },
] as const;
const config = { boot: { kernel: '/boot/vmlinuz' }, devices: [...channels] };

describe('mock guest readiness', () => {
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
});
