// svmm-launch, the exec helper QEMU is started through, checked from inside the program it
// launches (/proc/<pid>/status, fd table, cwd, environment), plus the TypeScript glue around it.
// Runs as root, like the library: it changes users and drops capabilities for real.
import { spawn, spawnSync, type StdioOptions } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  closeSync,
  copyFileSync,
  existsSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../../../src/hypervisor/config/index.ts';
import { findLauncher, launcherArgs, launcherStdio, type LaunchSpec } from '../../../src/qemu/launch/launcher.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const launcher = join(root, 'build', 'svmm-launch');
const fixtures = join(root, 'test', 'fixtures');
const SH = '/bin/sh';
const SETPRIV = '/usr/bin/setpriv';
const ENV = { PATH: '/usr/bin:/bin' };
const NOBODY = 65534;
const HIGH_UID = 1_900_000_123;
const NO_CAPS = '0000000000000000';
const plain = { fds: [], user: undefined, dropCapabilities: false, dieWithParent: false } satisfies Omit<LaunchSpec, 'program' | 'args'>;
/** Our own bounding set: what the program keeps when nothing drops it. */
const ownCapBnd = /^CapBnd:\s*(\w+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1];

let scratch = '';

beforeAll(() => {
  const built = spawnSync(process.execPath, [join(root, 'scripts', 'build-launcher.mjs'), '--require'], { encoding: 'utf8' });
  if (built.status !== 0) throw new Error(`building the launcher failed: ${built.stderr}`);
  scratch = mkdtempSync(join(tmpdir(), 'svmm-launch-test-'));
}, 120_000);

afterAll(() => {
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

interface Outcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

interface RunOptions {
  stdio?: StdioOptions;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

function run(file: string, args: readonly string[], options: RunOptions = {}): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: options.stdio ?? ['ignore', 'pipe', 'pipe'], env: options.env ?? ENV, cwd: options.cwd ?? scratch });
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

/** The launched shell reports on itself ($$ is the launched process: the launcher exec'd it). */
const PROBE = [
  'exec 1>&2',
  's=/proc/$$',
  'echo "== status"; cat $s/status',
  'echo "== fds"; ls -l $s/fd',
  'echo "== cwd"; readlink $s/cwd',
  'echo "== env"; tr "\\000" "\\n" < $s/environ',
].join('\n');

interface Probe {
  /** /proc status fields, whitespace collapsed: 'Uid' → '0 0 0 0'. */
  status: Record<string, string>;
  /** fd → what it points to. */
  fds: Map<number, string>;
  cwd: string;
  env: string[];
}

function parseProbe(output: string): Probe {
  const sections = new Map<string, string[]>();
  let current: string[] = [];
  for (const line of output.split('\n')) {
    const header = /^== (\w+)$/.exec(line);
    if (header?.[1]) sections.set(header[1], (current = []));
    else current.push(line);
  }
  const status: Record<string, string> = {};
  for (const line of sections.get('status') ?? []) {
    const match = /^(\w+):\s*(.*)$/.exec(line);
    if (match?.[1]) status[match[1]] = (match[2] ?? '').trim().split(/\s+/).join(' ');
  }
  const fds = new Map<number, string>();
  for (const line of sections.get('fds') ?? []) {
    const match = / (\d+) -> (.*)$/.exec(line);
    if (match?.[1]) fds.set(Number(match[1]), match[2] ?? '');
  }
  return { status, fds, cwd: sections.get('cwd')?.[0] ?? '', env: (sections.get('env') ?? []).filter(Boolean) };
}

interface ProbeOptions extends RunOptions {
  /** Runs first and execs the launcher: argv up to (not including) the launcher's path. */
  wrapper?: readonly string[];
}

/** Launches the probe shell through the launcher (argv and stdio from the glue) and parses its report. */
async function probe(partial: Omit<LaunchSpec, 'program' | 'args'>, options: ProbeOptions = {}): Promise<Probe> {
  const spec: LaunchSpec = { ...partial, program: SH, args: ['-c', PROBE] };
  const [file, ...before] = options.wrapper ?? [launcher];
  const args = options.wrapper ? [...before, launcher, ...launcherArgs(spec)] : launcherArgs(spec);
  const outcome = await run(file ?? launcher, args, { stdio: launcherStdio(spec, 'pipe'), ...options });
  expect(outcome, outcome.stderr).toMatchObject({ code: 0, signal: null });
  return parseProbe(outcome.stderr);
}

const times = (value: number | string, n = 4): string => Array<string>(n).fill(String(value)).join(' ');

/** Alive and not a zombie, and the same process (start time) as when first seen. */
function isAlive(pid: number, startTime: string | undefined): boolean {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '').split(' ');
    return fields[0] !== 'Z' && (startTime === undefined || fields[19] === startTime);
  } catch {
    return false;
  }
}

function startTimeOf(pid: number): string | undefined {
  return readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '').split(' ')[19];
}

function exeOf(pid: number): string | undefined {
  try {
    return readlinkSync(`/proc/${pid}/exe`);
  } catch {
    return undefined;
  }
}

/** Bounded poll: fails the test if `condition` does not hold within `ms`. */
async function waitFor(what: string, condition: () => boolean, ms = 5000): Promise<void> {
  for (const end = Date.now() + ms; !condition(); await sleep(10)) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
  }
}

function ask(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let reply = '';
    const socket = connect(path);
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (reply += chunk));
    socket.on('end', () => resolve(reply));
    socket.on('error', reject);
  });
}

describe('svmm-launch: what the launched program gets', () => {
  it('runs it as the given uid, gid and groups, without any capability and with no-new-privs', async () => {
    // The caller has supplementary groups and inheritable capabilities: only the launcher can clear them.
    const p = await probe(
      { ...plain, user: { uid: HIGH_UID, gid: NOBODY, groups: [1_900_000_200, 65533] } },
      { wrapper: [SETPRIV, '--groups', '4,24', '--inh-caps', '+net_admin,+sys_admin', '--'] },
    );
    expect(p.status.Uid).toBe(times(HIGH_UID));
    expect(p.status.Gid).toBe(times(NOBODY));
    expect(p.status.Groups).toBe('65533 1900000200');
    expect(p.status.NoNewPrivs).toBe('1');
    for (const set of ['CapInh', 'CapPrm', 'CapEff', 'CapAmb']) expect(p.status[set], set).toBe(NO_CAPS);
    // Without --drop-caps the bounding set is left as it was.
    expect(ownCapBnd).not.toBe(NO_CAPS);
    expect(p.status.CapBnd).toBe(ownCapBnd);
  });

  it('leaves no supplementary group when none is given', async () => {
    const p = await probe({ ...plain, user: { uid: NOBODY, gid: NOBODY, groups: [] } }, { wrapper: [SETPRIV, '--groups', '4,24', '--'] });
    expect(p.status.Uid).toBe(times(NOBODY));
    expect(p.status.Groups).toBe('');
  });

  it('--drop-caps empties the bounding set and clears ambient and inheritable capabilities, even for root', async () => {
    // Ambient and inheritable capabilities would otherwise cross exec into the program's permitted set.
    const p = await probe(
      { ...plain, dropCapabilities: true },
      { wrapper: [SETPRIV, '--inh-caps', '+net_admin,+sys_admin', '--ambient-caps', '+net_admin,+sys_admin', '--'] },
    );
    expect(p.status.Uid).toBe(times(0));
    for (const set of ['CapBnd', 'CapInh', 'CapPrm', 'CapEff', 'CapAmb']) expect(p.status[set], set).toBe(NO_CAPS);
    expect(p.status.NoNewPrivs).toBe('1');
  });

  it('--drop-caps from an unprivileged caller leaves the bounding set (nothing to lose) and still sets no-new-privs', async () => {
    const p = await probe({ ...plain, dropCapabilities: true }, { wrapper: [SETPRIV, '--reuid', String(NOBODY), '--regid', String(NOBODY), '--clear-groups', '--'] });
    expect(p.status.Uid).toBe(times(NOBODY));
    expect(p.status.CapBnd).toBe(ownCapBnd);
    expect(p.status.NoNewPrivs).toBe('1');
  });

  it('closes every inherited fd except the kept ones, which stay where they are', async () => {
    const fileA = join(scratch, 'fd-a');
    const fileB = join(scratch, 'fd-b');
    writeFileSync(fileA, 'a');
    writeFileSync(fileB, 'b');
    const a = openSync(fileA, 'r');
    const b = openSync(fileB, 'r');
    try {
      const spec = { ...plain, fds: [{ fd: 4, kind: 'inherit', from: b } as const, { fd: 6, kind: 'inherit', from: a } as const] };
      const stdio = launcherStdio({ ...spec, program: SH, args: [] }, 'pipe');
      stdio[3] = a; // passed at spawn but not kept
      // The shell in front leaks fds 5 and 9 (not close-on-exec) into whatever it execs.
      const leak = [SH, '-c', 'exec 5</dev/null 9</dev/null; exec "$@"', 'sh'];
      // Without the launcher the program gets them all (and whatever else this process leaks).
      const control = await run(leak[0] ?? SH, [...leak.slice(1), SH, '-c', PROBE], { stdio });
      expect([...parseProbe(control.stderr).fds.keys()]).toEqual(expect.arrayContaining([0, 1, 2, 3, 4, 5, 6, 9]));

      const p = await probe(spec, { wrapper: leak, stdio });
      expect([...p.fds.keys()].sort((x, y) => x - y)).toEqual([0, 1, 2, 4, 6]);
      expect(p.fds.get(4)).toBe(fileB);
      expect(p.fds.get(6)).toBe(fileA);
    } finally {
      closeSync(a);
      closeSync(b);
    }
  });

  it('passes exactly its own environment and runs the program in /', async () => {
    const env = { PATH: '/usr/bin:/bin', SVMM_PROBE: 'a b=c', EMPTY: '' };
    const p = await probe(plain, { env, cwd: scratch });
    expect(p.env.sort()).toEqual(['EMPTY=', 'PATH=/usr/bin:/bin', 'SVMM_PROBE=a b=c']);
    expect(p.cwd).toBe('/');
  });

  it('--chdir runs the program in the given directory', async () => {
    const outcome = await run(launcher, ['--chdir', scratch, '--', SH, '-c', PROBE], { cwd: '/' });
    expect(outcome.code, outcome.stderr).toBe(0);
    expect(parseProbe(outcome.stderr).cwd).toBe(scratch);
  });

  it('--netns runs the program in that network namespace, entered before the uid change', async () => {
    const ownNetns = readlinkSync('/proc/self/ns/net');
    const readNetns = ['--uid', String(NOBODY), '--gid', String(NOBODY), '--drop-caps', '--', '/bin/readlink', '/proc/self/ns/net'];
    expect(await run(launcher, readNetns)).toMatchObject({ code: 0, stdout: `${ownNetns}\n` });
    const name = `svmm-unit-${process.pid}`;
    expect((await run('/usr/sbin/ip', ['netns', 'add', name])).code).toBe(0);
    try {
      const podNetns = `net:[${statSync(`/run/netns/${name}`).ino}]`;
      expect(podNetns).not.toBe(ownNetns);
      // The program runs as NOBODY without capabilities: only the launcher could have entered it.
      expect(await run(launcher, ['--netns', `/run/netns/${name}`, ...readNetns])).toMatchObject({ code: 0, stdout: `${podNetns}\n` });
    } finally {
      await run('/usr/sbin/ip', ['netns', 'del', name]);
    }
  });

  it('hands the program listening sockets at the given fds, as root-owned 0600 files, while it runs as another user', async () => {
    const dir = mkdtempSync(join(scratch, 'listen-'));
    const paths = { 3: join(dir, 'three.sock'), 5: join(dir, 'five.sock'), 4: join(dir, 'four.sock') };
    const order = [3, 5, 4] as const;
    const spec: LaunchSpec = {
      program: process.execPath,
      args: [join(fixtures, 'launcher-listen.mjs'), ...order.map(String)],
      fds: order.map((fd) => ({ fd, kind: 'listen', path: paths[fd] })),
      user: { uid: NOBODY, gid: NOBODY, groups: [] },
      dropCapabilities: true,
      dieWithParent: true,
    };
    const child = spawn(launcher, launcherArgs(spec), { stdio: launcherStdio(spec, 'pipe'), env: ENV, cwd: scratch });
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    const pid = child.pid ?? -1;
    const node = realpathSync(process.execPath);
    // Once node runs, every socket was bound and listening before the exec.
    await waitFor('the launcher to exec node', () => exeOf(pid) === node || child.exitCode !== null);
    expect(child.exitCode, stderr).toBeNull();

    for (const fd of order) {
      const stat = statSync(paths[fd]);
      expect(stat.isSocket()).toBe(true);
      expect({ uid: stat.uid, gid: stat.gid, mode: stat.mode & 0o777 }).toEqual({ uid: 0, gid: 0, mode: 0o600 });
    }
    for (const fd of order) expect(await ask(paths[fd])).toBe(`fd ${fd} uid ${NOBODY} gid ${NOBODY}\n`);
    expect(await exited, stderr).toBe(0);
  });

  it('--die-with-parent: the program, already running as another user, is killed when the launcher’s parent dies', async () => {
    const { pid, parent } = await startUnderParent(true);
    parent.kill('SIGKILL');
    await waitFor('the program to die with its parent', () => !isAlive(pid.pid, pid.startTime));
  });

  it('without --die-with-parent the program outlives its parent', async () => {
    const { pid, parent, parentExited } = await startUnderParent(false);
    parent.kill('SIGKILL');
    await parentExited;
    try {
      // The kernel sends the parent-death signal while the parent exits, before it can be reaped.
      expect(isAlive(pid.pid, pid.startTime)).toBe(true);
    } finally {
      process.kill(pid.pid, 'SIGKILL');
    }
  });
});

/** A node process that runs `svmm-launch … -- /bin/sleep` and waits; resolves once sleep runs. */
async function startUnderParent(dieWithParent: boolean) {
  const spec: LaunchSpec = { ...plain, program: '/bin/sleep', args: ['1000'], user: { uid: NOBODY, gid: NOBODY, groups: [] }, dieWithParent };
  const parent = spawn(process.execPath, [join(fixtures, 'launcher-parent.mjs'), launcher, ...launcherArgs(spec)], { stdio: ['ignore', 'pipe', 'inherit'], env: ENV });
  const parentExited = new Promise<void>((resolve) => parent.on('close', () => resolve()));
  const line = await new Promise<string>((resolve, reject) => {
    let out = '';
    parent.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      out += chunk;
      if (out.includes('\n')) resolve(out.trim());
    });
    parent.on('close', () => reject(new Error(`the parent exited before printing a pid: ${out}`)));
  });
  const child = Number(line);
  const sleepBinary = realpathSync('/bin/sleep');
  try {
    await waitFor('the launcher to exec sleep', () => exeOf(child) === sleepBinary);
  } catch (error) {
    parent.kill('SIGKILL');
    throw error;
  }
  return { pid: { pid: child, startTime: startTimeOf(child) }, parent, parentExited };
}

describe('svmm-launch: usage and failures', () => {
  const usageCases: Array<[string, string[], RegExp]> = [
    ['an unknown option', ['--bogus', '--', '/bin/true'], /unknown option '--bogus'/],
    ['a relative program', ['--', 'true'], /program 'true' is not an absolute path/],
    ['no -- before the program', ['/bin/true'], /unknown option '\/bin\/true'/],
    ['no program', ['--drop-caps', '--'], /missing program after --/],
    ['uid -1', ['--uid', '-1', '--gid', '0', '--', '/bin/true'], /--uid '-1': not an id in 0\.\.4294967294/],
    ['uid 4294967295', ['--uid', '4294967295', '--gid', '0', '--', '/bin/true'], /--uid '4294967295'/],
    ['gid with a sign', ['--uid', '1', '--gid', '+1', '--', '/bin/true'], /--gid '\+1'/],
    ['a uid without a gid', ['--uid', '1', '--', '/bin/true'], /--uid and --gid go together/],
    ['a repeated uid', ['--uid', '1', '--uid', '2', '--gid', '1', '--', '/bin/true'], /--uid given twice/],
    ['groups without ids', ['--groups', '1', '--', '/bin/true'], /--groups needs --uid and --gid/],
    ['a malformed group list', ['--uid', '1', '--gid', '1', '--groups', '1,,2', '--', '/bin/true'], /--groups '1,,2'/],
    ['a kept fd below 3', ['--keep-fd', '2', '--', '/bin/true'], /--keep-fd '2'/],
    ['a listen fd that is also kept', ['--keep-fd', '3', '--listen', '3:/tmp/x.sock', '--', '/bin/true'], /--listen 3:\/tmp\/x\.sock: fd given twice/],
    ['a listen without a path', ['--listen', '3', '--', '/bin/true'], /--listen '3': expected N:PATH/],
    ['an option without its value', ['--chdir'], /--chdir needs a value/],
    ['a relative netns', ['--netns', 'run/netns/x', '--', '/bin/true'], /--netns 'run\/netns\/x': not an absolute path/],
    ['a repeated netns', ['--netns', '/proc/self/ns/net', '--netns', '/proc/self/ns/net', '--', '/bin/true'], /--netns given twice/],
  ];
  it.each(usageCases)('refuses %s with exit status 2', async (_name, args, message) => {
    const outcome = await run(launcher, args);
    expect(outcome.code).toBe(2);
    expect(outcome.stderr).toMatch(/^svmm-launch: usage: /);
    expect(outcome.stderr).toMatch(message);
  });

  it('exits 127 naming the program when exec fails', async () => {
    const outcome = await run(launcher, ['--', '/nonexistent/program']);
    expect(outcome).toMatchObject({ code: 127, stderr: 'svmm-launch: exec /nonexistent/program: No such file or directory\n' });
  });

  it('exits 126 when the listen path exists, and leaves that file alone', async () => {
    const path = join(scratch, 'taken.sock');
    writeFileSync(path, 'not ours');
    const outcome = await run(launcher, ['--listen', `3:${path}`, '--', '/bin/true']);
    expect(outcome).toMatchObject({ code: 126, stderr: `svmm-launch: bind ${path}: Address already in use\n` });
    expect(readFileSync(path, 'utf8')).toBe('not ours');
  });

  it('exits 126 when a later step fails, removing the sockets it bound', async () => {
    const path = join(scratch, 'removed.sock');
    const outcome = await run(launcher, ['--listen', `3:${path}`, '--chdir', '/nonexistent', '--', '/bin/true']);
    expect(outcome).toMatchObject({ code: 126, stderr: 'svmm-launch: chdir /nonexistent: No such file or directory\n' });
    expect(existsSync(path)).toBe(false);
  });

  it('exits 126 for a listen path longer than a unix socket address holds', async () => {
    const path = join(scratch, 'x'.repeat(120));
    const outcome = await run(launcher, ['--listen', `3:${path}`, '--', '/bin/true']);
    expect(outcome).toMatchObject({ code: 126, stderr: `svmm-launch: listen ${path}: File name too long\n` });
  });

  it('exits 126 naming the file when --netns is missing, not a namespace, or another kind of namespace', async () => {
    expect(await run(launcher, ['--netns', '/nonexistent/ns', '--', '/bin/true'])).toMatchObject({ code: 126, stderr: 'svmm-launch: netns /nonexistent/ns: No such file or directory\n' });
    expect(await run(launcher, ['--netns', '/etc/passwd', '--', '/bin/true'])).toMatchObject({ code: 126, stderr: 'svmm-launch: netns /etc/passwd is not a namespace file: Invalid argument\n' });
    expect(await run(launcher, ['--netns', '/proc/self/ns/uts', '--', '/bin/true'])).toMatchObject({
      code: 126,
      stderr: 'svmm-launch: netns /proc/self/ns/uts is not a network namespace: Invalid argument\n',
    });
  });

  it('exits 126 when a kept fd is not open', async () => {
    const outcome = await run(launcher, ['--keep-fd', '200', '--', '/bin/true']);
    expect(outcome).toMatchObject({ code: 126, stderr: 'svmm-launch: keep-fd 200: Bad file descriptor\n' });
  });

  it('exits 126 when an unprivileged caller asks for a uid change', async () => {
    const outcome = await run(SETPRIV, ['--reuid', String(NOBODY), '--regid', String(NOBODY), '--clear-groups', '--', launcher, '--uid', '1', '--gid', '1', '--', '/bin/true']);
    expect(outcome).toMatchObject({ code: 126, stderr: 'svmm-launch: setgroups: Operation not permitted\n' });
  });
});

describe('launcherArgs and launcherStdio', () => {
  const spec: LaunchSpec = {
    program: '/usr/bin/qemu-system-x86_64',
    args: ['-S', '-chardev', 'socket,id=qmp,fd=3,server=on,wait=off'],
    fds: [
      { fd: 3, kind: 'listen', path: '/run/sandbox-vmm/vm/qmp.sock' },
      { fd: 5, kind: 'inherit', from: 17 },
    ],
    user: { uid: 107, gid: 107, groups: [108, 109] },
    dropCapabilities: true,
    dieWithParent: true,
    netns: '/run/netns/pod-a',
  };

  it('renders every part of the spec, the program last', () => {
    expect(launcherArgs(spec)).toEqual([
      '--listen',
      '3:/run/sandbox-vmm/vm/qmp.sock',
      '--keep-fd',
      '5',
      '--uid',
      '107',
      '--gid',
      '107',
      '--groups',
      '108,109',
      '--drop-caps',
      '--die-with-parent',
      '--netns',
      '/run/netns/pod-a',
      '--',
      '/usr/bin/qemu-system-x86_64',
      '-S',
      '-chardev',
      'socket,id=qmp,fd=3,server=on,wait=off',
    ]);
    expect(launcherArgs({ ...spec, fds: [], user: { uid: 1, gid: 2, groups: [] }, dropCapabilities: false, dieWithParent: false, netns: undefined, args: [] })).toEqual([
      '--uid',
      '1',
      '--gid',
      '2',
      '--',
      '/usr/bin/qemu-system-x86_64',
    ]);
  });

  it('places our fds at their inherit positions and nothing elsewhere', () => {
    expect(launcherStdio(spec, 'pipe')).toEqual(['ignore', 'ignore', 'pipe', 'ignore', 'ignore', 17]);
    expect(launcherStdio({ ...spec, fds: [] }, 9)).toEqual(['ignore', 'ignore', 9]);
  });

  it.each<[string, Partial<LaunchSpec>, RegExp]>([
    ['a relative program', { program: 'qemu' }, /program must be an absolute path/],
    ['an fd below 3', { fds: [{ fd: 2, kind: 'inherit', from: 4 }] }, /fds\[0\]\.fd must be an integer in 3\.\./],
    [
      'an fd given twice',
      {
        fds: [
          { fd: 3, kind: 'inherit', from: 4 },
          { fd: 3, kind: 'listen', path: '/run/x.sock' },
        ],
      },
      /fds\[1\]\.fd 3 is given twice/,
    ],
    ['a relative socket path', { fds: [{ fd: 3, kind: 'listen', path: 'x.sock' }] }, /fds\[0\]\.path must be an absolute path/],
    ['a socket path over 107 bytes', { fds: [{ fd: 3, kind: 'listen', path: `/${'x'.repeat(107)}` }] }, /fds\[0\]\.path must fit in 107 bytes/],
    ['uid -1', { user: { uid: -1, gid: 0, groups: [] } }, /user\.uid must be an id/],
    ['a group of 2^32-1', { user: { uid: 1, gid: 1, groups: [4_294_967_295] } }, /user\.groups\[0\] must be an id/],
  ])('refuses %s', (_name, change, message) => {
    expect(() => launcherArgs({ ...spec, ...change })).toThrow(message);
    expect(() => launcherStdio({ ...spec, ...change }, 'pipe')).toThrow(message);
  });
});

describe('findLauncher', () => {
  function copyWithMode(name: string, mode: number): string {
    const path = join(scratch, name);
    copyFileSync(launcher, path);
    chmodSync(path, mode);
    return path;
  }

  function problem(configured: string): string {
    try {
      findLauncher(configured);
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError);
      expect((error as ConfigError).paths).toEqual(['runtime.launcherPath']);
      return (error as ConfigError).message;
    }
    throw new Error(`findLauncher accepted ${configured}`);
  }

  it('finds build/svmm-launch at the package root', () => {
    expect(findLauncher()).toBe(launcher);
    expect(findLauncher()).toBe(launcher);
  });

  it('accepts a configured launcher owned by root, 0755', () => {
    const path = copyWithMode('good-launch', 0o755);
    expect(findLauncher(path)).toBe(path);
  });

  it('refuses a configured launcher that is missing, relative, a symlink, writable, foreign or not executable, saying why', () => {
    expect(problem(join(scratch, 'missing'))).toMatch(/svmm-launch|missing does not exist/);
    expect(problem('build/svmm-launch')).toMatch(/must be absolute/);
    const link = join(scratch, 'link-launch');
    symlinkSync(launcher, link);
    expect(problem(link)).toMatch(/is a symlink/);
    expect(problem(scratch)).toMatch(/is not a regular file/);
    expect(problem(copyWithMode('group-writable', 0o775))).toMatch(/writable by its group \(mode 775\)/);
    expect(problem(copyWithMode('world-writable', 0o757))).toMatch(/writable by others \(mode 757\)/);
    expect(problem(copyWithMode('not-executable', 0o644))).toMatch(/is not executable/);
    const foreign = copyWithMode('foreign', 0o755);
    chownSync(foreign, 12345, 0);
    expect(problem(foreign)).toMatch(/owned by uid 12345, not by root or by this process/);
  });
});
