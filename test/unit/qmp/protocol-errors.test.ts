// A peer that breaks the protocol: the stream cannot be trusted any more, so the client fails what
// is pending with QmpProtocolError, drops the connection, and rejects later calls as disconnected.
import { describe, expect, it } from 'vitest';
import { QmpDisconnectedError, QmpProtocolError } from '../../../src/qmp/index.ts';
import { DEFAULT_GREETING, NO_REPLY, type FakeQmpServer } from '../../helpers/fake-qmp-server.ts';
import { rejection, settleIo, startPair } from './harness.ts';
import type { QmpClient } from '../../../src/qmp/index.ts';

/** A command left pending on the peer, whose id is known once the peer has it. */
async function pendingCommand(server: FakeQmpServer, client: QmpClient, name = 'slow'): Promise<{ call: Promise<unknown>; id: unknown }> {
  server.handle(name, () => NO_REPLY);
  const received = server.nextCommand(name);
  const call = client.executeUntyped(name);
  call.catch(() => {});
  return { call, id: (await received).id };
}

async function expectDropped(server: FakeQmpServer, client: QmpClient, call: Promise<unknown>): Promise<QmpProtocolError> {
  const error = await rejection(call, QmpProtocolError);
  expect(client.closed).toBe(true);
  await server.waitForNoClient();
  const later = await rejection(client.execute('query-status'), QmpDisconnectedError);
  expect(later.command).toBe('query-status');
  expect(later.cause).toBeInstanceOf(QmpDisconnectedError);
  expect((later.cause as QmpDisconnectedError).cause).toBe(error);
  return error;
}

describe('protocol violations', () => {
  // Each with the complaint it must raise: a check that went missing would surface as a TypeError
  // ("cannot read the QMP stream") and still be a QmpProtocolError.
  const garbage: Record<string, [line: string, complaint: string]> = {
    'a line that is not JSON': ['this is not json', 'QEMU sent a line that is not JSON: this is not json'],
    'random bytes': ['\u0000\u00ff\u0007}{][', 'QEMU sent a line that is not JSON: '],
    'truncated JSON': ['{"return": {"status": "runn', 'QEMU sent a line that is not JSON: {"return": {"status": "runn'],
    'a JSON number': ['42', 'QEMU sent a line that is not a JSON object: 42'],
    'a JSON string': ['"hello"', 'QEMU sent a line that is not a JSON object: "hello"'],
    'a JSON array': ['[{"return": {}}]', 'QEMU sent a line that is not a JSON object: [{"return": {}}]'],
    'JSON null': ['null', 'QEMU sent a line that is not a JSON object: null'],
  };
  for (const [name, [line, complaint]] of Object.entries(garbage)) {
    it(`${name}: pending commands fail with QmpProtocolError and the connection is dropped`, async () => {
      const { server, client } = await startPair();
      const { call } = await pendingCommand(server, client);
      server.sendLine(line);
      const error = await expectDropped(server, client, call);
      expect(error.code).toBe('QMP_PROTOCOL');
      expect(error.message).toContain(complaint);
    });
  }

  it('a line longer than 200 characters is quoted cut to its first 200', async () => {
    const { server, client } = await startPair();
    const { call } = await pendingCommand(server, client);
    const line = `${'a'.repeat(200)}${'b'.repeat(50)}`;
    server.sendLine(line);
    const error = await expectDropped(server, client, call);
    expect(error.message).toBe(`QEMU sent a line that is not JSON: ${'a'.repeat(200)}…`);
  });

  it('a line of exactly 200 characters is quoted whole', async () => {
    const { server, client } = await startPair();
    const { call } = await pendingCommand(server, client);
    server.sendLine('a'.repeat(200));
    const error = await expectDropped(server, client, call);
    expect(error.message).toBe(`QEMU sent a line that is not JSON: ${'a'.repeat(200)}`);
  });

  it('the lines after a bad one in the same chunk are not processed', async () => {
    const { server, client } = await startPair();
    const { call, id } = await pendingCommand(server, client);
    const events: string[] = [];
    client.on('*', (e) => events.push(e.event));
    const chunk = ['not json', JSON.stringify({ event: 'RESUME', timestamp: { seconds: 1, microseconds: 0 } }), JSON.stringify({ return: 'late', id })].join('\r\n');
    server.sendRaw(`${chunk}\r\n`);
    await expectDropped(server, client, call);
    expect(events).toEqual([]);
  });

  it('a second greeting is a protocol error', async () => {
    const { server, client } = await startPair();
    const { call } = await pendingCommand(server, client);
    server.sendLine(JSON.stringify(DEFAULT_GREETING));
    const error = await expectDropped(server, client, call);
    expect(error.message).toContain('QEMU sent a second greeting');
  });

  it('a line over maxLineBytes is a protocol error, even without its newline', async () => {
    const { server, client } = await startPair({}, { maxLineBytes: 1024 });
    const { call } = await pendingCommand(server, client);
    server.sendRaw(`{"return": "${'x'.repeat(4096)}`);
    const error = await expectDropped(server, client, call);
    expect(error.message).toContain('1024');
  });

  it('a line of exactly maxLineBytes is fine', async () => {
    const { server, client } = await startPair({}, { maxLineBytes: 1024 });
    const { call, id } = await pendingCommand(server, client);
    const prefix = JSON.stringify({ id, return: '' }).slice(0, -2);
    const line = `${prefix}${'x'.repeat(1024 - prefix.length - 2)}"}`;
    expect(Buffer.byteLength(line)).toBe(1024);
    server.sendLine(line);
    expect(await call).toHaveLength(1024 - prefix.length - 2);
  });

  it('the default cap is 10 MiB, as in qemu.qmp and libvirt: a reply of exactly that is read, one byte more is not', async () => {
    const TEN_MIB = 10 * 1024 * 1024;
    const { server, client } = await startPair();
    const fits = await pendingCommand(server, client, 'fits');
    const prefix = JSON.stringify({ id: fits.id, return: '' }).slice(0, -2);
    const payload = (bytes: number) => 'x'.repeat(bytes - prefix.length - 2);
    server.sendLine(`${prefix}${payload(TEN_MIB)}"}`);
    expect(await fits.call).toHaveLength(TEN_MIB - prefix.length - 2);
    const over = await pendingCommand(server, client, 'over');
    server.sendLine(`${JSON.stringify({ id: over.id, return: '' }).slice(0, -2)}${payload(TEN_MIB + 1)}"}`);
    const error = await expectDropped(server, client, over.call);
    expect(error.message).toContain(String(TEN_MIB));
  });

  it('the messages before the bad line in the same chunk are still delivered', async () => {
    const { server, client } = await startPair({}, { maxLineBytes: 1024 });
    const first = await pendingCommand(server, client, 'first');
    const second = await pendingCommand(server, client, 'second');
    const events: string[] = [];
    client.on('*', (e) => events.push(e.event));
    const chunk = [
      JSON.stringify({ event: 'STOP', timestamp: { seconds: 1, microseconds: 0 } }),
      JSON.stringify({ return: { ok: 1 }, id: first.id }),
      'x'.repeat(2048),
      JSON.stringify({ return: { ok: 2 }, id: second.id }),
      JSON.stringify({ event: 'RESUME', timestamp: { seconds: 1, microseconds: 0 } }),
    ].join('\r\n');
    server.sendRaw(`${chunk}\r\n`);
    expect(await first.call).toEqual({ ok: 1 });
    await expectDropped(server, client, second.call);
    expect(events).toEqual(['STOP']);
  });

  it('an incomplete last line when the peer hangs up is a disconnect, not a protocol error', async () => {
    const { server, client } = await startPair();
    const { call } = await pendingCommand(server, client);
    server.sendRaw('{"return": {}, "id"');
    await settleIo();
    server.endClients();
    const error = await rejection(call, QmpDisconnectedError);
    expect(error.command).toBe('slow');
  });

  it('objects of unknown shape are ignored', async () => {
    const { server, client } = await startPair();
    const { call, id } = await pendingCommand(server, client);
    server.sendLine(JSON.stringify({ hello: 'world' }));
    server.sendLine(JSON.stringify({ event: 42 }));
    // Ids no command waits for: a number that was never sent, and ids of other types.
    server.sendLine(JSON.stringify({ id: 999 }));
    server.sendLine(JSON.stringify({ id: String(id) }));
    server.sendLine(JSON.stringify({ id: [id] }));
    server.sendLine(JSON.stringify({ return: 'done', id }));
    expect(await call).toBe('done');
    expect(client.closed).toBe(false);
  });

  it('a reply with a known id but neither return nor error fails that command at once, and the connection stays', async () => {
    const { server, client } = await startPair({}, { commandTimeoutMs: Infinity });
    const bad = await pendingCommand(server, client, 'bad');
    const other = await pendingCommand(server, client, 'other');
    server.sendLine(JSON.stringify({ id: bad.id, retrun: {} }));
    const error = await rejection(bad.call, QmpProtocolError);
    expect(error.code).toBe('QMP_PROTOCOL');
    expect(error.message).toContain('bad');
    expect(error.message).toContain('neither return nor error');
    expect(client.closed).toBe(false);
    expect(client.pendingCount).toBe(1);
    // A late proper reply to the failed command is dropped; the other command still gets its own.
    server.sendLine(JSON.stringify({ id: bad.id, return: 'late' }));
    server.sendLine(JSON.stringify({ id: other.id, return: 'fine' }));
    expect(await other.call).toBe('fine');
    server.handle('next', () => 'next');
    expect(await client.executeUntyped('next')).toBe('next');
  });
});
