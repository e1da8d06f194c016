// The sealed in-memory copy of a template's RAM that clones on QEMU before 8.2 map (build/svmm-memfd
// does the copy): one per RAM file while leases hold it, identical to the file with its holes kept,
// and unchangeable through any fd, even one reopened read-write.
import { execFileSync } from 'node:child_process';
import { closeSync, fstatSync, ftruncateSync, mkdtempSync, openSync, readFileSync, readlinkSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { HelperError } from '../../../src/hypervisor/errors.ts';
import { leaseSealedRam, sealedRamCopies, type SealedRamLease } from '../../../src/qemu/template/sealed-ram.ts';

const dir = mkdtempSync(join(tmpdir(), 'svmm-sealed-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const leases: SealedRamLease[] = [];
afterEach(async () => {
  for (const lease of leases.splice(0)) await lease.release();
  expect(sealedRamCopies()).toBe(0);
});

async function lease(path: string, signal?: AbortSignal): Promise<SealedRamLease> {
  const held = await leaseSealedRam(path, 'mem-ram', signal);
  leases.push(held);
  return held;
}

/** A 1 MiB file with data at 64 KiB and 512 KiB, a written block of zeros at 256 KiB, and holes elsewhere. */
function ramFile(name: string): string {
  const path = join(dir, name);
  const fd = openSync(path, 'w');
  writeSync(fd, Buffer.from('first page of data'), 0, 18, 64 * 1024);
  writeSync(fd, Buffer.alloc(4096), 0, 4096, 256 * 1024);
  writeSync(fd, Buffer.from(name), 0, name.length, 512 * 1024);
  ftruncateSync(fd, 1024 * 1024);
  closeSync(fd);
  return path;
}

const inodeOf = (fd: number): number => fstatSync(fd).ino;

describe('leaseSealedRam', () => {
  it('copies the file into a sealed memfd: the same bytes, only its data blocks allocated', async () => {
    const path = ramFile('same-bytes');
    const { fd } = await lease(path);
    expect(readlinkSync(`/proc/self/fd/${fd}`)).toBe('/memfd:svmm-template (deleted)');
    const copy = readFileSync(`/proc/self/fd/${fd}`);
    expect(copy.equals(readFileSync(path))).toBe(true);
    // Two 4 KiB blocks hold data; the written zeros and the holes cost nothing.
    expect(fstatSync(fd).blocks * 512).toBe(2 * 4096);
  });

  it('cannot be written, resized or punched, even through a read-write reopen', async () => {
    const { fd } = await lease(ramFile('sealed'));
    const writable = openSync(`/proc/self/fd/${fd}`, 'r+');
    try {
      expect(() => writeSync(writable, 'x', 0)).toThrow(expect.objectContaining({ code: 'EPERM' }));
      expect(() => ftruncateSync(writable, 0)).toThrow(expect.objectContaining({ code: 'EPERM' }));
      expect(() => ftruncateSync(writable, 2 * 1024 * 1024)).toThrow(expect.objectContaining({ code: 'EPERM' }));
      expect(() => execFileSync('fallocate', ['--punch-hole', '--offset', String(64 * 1024), '--length', '4096', `/proc/${process.pid}/fd/${writable}`], { stdio: 'pipe' })).toThrow(/Operation not permitted/);
    } finally {
      closeSync(writable);
    }
    expect(fstatSync(fd).size).toBe(1024 * 1024);
    expect(readFileSync(`/proc/self/fd/${fd}`).subarray(64 * 1024, 64 * 1024 + 18).toString()).toBe('first page of data');
  });

  it('gives every lease of one file the same copy until the last is released; then a new lease makes a new one', async () => {
    const path = ramFile('shared');
    const [a, b] = await Promise.all([leaseSealedRam(path, 'mem-ram'), leaseSealedRam(path, 'mem-ram')]);
    expect(a.fd).toBe(b.fd);
    expect(sealedRamCopies()).toBe(1);
    const inode = inodeOf(a.fd);
    await a.release();
    // Released twice counts once: b still holds the copy.
    await a.release();
    expect(sealedRamCopies()).toBe(1);
    expect(inodeOf(b.fd)).toBe(inode);
    await b.release();
    expect(sealedRamCopies()).toBe(0);
    expect(() => fstatSync(b.fd)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    const c = await lease(path);
    expect(sealedRamCopies()).toBe(1);
    expect(readFileSync(`/proc/self/fd/${c.fd}`).equals(readFileSync(path))).toBe(true);
  });

  it('makes a copy per file, and a new one for a file saved again under the same name', async () => {
    const one = await lease(ramFile('one'));
    const two = await lease(ramFile('two'));
    expect(inodeOf(two.fd)).not.toBe(inodeOf(one.fd));
    rmSync(join(dir, 'one'));
    const again = await lease(ramFile('one'));
    expect(inodeOf(again.fd)).not.toBe(inodeOf(one.fd));
    expect(sealedRamCopies()).toBe(3);
  });

  it("is a HelperError with the helper's reason when the copy cannot be made; nothing is kept and the next lease tries again", async () => {
    const error = await leaseSealedRam(dir, 'mem-ram').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HelperError);
    expect(error).toMatchObject({ code: 'HELPER_FAILED', helper: 'svmm-memfd', deviceId: 'mem-ram', exitCode: 1 });
    expect((error as HelperError).message).toContain(`${dir} is not a regular file`);
    expect(sealedRamCopies()).toBe(0);
    await expect(leaseSealedRam(join(dir, 'missing'), 'mem-ram')).rejects.toMatchObject({ code: 'ENOENT' });
    expect(sealedRamCopies()).toBe(0);
  });

  it("stops waiting when the caller's signal aborts, with its reason; the copy is still made for the others", async () => {
    const path = ramFile('aborted');
    const before = new AbortController();
    before.abort(new Error('gave up before'));
    await expect(leaseSealedRam(path, 'mem-ram', before.signal)).rejects.toThrow('gave up before');
    expect(sealedRamCopies()).toBe(0);
    const during = new AbortController();
    const waiting = leaseSealedRam(path, 'mem-ram', during.signal);
    const other = leaseSealedRam(path, 'mem-ram');
    during.abort(new Error('gave up while copying'));
    await expect(waiting).rejects.toThrow('gave up while copying');
    const kept = await other;
    leases.push(kept);
    expect(readFileSync(`/proc/self/fd/${kept.fd}`).equals(readFileSync(path))).toBe(true);
    await kept.release();
    leases.pop();
    expect(sealedRamCopies()).toBe(0);
  });
});
