// Error replies without an id: QEMU sends them for input it cannot parse, before it could read the
// command's id (one over-deep argument gave 1,031 of them). No command can be blamed, so each is
// logged at warn with its desc, and a command written before it that then times out carries the
// latest one as its cause.
import { closeSync, openSync } from 'node:fs';
import type { Socket } from 'node:net';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { QmpCommandError, QmpTimeoutError, type FdSender } from '../../../src/qmp/index.ts';
import { NO_REPLY, type FakeQmpServer } from '../../helpers/fake-qmp-server.ts';
import { rejection, startPair } from './harness.ts';

interface Row {
  level: number;
  msg: string;
  [field: string]: unknown;
}

const WARN = 40;

/** A logger at debug whose records land in `rows`, synchronously. */
function recordingLogger() {
  const rows: Row[] = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => rows.push(JSON.parse(line) as Row) });
  return { logger, rows };
}

function idlessError(server: FakeQmpServer, desc: string, errorClass = 'GenericError'): void {
  server.sendLine(JSON.stringify({ error: { class: errorClass, desc } }));
}

/** Resolves once the client has logged `count` id-less errors. */
async function seenIdless(rows: Row[], count: number): Promise<Row[]> {
  const idless = () => rows.filter((r) => r.msg.includes('without an id'));
  await expect.poll(() => idless().length).toBe(count);
  return idless();
}

describe('error replies without an id', () => {
  it('are logged at warn with their desc and class, and fail no pending command', async () => {
    const { logger, rows } = recordingLogger();
    const { server, client } = await startPair({}, { logger, commandTimeoutMs: Infinity });
    server.handle('slow', () => NO_REPLY);
    const received = server.nextCommand('slow');
    const slow = client.executeUntyped('slow');
    const { id } = await received;
    idlessError(server, 'JSON parse error, missing value');
    idlessError(server, 'JSON parse error, nesting too deep', 'CommandNotFound');
    const [first, second] = await seenIdless(rows, 2);
    expect(first).toMatchObject({ level: WARN, desc: 'JSON parse error, missing value', errorClass: 'GenericError' });
    expect(second).toMatchObject({ level: WARN, desc: 'JSON parse error, nesting too deep', errorClass: 'CommandNotFound' });
    expect(client.pendingCount).toBe(1);
    expect(client.closed).toBe(false);
    server.sendLine(JSON.stringify({ return: 'ok', id }));
    expect(await slow).toBe('ok');
  });

  it('an id-less success is not warned about', async () => {
    const { logger, rows } = recordingLogger();
    const { server, client } = await startPair({}, { logger });
    server.sendLine(JSON.stringify({ return: {} }));
    server.handle('ping', () => 'pong');
    expect(await client.executeUntyped('ping')).toBe('pong');
    expect(rows.filter((r) => r.level >= WARN)).toEqual([]);
  });

  it('the latest one since a command was written is the cause of its timeout', async () => {
    const { logger, rows } = recordingLogger();
    const { server, client } = await startPair({}, { logger });
    server.handle('stuck', () => NO_REPLY);
    const received = server.nextCommand('stuck');
    const stuck = client.executeUntyped('stuck', undefined, { timeoutMs: 300 });
    await received;
    idlessError(server, 'first parse error');
    idlessError(server, 'latest parse error', 'CommandNotFound');
    await seenIdless(rows, 2);
    const error = await rejection(stuck, QmpTimeoutError);
    expect(error.cause).toBeInstanceOf(QmpCommandError);
    expect(error.cause).toMatchObject({ desc: 'latest parse error', errorClass: 'CommandNotFound', command: '(no id)' });
    expect(error.message).toContain('latest parse error');
  });

  it('one that came before a command was written is not its cause', async () => {
    const { logger, rows } = recordingLogger();
    const { server, client } = await startPair({}, { logger });
    idlessError(server, 'an older parse error');
    await seenIdless(rows, 1);
    server.handle('stuck', () => NO_REPLY);
    const error = await rejection(client.executeUntyped('stuck', undefined, { timeoutMs: 50 }), QmpTimeoutError);
    expect(error.cause).toBeUndefined();
    expect(error.message).not.toContain('parse error');
  });

  it('a command held in the outbox behind a command with an fd counts from when it is written, not called', async () => {
    const { logger, rows } = recordingLogger();
    let write: () => void = () => {};
    const sender: FdSender = {
      send: (socket: Socket, message: string) => new Promise<void>((resolve) => (write = () => socket.write(message, () => resolve()))),
    };
    const { server, client } = await startPair({}, { logger, fdSender: sender });
    server.handle('getfd', () => ({}));
    server.handle('stuck', () => NO_REPLY);
    const fd = openSync('/dev/null', 'r');
    try {
      const getfd = client.execute('getfd', { fdname: 'x' }, { fd });
      const stuck = client.executeUntyped('stuck', undefined, { timeoutMs: 1_500 });
      stuck.catch(() => {});
      // Arrives while `stuck` waits in the outbox: it cannot be about `stuck`.
      idlessError(server, 'before stuck was written');
      await seenIdless(rows, 1);
      const written = server.nextCommand('stuck');
      write();
      await getfd;
      await written;
      const error = await rejection(stuck, QmpTimeoutError);
      expect(error.cause).toBeUndefined();
    } finally {
      closeSync(fd);
    }
  });
});
