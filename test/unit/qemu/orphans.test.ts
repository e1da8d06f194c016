// The orphan sweep when its owner died before any state was saved: owner.json alone names the VM
// and its uid, and whatever runs as that uid is killed only while the uid's lease names that VM.
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { reapOrphans } from '../../../src/qemu/orphans.ts';
import { readProcStat } from '../../../src/qemu/process/proc-fs.ts';

const UID = 1_960_000_900;
/** This process's pid with a start time it never had: an owner that is gone. */
const GONE = { pid: process.pid, startTime: 1 };

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const cleanup of cleanups.splice(0).reverse()) cleanup();
});

function scene(leaseVmId: string): { base: string; leaseDir: string; dir: string } {
  const base = mkdtempSync('/tmp/svmm-orphans-');
  cleanups.push(() => rmSync(base, { recursive: true, force: true }));
  chmodSync(base, 0o711);
  const leaseDir = join(base, '.leases');
  mkdirSync(leaseDir, { mode: 0o700 });
  writeFileSync(join(leaseDir, String(UID)), JSON.stringify({ uid: UID, vmId: leaseVmId, owner: GONE, createdAt: '2026-01-01T00:00:00.000Z' }), { mode: 0o600 });
  const dir = join(base, 'vm-x');
  mkdirSync(dir, { mode: 0o710 });
  writeFileSync(join(dir, 'owner.json'), JSON.stringify({ ...GONE, vmId: 'vm-x', uid: UID }), { mode: 0o600 });
  return { base, leaseDir, dir };
}

function runAsUid(): { child: ChildProcess; exited: Promise<NodeJS.Signals | null> } {
  const child = spawn('setpriv', [`--reuid=${UID}`, `--regid=${UID}`, '--clear-groups', 'sleep', '60'], { stdio: 'ignore' });
  cleanups.push(() => child.kill('SIGKILL'));
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.once('exit', (_code, signal) => resolve(signal)));
  return { child, exited };
}

describe('reapOrphans, owner gone before any state was saved', () => {
  it('kills what runs as the uid its lease gives that VM, and removes the directory', async () => {
    const { base, leaseDir, dir } = scene('vm-x');
    const { child, exited } = runAsUid();
    await vi.waitFor(() => expect(readProcStat(child.pid ?? -1)?.state).toMatch(/[SR]/));
    const report = await reapOrphans({ base, leaseDir, uidRange: { first: UID, count: 1 } });
    expect(report.removed).toEqual([{ vmId: 'vm-x', dir }]);
    expect(report.killed).toContain(child.pid);
    expect(await exited).toBe('SIGKILL');
    expect(existsSync(dir)).toBe(false);
  });

  it('kills nothing when the uid is leased to another VM since', async () => {
    const { base, leaseDir, dir } = scene('vm-other');
    const { child } = runAsUid();
    await vi.waitFor(() => expect(readProcStat(child.pid ?? -1)?.state).toMatch(/[SR]/));
    const report = await reapOrphans({ base, leaseDir, uidRange: { first: UID, count: 1 } });
    expect(report.removed).toEqual([{ vmId: 'vm-x', dir }]);
    expect(report.killed).toEqual([]);
    expect(readProcStat(child.pid ?? -1)?.state).toMatch(/[SR]/);
  });
});

describe('reapOrphans, a removal cut short', () => {
  it('removes a directory renamed for removal whatever it still holds, and leaves unknown directories alone', async () => {
    const base = mkdtempSync('/tmp/svmm-orphans-');
    cleanups.push(() => rmSync(base, { recursive: true, force: true }));
    chmodSync(base, 0o711);
    const leaseDir = join(base, '.leases');
    mkdirSync(leaseDir, { mode: 0o700 });
    // Its owner and state files were removed before the runtime died; a socket directory was not.
    const debris = join(base, '.gone-vm-y-0123456789ab');
    mkdirSync(join(debris, 'sub'), { recursive: true, mode: 0o700 });
    writeFileSync(join(debris, 'sub', 'qmp.sock'), '');
    const unknown = join(base, 'not-a-vm');
    mkdirSync(unknown, { mode: 0o700 });
    const report = await reapOrphans({ base, leaseDir, uidRange: { first: UID, count: 1 } });
    expect(report.removed).toEqual([{ vmId: 'vm-y', dir: debris }]);
    expect(report.killed).toEqual([]);
    expect(report.skipped).toEqual([{ dir: unknown, reason: 'neither an owner file nor a state file: not a VM directory' }]);
    expect(existsSync(debris)).toBe(false);
    expect(existsSync(unknown)).toBe(true);
  });
});
