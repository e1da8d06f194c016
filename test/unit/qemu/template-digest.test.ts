// A template file's digest (the device state's SHA-256, checked at createVM and startVM of every
// clone) is remembered by the file's identity, never served for a file that changed since.
import { chmodSync, mkdtempSync, openSync, closeSync, rmSync, statSync, utimesSync, writeFileSync, writeSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { digestOf } from '../../../src/qemu/template/manifest.ts';

const dir = mkdtempSync(join(tmpdir(), 'svmm-digest-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const sha = (text: string): string => createHash('sha256').update(text).digest('hex');

describe('digestOf', () => {
  it('reads a file changed in place again, even with its size and mtime kept', async () => {
    const path = join(dir, 'state');
    writeFileSync(path, 'saved state A', { mode: 0o644 });
    expect(await digestOf(dir, path)).toEqual({ bytes: 13, sha256: sha('saved state A') });
    expect(await digestOf(dir, path)).toEqual({ bytes: 13, sha256: sha('saved state A') });
    const { atime, mtime } = statSync(path);
    const fd = openSync(path, 'r+');
    writeSync(fd, 'B', 12);
    closeSync(fd);
    utimesSync(path, atime, mtime);
    expect(await digestOf(dir, path)).toEqual({ bytes: 13, sha256: sha('saved state B') });
  });

  it('checks who may write the file every time, remembered digest or not', async () => {
    const path = join(dir, 'checked');
    writeFileSync(path, 'state', { mode: 0o644 });
    await digestOf(dir, path);
    chmodSync(path, 0o666);
    await expect(digestOf(dir, path)).rejects.toMatchObject({ code: 'TEMPLATE_REFUSED', problem: 'unsafe' });
    chmodSync(path, 0o644);
    expect((await digestOf(dir, path)).sha256).toBe(sha('state'));
  });
});
