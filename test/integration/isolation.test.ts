// Sandbox isolation, proven by acting as the attacker: a guest that escapes into its QEMU holds
// exactly QEMU's credentials (its own uid and gid, no group, no capability, no-new-privs; QEMU's
// seccomp filter does not stop open, symlink, connect or kill), and with them must reach nothing
// but its own VM. The probe fixture runs with those credentials (setpriv), and every refusal is
// paired with a root control, so that each test fails if the isolation is missing.
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  closeSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { basename, join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { SandboxConfigInput } from '../../src/hypervisor/config/index.ts';
import { AttachError } from '../../src/hypervisor/errors.ts';
import type { VmIdentity } from '../../src/hypervisor/types.ts';
import { DEFAULT_UID_RANGE } from '../../src/hypervisor/identity.ts';
import { isProcessAlive } from '../../src/qemu/process/proc-fs.ts';
import { QemuHypervisor } from '../../src/qemu/qemu-hypervisor.ts';
import { runtimePaths } from '../../src/qemu/runtime-paths.ts';
import type { GuestAgent } from '../guest/index.ts';
import {
  DEFAULT_LEASE_DIR,
  credentialsOf,
  descendants,
  fdLinks,
  forgetVm,
  known,
  outcomes,
  probe,
  procStatus,
  readableAddress,
  readLeases,
  removeVirtiofsdPidFile,
  spawnOwner,
  spawnSleeper,
  startTimeOf,
  waitUntil,
  type Credentials,
  type KnownProcess,
  type ProbeOp,
} from './fixtures/isolation-support.ts';
import { connectAgent, guestConfig } from './helpers/sandbox.ts';
import { QEMU_UNDER_TEST } from '../helpers/qemu-under-test.ts';

/** `text` matched literally inside a RegExp. */
const escapeRegExp = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

const BASE = '/run/sandbox-vmm';
const LEASES = DEFAULT_LEASE_DIR;
const VIRTIOFSD = '/usr/lib/qemu/virtiofsd';
const HAS_VIRTIOFSD = existsSync(VIRTIOFSD);
const RANGE_END = DEFAULT_UID_RANGE.first + DEFAULT_UID_RANGE.count;

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A root-owned scratch directory others may traverse (QEMU reaches disks in it; virtiofsd shares a subdirectory). */
let scratch = '';
beforeAll(() => {
  scratch = mkdtempSync('/tmp/svmm-iso-');
  chmodSync(scratch, 0o711);
  mkdirSync(join(scratch, 'share'), { mode: 0o755 });
  writeFileSync(join(scratch, 'share', 'hello.txt'), 'shared\n');
});
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** The test guest with an agent channel; with `fs`, a virtio-fs share the backend runs virtiofsd for. */
function vmConfig(options: { fs?: boolean; detached?: boolean } = {}): SandboxConfigInput {
  const base = guestConfig();
  const fs = options.fs === true && HAS_VIRTIOFSD;
  return {
    ...base,
    memory: fs ? { bootMiB: 256, backing: { type: 'shared' } } : { bootMiB: 256 },
    devices: [
      ...(base.devices ?? []),
      ...(fs ? [{ type: 'fs' as const, driver: 'virtio-fs' as const, id: 'share', tag: 'hostshare', sharedDir: join(scratch, 'share') }] : []),
    ],
    ...(options.detached ? { runtime: { ...base.runtime, detached: true } } : {}),
  };
}

interface Booted {
  vm: QemuHypervisor;
  agent: GuestAgent | undefined;
  pid: number;
  helpers: number[];
  dir: string;
  identity: VmIdentity;
  /** QEMU's credentials as /proc shows them: what an escaped guest holds. */
  creds: Credentials;
}

function uidGidOf(pid: number): Credentials {
  const status = procStatus(pid);
  const uid = Number(status?.['Uid']?.split(/\s+/)[0]);
  const gid = Number(status?.['Gid']?.split(/\s+/)[0]);
  if (!Number.isInteger(uid) || !Number.isInteger(gid)) throw new Error(`cannot read the credentials of ${pid}`);
  return { uid, gid };
}

async function boot(config: SandboxConfigInput, options: { agent?: boolean; paused?: boolean } = {}): Promise<Booted> {
  const vm = new QemuHypervisor({ deviceRemovalTimeoutMs: 20_000 });
  await vm.createVM(config);
  await vm.startVM({ timeoutMs: 60_000, paused: options.paused === true });
  const [pid = -1, ...helpers] = vm.getPids();
  const identity = vm.identity;
  if (!identity) throw new Error('a VM started as root has no identity');
  const agent = options.agent === false ? undefined : await connectAgent(vm);
  return { vm, agent, pid, helpers, dir: vm.runtimeDir ?? '', identity, creds: uidGidOf(pid) };
}

async function shutdown(booted: Booted | undefined): Promise<void> {
  await booted?.agent?.close();
  await booted?.vm.stopVM();
  if (booted) removeVirtiofsdPidFile(runtimePaths(booted.dir).virtiofsSocket('share'));
}

/** Content, owner, mode and identity of every entry under `root`, without following a link. */
function snapshot(root: string): Record<string, string> {
  const entries: Record<string, string> = {};
  const walk = (path: string, rel: string): void => {
    const s = lstatSync(path);
    const content = s.isFile() ? readFileSync(path, 'utf8') : s.isSymbolicLink() ? `-> ${execFileSync('readlink', [path], { encoding: 'utf8' })}` : '';
    entries[rel] = JSON.stringify({ ino: s.ino, uid: s.uid, gid: s.gid, mode: s.mode, size: s.size, mtimeMs: s.mtimeMs, nlink: s.nlink, content });
    if (s.isDirectory()) for (const name of readdirSync(path).sort()) walk(join(path, name), `${rel}/${name}`);
  };
  walk(root, '.');
  return entries;
}

interface Canaries {
  root: string;
  secret: string;
  public: string;
  dir: string;
  absent: string;
  /** A file each attacker owns: the kernel lets it hard-link that one (protected_hardlinks), so only the directory's mode can refuse. */
  ownedBy(attacker: Credentials): string;
}

/**
 * Root-owned canaries for planted links to point at: a secret file, a public one, a directory, and
 * a name that must stay absent; plus a file of each attacker's own to hard-link.
 */
function makeCanaries(attackers: Credentials[]): Canaries {
  const root = mkdtempSync('/tmp/svmm-canary-');
  chmodSync(root, 0o755);
  const canaries: Canaries = {
    root,
    secret: join(root, 'secret'),
    public: join(root, 'public'),
    dir: join(root, 'dir'),
    absent: join(root, 'absent'),
    ownedBy: (attacker) => join(root, `own-${attacker.uid}`),
  };
  for (const attacker of attackers) {
    writeFileSync(canaries.ownedBy(attacker), 'the attacker\'s own\n', { mode: 0o600 });
    chownSync(canaries.ownedBy(attacker), attacker.uid, attacker.gid);
  }
  writeFileSync(canaries.secret, 'root secret\n', { mode: 0o600 });
  writeFileSync(canaries.public, 'root public\n', { mode: 0o644 });
  mkdirSync(canaries.dir, { mode: 0o700 });
  writeFileSync(join(canaries.dir, 'inner'), 'inner secret\n', { mode: 0o600 });
  cleanups.push(() => rmSync(root, { recursive: true, force: true }));
  return canaries;
}

/** Every name the library uses in a VM's directory, the base and the lease directory, and guesses at its temporary names. */
function libraryNames(uids: number[]): string[] {
  const hex16 = '0123456789abcdef';
  return [
    'state.json',
    'state.json.tmp',
    '.state.json.tmp',
    `.state.json.${hex16}.tmp`,
    'owner.json',
    'owner.json.tmp',
    `.owner.json.${hex16}.tmp`,
    'qemu.stderr',
    'helper-share.stderr',
    'fs-share.sock',
    'ch-agent.sock',
    'qmp.sock',
    'console.sock',
    `.new-planted-${hex16.slice(0, 12)}`,
    ...uids.map(String),
    ...uids.map((uid) => `.${uid}.tmp-${hex16}`),
    String(RANGE_END - 1),
  ];
}

function exists(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * As `attacker`, tries to plant every library name in each of `dirs` (a symlink to a canary, a
 * FIFO, a hard link) and to rename or remove what is there; every attempt must be refused (EACCES).
 */
function expectNothingPlantable(attacker: Credentials, dirs: string[], names: string[], canaries: Canaries): void {
  const targets = [canaries.secret, canaries.absent, canaries.dir, canaries.public];
  const ops: ProbeOp[] = [];
  for (const dir of dirs) {
    names.forEach((name, i) => {
      const path = join(dir, name);
      if (exists(path)) {
        ops.push({ op: 'rename', from: path, to: `${path}.moved` }, { op: 'unlink', path });
      } else {
        ops.push(
          { op: 'symlink', target: targets[i % targets.length] ?? canaries.secret, path },
          { op: 'mkfifo', path },
          { op: 'link', target: canaries.ownedBy(attacker), path },
          { op: 'create', path },
        );
      }
    });
  }
  const results = probe(attacker, ops);
  const refused = ops.map((op, i) => `${JSON.stringify(op)}: ${outcomes(results)[i] ?? '?'}`);
  expect(refused).toEqual(ops.map((op) => `${JSON.stringify(op)}: EACCES`));
}

describe('an escaped guest holds only its own QEMU\'s credentials and reaches nothing but its own VM', () => {
  let a: Booted | undefined;
  let b: Booted | undefined;
  const A = (): Booted => a ?? (() => { throw new Error('VM A did not boot'); })();
  const B = (): Booted => b ?? (() => { throw new Error('VM B did not boot'); })();

  beforeAll(async () => {
    [a, b] = await Promise.all([boot(vmConfig({ fs: true })), boot(vmConfig())]);
  });
  afterAll(async () => {
    await Promise.allSettled([shutdown(a), shutdown(b)]);
  });

  it('gives A and B distinct uids and gids of their own, on all four fields, with no privilege left', () => {
    for (const vm of [A(), B()]) {
      const { uid, gid, groups } = vm.identity;
      for (const id of [uid, gid]) {
        expect(id).not.toBe(0);
        expect(id).not.toBe(65534);
        expect(id).toBeGreaterThanOrEqual(DEFAULT_UID_RANGE.first);
        expect(id).toBeLessThan(RANGE_END);
      }
      expect(groups).toEqual([]);
      const status = procStatus(vm.pid) ?? {};
      expect(status['Uid']?.split(/\s+/)).toEqual([uid, uid, uid, uid].map(String));
      expect(status['Gid']?.split(/\s+/)).toEqual([gid, gid, gid, gid].map(String));
      expect(status['Groups']).toBe('');
      expect(status['NoNewPrivs']).toBe('1');
      for (const set of ['CapBnd', 'CapEff', 'CapPrm', 'CapInh', 'CapAmb']) expect(status[set], set).toBe('0000000000000000');
      expect(vm.creds).toEqual({ uid, gid });
      // The uid is leased to this VM, by this process.
      const lease = readLeases(LEASES).find((l) => l.uid === uid);
      expect(lease).toMatchObject({ uid, vmId: vm.vm.id, owner: { pid: process.pid } });
      // Its directory is root's, QEMU's group may only traverse it.
      const dir = statSync(vm.dir);
      expect({ uid: dir.uid, gid: dir.gid, mode: dir.mode & 0o7777 }).toEqual({ uid: 0, gid, mode: 0o710 });
    }
    expect(A().identity.uid).not.toBe(B().identity.uid);
    expect(A().identity.gid).not.toBe(B().identity.gid);
    expect(A().identity.uid).not.toBe(B().identity.gid);
    expect(A().identity.gid).not.toBe(B().identity.uid);
    for (const [dir, mode] of [[BASE, 0o711], [LEASES, 0o700]] as const) {
      const s = statSync(dir);
      expect({ dir, uid: s.uid, gid: s.gid, mode: s.mode & 0o7777 }).toEqual({ dir, uid: 0, gid: 0, mode });
    }
  });

  it('the probe holds exactly QEMU\'s credentials (so its refusals are QEMU\'s)', () => {
    for (const vm of [A(), B()]) {
      const [own] = probe(vm.creds, [{ op: 'status' }]);
      expect(own?.ok).toBe(true);
      const probeStatus = Object.fromEntries(
        ((own?.ok ? own.value : '') ?? '').split('\n').map((line) => [line.slice(0, line.indexOf(':')), line.slice(line.indexOf(':') + 1).trim()]),
      );
      expect(credentialsOf(probeStatus)).toEqual(credentialsOf(procStatus(vm.pid) ?? {}));
    }
  });

  it('as A\'s uid, nothing can be created, linked, renamed or removed in any directory the library uses', () => {
    const attacker = A().creds;
    const canaries = makeCanaries([attacker]);
    const before = snapshot(canaries.root);
    const dirs = [BASE, LEASES, A().dir, B().dir];
    const existing = [
      [BASE, basename(A().dir)],
      [LEASES, String(A().identity.uid)],
      [A().dir, 'state.json'],
      [B().dir, 'state.json'],
    ] as const;
    const ops: ProbeOp[] = [];
    for (const dir of dirs) {
      ops.push(
        { op: 'create', path: join(dir, 'planted') },
        { op: 'mkdir', path: join(dir, 'planted.d') },
        { op: 'symlink', target: canaries.secret, path: join(dir, 'planted.link') },
        { op: 'link', target: canaries.ownedBy(attacker), path: join(dir, 'planted.hard') },
        { op: 'mkfifo', path: join(dir, 'planted.fifo') },
        { op: 'readdir', path: dir },
      );
    }
    for (const [dir, name] of existing) {
      ops.push({ op: 'rename', from: join(dir, name), to: join(dir, `${name}.moved`) }, { op: 'unlink', path: join(dir, name) });
    }
    // A's own files are root's too: it may neither read nor write them.
    for (const file of ['state.json', 'owner.json']) ops.push({ op: 'read', path: join(A().dir, file) }, { op: 'write', path: join(A().dir, file) });
    ops.push({ op: 'read', path: join(LEASES, String(A().identity.uid)) });
    const results = outcomes(probe(attacker, ops));
    expect(ops.map((op, i) => `${JSON.stringify(op)}: ${results[i] ?? '?'}`)).toEqual(ops.map((op) => `${JSON.stringify(op)}: EACCES`));
    // Control: the same attacker, in a directory it may write, succeeds at each of them; so the
    // refusals above are the directories' doing.
    const control = mkdtempSync('/tmp/svmm-ctl-');
    cleanups.push(() => rmSync(control, { recursive: true, force: true }));
    writeFileSync(join(control, 'existing'), 'x');
    writeFileSync(join(control, 'doomed'), 'x');
    chownSync(control, attacker.uid, attacker.gid);
    const controlOps: ProbeOp[] = [
      { op: 'create', path: join(control, 'planted') },
      { op: 'mkdir', path: join(control, 'planted.d') },
      { op: 'symlink', target: canaries.secret, path: join(control, 'planted.link') },
      { op: 'link', target: canaries.ownedBy(attacker), path: join(control, 'planted.hard') },
      { op: 'mkfifo', path: join(control, 'planted.fifo') },
      { op: 'readdir', path: control },
      { op: 'rename', from: join(control, 'existing'), to: join(control, 'moved') },
      { op: 'unlink', path: join(control, 'doomed') },
    ];
    expect(outcomes(probe(attacker, controlOps))).toEqual(controlOps.map(() => 'ok'));
    rmSync(join(control, 'planted.hard'));
    for (const dir of dirs) for (const name of ['planted', 'planted.d', 'planted.link', 'planted.hard', 'planted.fifo']) expect(exists(join(dir, name))).toBe(false);
    expect(snapshot(canaries.root)).toEqual(before);
  });

  it('as A\'s uid, B\'s sockets, /proc files, process and state are out of reach (and root, as a control, reaches them)', async () => {
    const b = B();
    const paths = runtimePaths(b.dir);
    const ops: ProbeOp[] = [
      { op: 'connect', path: paths.qmpSocket },
      { op: 'connect', path: paths.channelSocket('agent') },
      { op: 'connect', path: paths.consoleSocket },
      { op: 'read', path: `/proc/${b.pid}/mem`, offset: readableAddress(b.pid), length: 16 },
      { op: 'read', path: `/proc/${b.pid}/environ` },
      { op: 'readdir', path: `/proc/${b.pid}/fd` },
      { op: 'kill0', pid: b.pid },
      { op: 'read', path: paths.stateFile },
      { op: 'read', path: paths.ownerFile },
      { op: 'read', path: join(LEASES, String(b.identity.uid)) },
      // A's own virtiofsd runs as root: not A's to signal either.
      ...A().helpers.map((pid): ProbeOp => ({ op: 'kill0', pid })),
    ];
    const expected = ['EACCES', 'EACCES', 'EACCES', 'EACCES', 'EACCES', 'EACCES', 'EPERM', 'EACCES', 'EACCES', 'EACCES', ...A().helpers.map(() => 'EPERM')];
    expect(A().helpers).toHaveLength(HAS_VIRTIOFSD ? 1 : 0);
    expect(outcomes(probe(A().creds, ops))).toEqual(expected);
    // Nor can B reach A's virtiofsd (A's own QEMU may: the socket is lchowned to it). EACCES is a
    // permission refusal, never what a daemon that stopped listening gives.
    if (HAS_VIRTIOFSD) {
      const fsSocket = runtimePaths(A().dir).virtiofsSocket('share');
      expect(outcomes(probe(B().creds, [{ op: 'connect', path: fsSocket }]))).toEqual(['EACCES']);
      expect(statSync(fsSocket).uid).toBe(A().identity.uid);
    }
    // Control: the same operations as root all work, so the refusals above are the isolation's.
    const control = probe('root', ops);
    expect(outcomes(control)).toEqual(ops.map(() => 'ok'));
    const mem = control[3];
    expect(mem?.ok && mem.value?.length).toBe(32);
    // Both guests are unharmed.
    expect(await A().agent?.runOk('echo a')).toBe('a\n');
    expect(await B().agent?.runOk('echo b')).toBe('b\n');
  });

  it('no name the library uses can be planted, before or after start, and pause, resume, hotplug and stop still work', async () => {
    const vm = new QemuHypervisor({ deviceRemovalTimeoutMs: 20_000 });
    cleanups.push(async () => {
      await vm.stopVM();
      if (vm.runtimeDir) removeVirtiofsdPidFile(runtimePaths(vm.runtimeDir).virtiofsSocket('share'));
    });
    await vm.createVM(vmConfig({ fs: true, detached: true }));
    const identity = vm.identity;
    if (!identity) throw new Error('no identity after createVM');
    const dir = vm.runtimeDir ?? '';
    const own: Credentials = { uid: identity.uid, gid: identity.gid };
    const canaries = makeCanaries([own, A().creds]);
    const before = snapshot(canaries.root);
    const names = libraryNames([identity.uid, A().identity.uid, B().identity.uid]);
    const dirs = [BASE, LEASES, dir, A().dir, B().dir];
    const attack = (): void => {
      expectNothingPlantable(own, dirs, names, canaries);
      expectNothingPlantable(A().creds, dirs, names, canaries);
    };

    attack();
    await vm.startVM({ timeoutMs: 60_000 });
    const [pid = -1, ...helpers] = vm.getPids();
    expect(uidGidOf(pid)).toEqual(own);
    attack();
    const agent = await connectAgent(vm);
    cleanups.push(() => agent.close());

    await vm.pauseVM();
    expect(vm.state).toBe('paused');
    attack();
    await vm.resumeVM();
    expect(vm.state).toBe('running');
    expect(await agent.runOk('echo resumed')).toBe('resumed\n');

    const disk = join(scratch, 'plant-disk.img');
    writeFileSync(disk, Buffer.alloc(0));
    execFileSync('truncate', ['-s', '8M', disk]);
    execFileSync('dd', [`of=${disk}`, 'conv=notrunc', 'status=none'], { input: Buffer.from('PLANT-DISK-0001') });
    chownSync(disk, own.uid, own.gid);
    chmodSync(disk, 0o600);
    cleanups.push(() => rmSync(disk, { force: true }));
    expect(await vm.hotplugAddDevice({ type: 'block', id: 'hp0', path: disk })).toEqual({
      id: 'hp0',
      type: 'block',
      bus: 'rp0',
      pci: { path: '01/00', sysfs: '0000:00:01.0/0000:01:00.0' },
    });
    // The guest sees it a moment later (bounded polling).
    let disks: string[] = [];
    for (let i = 0; i < 100 && !disks.includes('vda'); i++) {
      disks = (await agent.runOk('ls /sys/block')).split(/\s+/);
      if (!disks.includes('vda')) await new Promise((resolve) => setTimeout(resolve, 200));
    }
    expect(disks).toContain('vda');
    expect(await agent.runOk('head -c 15 /dev/vda')).toBe('PLANT-DISK-0001\n');
    attack();
    await vm.hotplugRemoveDevice('hp0');
    expect(vm.devices().some((d) => d.id === 'hp0')).toBe(false);
    expect((await agent.runOk('ls /sys/block')).split(/\s+/)).not.toContain('vda');
    attack();

    await agent.close();
    await vm.stopVM();
    expect(vm.state).toBe('stopped');
    expect(exists(dir)).toBe(false);
    for (const p of [pid, ...helpers]) expect(isProcessAlive(p)).toBe(false);
    expect(readLeases(LEASES).some((l) => l.vmId === vm.id)).toBe(false);
    // Nothing was followed or created anywhere: the canaries are as they were, no planted name exists.
    expect(snapshot(canaries.root)).toEqual(before);
    for (const d of [BASE, LEASES]) {
      for (const name of names) {
        const path = join(d, name);
        if (!exists(path)) continue;
        // Only a real lease of a VM still running may bear such a name.
        const s = lstatSync(path);
        expect({ path, file: s.isFile(), uid: s.uid }).toEqual({ path, file: true, uid: 0 });
      }
    }
  });

  it('attach refuses every forged state file and signals nothing it names; the real state attaches', async () => {
    const vm = new QemuHypervisor();
    await vm.createVM(vmConfig({ fs: true, detached: true }));
    let adopted: QemuHypervisor | undefined;
    let processes: KnownProcess[] = [];
    const dir = vm.runtimeDir ?? '';
    const vmId = vm.id ?? '';
    cleanups.push(async () => {
      await vm.stopVM();
      await adopted?.stopVM();
      forgetVm({ dir, vmId, processes, leaseDir: LEASES });
      removeVirtiofsdPidFile(runtimePaths(dir).virtiofsSocket('share'));
    });
    await vm.startVM({ timeoutMs: 60_000, paused: true });
    const [qemu = -1, ...helpers] = vm.getPids();
    processes = [qemu, ...helpers].map(known);
    const identity = vm.identity ?? { uid: -1, gid: -1, groups: [] };
    await vm.detach();

    const paths = runtimePaths(dir);
    const realText = readFileSync(paths.stateFile, 'utf8');
    const real = JSON.parse(realText) as Record<string, unknown> & { config: Record<string, unknown>; helpers: Record<string, unknown>[] };
    expect(real['pid']).toBe(qemu);
    const copy = join(scratch, 'state-copy.json');
    writeFileSync(copy, realText, { mode: 0o600 });
    const sleepers = [spawnSleeper(), spawnSleeper()];
    cleanups.push(() => sleepers.forEach((s) => s.kill()));
    const [s1, s2] = sleepers as [ReturnType<typeof spawnSleeper>, ReturnType<typeof spawnSleeper>];
    const b = B();

    const writeState = (value: unknown): void => {
      rmSync(paths.stateFile, { recursive: true, force: true });
      writeFileSync(paths.stateFile, typeof value === 'string' ? value : JSON.stringify(value), { mode: 0o600 });
    };
    const restore = (): void => {
      writeState(realText);
      chownSync(dir, 0, identity.gid);
      chmodSync(dir, 0o710);
    };
    const { startTime: _startTime, ...withoutStartTime } = real;
    const withHelper = (helper: Record<string, unknown>) => ({ ...real, helpers: [{ ...real.helpers[0], ...helper }] });
    // Each forgery with the reason attach must give: refused for the right reason, not by luck.
    const forgeries: [string, RegExp, () => void][] = [
      ['the QEMU pid naming a root sleep, with its real start time', /is not this VM's QEMU: it runs \/usr\/bin\/sleep/, () => writeState({ ...real, pid: s1.pid, startTime: s1.startTime })],
      ['the QEMU pid naming another VM\'s QEMU, with its start time and identity', /is not this VM's QEMU: its command line/, () =>
        writeState({ ...real, pid: b.pid, startTime: startTimeOf(b.pid), identity: b.identity })],
      ['no start time', /state file is not valid.*startTime/, () => writeState(withoutStartTime)],
      ['a start time that is not QEMU\'s', /is no longer running/, () => writeState({ ...real, startTime: (real['startTime'] as number) + 1 })],
      ['QEMU\'s path and the config\'s naming sleep, and the pid a sleep', /is not this VM's QEMU: its command line/, () =>
        writeState({ ...real, pid: s1.pid, startTime: s1.startTime, qemuPath: '/usr/bin/sleep', config: { ...real.config, runtime: { ...(real.config['runtime'] as object), qemuPath: '/usr/bin/sleep' } } })],
      ['an identity of another uid', /is not this VM's QEMU: it runs as uid/, () => writeState({ ...real, identity: { ...identity, uid: identity.uid + 1, gid: identity.gid + 1 } })],
      ['no identity (QEMU would be root\'s)', /is not this VM's QEMU: it runs as uid/, () => writeState({ ...real, identity: null })],
      ['a config whose id differs from the state\'s', /state file is not valid.*forged-vm/, () => writeState({ ...real, config: { ...real.config, id: 'forged-vm' } })],
      ['another id, in the state and its config alike', /is not this VM's QEMU: its command line/, () => writeState({ ...real, id: 'forged-vm', config: { ...real.config, id: 'forged-vm' } })],
      ['garbage', /state file is not valid/, () => writeState('{"version": 2, "pid": ')],
      ['an empty file', /state file is not valid/, () => writeState('')],
      ['an oversized file', /state file is not valid.*larger than/, () => writeState({ ...real, padding: 'x'.repeat(2 * 1024 * 1024) })],
      ['a FIFO', /state file is not valid.*a FIFO/, () => {
        rmSync(paths.stateFile, { force: true });
        execFileSync('mkfifo', ['-m', '600', paths.stateFile]);
      }],
      ['a symlink to a copy of the real state', /state file is not valid.*a symlink/, () => {
        rmSync(paths.stateFile, { force: true });
        symlinkSync(copy, paths.stateFile);
      }],
      ['a directory', /state file is not valid.*a directory/, () => {
        rmSync(paths.stateFile, { force: true });
        mkdirSync(paths.stateFile);
      }],
      ['no state file', /no state file/, () => rmSync(paths.stateFile, { force: true })],
      ['the directory group-writable', /writable by others \(mode 730\)/, () => chmodSync(dir, 0o730)],
      ['the directory writable by others', /writable by others \(mode 712\)/, () => chmodSync(dir, 0o712)],
      ['the directory owned by QEMU\'s uid', new RegExp(`owned by uid ${identity.uid}`), () => chownSync(dir, identity.uid, identity.gid)],
    ];
    if (HAS_VIRTIOFSD) {
      forgeries.push(
        ['a helper entry naming a root sleep, with its real start time', /helper virtiofsd for share .*it runs \/usr\/bin\/sleep/, () => writeState(withHelper({ pid: s2.pid, startTime: s2.startTime }))],
        ['a helper entry naming sleep as its binary, and a sleep', /helper virtiofsd for share .*names \/usr\/bin\/sleep/, () =>
          writeState(withHelper({ pid: s2.pid, startTime: s2.startTime, binary: '/usr/bin/sleep' }))],
        ['a helper entry for a device the config lacks', /helper virtiofsd for other .*no such virtio-fs device/, () => writeState(withHelper({ deviceId: 'other', pid: s2.pid, startTime: s2.startTime }))],
        ['a helper entry naming another VM\'s QEMU', new RegExp(`helper virtiofsd for share .*it runs ${escapeRegExp(realpathSync(QEMU_UNDER_TEST))}`), () => writeState(withHelper({ pid: b.pid, startTime: startTimeOf(b.pid) }))],
      );
    }
    const bStart = startTimeOf(b.pid);
    for (const [name, reason, forge] of forgeries) {
      forge();
      let error: unknown;
      try {
        adopted = await QemuHypervisor.attach(dir, { timeoutMs: 10_000 });
      } catch (e) {
        error = e;
      } finally {
        restore();
      }
      expect(error, name).toBeInstanceOf(AttachError);
      expect((error as AttachError).code, name).toBe('ATTACH_FAILED');
      expect((error as Error).message, name).toMatch(reason);
      expect(sleepers.map((s) => s.untouched()), name).toEqual([true, true]);
      expect(processes.map((p) => startTimeOf(p.pid) === p.startTime && procStatus(p.pid)?.['State']?.startsWith('Z') === false), name).toEqual(processes.map(() => true));
      expect(startTimeOf(b.pid), name).toBe(bStart);
    }
    // The symlink's target and B were left alone.
    expect(readFileSync(copy, 'utf8')).toBe(realText);
    await b.vm.check();

    // The real state (as restored) attaches, and the VM is whole.
    adopted = await QemuHypervisor.attach(dir, { timeoutMs: 10_000 });
    expect(adopted.state).toBe('paused');
    expect(adopted.getPids()).toEqual([qemu, ...helpers]);
    expect(adopted.identity).toEqual(identity);
    await adopted.resumeVM();
    await adopted.stopVM();
    expect(exists(dir)).toBe(false);
    for (const p of processes) expect(isProcessAlive(p.pid, p.startTime)).toBe(false);
    expect(readLeases(LEASES).some((l) => l.vmId === vmId)).toBe(false);
    expect(sleepers.map((s) => s.untouched())).toEqual([true, true]);
  });
});

describe('what a runtime process holds does not reach QEMU or its helpers', () => {
  it('a leaked fd and a secret in the environment of the runtime reach neither QEMU nor virtiofsd', async () => {
    const secretDir = mkdtempSync('/tmp/svmm-secret-');
    cleanups.push(() => rmSync(secretDir, { recursive: true, force: true }));
    const secret = join(secretDir, 'canary');
    writeFileSync(secret, 'root only\n', { mode: 0o600 });
    const fd = openSync(secret, 'r');
    cleanups.push(() => closeSync(fd));
    const token = `SECRET_TOKEN=svmm-${process.pid}-canary`;
    // Leaked at fd 3 and at fd 40: the launcher places QEMU's own sockets from fd 3 up, so a leak
    // at 3 alone would be overwritten by them; one far above them must be closed on purpose.
    const HIGH_FD = 40;
    const owner = await spawnOwner(
      { vms: [{ config: vmConfig({ fs: true }), start: true }], then: 'hold' },
      {
        env: { ...process.env, SECRET_TOKEN: token.slice('SECRET_TOKEN='.length) },
        extraFds: [fd, ...Array.from({ length: HIGH_FD - 4 }, () => 'ignore' as const), fd],
      },
    );
    cleanups.push(async () => {
      await owner.dispose();
      removeVirtiofsdPidFile(runtimePaths(owner.report.vms[0]?.runtimeDir ?? '/nonexistent').virtiofsSocket('share'));
    });
    // The runtime itself does hold both: the test would notice if they never reached it.
    expect(owner.report.self.fd3).toBe(secret);
    expect(owner.report.self.hasSecret).toBe(true);
    expect(readFileSync(`/proc/${owner.report.self.pid}/environ`, 'utf8').split('\0')).toContain(token);
    expect(fdLinks(owner.report.self.pid).get(3)).toBe(secret);
    expect(fdLinks(owner.report.self.pid).get(HIGH_FD)).toBe(secret);

    const [vm] = owner.report.vms;
    const [qemu = -1, ...helpers] = vm?.pids ?? [];
    expect(helpers).toHaveLength(HAS_VIRTIOFSD ? 1 : 0);
    const all = [qemu, ...helpers.flatMap((pid) => [pid, ...descendants(pid)])];
    const canary = statSync(secret);
    for (const pid of all) {
      const links = fdLinks(pid);
      expect(links.size, `pid ${pid} has fds`).toBeGreaterThan(0);
      expect([...links.values()].filter((target) => target.includes(secretDir)), `fds of ${pid}`).toEqual([]);
      const same = [...links.keys()].filter((n) => {
        try {
          const s = statSync(`/proc/${pid}/fd/${n}`);
          return s.dev === canary.dev && s.ino === canary.ino;
        } catch {
          return false;
        }
      });
      expect(same, `fds of ${pid} open on the canary`).toEqual([]);
      expect(readFileSync(`/proc/${pid}/environ`, 'utf8'), `environment of ${pid}`).toBe('');
    }
    expect(await owner.stop()).toBe(0);
    await waitUntil('QEMU and its helpers are gone', () => all.every((pid) => !isProcessAlive(pid)));
    expect(exists(vm?.runtimeDir ?? '')).toBe(false);
  });
});

describe('runtime processes share one lease directory', () => {
  it('two runtime processes creating and starting VMs at once never share a uid', async () => {
    const spec = { vms: [0, 1].map(() => ({ config: vmConfig(), start: true })), then: 'hold' as const };
    const settled = await Promise.allSettled([spawnOwner(spec), spawnOwner(spec)]);
    for (const result of settled) if (result.status === 'fulfilled') cleanups.push(() => result.value.dispose());
    const owners = settled.map((result) => {
      if (result.status === 'rejected') throw result.reason;
      return result.value;
    });
    const vms = owners.flatMap((owner) => owner.report.vms);
    expect(vms).toHaveLength(4);
    const identities = vms.map((vm) => vm.identity);
    const real = vms.map((vm) => uidGidOf(vm.pids[0] ?? -1));
    expect(real).toEqual(identities.map((id) => ({ uid: id?.uid, gid: id?.gid })));
    expect(new Set(real.map((r) => r.uid)).size).toBe(4);
    expect(new Set(real.map((r) => r.gid)).size).toBe(4);
    for (const r of real) expect(r.uid).toBeGreaterThanOrEqual(DEFAULT_UID_RANGE.first);
    const ids = vms.map((vm) => vm.id);
    expect(await Promise.all(owners.map((owner) => owner.stop()))).toEqual([0, 0]);
    for (const vm of vms) expect(exists(vm.runtimeDir)).toBe(false);
    expect(readLeases(LEASES).filter((lease) => ids.includes(lease.vmId))).toEqual([]);
  });
});
