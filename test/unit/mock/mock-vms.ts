// What the mock's own tests share: a kernel file that exists (the mock checks the host as QEMU
// would), and the VMs a test made, stopped after each test.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach } from 'vitest';
import type { MockHypervisor } from '../../../src/mock/index.ts';

/**
 * Registers the hooks; `kernel` is a real (empty) file, `file(name)` makes another one (a disk
 * image) in the same scratch directory, and `track(vm)` stops `vm` after the test.
 */
export function useMockVms(prefix: string): { kernel: string; file: (name: string) => string; track: <V extends MockHypervisor>(vm: V) => V } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const kernel = join(dir, 'vmlinuz');
  writeFileSync(kernel, '');
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const vms: MockHypervisor[] = [];
  afterEach(async () => {
    for (const vm of vms.splice(0)) await vm.stopVM();
  });
  return {
    kernel,
    file: (name) => {
      const path = join(dir, name);
      writeFileSync(path, '');
      return path;
    },
    track: (vm) => {
      vms.push(vm);
      return vm;
    },
  };
}
