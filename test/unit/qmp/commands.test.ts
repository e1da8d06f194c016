// Commands: correlation by id (out of order, many in flight, stray replies), command errors,
// per-command timeouts and cancellation.
import { setTimeout as delay } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { OperationAbortedError, SandboxVmmError } from '../../../src/errors.ts';
import { QmpCommandError, QmpTimeoutError } from '../../../src/qmp/index.ts';
import { DEFAULT_GREETING, NO_REPLY, QmpErrorReply, type ReceivedCommand } from '../../helpers/fake-qmp-server.ts';
import { rejection, settleIo, startPair, track } from './harness.ts';
import { seededRandom } from '../../helpers/random.ts';


function shuffle<T>(items: T[], random: () => number): T[] {
  const copy = [...items];
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [copy[i], copy[j]] = [copy[j] as T, copy[i] as T];
  }
  return copy;
}

describe('QmpClient.execute', () => {
  it('sends the command with its arguments and a fresh id, and resolves with `return`', async () => {
    const { server, client } = await startPair();
    server.handle('qom-get', (args) => ({ asked: args }));
    const value = await client.execute('qom-get', { path: '/machine', property: 'type' });
    expect(value).toEqual({ asked: { path: '/machine', property: 'type' } });
    await client.execute('qom-get', { path: '/machine', property: 'kernel' });
    const ids = server.received.map((c) => c.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids.every((id) => typeof id === 'number')).toBe(true);
  });

  it('omits `arguments` when there are none', async () => {
    const { server, client } = await startPair();
    server.handle('stop', () => ({}));
    await client.execute('stop');
    expect(server.received.at(-1)).not.toHaveProperty('arguments');
  });

  it('matches replies that come out of order', async () => {
    const { server, client } = await startPair();
    const gates = new Map<string, () => void>();
    server.handle('echo', (args) => new Promise((resolve) => gates.set(String(args?.['n']), () => resolve({ n: args?.['n'] }))));
    const results = [1, 2, 3].map((n) => client.executeUntyped('echo', { n }));
    while (gates.size < 3) await settleIo(1);
    for (const n of ['3', '1', '2']) gates.get(n)?.();
    expect(await Promise.all(results)).toEqual([{ n: 1 }, { n: 2 }, { n: 3 }]);
  });

  it('answers 1000 commands in flight, replied to in random order', async () => {
    // Without the oob capability there is no in-band window (oob.test.ts): all 1000 go out at once.
    const { server, client } = await startPair({ greeting: { QMP: { ...DEFAULT_GREETING.QMP, capabilities: [] } } });
    expect(client.oobEnabled).toBe(false);
    const received: ReceivedCommand[] = [];
    server.handle('echo', (_args, command) => {
      received.push(command);
      return NO_REPLY;
    });
    const results = Array.from({ length: 1000 }, (_, n) => client.executeUntyped('echo', { n }));
    while (received.length < 1000) await settleIo(1);
    expect(client.pendingCount).toBe(1000);
    const replies = shuffle(received, seededRandom(1000)).map((c) => JSON.stringify({ return: { n: c.arguments?.['n'] }, id: c.id }));
    // In several chunks, as a busy QEMU would send them.
    for (let i = 0; i < replies.length; i += 64) server.sendRaw(`${replies.slice(i, i + 64).join('\r\n')}\r\n`);
    const values = await Promise.all(results);
    expect(values).toEqual(Array.from({ length: 1000 }, (_, n) => ({ n })));
    expect(client.pendingCount).toBe(0);
  });

  it('drops replies with unknown ids, without ids, or with ids of another type', async () => {
    const { server, client } = await startPair();
    let answer: (() => void) | undefined;
    server.handle('query-status', (_args, command) => {
      answer = () => server.sendLine(JSON.stringify({ return: { status: 'running', running: true }, id: command.id }));
      return NO_REPLY;
    });
    const status = track(client.execute('query-status'));
    while (!answer) await settleIo(1);
    for (const id of [999_999, -1, '2', null, { n: 2 }]) server.sendLine(JSON.stringify({ return: { stray: true }, id }));
    server.sendLine(JSON.stringify({ return: { stray: true } }));
    server.sendLine(JSON.stringify({ error: { class: 'GenericError', desc: 'stray' }, id: 424_242 }));
    await settleIo();
    expect(status.current.status).toBe('pending');
    answer();
    while (status.current.status === 'pending') await settleIo(1);
    expect(status.current).toEqual({ status: 'fulfilled', value: { status: 'running', running: true } });
    expect(client.closed).toBe(false);
  });

  describe('command errors', () => {
    it('carry the QMP error class, its description and the command', async () => {
      const { server, client } = await startPair();
      server.handle('device_del', (args) => {
        throw new QmpErrorReply('DeviceNotFound', `Device '${String(args?.['id'])}' not found`);
      });
      const error = await rejection(client.execute('device_del', { id: 'disk0' }), QmpCommandError);
      expect(error).toMatchObject({ code: 'QMP_COMMAND_FAILED', command: 'device_del', errorClass: 'DeviceNotFound', desc: "Device 'disk0' not found" });
      expect(error.message).toContain("Device 'disk0' not found");
      expect(client.closed).toBe(false);
    });

    it('name an unknown command CommandNotFound', async () => {
      const { client } = await startPair();
      const error = await rejection(client.executeUntyped('no-such-command'), QmpCommandError);
      expect(error.errorClass).toBe('CommandNotFound');
    });

    it('default to GenericError when the error object lacks a class or is not an object', async () => {
      const { server, client } = await startPair();
      const replies = [{ desc: 'no class' }, 'just a string'];
      server.handle('odd', (_args, command) => {
        server.sendLine(JSON.stringify({ error: replies.shift(), id: command.id }));
        return NO_REPLY;
      });
      const first = await rejection(client.executeUntyped('odd'), QmpCommandError);
      expect(first).toMatchObject({ errorClass: 'GenericError', desc: 'no class' });
      const second = await rejection(client.executeUntyped('odd'), QmpCommandError);
      expect(second).toMatchObject({ errorClass: 'GenericError', desc: '"just a string"' });
    });

    it('describe an error object without desc exactly, even when it holds an integer beyond 2^53', async () => {
      const { server, client } = await startPair();
      server.handle('odd', (_args, command) => {
        server.sendLine(`{"error": {"class": "GenericError", "addr": 18446744073709551615}, "id": ${String(command.id)}}`);
        return NO_REPLY;
      });
      const error = await rejection(client.executeUntyped('odd'), QmpCommandError);
      expect(error.desc).toBe('{"class":"GenericError","addr":18446744073709551615}');
      expect(client.closed).toBe(false);
    });
  });

  it('rejects (never throws) when the arguments cannot be encoded, and stays usable', async () => {
    const { server, client } = await startPair();
    server.handle('stop', () => ({}));
    const cyclic: Record<string, unknown> = {};
    cyclic['self'] = cyclic;
    // A bigint is fine (integers.test.ts); a cycle, with or without one, is not.
    const cyclicWithBigint: Record<string, unknown> = { value: 1n };
    cyclicWithBigint['self'] = [cyclicWithBigint];
    let call: Promise<unknown> | undefined;
    expect(() => (call = client.execute('qom-set', { path: '/x', property: 'big', value: cyclicWithBigint }))).not.toThrow();
    await expect(call).rejects.toBeInstanceOf(TypeError);
    await expect(client.executeUntyped('odd', cyclic)).rejects.toBeInstanceOf(TypeError);
    await expect(client.execute('stop')).resolves.toEqual({});
    expect(server.received.map((c) => c.execute)).toEqual(['qmp_capabilities', 'stop']);
  });

  describe('timeouts', () => {
    it('rejects with QmpTimeoutError, drops the late reply, and keeps working', async () => {
      const { server, client } = await startPair();
      let lateId: unknown;
      server.handle('slow', (_args, command) => {
        lateId = command.id;
        return NO_REPLY;
      });
      server.handle('query-status', () => ({ status: 'paused', running: false }));
      const error = await rejection(client.executeUntyped('slow', undefined, { timeoutMs: 30 }), QmpTimeoutError);
      expect(error).toMatchObject({ code: 'QMP_TIMEOUT', command: 'slow', timeoutMs: 30 });
      expect(client.pendingCount).toBe(0);
      server.sendLine(JSON.stringify({ return: { late: true }, id: lateId }));
      await settleIo();
      expect(client.closed).toBe(false);
      for (let i = 0; i < 3; i++) expect(await client.execute('query-status')).toEqual({ status: 'paused', running: false });
    });

    it("apply the client's commandTimeoutMs to commands given none", async () => {
      const { server, client } = await startPair({}, { commandTimeoutMs: 30 });
      server.handle('slow', () => NO_REPLY);
      const error = await rejection(client.executeUntyped('slow'), QmpTimeoutError);
      expect(error.timeoutMs).toBe(30);
    });

    it('treat a timeout beyond what a timer can wait as no bound (not as 1 ms)', async () => {
      const { server, client } = await startPair();
      let answer: (() => void) | undefined;
      server.handle('slow', (_args, command) => {
        answer = () => server.sendLine(JSON.stringify({ return: { done: true }, id: command.id }));
        return NO_REPLY;
      });
      const call = track(client.executeUntyped('slow', undefined, { timeoutMs: 10 * 2 ** 31 }));
      while (!answer) await settleIo(1);
      await delay(30);
      expect(call.current.status).toBe('pending');
      answer();
      while (call.current.status === 'pending') await settleIo(1);
      expect(call.current).toEqual({ status: 'fulfilled', value: { done: true } });
    });
  });

  describe('cancellation', () => {
    it('rejects at once, sending nothing, when the signal is already aborted', async () => {
      const { server, client } = await startPair();
      const controller = new AbortController();
      controller.abort('changed my mind');
      const error = await rejection(client.execute('stop', undefined, { signal: controller.signal }), OperationAbortedError);
      expect(error.cause).toBe('changed my mind');
      await settleIo();
      expect(server.received.map((c) => c.execute)).toEqual(['qmp_capabilities']);
    });

    it('rejects a command in flight when aborted, and drops its late reply', async () => {
      const { server, client } = await startPair();
      let lateId: unknown;
      server.handle('slow', (_args, command) => {
        lateId = command.id;
        return NO_REPLY;
      });
      server.handle('stop', () => ({}));
      const controller = new AbortController();
      const call = client.executeUntyped('slow', undefined, { signal: controller.signal });
      await server.nextCommand('slow');
      const reason = new Error('user pressed ^C');
      controller.abort(reason);
      const error = await rejection(call, OperationAbortedError);
      expect(error.cause).toBe(reason);
      expect(error.operation).toContain('slow');
      expect(client.pendingCount).toBe(0);
      server.sendLine(JSON.stringify({ return: {}, id: lateId }));
      await expect(client.execute('stop')).resolves.toEqual({});
    });

    it('rejects with the reason itself when it already is one of our errors', async () => {
      const { server, client } = await startPair();
      server.handle('slow', () => NO_REPLY);
      const controller = new AbortController();
      const call = client.executeUntyped('slow', undefined, { signal: controller.signal });
      await server.nextCommand('slow');
      const reason = new SandboxVmmError('VM_STOPPING', 'the VM is stopping');
      controller.abort(reason);
      await expect(call).rejects.toBe(reason);
    });

    it('does not touch a command that already got its reply', async () => {
      const { server, client } = await startPair();
      server.handle('stop', () => ({}));
      const controller = new AbortController();
      const value = await client.execute('stop', undefined, { signal: controller.signal });
      controller.abort();
      expect(value).toEqual({});
      expect(client.closed).toBe(false);
    });
  });
});
