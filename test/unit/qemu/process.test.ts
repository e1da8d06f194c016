import { describe, expect, it } from 'vitest';
import { LineRing } from '../../../src/qemu/process/stderr-ring.ts';
import { parseSandboxConfig, type SandboxConfigInput } from '../../../src/hypervisor/config/index.ts';
import { buildQemuArgv } from '../../../src/qemu/argv/index.ts';
import { qemuLaunchSpec } from '../../../src/qemu/launch/launch.ts';
import { virtiofsdLaunchSpec } from '../../../src/qemu/helpers/virtiofsd.ts';
import { findLauncher, launcherArgs, launcherStdio } from '../../../src/qemu/launch/launcher.ts';
import type { LaunchPlan } from '../../../src/qemu/launch/plan.ts';
import { SpawnedProcess } from '../../../src/qemu/process/vmm-process.ts';
import { runtimePaths } from '../../../src/qemu/runtime-paths.ts';
import { silentLogger } from '../../../src/util/logger.ts';
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

describe('how QEMU is launched (qemuLaunchSpec through svmm-launch)', () => {
  const paths = runtimePaths('/run/vm');
  const plan = (input: Partial<SandboxConfigInput> = {}): LaunchPlan => {
    const config = parseSandboxConfig({ machine: { accel: 'tcg' }, boot: { kernel: '/boot/vmlinuz' }, ...input });
    return { config, paths, argv: buildQemuArgv(config, paths), qemuPath: '/usr/bin/qemu-system-x86_64', virtiofsdPath: undefined, launcherPath: '/opt/svmm-launch' };
  };

  it('binds QEMU to its owner with the parent-death signal, after dropping capabilities and privileges', () => {
    const p = plan();
    const spec = qemuLaunchSpec(p, { uid: 65534, gid: 65534, groups: [] });
    expect(spec).toEqual({
      program: '/usr/bin/qemu-system-x86_64',
      args: p.argv.args,
      fds: p.argv.fds,
      user: { uid: 65534, gid: 65534, groups: [] },
      dropCapabilities: true,
      dieWithParent: true,
    });
    expect(launcherArgs(spec)).toEqual([
      '--listen',
      '3:/run/vm/qmp.sock',
      '--listen',
      '4:/run/vm/console.sock',
      '--uid',
      '65534',
      '--gid',
      '65534',
      '--drop-caps',
      '--die-with-parent',
      '--',
      '/usr/bin/qemu-system-x86_64',
      ...p.argv.args,
    ]);
  });

  it('keeps supplementary groups (e.g. kvm), omits the parent-death signal when detached, and keeps our user when there is no identity', () => {
    const detached = qemuLaunchSpec(plan({ runtime: { detached: true } }), { uid: 107, gid: 107, groups: [108] });
    expect(detached).toMatchObject({ user: { uid: 107, gid: 107, groups: [108] }, dropCapabilities: true, dieWithParent: false });
    expect(launcherArgs(detached).slice(4, launcherArgs(detached).indexOf('--'))).toEqual(['--uid', '107', '--gid', '107', '--groups', '108', '--drop-caps']);
    const current = qemuLaunchSpec(plan(), undefined);
    expect(current).toMatchObject({ user: undefined, dropCapabilities: true, dieWithParent: true });
    expect(launcherArgs(current).slice(4, launcherArgs(current).indexOf('--'))).toEqual(['--drop-caps', '--die-with-parent']);
  });

  it('starts QEMU and virtiofsd in runtime.netns, and both in our own namespace without it', () => {
    const inPod = plan({ runtime: { netns: '/run/netns/pod-a' } });
    expect(qemuLaunchSpec(inPod, undefined).netns).toBe('/run/netns/pod-a');
    expect(launcherArgs(qemuLaunchSpec(inPod, undefined))).toEqual(expect.arrayContaining(['--netns', '/run/netns/pod-a']));
    expect(qemuLaunchSpec(plan(), undefined).netns).toBeUndefined();
    expect(launcherArgs(qemuLaunchSpec(plan(), undefined))).not.toContain('--netns');

    const device = { type: 'fs', driver: 'virtio-fs', id: 'share', tag: 'share', sharedDir: '/srv/share', queueSize: 1024 } as const;
    const helper = { device, paths, binary: '/usr/lib/qemu/virtiofsd', flavour: 'c' as const, detached: false };
    expect(virtiofsdLaunchSpec({ ...helper, netns: '/run/netns/pod-a' })).toMatchObject({ program: '/usr/lib/qemu/virtiofsd', netns: '/run/netns/pod-a', user: undefined });
    expect(virtiofsdLaunchSpec({ ...helper, netns: undefined }).netns).toBeUndefined();
  });

  it('hands a caller fd (a tap) to QEMU at the fd its netdev names, and nothing else above stderr', () => {
    const spec = qemuLaunchSpec(plan({ devices: [{ type: 'net', id: 'n', tap: { fd: 9 } }] }), undefined);
    expect(spec.fds).toContainEqual({ fd: 5, kind: 'inherit', from: 9 });
    expect(launcherArgs(spec)).toEqual(expect.arrayContaining(['--keep-fd', '5']));
    expect(launcherStdio(spec, 'pipe')).toEqual(['ignore', 'ignore', 'pipe', 'ignore', 'ignore', 9]);
  });
});

describe('SpawnedProcess', () => {
  it('runs the program through the real launcher: its pid is the program’s, with no environment, and its exit and stderr are reported', async () => {
    const program = '/bin/sh';
    const proc = SpawnedProcess.spawn({
      launcher: findLauncher(),
      launch: { program, args: ['-c', 'echo "pid $$ env [$(tr "\\0" " " < /proc/$$/environ)]" >&2; exit 3'], fds: [], user: undefined, dropCapabilities: false, dieWithParent: true },
      detached: false,
      stderrFile: '/nonexistent/unused',
      logger: silentLogger,
    });
    expect(await proc.exited).toEqual({ exitCode: 3, signal: undefined });
    expect(proc.hasExited).toBe(true);
    // The launcher exec'd the shell, so $$ is the pid we spawned; the environment it was exec'd with is empty.
    expect(proc.stderrTail()).toBe(`pid ${proc.pid} env []`);
    expect(proc.signal('SIGKILL')).toBe(false);
  });

  it('reports a signal that ended it', async () => {
    const proc = SpawnedProcess.spawn({
      launcher: findLauncher(),
      launch: { program: '/bin/sleep', args: ['60'], fds: [], user: undefined, dropCapabilities: false, dieWithParent: true },
      detached: false,
      stderrFile: '/nonexistent/unused',
      logger: silentLogger,
    });
    expect(proc.signal('SIGKILL')).toBe(true);
    expect(await proc.exited).toEqual({ exitCode: undefined, signal: 'SIGKILL' });
  });

  it('reports a launcher that could not be spawned: no pid, no exit status, the reason as its stderr', async () => {
    const proc = SpawnedProcess.spawn({
      launcher: '/nonexistent/svmm-launch',
      launch: { program: '/bin/true', args: [], fds: [], user: undefined, dropCapabilities: false, dieWithParent: true },
      detached: false,
      stderrFile: '/nonexistent/unused',
      logger: silentLogger,
    });
    expect(proc.pid).toBe(-1);
    expect(await proc.exited).toEqual({ exitCode: undefined, signal: undefined });
    expect(proc.hasExited).toBe(true);
    expect(proc.stderrTail()).toMatch(/ENOENT/);
    expect(proc.signal('SIGKILL')).toBe(false);
  });

  it('quotes the last lines a program wrote just before it died', async () => {
    const proc = SpawnedProcess.spawn({
      launcher: findLauncher(),
      launch: { program: '/bin/sh', args: ['-c', 'for i in 1 2 3; do echo "line $i" >&2; done; kill -9 $$'], fds: [], user: undefined, dropCapabilities: false, dieWithParent: true },
      detached: false,
      stderrFile: '/nonexistent/unused',
      logger: silentLogger,
    });
    expect(await proc.exited).toEqual({ exitCode: undefined, signal: 'SIGKILL' });
    expect(proc.stderrTail()).toBe('line 1\nline 2\nline 3');
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
