import { describe, expect, it } from 'vitest';
import { LineRing } from '../../../src/qemu/process/stderr-ring.ts';
import { setprivArgs } from '../../../src/qemu/process/vmm-process.ts';
import { isProcessAlive, readProcStat, listThreads } from '../../../src/qemu/process/proc-fs.ts';

describe('LineRing', () => {
  it('joins chunks into lines and strips CR', () => {
    const ring = new LineRing();
    expect(ring.push('qemu: a')).toEqual([]);
    expect(ring.push('bc\r\nsecond\n')).toEqual(['qemu: abc', 'second']);
    expect(ring.tail()).toBe('qemu: abc\nsecond');
  });

  it('keeps an unfinished last line in the tail', () => {
    const ring = new LineRing();
    ring.push('one\ntwo');
    expect(ring.tail()).toBe('one\ntwo');
    expect(ring.tail(1)).toBe('two');
  });

  it('stays within its byte bound, dropping the oldest lines', () => {
    const ring = new LineRing(100);
    for (let i = 0; i < 1000; i++) ring.push(`line ${i} ${'x'.repeat(10)}\n`);
    const tail = ring.tail();
    expect(tail.length).toBeLessThanOrEqual(100);
    expect(tail.endsWith('line 999 xxxxxxxxxx')).toBe(true);
  });

  it('bounds a runaway line without newline', () => {
    const ring = new LineRing(64);
    ring.push('y'.repeat(10_000));
    expect(ring.tail().length).toBeLessThanOrEqual(64);
  });
});

describe('setprivArgs', () => {
  it('binds QEMU to its owner with PDEATHSIG after dropping privileges', () => {
    expect(setprivArgs({ user: { uid: 65534, gid: 65534, groups: [] }, detached: false })).toEqual([
      '--reuid=65534',
      '--regid=65534',
      '--clear-groups',
      '--pdeathsig',
      'SIGKILL',
    ]);
  });

  it('keeps supplementary groups (e.g. kvm) and omits PDEATHSIG when detached', () => {
    expect(setprivArgs({ user: { uid: 107, gid: 107, groups: [108] }, detached: true })).toEqual(['--reuid=107', '--regid=107', '--groups=108']);
    expect(setprivArgs({ user: undefined, detached: false })).toEqual(['--pdeathsig', 'SIGKILL']);
  });
});

describe('/proc helpers', () => {
  it('reads this process and its threads', () => {
    const stat = readProcStat(process.pid);
    expect(stat?.state).toMatch(/[RS]/);
    expect(isProcessAlive(process.pid)).toBe(true);
    expect(isProcessAlive(process.pid, (stat?.startTime ?? 0) + 1)).toBe(false);
    expect(listThreads(process.pid).some((t) => t.tid === process.pid)).toBe(true);
  });

  it('says a missing pid is not alive', () => {
    expect(isProcessAlive(2 ** 22 + 12345)).toBe(false);
    expect(readProcStat(2 ** 22 + 12345)).toBeUndefined();
  });
});
