// Connecting: polling for the socket, the greeting and its checks, negotiation, and every way the
// connect can fail, each with its typed error.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { describe, expect, it, onTestFinished } from 'vitest';
import { OperationAbortedError, OperationTimeoutError, SandboxVmmError } from '../../../src/errors.ts';
import { QmpClient, QmpCommandError, QmpConnectError, QmpDisconnectedError, QmpProtocolError } from '../../../src/qmp/index.ts';
import { FakeQmpServer, NO_REPLY, QmpErrorReply } from '../../helpers/fake-qmp-server.ts';
import { rejection, startServer } from './harness.ts';

function scratchDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'qmpc-'));
  onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

describe('QmpClient.connect', () => {
  it('reads the greeting, then negotiates capabilities before anything else', async () => {
    const server = await startServer();
    const client = await QmpClient.connect(server.path);
    onTestFinished(() => client.close());
    expect(client.greeting).toEqual({ version: { qemu: { major: 7, minor: 2, micro: 22 }, package: 'fake' }, capabilities: ['oob'] });
    expect(client.socketPath).toBe(server.path);
    expect(client.closed).toBe(false);
    expect(server.received.map((c) => c.execute)).toEqual(['qmp_capabilities']);
    // The greeting offered oob: it is enabled, as the spec asks of clients.
    expect(server.received[0]?.arguments).toEqual({ enable: ['oob'] });
    expect(client.oobEnabled).toBe(true);
  });

  it('enables no capability that the greeting did not offer', async () => {
    const server = await startServer({ greeting: { QMP: { version: { qemu: { major: 6, minor: 2, micro: 0 }, package: '' }, capabilities: [] } } });
    const client = await QmpClient.connect(server.path, { timeoutMs: 5_000 });
    onTestFinished(() => client.close());
    expect(server.received[0]?.arguments).toBeUndefined();
    expect(client.oobEnabled).toBe(false);
  });

  it('polls until the socket appears', async () => {
    const path = join(scratchDir(), 'qmp.sock');
    const connecting = QmpClient.connect(path, { timeoutMs: 5_000 });
    await delay(100);
    const server = await FakeQmpServer.start({ path });
    onTestFinished(() => server.close());
    const client = await connecting;
    onTestFinished(() => client.close());
    expect(client.greeting.version.qemu.major).toBe(7);
  });

  describe('a bad greeting is a protocol error, and the connection is dropped', () => {
    const qemu = { major: 7, minor: 2, micro: 0 };
    const malformed = (qmp: unknown) => [JSON.stringify({ QMP: qmp }), 'QEMU sent a malformed greeting: '] as const;
    // Each with the complaint it must raise: a check that went missing would surface as a TypeError
    // ("cannot read the QMP stream") and still be a QmpProtocolError.
    const badGreetings: Record<string, readonly [greeting: string, complaint: string]> = {
      'not JSON': ['QEMU monitor here', 'QEMU sent a line that is not JSON: '],
      'truncated JSON': ['{"QMP": {"version": {"qemu":', 'QEMU sent a line that is not JSON: '],
      'a JSON array': ['[{"QMP": {}}]', 'QEMU sent a line that is not a JSON object: '],
      'no version': malformed({ capabilities: [] }),
      'a null version': malformed({ version: null, capabilities: [] }),
      'a version without numbers': malformed({ version: { qemu: { major: '7', minor: 2, micro: 0 } }, capabilities: [] }),
      'a minor version that is not a number': malformed({ version: { qemu: { major: 7, minor: '2', micro: 0 } }, capabilities: [] }),
      'a micro version that is not a number': malformed({ version: { qemu: { major: 7, minor: 2 } }, capabilities: [] }),
      'no qemu version': malformed({ version: { package: '' }, capabilities: [] }),
      'a null qemu version': malformed({ version: { qemu: null, package: '' }, capabilities: [] }),
      'no capability list': malformed({ version: { qemu } }),
      'a capability list that is an object': malformed({ version: { qemu }, capabilities: { oob: true } }),
      'a capability that is not a string': malformed({ version: { qemu }, capabilities: ['oob', 1] }),
      'QMP is not an object': malformed(7),
      'QMP is null': malformed(null),
    };
    for (const [name, [greeting, complaint]] of Object.entries(badGreetings)) {
      it(name, async () => {
        const server = await startServer({ greeting });
        const error = await rejection(QmpClient.connect(server.path, { timeoutMs: 5_000 }), QmpProtocolError);
        expect(error.code).toBe('QMP_PROTOCOL');
        expect(error.message).toContain(complaint);
        await server.waitForNoClient();
        expect(server.received).toEqual([]);
      });
    }
  });

  it('reads the package name when there is one, and takes a missing or non-string one as empty', async () => {
    for (const [pkg, expected] of [['Debian 1:7.2', 'Debian 1:7.2'], [undefined, ''], [42, '']] as const) {
      const server = await startServer({ greeting: { QMP: { version: { qemu: { major: 7, minor: 2, micro: 9 }, ...(pkg === undefined ? {} : { package: pkg }) }, capabilities: [] } } });
      const client = await QmpClient.connect(server.path, { timeoutMs: 5_000 });
      onTestFinished(() => client.close());
      expect(client.greeting).toEqual({ version: { qemu: { major: 7, minor: 2, micro: 9 }, package: expected }, capabilities: [] });
      expect(client.oobEnabled).toBe(false);
    }
  });

  it('times out with QmpConnectError when no greeting comes, and leaves no connection open', async () => {
    const server = await startServer({ greeting: null });
    const error = await rejection(QmpClient.connect(server.path, { timeoutMs: 200 }), QmpConnectError);
    expect(error.socketPath).toBe(server.path);
    expect(error.cause).toBeInstanceOf(OperationTimeoutError);
    await server.waitForNoClient();
  });

  it('says that another client may hold the monitor when the socket accepted but no greeting came', async () => {
    const server = await startServer({ greeting: null });
    const error = await rejection(QmpClient.connect(server.path, { timeoutMs: 100 }), QmpConnectError);
    expect(error.message).toContain('within 100 ms');
    expect(error.message).toContain('no greeting');
    expect(error.message).toContain('another QMP client may hold the monitor');
  });

  it('times out with QmpConnectError when the socket never appears', async () => {
    const path = join(scratchDir(), 'never.sock');
    const error = await rejection(QmpClient.connect(path, { timeoutMs: 150 }), QmpConnectError);
    expect(error.message).toContain(path);
    expect(error.message).toContain('did not accept');
    expect(error.message).not.toContain('another QMP client');
  });

  it('uses defaultConnectTimeoutMs when neither a timeout nor a signal is given', async () => {
    const server = await startServer({ greeting: null });
    await rejection(QmpClient.connect(server.path, { defaultConnectTimeoutMs: 100 }), QmpConnectError);
  });

  describe('when QEMU exits', () => {
    it('fails at once while the socket does not exist yet', async () => {
      const path = join(scratchDir(), 'qmp.sock');
      let markExited: () => void = () => {};
      const exited = new Promise<void>((resolve) => (markExited = resolve));
      // A bound far beyond the test's own timeout: only the exit can end this connect in time.
      const connecting = QmpClient.connect(path, { timeoutMs: 600_000, exited });
      await delay(50);
      markExited();
      const error = await rejection(connecting, QmpConnectError);
      expect(error.message).toBe(`cannot connect to QMP at ${path}: QEMU exited before QMP was up`);
      expect(error.socketPath).toBe(path);
    });

    it('fails at once while waiting for the greeting, and closes the connection', async () => {
      const server = await startServer({ greeting: null });
      let markExited: () => void = () => {};
      const exited = new Promise<void>((resolve) => (markExited = resolve));
      const connecting = QmpClient.connect(server.path, { timeoutMs: 600_000, exited });
      await server.waitForClient();
      markExited();
      const error = await rejection(connecting, QmpConnectError);
      expect(error.message).toBe(`cannot connect to QMP at ${server.path}: QEMU exited before QMP was up`);
      await server.waitForNoClient();
    });

    it('fails when `exited` had already settled, even though the socket accepts', async () => {
      const server = await startServer();
      const error = await rejection(QmpClient.connect(server.path, { timeoutMs: 600_000, exited: Promise.resolve() }), QmpConnectError);
      expect(error.message).toBe(`cannot connect to QMP at ${server.path}: QEMU exited before QMP was up`);
      // The connection that was accepted after the connect gave up is not left open.
      await server.waitForClient();
      await server.waitForNoClient();
    });

    it('treats a rejected `exited` promise as an exit too (and never leaves it unhandled)', async () => {
      const path = join(scratchDir(), 'qmp.sock');
      const exited = Promise.reject(new Error('reaper failed'));
      const error = await rejection(QmpClient.connect(path, { timeoutMs: 600_000, exited }), QmpConnectError);
      expect(error.message).toBe(`cannot connect to QMP at ${path}: QEMU exited before QMP was up`);
    });
  });

  describe('cancellation', () => {
    it('rejects with OperationAbortedError when the signal is already aborted', async () => {
      const server = await startServer();
      const controller = new AbortController();
      controller.abort(new Error('not wanted'));
      const error = await rejection(QmpClient.connect(server.path, { signal: controller.signal }), OperationAbortedError);
      expect((error.cause as Error).message).toBe('not wanted');
    });

    it('rejects with OperationAbortedError when aborted mid-connect, and closes the connection', async () => {
      const server = await startServer({ greeting: null });
      const controller = new AbortController();
      const connecting = QmpClient.connect(server.path, { signal: controller.signal });
      await server.waitForClient();
      controller.abort('stop');
      const error = await rejection(connecting, OperationAbortedError);
      expect(error.cause).toBe('stop');
      await server.waitForNoClient();
    });

    it('keeps a reason that already is one of our errors', async () => {
      const server = await startServer({ greeting: null });
      const controller = new AbortController();
      const reason = new SandboxVmmError('VM_STOPPING', 'the VM is stopping');
      const connecting = QmpClient.connect(server.path, { signal: controller.signal });
      await server.waitForClient();
      controller.abort(reason);
      let error: unknown;
      try {
        await connecting;
      } catch (caught) {
        error = caught;
      }
      expect(error).toBe(reason);
    });
  });

  it('bounds negotiation by the connect timeout, not by the command timeout', async () => {
    const server = await startServer();
    server.handle('qmp_capabilities', () => new Promise((resolve) => setTimeout(() => resolve({}), 50)));
    const client = await QmpClient.connect(server.path, { timeoutMs: 5_000, commandTimeoutMs: 1 });
    onTestFinished(() => client.close());
    expect(client.closed).toBe(false);

    const silent = await startServer();
    silent.handle('qmp_capabilities', () => NO_REPLY);
    const error = await rejection(QmpClient.connect(silent.path, { timeoutMs: 100, commandTimeoutMs: 1 }), QmpConnectError);
    expect(error.cause).toBeInstanceOf(OperationTimeoutError);
    // It was greeted: the monitor is ours, only negotiation is stuck.
    expect(error.message).toContain('did not answer qmp_capabilities');
    expect(error.message).not.toContain('another QMP client');
  });

  it('rejects with QmpDisconnectedError when the peer hangs up before greeting', async () => {
    const server = await startServer({ greeting: null });
    const connecting = QmpClient.connect(server.path, { timeoutMs: 5_000 });
    await server.waitForClient();
    server.endClients();
    await rejection(connecting, QmpDisconnectedError);
  });

  it('rejects with QmpCommandError when QEMU refuses qmp_capabilities', async () => {
    const server = await startServer();
    server.handle('qmp_capabilities', () => {
      throw new QmpErrorReply('CommandNotFound', 'Capabilities negotiation is already complete, command ignored');
    });
    const error = await rejection(QmpClient.connect(server.path, { timeoutMs: 5_000 }), QmpCommandError);
    expect(error).toMatchObject({ command: 'qmp_capabilities', errorClass: 'CommandNotFound' });
    await server.waitForNoClient();
  });
});
