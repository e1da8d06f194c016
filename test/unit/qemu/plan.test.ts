// planVm: everything createVM decides before anything runs, each problem a ConfigError naming its
// field: the binaries (real absolute paths), the launcher, and socket paths that must fit sun_path.
import { chmodSync, mkdirSync, mkdtempSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ConfigError, MAX_SOCKET_PATH_BYTES, parseSandboxConfig, type SandboxConfigInput } from '../../../src/hypervisor/config/index.ts';
import { buildQemuArgv } from '../../../src/qemu/argv/index.ts';
import { VIRTIOFSD_CANDIDATES } from '../../../src/qemu/helpers/virtiofsd.ts';
import { planVm } from '../../../src/qemu/launch/plan.ts';

// The usual virtiofsd locations, as this host has them or as a test says (installed or not).
const host = vi.hoisted(() => ({ virtiofsdInstalled: undefined as boolean | undefined }));

vi.mock('node:fs', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs')>();
  const candidates = new Set(['/usr/libexec/virtiofsd', '/usr/lib/qemu/virtiofsd', '/usr/bin/virtiofsd']);
  return {
    ...real,
    existsSync: ((path: Parameters<typeof real.existsSync>[0]) =>
      host.virtiofsdInstalled !== undefined && candidates.has(String(path)) ? host.virtiofsdInstalled : real.existsSync(path)) as typeof real.existsSync,
  };
});

let tmp: string;
let qemu: string;
let virtiofsd: string;
let launcher: string;
let savedPath: string | undefined;

function executable(path: string, mode = 0o755): string {
  writeFileSync(path, '#!/bin/sh\nexit 0\n');
  chmodSync(path, mode);
  return path;
}

beforeEach(() => {
  tmp = realpathSync(mkdtempSync(join(tmpdir(), 'svmm-plan-')));
  mkdirSync(join(tmp, 'real'));
  qemu = executable(join(tmp, 'real', 'qemu'));
  virtiofsd = executable(join(tmp, 'real', 'virtiofsd'));
  launcher = executable(join(tmp, 'svmm-launch'));
  symlinkSync(qemu, join(tmp, 'qemu-link'));
  symlinkSync(virtiofsd, join(tmp, 'virtiofsd-link'));
  savedPath = process.env['PATH'];
  host.virtiofsdInstalled = undefined;
});

afterEach(() => {
  if (savedPath === undefined) delete process.env['PATH'];
  else process.env['PATH'] = savedPath;
  rmSync(tmp, { recursive: true, force: true });
});

type Runtime = NonNullable<SandboxConfigInput['runtime']>;

function input(overrides: { id?: string; runtime?: Partial<Runtime>; devices?: SandboxConfigInput['devices'] } = {}): SandboxConfigInput {
  return {
    id: overrides.id ?? 'p1',
    boot: { kernel: '/boot/vmlinuz' },
    machine: { accel: 'tcg' },
    memory: { backing: { type: 'shared' } },
    devices: overrides.devices ?? [],
    runtime: { dir: join(tmp, 'vms', 'p1'), qemuPath: join(tmp, 'qemu-link'), launcherPath: launcher, ...overrides.runtime },
  };
}

const sharedDir = { type: 'fs', driver: 'virtio-fs', id: 'fs0', tag: 'share', sharedDir: '/srv/share' } as const;

function refusal(fn: () => unknown, field: string): string {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    const configError = error as ConfigError;
    expect(configError.paths).toEqual([field]);
    return configError.issues[0]?.message ?? '';
  }
  throw new Error('planVm did not throw');
}

/** A runtime.dir of exactly `length` bytes. */
function dirOfLength(length: number): string {
  const base = join(tmp, 'd');
  return `${base}${'x'.repeat(length - base.length)}`;
}

describe('planVm: a good plan', () => {
  it('holds the parsed config, the paths, real absolute binaries and the argv for those paths', () => {
    const dir = join(tmp, 'vms', 'p1');
    const given = input({
      runtime: { virtiofsdPath: join(tmp, 'virtiofsd-link') },
      devices: [{ type: 'channel', id: 'agent', name: 'agent.0' }, sharedDir, { type: 'channel', id: 'ch2', name: 'two' }],
    });
    const plan = planVm(given);
    expect(plan.config).toEqual(parseSandboxConfig(given));
    expect(plan.paths.dir).toBe(dir);
    expect(plan.paths.qmpSocket).toBe(join(dir, 'qmp.sock'));
    expect(plan.qemuPath).toBe(qemu);
    expect(plan.virtiofsdPath).toBe(virtiofsd);
    expect(plan.launcherPath).toBe(launcher);
    expect(plan.argv).toEqual(buildQemuArgv(plan.config, plan.paths));
  });

  it('gives QEMU its sockets as fds from 3: qmp, console, then each channel in order', () => {
    const dir = join(tmp, 'vms', 'p1');
    const plan = planVm(input({ devices: [{ type: 'channel', id: 'agent', name: 'agent.0' }, { type: 'channel', id: 'ch2', name: 'two' }] }));
    expect(plan.argv.fds).toEqual([
      { fd: 3, kind: 'listen', path: join(dir, 'qmp.sock') },
      { fd: 4, kind: 'listen', path: join(dir, 'console.sock') },
      { fd: 5, kind: 'listen', path: join(dir, 'ch-agent.sock') },
      { fd: 6, kind: 'listen', path: join(dir, 'ch-ch2.sock') },
    ]);
    const chardevs = plan.argv.args.filter((_, i) => plan.argv.args[i - 1] === '-chardev');
    expect(chardevs.find((value) => value.includes('id=svmm-qmp'))).toContain('fd=3');
    expect(chardevs.find((value) => value.includes('id=svmm-console'))).toContain('fd=4');
    expect(chardevs.find((value) => value.includes('id=chr-agent'))).toContain('fd=5');
    expect(chardevs.find((value) => value.includes('id=chr-ch2'))).toContain('fd=6');
  });

  it('looks a bare qemuPath up in PATH once, keeping its real path', () => {
    mkdirSync(join(tmp, 'bin'));
    symlinkSync(qemu, join(tmp, 'bin', 'qemu-system-x86_64'));
    process.env['PATH'] = join(tmp, 'bin');
    expect(planVm(input({ runtime: { qemuPath: 'qemu-system-x86_64' } })).qemuPath).toBe(qemu);
  });

  it('needs no virtiofsd without a sharedDir, even when the configured one is missing', () => {
    const socketFs = { type: 'fs', driver: 'virtio-fs', id: 'fs0', tag: 'share', socketPath: '/run/vfs.sock' } as const;
    const plan = planVm(input({ runtime: { virtiofsdPath: join(tmp, 'missing') }, devices: [socketFs] }));
    expect(plan.virtiofsdPath).toBeUndefined();
  });

  it('takes the first usual virtiofsd location when none is configured', () => {
    const found = VIRTIOFSD_CANDIDATES.find((path) => realExists(path));
    if (found) expect(planVm(input({ devices: [sharedDir] })).virtiofsdPath).toBe(realpathSync(found));
    else expect(refusal(() => planVm(input({ devices: [sharedDir] })), 'runtime.virtiofsdPath')).toMatch(/is not installed/);
  });

  it('accepts an already parsed config', () => {
    const config = parseSandboxConfig(input());
    const plan = planVm(config);
    expect(plan.config).toEqual(config);
    expect(plan.paths.dir).toBe(config.runtime.dir);
  });

  it('uses the override directory over runtime.dir', () => {
    const override = join(tmp, 'override');
    const plan = planVm(input(), override);
    expect(plan.paths.dir).toBe(override);
    expect(plan.argv.fds[0]).toEqual({ fd: 3, kind: 'listen', path: join(override, 'qmp.sock') });
  });

  it('defaults to <base>/<id> under /run/sandbox-vmm as root', () => {
    const plan = planVm({ ...input(), runtime: { qemuPath: qemu, launcherPath: launcher } });
    expect(plan.paths.dir).toBe('/run/sandbox-vmm/p1');
  });
});

function realExists(path: string): boolean {
  try {
    realpathSync(path);
    return true;
  } catch {
    return false;
  }
}

describe('planVm: refusals', () => {
  it('refuses an invalid config, naming its fields', () => {
    expect(refusal(() => planVm({ ...input(), cpus: { boot: 0 } }), 'cpus.boot')).toBeTruthy();
  });

  it('names runtime.qemuPath for a missing QEMU', () => {
    const missing = join(tmp, 'missing-qemu');
    expect(refusal(() => planVm(input({ runtime: { qemuPath: missing } })), 'runtime.qemuPath')).toBe(`${missing} is not an executable file`);
  });

  it('names runtime.qemuPath for a QEMU not found in PATH', () => {
    process.env['PATH'] = join(tmp, 'real');
    expect(refusal(() => planVm(input({ runtime: { qemuPath: 'qemu-system-x86_64' } })), 'runtime.qemuPath')).toBe(`qemu-system-x86_64 was not found in PATH (${join(tmp, 'real')})`);
  });

  it('names runtime.qemuPath for a non-executable QEMU', () => {
    chmodSync(qemu, 0o644);
    expect(refusal(() => planVm(input()), 'runtime.qemuPath')).toBe(`${join(tmp, 'qemu-link')} is not an executable file`);
  });

  it('names runtime.netns for a namespace file that is missing, not a namespace, or not a network namespace', () => {
    const missing = join(tmp, 'no-such-netns');
    expect(refusal(() => planVm(input({ runtime: { netns: missing } })), 'runtime.netns')).toBe(`${missing} does not exist (create the namespace first, e.g. \`ip netns add <name>\`)`);
    expect(refusal(() => planVm(input({ runtime: { netns: qemu } })), 'runtime.netns')).toBe(`${qemu} is not a namespace file (give /run/netns/<name> or /proc/<pid>/ns/net)`);
    expect(refusal(() => planVm(input({ runtime: { netns: '/proc/self/ns/uts' } })), 'runtime.netns')).toBe('/proc/self/ns/uts is a uts namespace, not a network namespace');
  });

  it('accepts a network namespace and hands it to nothing but the launch (the argv does not change)', () => {
    const plan = planVm(input({ runtime: { netns: '/proc/self/ns/net' } }));
    expect(plan.config.runtime.netns).toBe('/proc/self/ns/net');
    expect(plan.argv).toEqual(planVm(input()).argv);
  });

  it('names runtime.virtiofsdPath for a sharedDir whose configured virtiofsd is missing', () => {
    const missing = join(tmp, 'missing-virtiofsd');
    expect(refusal(() => planVm(input({ runtime: { virtiofsdPath: missing }, devices: [sharedDir] })), 'runtime.virtiofsdPath')).toBe(`${missing} is not an executable file`);
  });

  it('names runtime.virtiofsdPath for a sharedDir when virtiofsd is not installed', () => {
    host.virtiofsdInstalled = false;
    expect(refusal(() => planVm(input({ devices: [sharedDir] })), 'runtime.virtiofsdPath')).toBe(
      `virtiofsd is needed for a sharedDir but is not installed (looked in ${VIRTIOFSD_CANDIDATES.join(', ')})`,
    );
  });

  it('names runtime.virtiofsdPath when the usual location found is not an executable file', () => {
    // Every candidate "exists"; the first is resolved like a configured path.
    host.virtiofsdInstalled = true;
    const first = VIRTIOFSD_CANDIDATES[0] as string;
    if (realExists(first)) expect(planVm(input({ devices: [sharedDir] })).virtiofsdPath).toBe(realpathSync(first));
    else expect(refusal(() => planVm(input({ devices: [sharedDir] })), 'runtime.virtiofsdPath')).toBe(`${first} is not an executable file`);
  });

  it('names runtime.launcherPath for a launcher that is not executable', () => {
    chmodSync(launcher, 0o644);
    expect(refusal(() => planVm(input()), 'runtime.launcherPath')).toMatch(new RegExp(`^the launcher ${launcher} is not executable \\(mode 644`));
  });

  it('names runtime.launcherPath for a group-writable launcher', () => {
    chmodSync(launcher, 0o775);
    expect(refusal(() => planVm(input()), 'runtime.launcherPath')).toBe(`the launcher ${launcher} is writable by its group (mode 775): chmod go-w it`);
  });

  it('names runtime.launcherPath for a missing launcher', () => {
    const missing = join(tmp, 'missing-launcher');
    expect(refusal(() => planVm(input({ runtime: { launcherPath: missing } })), 'runtime.launcherPath')).toBe(`the launcher ${missing} does not exist`);
  });

  it(`accepts socket paths of ${MAX_SOCKET_PATH_BYTES} bytes and names runtime.dir for one byte more`, () => {
    // console.sock is the longest of the fixed sockets: 13 bytes with its slash.
    const fits = dirOfLength(MAX_SOCKET_PATH_BYTES - 13);
    expect(planVm(input({ runtime: { dir: fits } })).paths.consoleSocket).toHaveLength(MAX_SOCKET_PATH_BYTES);
    const tooLong = dirOfLength(MAX_SOCKET_PATH_BYTES - 12);
    expect(refusal(() => planVm(input({ runtime: { dir: tooLong } })), 'runtime.dir')).toBe(`socket path ${tooLong}/console.sock is longer than ${MAX_SOCKET_PATH_BYTES} bytes`);
  });

  it('counts the channel sockets', () => {
    // '/ch-abcdefgh.sock' is 17 bytes.
    const dir = dirOfLength(MAX_SOCKET_PATH_BYTES - 17);
    const channel = (id: string) => ({ type: 'channel', id, name: id }) as const;
    expect(() => planVm(input({ runtime: { dir }, devices: [channel('abcdefgh')] }))).not.toThrow();
    expect(refusal(() => planVm(input({ runtime: { dir }, devices: [channel('abcdefgh'), channel('abcdefghi')] })), 'runtime.dir')).toBe(
      `socket path ${dir}/ch-abcdefghi.sock is longer than ${MAX_SOCKET_PATH_BYTES} bytes`,
    );
  });

  it("counts the socket of virtiofsd for a sharedDir, not a caller's virtio-fs socket", () => {
    const dir = dirOfLength(MAX_SOCKET_PATH_BYTES - 17);
    const runtime = { dir, virtiofsdPath: virtiofsd };
    const socketFs = { type: 'fs', driver: 'virtio-fs', id: 'abcdefghi', tag: 'share', socketPath: '/run/vfs.sock' } as const;
    expect(() => planVm(input({ runtime, devices: [socketFs] }))).not.toThrow();
    expect(() => planVm(input({ runtime, devices: [{ ...sharedDir, id: 'abcdefgh' }] }))).not.toThrow();
    expect(refusal(() => planVm(input({ runtime, devices: [{ ...sharedDir, id: 'abcdefghi' }] })), 'runtime.dir')).toBe(
      `socket path ${dir}/fs-abcdefghi.sock is longer than ${MAX_SOCKET_PATH_BYTES} bytes`,
    );
  });

  it('checks the socket paths before resolving any program', () => {
    const tooLong = dirOfLength(MAX_SOCKET_PATH_BYTES);
    refusal(() => planVm(input({ runtime: { dir: tooLong, qemuPath: join(tmp, 'missing'), launcherPath: join(tmp, 'missing') } })), 'runtime.dir');
  });

  it('suggests a short runtime.dir only when the directory was defaulted', () => {
    const id = `v${'x'.repeat(63)}`;
    const channelId = `c${'x'.repeat(26)}`;
    const long = { ...input({ id, devices: [{ type: 'channel', id: channelId, name: 'agent' }] }) };
    const defaulted = { ...long, runtime: { qemuPath: qemu, launcherPath: launcher } };
    const socket = `/run/sandbox-vmm/${id}/ch-${channelId}.sock`;
    expect(refusal(() => planVm(defaulted), 'runtime.dir')).toBe(
      `socket path ${socket} is longer than ${MAX_SOCKET_PATH_BYTES} bytes (the default runtime directory is too deep here: set runtime.dir to a short path)`,
    );
    expect(refusal(() => planVm(defaulted, `/run/sandbox-vmm/${id}`), 'runtime.dir')).toBe(`socket path ${socket} is longer than ${MAX_SOCKET_PATH_BYTES} bytes`);
    const configured = { ...long, runtime: { ...defaulted.runtime, dir: `/run/sandbox-vmm/${id}` } };
    expect(refusal(() => planVm(configured), 'runtime.dir')).toBe(`socket path ${socket} is longer than ${MAX_SOCKET_PATH_BYTES} bytes`);
  });
});
