// Which QEMUs the integration projects and the benchmarks run against (scripts/qemu-versions.mjs),
// with stand-in binaries that only answer --version.
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SIDE_BY_SIDE, SYSTEM_QEMU, qemuVersionOf, qemusUnderTest, sideBySideQemu } from '../../scripts/qemu-versions.mjs';

let dir = '';
const saved = { qemu: process.env['SANDBOX_VMM_QEMU'], cache: process.env['SANDBOX_VMM_QEMU_CACHE'] };

function fakeQemu(path: string, version: string): string {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, `#!/bin/sh\necho "QEMU emulator version ${version} (fake)"\n`);
  chmodSync(path, 0o755);
  return path;
}

function restore(name: string, value: string | undefined): void {
  if (value === undefined) delete process.env[name];
  else process.env[name] = value;
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'svmm-versions-'));
  delete process.env['SANDBOX_VMM_QEMU'];
  process.env['SANDBOX_VMM_QEMU_CACHE'] = join(dir, 'cache');
});

afterEach(() => {
  restore('SANDBOX_VMM_QEMU', saved.qemu);
  restore('SANDBOX_VMM_QEMU_CACHE', saved.cache);
  rmSync(dir, { recursive: true, force: true });
});

describe('the QEMU version matrix', () => {
  it('reads the version a binary reports, and nothing from one that does not run', () => {
    expect(qemuVersionOf(fakeQemu(join(dir, 'q'), '9.2.1'))).toBe('9.2.1');
    expect(qemuVersionOf(join(dir, 'missing'))).toBeUndefined();
  });

  it('is the system QEMU and every side-by-side version from the cache, labelled major.minor by their own --version', () => {
    // A minor version the pins do not name: the label must come from the binary.
    const major = (entry: { version: string }) => entry.version.split('.')[0] ?? '';
    const cached = SIDE_BY_SIDE.map((entry) => fakeQemu(sideBySideQemu(join(dir, 'cache'), entry.version), `${major(entry)}.99.1`));
    const matrix = qemusUnderTest(dir);
    expect(matrix.map((q) => q.binary)).toEqual([SYSTEM_QEMU, ...cached]);
    expect(matrix.slice(1).map((q) => q.label)).toEqual(SIDE_BY_SIDE.map((entry) => `${major(entry)}.99`));
  });

  it('labels a side-by-side version not installed yet by its pinned version', () => {
    expect(qemusUnderTest(dir).slice(1).map((q) => q.label)).toEqual(SIDE_BY_SIDE.map((entry) => entry.version.split('.').slice(0, 2).join('.')));
  });

  it('is SANDBOX_VMM_QEMU alone when it is set, labelled by its own --version', () => {
    process.env['SANDBOX_VMM_QEMU'] = fakeQemu(join(dir, 'other', 'qemu-system-x86_64'), '8.2.2');
    expect(qemusUnderTest(dir)).toEqual([{ binary: join(dir, 'other', 'qemu-system-x86_64'), label: '8.2' }]);
  });
});
