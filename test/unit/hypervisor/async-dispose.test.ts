// `await using` on both backends: leaving the scope stops the VM and removes what createVM made on
// the host (the QEMU backend's runtime directory), even when the VM never started or the scope
// threw; on an instance never created or already stopped it is harmless.
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { SandboxConfigInput } from '../../../src/hypervisor/config/index.ts';
import type { Hypervisor } from '../../../src/hypervisor/types.ts';
import { createHypervisor } from '../../../src/registry.ts';

const dir = mkdtempSync(join(tmpdir(), 'svmm-dispose-'));
const kernel = join(dir, 'vmlinuz');
writeFileSync(kernel, '');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let vmCount = 0;
function config(): SandboxConfigInput {
  return { boot: { kernel }, machine: { accel: 'tcg' }, runtime: { dir: join(dir, `vm${++vmCount}`) } };
}

describe.each(['qemu', 'mock'] as const)('await using (%s)', (kind) => {
  it('stops a VM created and never started, and its runtime directory is gone', async () => {
    let scoped: Hypervisor | undefined;
    let runtimeDir: string | undefined;
    {
      await using vm = createHypervisor(kind);
      scoped = vm;
      await vm.createVM(config());
      runtimeDir = vm.runtimeDir;
      expect(vm.state).toBe('created');
      if (kind === 'qemu') expect(existsSync(runtimeDir as string)).toBe(true);
    }
    expect(scoped.state).toBe('stopped');
    expect(scoped.getPids()).toEqual([]);
    expect(runtimeDir).toBeDefined();
    expect(existsSync(runtimeDir as string)).toBe(false);
  });

  it('cleans up when the scope throws, and the error is the one thrown', async () => {
    let runtimeDir: string | undefined;
    const run = async (): Promise<void> => {
      await using vm = createHypervisor(kind);
      await vm.createVM(config());
      runtimeDir = vm.runtimeDir;
      throw new Error('the caller failed');
    };
    await expect(run()).rejects.toThrow('the caller failed');
    expect(existsSync(runtimeDir as string)).toBe(false);
  });

  it('is harmless on an instance never created or already stopped', async () => {
    const fresh = createHypervisor(kind);
    await fresh[Symbol.asyncDispose]();
    expect(fresh.state).toBe('stopped');
    const stopped = createHypervisor(kind);
    await stopped.createVM(config());
    await stopped.stopVM();
    await expect(stopped[Symbol.asyncDispose]()).resolves.toBeUndefined();
    expect(stopped.state).toBe('stopped');
  });
});
