// The details a caller reads when something goes wrong, each pinned: errors that name the command
// or path they are about, bad options refused before anything is sent, the debug log's duration in
// milliseconds, what a protocol error leaves behind (one error, nothing dispatched after it), and
// connect leaving no listener on the caller's signal.
import { getEventListeners } from 'node:events';
import { pino } from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { InvalidArgumentError, OperationAbortedError, OperationTimeoutError } from '../../../src/errors.ts';
import { QmpClient, QmpConnectError, QmpDisconnectedError, QmpProtocolError, QmpTimeoutError } from '../../../src/qmp/index.ts';
import { DEFAULT_GREETING, NO_REPLY } from '../../helpers/fake-qmp-server.ts';
import { rejection, settleIo, startPair, startServer } from './harness.ts';

interface Row {
  level: number;
  msg: string;
  [field: string]: unknown;
}

/** A pino logger at `level` (changeable later through `logger.level`) recording into `rows`. */
function recordingLogger(level = 'debug') {
  const rows: Row[] = [];
  const logger = pino({ level }, { write: (line: string) => rows.push(JSON.parse(line) as Row) });
  return { logger, rows };
}

const NO_OOB = { greeting: { QMP: { ...DEFAULT_GREETING.QMP, capabilities: [] } } };

afterEach(() => {
  vi.restoreAllMocks();
});

describe('execute refuses bad options before sending anything', () => {
  it.each([Number.NaN, -1, '5' as unknown as number])('a command timeout of %s is an InvalidArgumentError naming timeoutMs', async (timeoutMs) => {
    const { server, client } = await startPair();
    server.handle('query-status', () => ({ status: 'running' }));
    const error = await rejection(client.executeUntyped('query-status', undefined, { timeoutMs }), InvalidArgumentError);
    expect(error.argument).toBe('timeoutMs');
    await settleIo();
    expect(server.received.map((c) => c.execute)).toEqual(['qmp_capabilities']);
    expect(client.pendingCount).toBe(0);
  });

  it('an already aborted signal rejects naming the command', async () => {
    const { client } = await startPair();
    const controller = new AbortController();
    controller.abort();
    const error = await rejection(client.executeUntyped('query-status', undefined, { signal: controller.signal }), OperationAbortedError);
    expect(error.message).toContain('QMP command query-status');
  });

  it('an fd that is not open says which value it got', async () => {
    const { client } = await startPair();
    const error = await rejection(client.execute('getfd', { fdname: 'x' }, { fd: -1 }), InvalidArgumentError);
    expect(error.argument).toBe('fd');
    expect(error.message).toBe('invalid fd: must be an open file descriptor of this process (got -1)');
  });

  it('oob without the capability, or with an fd, names oob and the command', async () => {
    const plain = await startPair(NO_OOB);
    const refused = await rejection(plain.client.executeUntyped('yank', {}, { oob: true }), InvalidArgumentError);
    expect(refused.argument).toBe('oob');
    expect(refused.message).toBe('invalid oob: QEMU did not offer the oob capability, so yank cannot be sent out of band');
    const { client } = await startPair();
    const withFd = await rejection(client.execute('getfd', { fdname: 'x' }, { fd: 0, oob: true }), InvalidArgumentError);
    expect(withFd.argument).toBe('oob');
    expect(withFd.message).toBe('invalid oob: cannot be combined with fd (getfd)');
  });
});

describe('messages that are no reply to a waiting command', () => {
  it('a message with an unknown numeric id, or with no id, is ignored at warn, not taken as a bad reply', async () => {
    const { logger, rows } = recordingLogger();
    const { server, client } = await startPair({}, { logger });
    server.handle('ok', () => 'fine');
    server.sendLine(JSON.stringify({ id: 999, retrun: 1 }));
    server.sendLine(JSON.stringify({ hello: 'world' }));
    await expect(client.executeUntyped('ok')).resolves.toBe('fine');
    expect(rows.filter((r) => r.msg === 'ignoring a QMP message of unknown shape').map((r) => r['line'])).toEqual(['{"id":999,"retrun":1}', '{"hello":"world"}']);
    expect(rows.filter((r) => r.msg === 'a QMP reply has neither return nor error')).toEqual([]);
    expect(client.closed).toBe(false);
  });

  it('a late error reply to a command that timed out is dropped, not counted as an id-less error', async () => {
    const { logger, rows } = recordingLogger();
    const { server, client } = await startPair({}, { logger });
    server.handle('slow', () => NO_REPLY);
    const received = server.nextCommand('slow');
    const late = client.executeUntyped('slow', undefined, { timeoutMs: 1 });
    const { id } = await received;
    await rejection(late, QmpTimeoutError);
    const next = client.executeUntyped('slow', undefined, { timeoutMs: 50 });
    server.sendLine(JSON.stringify({ error: { class: 'GenericError', desc: 'too late' }, id }));
    const timedOut = await rejection(next, QmpTimeoutError);
    // Only an error QEMU could not attach to a command becomes a timed-out command's cause.
    expect(timedOut.cause).toBeUndefined();
    expect(rows.filter((r) => r.msg.startsWith('QEMU reported an error without an id'))).toEqual([]);
    expect(rows.find((r) => r.msg === 'dropping a QMP reply no command is waiting for')?.['line']).toContain('too late');
  });
});

describe('the debug log of a command', () => {
  it('gives its duration in milliseconds, from send to reply', async () => {
    const { logger, rows } = recordingLogger();
    const { server, client } = await startPair({}, { logger });
    server.handle('slow', () => NO_REPLY);
    let now = 1_000;
    vi.spyOn(performance, 'now').mockImplementation(() => now);
    const received = server.nextCommand('slow');
    const call = client.executeUntyped('slow');
    const { id } = await received;
    now = 1_250.5;
    server.sendLine(JSON.stringify({ return: {}, id }));
    await call;
    expect(rows.find((r) => r.msg === 'QMP command' && r['command'] === 'slow')).toMatchObject({ ms: 250.5, ok: true });
  });

  it('is not written for a command sent while debug was off (its start was not taken)', async () => {
    const { logger, rows } = recordingLogger('info');
    const { server, client } = await startPair({}, { logger });
    server.handle('slow', () => NO_REPLY);
    const received = server.nextCommand('slow');
    const call = client.executeUntyped('slow');
    const { id } = await received;
    logger.level = 'debug';
    server.sendLine(JSON.stringify({ return: {}, id }));
    await call;
    expect(rows.filter((r) => r.msg === 'QMP command')).toEqual([]);
  });
});

describe('a protocol error', () => {
  it('rejects what is pending with the parse error as cause, and says why the connection was dropped', async () => {
    const { server, client } = await startPair();
    server.handle('slow', () => NO_REPLY);
    const closed = new Promise<QmpDisconnectedError>((resolve) => client.onClose(resolve));
    const call = client.executeUntyped('slow');
    await server.nextCommand('slow');
    server.sendLine('not json');
    const error = await rejection(call, QmpProtocolError);
    expect(error.message).toBe('QEMU sent a line that is not JSON: not json');
    expect(error.cause).toBeInstanceOf(SyntaxError);
    const reason = await closed;
    expect(reason.message).toBe('the QMP connection was dropped: QEMU sent a line that is not JSON: not json');
    const later = await rejection(client.executeUntyped('slow'), QmpDisconnectedError);
    expect(later.message).toContain('the QMP connection was dropped: QEMU sent a line that is not JSON');
  });

  it('is reported once: nothing after it in the same chunk is read, neither lines nor an over-long line', async () => {
    const { logger, rows } = recordingLogger();
    const { server, client } = await startPair({}, { logger, maxLineBytes: 256 });
    const events: string[] = [];
    client.on('*', (event) => events.push(event.event));
    const closed = new Promise((resolve) => client.onClose(resolve));
    server.sendRaw(`not json\r\n${JSON.stringify({ event: 'STOP', timestamp: { seconds: 1, microseconds: 0 } })}\r\n${'x'.repeat(1000)}\r\n`);
    await closed;
    await settleIo();
    expect(events).toEqual([]);
    const errors = rows.filter((r) => r.msg === 'QMP protocol error: closing the connection');
    expect(errors).toHaveLength(1);
    expect((errors[0]?.['err'] as { message: string }).message).toMatch(/^QEMU sent a line that is not JSON: not json/);
  });
});

describe('connect', () => {
  it('leaves no listener on the caller\'s signal once connected', async () => {
    const server = await startServer();
    const signal = new AbortController().signal;
    const client = await QmpClient.connect(server.path, { signal, timeoutMs: 5_000 });
    try {
      expect(getEventListeners(signal, 'abort')).toHaveLength(0);
    } finally {
      await client.close();
    }
  });

  it('leaves no listener on the caller\'s signal when it fails', async () => {
    const server = await startServer({ greeting: null });
    const signal = new AbortController().signal;
    await rejection(QmpClient.connect(server.path, { signal, timeoutMs: 50 }), QmpConnectError);
    expect(getEventListeners(signal, 'abort')).toHaveLength(0);
  });

  it('a timeout\'s cause names the connect and its socket', async () => {
    const server = await startServer({ greeting: null });
    const error = await rejection(QmpClient.connect(server.path, { timeoutMs: 50 }), QmpConnectError);
    expect(error.cause).toBeInstanceOf(OperationTimeoutError);
    expect((error.cause as Error).message).toContain(`QMP connect to ${server.path}`);
  });

  it('an abort mid-connect names the connect and its socket', async () => {
    const server = await startServer({ greeting: null });
    const controller = new AbortController();
    const connecting = QmpClient.connect(server.path, { signal: controller.signal });
    await server.waitForClient();
    controller.abort();
    const error = await rejection(connecting, OperationAbortedError);
    expect(error.message).toContain(`QMP connect to ${server.path}`);
  });
});
