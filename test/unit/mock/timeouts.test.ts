// A backend's operations refuse an invalid timeoutMs with a typed error naming it, instead of
// running without a bound.
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError } from '../../../src/errors.ts';
import { MockHypervisor } from '../../../src/mock/index.ts';

const config = { boot: { kernel: '/boot/vmlinuz' } };

describe('mock backend timeouts', () => {
  it('refuses startVM({ timeoutMs: NaN }) at once, naming timeoutMs, before the VM changes state', async () => {
    const vm = new MockHypervisor({ host: false });
    await vm.createVM(config);
    const error = await vm.startVM({ timeoutMs: NaN }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(InvalidArgumentError);
    expect(error).toMatchObject({ code: 'INVALID_ARGUMENT', argument: 'timeoutMs' });
    expect(vm.state).toBe('created');
    await vm.startVM();
    expect(vm.state).toBe('running');
    await vm.stopVM();
  });

  it('refuses stopVM with an invalid timeoutMs or gracefulTimeoutMs, then stops with a valid one', async () => {
    const vm = new MockHypervisor({ host: false });
    await vm.createVM(config);
    await vm.startVM();
    await expect(vm.stopVM({ timeoutMs: NaN })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', argument: 'timeoutMs' });
    await expect(vm.stopVM({ gracefulTimeoutMs: -5 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', argument: 'gracefulTimeoutMs' });
    expect(vm.state).toBe('running');
    await vm.stopVM();
    expect(vm.state).toBe('stopped');
  });

  it('rejects an operation with a negative timeoutMs, and keeps the VM running', async () => {
    const vm = new MockHypervisor({ host: false });
    await vm.createVM(config);
    await vm.startVM();
    const error = await vm.pauseVM({ timeoutMs: -1 }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(InvalidArgumentError);
    expect(vm.state).toBe('running');
    await vm.stopVM();
  });

  it('refuses an invalid instance default at construction, naming it', () => {
    expect(() => new MockHypervisor({ host: false, defaultTimeoutMs: NaN })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', argument: 'defaultTimeoutMs' }));
    expect(() => new MockHypervisor({ host: false, deviceRemovalTimeoutMs: -1 })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', argument: 'deviceRemovalTimeoutMs' }));
  });
});
