// The orphan sweep (reapOrphans) against what real runtime processes leave behind when they die:
// their VM directories and uid leases go, their leftover processes are killed; a VM that is still
// someone's (a live owner, or a detached QEMU waiting for re-attach) is never touched, and nothing
// in a directory is followed. Each test works in a private base and lease directory, with a uid
// range of its own, so that no other test's VMs are in sight.
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { SandboxConfigInput } from '../../src/hypervisor/config/index.ts';
import type { UidRange } from '../../src/hypervisor/identity.ts';
import { reapOrphans, type OrphanReport } from '../../src/qemu/orphans.ts';
import { isProcessAlive } from '../../src/qemu/process/proc-fs.ts';
import { QemuHypervisor } from '../../src/qemu/qemu-hypervisor.ts';
import { runtimePaths } from '../../src/qemu/runtime-paths.ts';
import {
  descendants,
  procExists,
  procStatus,
  readLeases,
  removeVirtiofsdPidFile,
  spawnAs,
  spawnOwner,
  startTimeOf,
  waitUntil,
} from './fixtures/isolation-support.ts';
import { guestConfig } from './helpers/sandbox.ts';

/** Outside the default range: leases here never meet those of other runs in the default lease directory. */
const RANGE: UidRange = { first: 1_900_200_000, count: 64 };
const VIRTIOFSD = '/usr/lib/qemu/virtiofsd';
const HAS_VIRTIOFSD = existsSync(VIRTIOFSD);

const cleanups: (() => unknown)[] = [];
let base = '';
let leaseDir = '';
let share = '';
beforeEach(() => {
  // Root's, traversable by each QEMU (to its own directory), as the default base is.
  base = mkdtempSync('/tmp/svmm-orph-');
  chmodSync(base, 0o711);
  leaseDir = join(base, '.leases');
  share = mkdtempSync('/tmp/svmm-orph-share-');
  chmodSync(share, 0o755);
});
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  rmSync(base, { recursive: true, force: true });
  rmSync(share, { recursive: true, force: true });
});

function config(id: string, options: { fs?: boolean; detached?: boolean } = {}): SandboxConfigInput {
  const guest = guestConfig();
  const fs = options.fs === true;
  return {
    ...guest,
    id,
    memory: fs ? { bootMiB: 256, backing: { type: 'shared' } } : { bootMiB: 256 },
    devices: [...(guest.devices ?? []), ...(fs ? [{ type: 'fs' as const, driver: 'virtio-fs' as const, id: 'share', tag: 'hostshare', sharedDir: share }] : [])],
    runtime: { ...guest.runtime, dir: join(base, id), detached: options.detached === true },
  };
}

const options = (): { base: string; leaseDir: string; uidRange: UidRange } => ({ base, leaseDir, uidRange: RANGE });

/** The sweep, bounded: a sweep that blocks (on a FIFO, say) fails the test instead of hanging it. */
async function sweep(): Promise<OrphanReport> {
  let timer: NodeJS.Timeout | undefined;
  const hung = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error('reapOrphans did not return within 60 s')), 60_000);
  });
  try {
    return await Promise.race([reapOrphans(options()), hung]);
  } finally {
    clearTimeout(timer);
  }
}

const byVmId = <T extends { vmId: string }>(list: T[]): T[] => [...list].sort((a, b) => a.vmId.localeCompare(b.vmId));
const leasesIn = (): { uid: number; vmId: string }[] => readLeases(leaseDir).map(({ uid, vmId }) => ({ uid, vmId })).sort((a, b) => a.uid - b.uid);

function uidOf(pid: number): number {
  return Number(procStatus(pid)?.['Uid']?.split(/\s+/)[0]);
}

describe('reapOrphans', () => {
  it('after an owner is SIGKILLed (its QEMU dies with it), removes its two VM directories and two leases, and a second sweep finds nothing', async () => {
    const owner = await spawnOwner({
      options: { leaseDir, uidRange: RANGE },
      vms: [
        { config: config('orph-started'), start: true },
        { config: config('orph-created'), start: false },
      ],
      then: 'hold',
    });
    cleanups.push(() => owner.dispose());
    const [started, created] = owner.report.vms;
    if (!started?.identity || !created?.identity) throw new Error('the owner reported no identity');
    const [qemu = -1] = started.pids;
    expect(created.pids).toEqual([]);
    expect(uidOf(qemu)).toBe(started.identity.uid);
    expect(leasesIn()).toEqual(
      [
        { uid: started.identity.uid, vmId: 'orph-started' },
        { uid: created.identity.uid, vmId: 'orph-created' },
      ].sort((a, b) => a.uid - b.uid),
    );

    owner.child.kill('SIGKILL');
    await owner.exited;
    // QEMU dies with its owner (and is reaped by init): nothing of the VM is left running.
    await waitUntil('QEMU dies with its owner and is reaped', () => !procExists(qemu));
    expect(existsSync(started.runtimeDir)).toBe(true);
    expect(existsSync(created.runtimeDir)).toBe(true);
    expect(leasesIn()).toHaveLength(2);

    const report = await sweep();
    expect(byVmId(report.removed)).toEqual([
      { vmId: 'orph-created', dir: created.runtimeDir },
      { vmId: 'orph-started', dir: started.runtimeDir },
    ]);
    expect(report.leases.map(({ uid, vmId }) => ({ uid, vmId }))).toEqual(
      [
        { uid: started.identity.uid, vmId: 'orph-started' },
        { uid: created.identity.uid, vmId: 'orph-created' },
      ].sort((a, b) => a.uid - b.uid),
    );
    expect(report.leases.every((lease) => lease.owner.pid === owner.report.self.pid)).toBe(true);
    expect(report.killed).toEqual([]);
    expect(report.skipped).toEqual([]);
    expect(existsSync(started.runtimeDir)).toBe(false);
    expect(existsSync(created.runtimeDir)).toBe(false);
    expect(leasesIn()).toEqual([]);

    expect(await sweep()).toEqual({ removed: [], killed: [], leases: [], skipped: [] });
  });

  it('keeps a detached VM whose owner exited (its QEMU still runs) and the VMs of a live owner; the detached one attaches afterwards', async () => {
    const detachedOwner = await spawnOwner({ options: { leaseDir, uidRange: RANGE }, vms: [{ config: config('orph-detached', { detached: true }), start: true }], then: 'exit' });
    cleanups.push(() => detachedOwner.dispose());
    expect(await detachedOwner.exited).toBe(0);
    const [detached] = detachedOwner.report.vms;
    const [detachedQemu = -1] = detached?.pids ?? [];
    const detachedStart = startTimeOf(detachedQemu);
    expect(isProcessAlive(detachedQemu)).toBe(true);

    // This (live) process owns two more: one running, one only created.
    const live = new QemuHypervisor({ leaseDir, uidRange: RANGE });
    cleanups.push(() => live.stopVM());
    await live.createVM(config('orph-live'));
    await live.startVM({ timeoutMs: 60_000, paused: true });
    const [liveQemu = -1] = live.getPids();
    const createdOnly = new QemuHypervisor({ leaseDir, uidRange: RANGE });
    cleanups.push(() => createdOnly.stopVM());
    await createdOnly.createVM(config('orph-created-live'));
    const leasesBefore = leasesIn();
    expect(leasesBefore.map((l) => l.vmId).sort()).toEqual(['orph-created-live', 'orph-detached', 'orph-live']);

    expect(await sweep()).toEqual({ removed: [], killed: [], leases: [], skipped: [] });
    for (const dir of [detached?.runtimeDir ?? '', live.runtimeDir ?? '', createdOnly.runtimeDir ?? '']) expect(existsSync(join(dir, 'owner.json'))).toBe(true);
    expect(existsSync(join(detached?.runtimeDir ?? '', 'state.json'))).toBe(true);
    expect(leasesIn()).toEqual(leasesBefore);
    expect(startTimeOf(detachedQemu)).toBe(detachedStart);
    expect(isProcessAlive(liveQemu)).toBe(true);
    await live.check();

    const adopted = await QemuHypervisor.attach(detached?.runtimeDir ?? '', { leaseDir, uidRange: RANGE });
    cleanups.push(() => adopted.stopVM());
    expect(adopted.state).toBe('running');
    expect(adopted.getPids()).toEqual([detachedQemu]);
    await adopted.check();
    await adopted.stopVM();
    expect(isProcessAlive(detachedQemu)).toBe(false);
    expect(existsSync(detached?.runtimeDir ?? '')).toBe(false);
    expect(leasesIn().map((l) => l.vmId).sort()).toEqual(['orph-created-live', 'orph-live']);
  });

  it('follows no link and opens no FIFO in an orphan directory, and leaves entries that are not its own alone', async () => {
    // A canary tree the planted links point at: it must come out whole.
    const canary = mkdtempSync('/tmp/svmm-orph-canary-');
    cleanups.push(() => rmSync(canary, { recursive: true, force: true }));
    mkdirSync(join(canary, 'sub'));
    writeFileSync(join(canary, 'file'), 'canary\n', { mode: 0o600 });
    writeFileSync(join(canary, 'sub', 'inner'), 'inner canary\n', { mode: 0o600 });
    const tree = (): string[] =>
      (readdirSync(canary, { recursive: true }) as string[])
        .sort()
        .map((rel) => {
          const s = lstatSync(join(canary, rel));
          return `${rel} ${s.ino} ${s.mode} ${s.isFile() ? readFileSync(join(canary, rel), 'utf8') : ''}`;
        });
    const before = tree();

    // The owner of the orphan: a process that is gone.
    const gone = spawn('sleep', ['3600'], { stdio: 'ignore' });
    const gonePid = gone.pid ?? -1;
    await waitUntil('the stand-in owner runs', () => startTimeOf(gonePid) !== undefined);
    const owner = { pid: gonePid, startTime: startTimeOf(gonePid) ?? -1 };
    gone.kill('SIGKILL');
    await waitUntil('the stand-in owner is reaped', () => !procExists(gonePid));

    const orphan = join(base, 'orph-links');
    mkdirSync(orphan, { mode: 0o700 });
    writeFileSync(join(orphan, 'owner.json'), JSON.stringify(owner), { mode: 0o600 });
    execFileSync('mkfifo', ['-m', '600', join(orphan, 'state.json'), join(orphan, 'fifo')]);
    symlinkSync(canary, join(orphan, 'canary-dir'));
    symlinkSync(join(canary, 'file'), join(orphan, 'qemu.stderr'));
    mkdirSync(join(orphan, 'nested'));
    symlinkSync(canary, join(orphan, 'nested', 'deeper'));
    execFileSync('mkfifo', [join(orphan, 'nested', 'fifo')]);
    // Beside it, entries that are not VM directories of ours: a symlink to the canary, a directory of someone else's.
    symlinkSync(canary, join(base, 'orph-symlink'));
    const foreign = join(base, 'orph-foreign');
    mkdirSync(foreign, { mode: 0o700 });
    writeFileSync(join(foreign, 'owner.json'), JSON.stringify(owner));
    chownSync(foreign, 12345, 12345);

    const report = await sweep();
    expect(report.removed).toEqual([{ vmId: 'orph-links', dir: orphan }]);
    expect(report.killed).toEqual([]);
    expect(report.leases).toEqual([]);
    expect(report.skipped.map((s) => s.dir).sort()).toEqual([foreign, join(base, 'orph-symlink')].sort());
    expect(existsSync(orphan)).toBe(false);
    expect(tree()).toEqual(before);
    expect(lstatSync(join(base, 'orph-symlink')).isSymbolicLink()).toBe(true);
    expect(existsSync(join(foreign, 'owner.json'))).toBe(true);
  });

  it('kills what an orphan left running: a helper that outlived its QEMU, and a process of the VM\'s leased uid', async () => {
    expect(HAS_VIRTIOFSD).toBe(true);
    const owner = await spawnOwner({ options: { leaseDir, uidRange: RANGE }, vms: [{ config: config('orph-fs', { fs: true, detached: true }), start: true }], then: 'exit' });
    const [vm] = owner.report.vms;
    const dir = vm?.runtimeDir ?? '';
    cleanups.push(async () => {
      await owner.dispose();
      removeVirtiofsdPidFile(runtimePaths(dir).virtiofsSocket('share'));
    });
    expect(await owner.exited).toBe(0);
    const identity = vm?.identity;
    if (!identity) throw new Error('no identity');
    const [qemu = -1, helper = -1] = vm?.pids ?? [];
    expect(readFileSync(`/proc/${helper}/comm`, 'utf8').trim()).toBe('virtiofsd');
    const helperTree = [helper, ...descendants(helper)];

    // QEMU alone dies; its helper runs on, and so does a process of its uid. Debian's virtiofsd
    // exits by itself once QEMU disconnects: frozen first (SIGSTOP), it stands for a helper that
    // hangs instead. SIGKILL still ends a stopped process.
    process.kill(helper, 'SIGSTOP');
    cleanups.push(() => {
      if (startTimeOf(helper) !== undefined) process.kill(helper, 'SIGKILL');
    });
    await waitUntil('the helper is stopped', () => procStatus(helper)?.['State']?.startsWith('T') === true);
    process.kill(qemu, 'SIGKILL');
    await waitUntil('QEMU is gone', () => !procExists(qemu));
    expect(isProcessAlive(helper)).toBe(true);
    const leftover = spawnAs(identity, ['sleep', '3600']);
    cleanups.push(() => leftover.kill('SIGKILL'));
    const leftoverPid = leftover.pid ?? -1;
    await waitUntil('the leftover runs as the VM\'s uid', () => uidOf(leftoverPid) === identity.uid && readFileSync(`/proc/${leftoverPid}/comm`, 'utf8').trim() === 'sleep');
    const leftoverExit = new Promise((resolve) => leftover.once('exit', (_code, signal) => resolve(signal)));

    const report = await sweep();
    expect(report.removed).toEqual([{ vmId: 'orph-fs', dir }]);
    expect([...report.killed].sort((a, b) => a - b)).toEqual([helper, leftoverPid].sort((a, b) => a - b));
    expect(report.skipped).toEqual([]);
    expect(existsSync(dir)).toBe(false);
    expect(await leftoverExit).toBe('SIGKILL');
    await waitUntil('the helper and its children are gone', () => helperTree.every((pid) => !isProcessAlive(pid)));
    // The lease goes back once nothing runs as the uid any more: in this sweep, or in the next one.
    const later = await sweep();
    expect([...report.leases, ...later.leases].map(({ uid, vmId }) => ({ uid, vmId }))).toEqual([{ uid: identity.uid, vmId: 'orph-fs' }]);
    expect(later.removed).toEqual([]);
    expect(later.killed).toEqual([]);
    expect(leasesIn()).toEqual([]);
  });
});
