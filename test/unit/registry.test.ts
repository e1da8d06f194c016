// Choosing a backend by name: the built-in kinds, users' own kinds, and the typed refusals.
import { describe, expect, it } from 'vitest';
import type { Hypervisor } from '../../src/hypervisor/types.ts';
import { MockHypervisor } from '../../src/mock/index.ts';
import { QemuHypervisor } from '../../src/qemu/qemu-hypervisor.ts';
import {
  createHypervisor,
  HypervisorKindTakenError,
  listHypervisors,
  registerHypervisor,
  UnknownHypervisorError,
} from '../../src/registry.ts';

describe('createHypervisor', () => {
  it('builds the built-in kinds with their own options', async () => {
    const mock: MockHypervisor = createHypervisor('mock', { host: false });
    expect(mock).toBeInstanceOf(MockHypervisor);
    expect(mock.kind).toBe('mock');
    await mock.createVM({ boot: { kernel: '/nowhere/vmlinuz' } });
    await mock.startVM();
    expect(mock.state).toBe('running');
    await mock.stopVM();

    const qemu: QemuHypervisor = createHypervisor('qemu', { defaultTimeoutMs: 5_000 });
    expect(qemu).toBeInstanceOf(QemuHypervisor);
    expect(qemu.kind).toBe('qemu');
    expect(createHypervisor('mock')).not.toBe(mock);
  });

  it('refuses an unknown kind with a typed error naming the known ones', () => {
    let error: unknown;
    try {
      createHypervisor('firecracker');
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(UnknownHypervisorError);
    expect((error as UnknownHypervisorError).code).toBe('UNKNOWN_HYPERVISOR');
    expect((error as UnknownHypervisorError).known).toEqual(['mock', 'qemu']);
    expect((error as Error).message).toBe("no hypervisor backend 'firecracker' (known: mock, qemu); register it with registerHypervisor()");
  });

  it('type-checks the options of a known kind', () => {
    // @ts-expect-error: not an option of the mock
    expect(() => createHypervisor('mock', { qemuPath: '/usr/bin/qemu' })).not.toThrow();
  });
});

describe('registerHypervisor', () => {
  it('adds a kind that createHypervisor builds with the options given, and the returned function removes it', () => {
    const seen: unknown[] = [];
    const undo = registerHypervisor('test-backend', (options) => {
      seen.push(options);
      return new MockHypervisor({ host: false });
    });
    expect(listHypervisors()).toEqual(['mock', 'qemu', 'test-backend']);
    const vm: Hypervisor = createHypervisor('test-backend', { socket: '/run/x.sock' });
    expect(vm).toBeInstanceOf(MockHypervisor);
    expect(seen).toEqual([{ socket: '/run/x.sock' }]);
    undo();
    expect(listHypervisors()).toEqual(['mock', 'qemu']);
    expect(() => createHypervisor('test-backend')).toThrow(UnknownHypervisorError);
  });

  it('refuses to replace a registered kind unless asked, and undoing a replacement restores the original', () => {
    const error = (() => {
      try {
        registerHypervisor('mock', () => new MockHypervisor());
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(error).toBeInstanceOf(HypervisorKindTakenError);
    expect((error as HypervisorKindTakenError).code).toBe('HYPERVISOR_KIND_TAKEN');
    expect((error as Error).message).toContain("'mock'");

    const replacement = new MockHypervisor({ host: false });
    const undo = registerHypervisor('mock', () => replacement, { replace: true });
    expect(createHypervisor('mock')).toBe(replacement);
    undo();
    expect(createHypervisor('mock')).not.toBe(replacement);
    expect(createHypervisor('mock')).toBeInstanceOf(MockHypervisor);
  });
});
