// Which connect errors mean "QEMU is not listening yet" (keep polling until the deadline) and which
// end the attempt at once: a socket file nobody listens on (stale, or QEMU between bind and listen),
// a socket whose accept queue is full, and a path that can never be a socket.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { OperationTimeoutError } from '../../../src/errors.ts';
import { QmpClient, QmpConnectError } from '../../../src/qmp/index.ts';
import { FakeQmpServer } from '../../helpers/fake-qmp-server.ts';
import { rejection } from './harness.ts';

function scratchDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'qmpr-'));
  onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A socket file left behind by a process that bound it and exited: connecting is refused. */
function staleSocket(path: string): void {
  const script = `require('net').createServer().listen(process.argv[1], () => process.exit(0))`;
  const result = spawnSync(process.execPath, ['-e', script, path], { stdio: 'ignore' });
  expect(result.status).toBe(0);
}

/** Attempts one connection: 'connected' or the error code. */
function probe(path: string, opened: Socket[]): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(path);
    opened.push(socket);
    socket.once('connect', () => resolve('connected'));
    socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
  });
}

/**
 * A listening socket whose owner never accepts (its event loop is blocked), with its accept queue
 * filled: a further connect fails with EAGAIN.
 */
async function fullSocket(path: string): Promise<void> {
  const script = `require('net').createServer().listen({ path: process.argv[1], backlog: 1 }, () => {
    process.stdout.write('ready');
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
  })`;
  const child = spawn(process.execPath, ['-e', script, path], { stdio: ['ignore', 'pipe', 'ignore'] });
  const opened: Socket[] = [];
  onTestFinished(() => {
    for (const socket of opened) socket.destroy();
    child.kill('SIGKILL');
  });
  await new Promise((resolve) => child.stdout.once('data', resolve));
  for (let i = 0; i < 16; i++) {
    if ((await probe(path, opened)) === 'EAGAIN') return;
  }
  throw new Error('the accept queue never filled');
}

describe('QmpClient.connect polling', () => {
  it('keeps polling a socket file that refuses connections (ECONNREFUSED) until its deadline', async () => {
    const path = join(scratchDir(), 'qmp.sock');
    staleSocket(path);
    expect(await probe(path, [])).toBe('ECONNREFUSED');
    const error = await rejection(QmpClient.connect(path, { timeoutMs: 200 }), QmpConnectError);
    expect(error.cause).toBeInstanceOf(OperationTimeoutError);
    expect(error.message).toContain('the socket did not accept a connection');
  });

  it('connects once a server replaces the stale socket file', async () => {
    const path = join(scratchDir(), 'qmp.sock');
    staleSocket(path);
    const connecting = QmpClient.connect(path, { timeoutMs: 5_000 });
    // The first attempt is already under way (and refused) when the file is replaced.
    expect(await probe(path, [])).toBe('ECONNREFUSED');
    rmSync(path);
    const server = await FakeQmpServer.start({ path });
    onTestFinished(() => server.close());
    const client = await connecting;
    onTestFinished(() => client.close());
    expect(client.greeting.version.qemu.major).toBe(7);
  });

  it('keeps polling a socket whose accept queue is full (EAGAIN) until its deadline', async () => {
    const path = join(scratchDir(), 'qmp.sock');
    await fullSocket(path);
    const error = await rejection(QmpClient.connect(path, { timeoutMs: 200 }), QmpConnectError);
    expect(error.cause).toBeInstanceOf(OperationTimeoutError);
    expect(error.message).toContain('the socket did not accept a connection');
  });

  it('gives up at once on an error that polling cannot cure, typed as QmpConnectError with the system error as cause', async () => {
    const dir = scratchDir();
    writeFileSync(join(dir, 'file'), '');
    // A path under a regular file: ENOTDIR, however long we wait.
    const path = join(dir, 'file', 'qmp.sock');
    const error = await rejection(QmpClient.connect(path, { timeoutMs: 5_000 }), QmpConnectError);
    expect((error.cause as NodeJS.ErrnoException).code).toBe('ENOTDIR');
    expect(error.message).toContain('ENOTDIR');
    expect(error.message).not.toContain('did not accept');
  });
});
