// What the client tells its logger: each command at debug with its outcome, the greeting, the
// messages it drops or ignores, and the listener bugs it survives (at warn, never thrown).
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { NO_REPLY } from '../../helpers/fake-qmp-server.ts';
import { rejection, startPair } from './harness.ts';
import { QmpProtocolError } from '../../../src/qmp/index.ts';

interface Row {
  level: number;
  msg: string;
  [field: string]: unknown;
}

const DEBUG = 20;
const WARN = 40;
const ERROR = 50;

/** A logger at `level` whose records land in `rows`, synchronously. */
function recordingLogger(level = 'debug') {
  const rows: Row[] = [];
  const logger = pino({ level }, { write: (line: string) => rows.push(JSON.parse(line) as Row) });
  return { logger, rows };
}

describe('QMP client logging', () => {
  it('logs the greeting, and each command at debug with its duration and outcome', async () => {
    const { logger, rows } = recordingLogger();
    const { server, client } = await startPair({}, { logger });
    server.handle('ok', () => ({}));
    await client.executeUntyped('ok');
    await rejection(client.executeUntyped('missing'), Error);
    expect(rows.find((r) => r.msg === 'QMP greeting')).toMatchObject({ level: DEBUG, version: { major: 7, minor: 2, micro: 22 }, capabilities: ['oob'] });
    const commands = rows.filter((r) => r.msg === 'QMP command');
    expect(commands.map(({ command, ok, error }) => ({ command, ok, error }))).toEqual([
      { command: 'qmp_capabilities', ok: true, error: undefined },
      { command: 'ok', ok: true, error: undefined },
      { command: 'missing', ok: false, error: 'QMP command missing failed: The command missing has not been found (CommandNotFound)' },
    ]);
    for (const row of commands) {
      expect(row.level).toBe(DEBUG);
      expect(typeof row['ms']).toBe('number');
      expect(row['ms']).toBeGreaterThanOrEqual(0);
    }
  });

  it('logs no command record when debug is off', async () => {
    const { logger, rows } = recordingLogger('info');
    const { server, client } = await startPair({}, { logger });
    server.handle('ok', () => ({}));
    await client.executeUntyped('ok');
    expect(rows).toEqual([]);
  });

  it('logs a dropped reply at debug and a message of unknown shape at warn, with the line', async () => {
    const { logger, rows } = recordingLogger();
    const { server, client } = await startPair({}, { logger });
    server.sendLine(JSON.stringify({ return: 'late', id: 999 }));
    server.sendLine(JSON.stringify({ hello: 'world' }));
    server.handle('ok', () => ({}));
    await client.executeUntyped('ok');
    expect(rows.find((r) => r.msg === 'dropping a QMP reply no command is waiting for')).toMatchObject({ level: DEBUG, line: '{"return":"late","id":999}' });
    expect(rows.find((r) => r.msg === 'ignoring a QMP message of unknown shape')).toMatchObject({ level: WARN, line: '{"hello":"world"}' });
  });

  it('logs a reply with neither return nor error at warn, naming the command', async () => {
    const { logger, rows } = recordingLogger();
    const { server, client } = await startPair({}, { logger });
    server.handle('bad', () => NO_REPLY);
    const received = server.nextCommand('bad');
    const call = client.executeUntyped('bad');
    const { id } = await received;
    server.sendLine(JSON.stringify({ id, retrun: 1 }));
    await rejection(call, QmpProtocolError);
    expect(rows.find((r) => r.msg === 'a QMP reply has neither return nor error')).toMatchObject({ level: WARN, command: 'bad', line: `{"id":${String(id)},"retrun":1}` });
  });

  it('logs a protocol error at error before dropping the connection', async () => {
    const { logger, rows } = recordingLogger();
    const { server, client } = await startPair({}, { logger });
    const closed = new Promise((resolve) => client.onClose(resolve));
    server.sendLine('not json');
    await closed;
    const row = rows.find((r) => r.msg === 'QMP protocol error: closing the connection');
    expect(row).toMatchObject({ level: ERROR, err: { message: expect.stringMatching(/^QEMU sent a line that is not JSON: not json/) as unknown } });
  });

  it('logs at warn, and survives, an event listener, an event predicate and a close listener that throw', async () => {
    const { logger, rows } = recordingLogger();
    const { server, client } = await startPair({}, { logger });
    const seen: string[] = [];
    client.on('STOP', () => {
      throw new Error('listener bug');
    });
    client.on('STOP', (e) => seen.push(e.event));
    const waited = client.waitForEvent('STOP', (e) => {
      if (e.data['n'] === 1) throw new Error('predicate bug');
      return true;
    });
    client.onClose(() => {
      throw new Error('close listener bug');
    });
    server.sendEvent('STOP', { n: 1 });
    server.sendEvent('STOP', { n: 2 });
    expect((await waited).data).toEqual({ n: 2 });
    expect(seen).toEqual(['STOP', 'STOP']);
    await client.close();
    const warned = rows.filter((r) => r.level === WARN).map((r) => ({ msg: r.msg, err: (r['err'] as { message: string }).message, event: r['event'] }));
    expect(warned).toEqual([
      { msg: 'a QMP event listener threw', err: 'listener bug', event: 'STOP' },
      { msg: 'a QMP event predicate threw', err: 'predicate bug', event: 'STOP' },
      { msg: 'a QMP event listener threw', err: 'listener bug', event: 'STOP' },
      { msg: 'a QMP close listener threw', err: 'close listener bug', event: undefined },
    ]);
  });
});
