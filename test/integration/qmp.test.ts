// The QMP client against a real QEMU (the version matrix's: QEMU_UNDER_TEST), started paused (-S) by the test itself, under TCG, the way
// the library starts it: through svmm-launch, which binds the monitor's socket as root and hands it
// to QEMU as fd 3, and runs QEMU as an unprivileged identity (a fixed test uid: nothing here
// depends on which) with no capability and no environment.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { resolveBinary } from '../../src/qemu/binaries.ts';
import { findLauncher, launcherArgs, launcherStdio, type LaunchSpec } from '../../src/qemu/launch/launcher.ts';
import { QmpClient, QmpCommandError, QmpDisconnectedError, type QmpEvent } from '../../src/qmp/index.ts';
import { qemuVersionOf } from '../../scripts/qemu-versions.mjs';
import { testIdentity } from '../helpers/paused-qemu.ts';
import { QEMU_UNDER_TEST } from '../helpers/qemu-under-test.ts';

/** What the binary itself says it is (`--version`), which QMP must agree with. */
function versionOfBinary(): { major: number; minor: number; micro: number } {
  const text = qemuVersionOf(QEMU_UNDER_TEST);
  if (text === undefined) throw new Error(`${QEMU_UNDER_TEST} --version names no version`);
  const [major, minor, micro] = text.split('.').map(Number) as [number, number, number];
  return { major, minor, micro };
}

interface Qemu {
  dir: string;
  socket: string;
  child: ChildProcess;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr: () => string;
}

function startQemu(): Qemu {
  // Short: a unix socket path must fit in 108 bytes.
  const dir = mkdtempSync('/tmp/q-');
  const socket = join(dir, 'qmp.sock');
  const args = ['-S', '-nodefaults', '-no-user-config', '-display', 'none', '-machine', 'q35', '-accel', 'tcg'];
  args.push('-chardev', 'socket,id=qmp,fd=3,server=on,wait=off', '-mon', 'chardev=qmp,mode=control');
  const spec: LaunchSpec = {
    program: resolveBinary(QEMU_UNDER_TEST, 'qemuPath'),
    args,
    fds: [{ fd: 3, kind: 'listen', path: socket }],
    user: testIdentity(),
    dropCapabilities: true,
    dieWithParent: true,
  };
  const child = spawn(findLauncher(), launcherArgs(spec), { stdio: launcherStdio(spec, 'pipe'), env: {} });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr = (stderr + chunk).slice(-4096)));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  return { dir, socket, child, exited, stderr: () => stderr };
}

function isRunning(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

describe(`QMP client against ${QEMU_UNDER_TEST}`, () => {
  let qemu: Qemu;
  let qmp: QmpClient | undefined;

  beforeEach(async () => {
    qemu = startQemu();
    try {
      qmp = await QmpClient.connect(qemu.socket, { exited: qemu.exited, timeoutMs: 60_000 });
    } catch (error) {
      throw new Error(`QEMU did not come up: ${qemu.stderr()}`, { cause: error });
    }
  });

  afterEach(async () => {
    await qmp?.close();
    qmp = undefined;
    if (isRunning(qemu.child)) qemu.child.kill('SIGKILL');
    await qemu.exited;
    rmSync(qemu.dir, { recursive: true, force: true });
  });

  function client(): QmpClient {
    if (!qmp) throw new Error('not connected');
    return qmp;
  }

  it('negotiates, and QEMU reports the version its binary names in its greeting and in query-version', async () => {
    const { version, capabilities } = client().greeting;
    expect(version.qemu).toEqual(versionOfBinary());
    expect(capabilities).toContain('oob');
    expect(await client().execute('query-version')).toMatchObject({ qemu: version.qemu });
  });

  it('reports a paused machine as prelaunch, not running', async () => {
    expect(await client().execute('query-status')).toMatchObject({ status: 'prelaunch', running: false });
  });

  it('cont and stop change the run state and send RESUME and STOP, seen by waits and the iterator', async () => {
    const qmp = client();
    const stream = qmp.events();
    const resumed = qmp.waitForEvent('RESUME', undefined, { timeoutMs: 30_000 });
    expect(await qmp.execute('cont')).toEqual({});
    await resumed;
    expect(await qmp.execute('query-status')).toMatchObject({ status: 'running', running: true });

    const stopped = qmp.armEvent('STOP', undefined, { timeoutMs: 30_000 });
    expect(await qmp.execute('stop')).toEqual({});
    const stop = await stopped.promise;
    expect(stop.timestamp.seconds).toBeGreaterThan(0);
    expect(await qmp.execute('query-status')).toMatchObject({ status: 'paused', running: false });

    const seen: QmpEvent[] = [];
    for await (const event of stream) {
      seen.push(event);
      if (event.event === 'STOP') break;
    }
    expect(seen.map((e) => e.event)).toEqual(['RESUME', 'STOP']);
  });

  it('reports an unknown command as CommandNotFound and a bad argument as GenericError', async () => {
    const qmp = client();
    await expect(qmp.executeUntyped('no-such-command')).rejects.toMatchObject({ errorClass: 'CommandNotFound', command: 'no-such-command' });
    const unexpected = qmp.executeUntyped('query-status', { bogus: true });
    await expect(unexpected).rejects.toBeInstanceOf(QmpCommandError);
    await expect(unexpected).rejects.toMatchObject({ errorClass: 'GenericError', desc: expect.stringContaining('bogus') as string });
    await expect(qmp.executeUntyped('qom-get', { path: '/machine' })).rejects.toMatchObject({ errorClass: 'GenericError', desc: expect.stringContaining('property') as string });
    // Still usable after errors.
    expect(await qmp.execute('query-status')).toMatchObject({ status: 'prelaunch' });
  });

  it('answers many pipelined commands, each with its own reply', async () => {
    const qmp = client();
    // q35's versioned machine type: the default q35 of this QEMU's own version.
    const { major, minor } = versionOfBinary();
    const calls = Array.from({ length: 600 }, (_, i) => {
      if (i % 3 === 0) return qmp.execute('query-status').then((s) => ({ i, status: s.status }));
      if (i % 3 === 1) return qmp.execute('qom-get', { path: '/machine', property: 'type' }).then((type) => ({ i, type }));
      return qmp.executeUntyped(`no-such-command-${i}`).then(
        () => ({ i, error: 'none' }),
        (error: QmpCommandError) => ({ i, error: `${error.command} ${error.errorClass}` }),
      );
    });
    const results = await Promise.all(calls);
    results.forEach((result, i) => {
      if (i % 3 === 0) expect(result).toEqual({ i, status: 'prelaunch' });
      else if (i % 3 === 1) expect(result).toEqual({ i, type: `pc-q35-${major}.${minor}-machine` });
      else expect(result).toEqual({ i, error: `no-such-command-${i} CommandNotFound` });
    });
    expect(qmp.pendingCount).toBe(0);
  });

  it('quit sends SHUTDOWN, QEMU exits, and later commands reject with QmpDisconnectedError', async () => {
    const qmp = client();
    const shutdown = qmp.waitForEvent('SHUTDOWN', undefined, { timeoutMs: 30_000 });
    const closed = new Promise<QmpDisconnectedError>((resolve) => qmp.onClose(resolve));
    expect(await qmp.execute('quit')).toEqual({});
    expect((await shutdown).data).toMatchObject({ guest: false, reason: 'host-qmp-quit' });
    await closed;
    expect(qmp.closed).toBe(true);
    const later = qmp.execute('query-status');
    await expect(later).rejects.toBeInstanceOf(QmpDisconnectedError);
    await expect(later).rejects.toMatchObject({ code: 'QMP_DISCONNECTED', command: 'query-status' });
    expect(await qemu.exited).toEqual({ code: 0, signal: null });
  });
});
