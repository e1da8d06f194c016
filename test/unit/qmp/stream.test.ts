// The client reading a real socket: whatever way the peer's bytes are cut into reads, the client
// must see the same messages (greeting, events, replies) in the same order.
import { describe, expect, it } from 'vitest';
import { QmpClient, QmpCommandError, type QmpEvent } from '../../../src/qmp/index.ts';
import { DEFAULT_GREETING, NO_REPLY, type FakeQmpServer } from '../../helpers/fake-qmp-server.ts';
import { rejection, startPair, startServer } from './harness.ts';

type Chunking = (bytes: Buffer) => Buffer[];

const wholeChunk: Chunking = (bytes) => [bytes];
const bytePerChunk: Chunking = (bytes) => [...bytes].map((byte) => Buffer.from([byte]));
const cutAt =
  (position: number): Chunking =>
  (bytes) => [bytes.subarray(0, position), bytes.subarray(position)].filter((chunk) => chunk.length > 0);

const NAME_WITH_MULTIBYTE = 'vm-é€😀';

function event(name: string, data: Record<string, unknown>): string {
  return JSON.stringify({ timestamp: { seconds: 10, microseconds: 20 }, event: name, data });
}

/** Three commands in flight; the peer answers them out of order, with events in between and first. */
function transcript(ids: { status: unknown; name: unknown; del: unknown }, eol: string): Buffer {
  const lines = [
    event('STOP', {}),
    JSON.stringify({ return: { name: NAME_WITH_MULTIBYTE }, id: ids.name }),
    event('DEVICE_DELETED', { device: 'x', path: '/machine/peripheral/x' }),
    JSON.stringify({ return: { status: 'paused', running: false }, id: ids.status }),
    JSON.stringify({ error: { class: 'DeviceNotFound', desc: "Device 'x' not found" }, id: ids.del }),
  ];
  return Buffer.from(lines.map((line) => `${line}${eol}`).join(''), 'utf8');
}

/** Sends three commands, lets the peer answer through `chunking`, and checks what the client saw. */
async function exchange(server: FakeQmpServer, client: QmpClient, chunking: Chunking, eol: string, label: string): Promise<void> {
  for (const command of ['query-status', 'query-name', 'device_del']) server.handle(command, () => NO_REPLY);
  const seen: QmpEvent[] = [];
  const unsubscribe = client.on('*', (e) => seen.push(e));
  const stopped = client.waitForEvent('STOP', undefined, { timeoutMs: 5_000 });
  const received = Promise.all([server.nextCommand('query-status'), server.nextCommand('query-name'), server.nextCommand('device_del')]);
  const status = client.execute('query-status');
  const name = client.executeUntyped('query-name');
  const delError = rejection(client.execute('device_del', { id: 'x' }), QmpCommandError);
  const [s, n, d] = await received;
  await server.sendChunks(chunking(transcript({ status: s.id, name: n.id, del: d.id }, eol)));
  expect(await status, label).toEqual({ status: 'paused', running: false });
  expect(await name, label).toEqual({ name: NAME_WITH_MULTIBYTE });
  expect((await delError).errorClass, label).toBe('DeviceNotFound');
  expect((await stopped).event, label).toBe('STOP');
  expect(
    seen.map((e) => e.event),
    label,
  ).toEqual(['STOP', 'DEVICE_DELETED']);
  expect(seen[1]?.data, label).toEqual({ device: 'x', path: '/machine/peripheral/x' });
  expect(seen[1]?.timestamp, label).toEqual({ seconds: 10, microseconds: 20 });
  unsubscribe();
}

describe('QMP client framing over a socket', () => {
  for (const eol of ['\r\n', '\n']) {
    const eolName = JSON.stringify(eol);

    it(`reads several messages sent in one chunk (${eolName})`, async () => {
      const { server, client } = await startPair({ eol });
      await exchange(server, client, wholeChunk, eol, 'one chunk');
    });

    it(`reads a transcript sent one byte per write (${eolName})`, async () => {
      const { server, client } = await startPair({ eol });
      await exchange(server, client, bytePerChunk, eol, 'one byte per write');
    });

    it(`reads a transcript cut in two at every position (${eolName})`, async () => {
      const { server, client } = await startPair({ eol });
      // Each exchange uses three fresh ids: from id 1000 on (until 9999) they all have four digits,
      // so every transcript has the same length and every cut position is tried.
      server.handle('noop', () => ({}));
      await Promise.all(Array.from({ length: 998 }, () => client.executeUntyped('noop')));
      const length = transcript({ status: 1000, name: 1001, del: 1002 }, eol).length;
      for (let cut = 1; cut < length; cut++) {
        await exchange(server, client, cutAt(cut), eol, `cut at byte ${cut}`);
      }
    });
  }

  it('reads a greeting cut at every position, and one sent a byte per write', async () => {
    const greeting = Buffer.from(`${JSON.stringify(DEFAULT_GREETING)}\r\n`);
    const server = await startServer({ greeting: null });
    const chunkings = [bytePerChunk, ...Array.from({ length: greeting.length - 1 }, (_, i) => cutAt(i + 1))];
    for (const chunking of chunkings) {
      const connecting = QmpClient.connect(server.path, { timeoutMs: 5_000 });
      await server.waitForClient();
      await server.sendChunks(chunking(greeting));
      const client = await connecting;
      expect(client.greeting.version.qemu).toEqual({ major: 7, minor: 2, micro: 22 });
      await client.close();
      await server.waitForNoClient();
    }
  });

  it('accepts events before the greeting and before the capabilities reply', async () => {
    const server = await startServer({ greeting: null });
    server.handle('qmp_capabilities', () => {
      server.sendEvent('RESUME');
      return {};
    });
    const connecting = QmpClient.connect(server.path, { timeoutMs: 5_000 });
    await server.waitForClient();
    server.sendLine(event('RTC_CHANGE', { offset: 1 }));
    server.sendLine(JSON.stringify(DEFAULT_GREETING));
    const client = await connecting;
    server.handle('query-status', () => ({ status: 'running', running: true }));
    expect(await client.execute('query-status')).toEqual({ status: 'running', running: true });
    await client.close();
  });
});
