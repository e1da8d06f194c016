// The async iterator's buffer is bounded in bytes as well as in events: a consumer that falls
// behind while QEMU sends large events (each line may be 4 MiB) cannot grow memory past the
// budget. The oldest events go first; the first drop is logged once, at warn.
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError } from '../../../src/errors.ts';
import { MAX_BUFFERED_EVENT_BYTES, type QmpEvent } from '../../../src/qmp/index.ts';
import type { FakeQmpServer } from '../../helpers/fake-qmp-server.ts';
import { startPair } from './harness.ts';

/** A logger whose records (at warn and above) land in `records`. */
function capturingLogger() {
  const records: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      records.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
      done();
    },
  });
  return { logger: pino({ level: 'warn' }, stream), records };
}

/** The line the fake server sends for this event, and its size in bytes. */
function eventLine(name: string, data: Record<string, unknown>): { line: string; bytes: number } {
  const line = JSON.stringify({ event: name, data, timestamp: { seconds: 1, microseconds: 2 } });
  return { line, bytes: Buffer.byteLength(line) };
}

/** Sends the events, then waits until the client has read them all (a reply comes after them). */
async function sendAll(server: FakeQmpServer, client: { execute(command: string): Promise<unknown> }, lines: readonly string[]): Promise<void> {
  server.handle('sync', () => ({}));
  for (const line of lines) server.sendLine(line);
  await client.execute('sync');
}

/** Whatever the iterator holds, without waiting for more. */
async function drain(iterator: AsyncGenerator<QmpEvent, void, undefined>, count: number): Promise<QmpEvent[]> {
  const events: QmpEvent[] = [];
  for (let i = 0; i < count; i++) {
    const step = await iterator.next();
    if (step.done) break;
    events.push(step.value);
  }
  return events;
}

describe('the events() buffer', () => {
  it('keeps at most 16 MiB of unconsumed events by default, dropping the oldest', async () => {
    const { server, client } = await startPair();
    const iterator = client.events();
    const payload = 'x'.repeat(2 * 1024 * 1024);
    const lines = Array.from({ length: 10 }, (_, n) => eventLine('BIG', { n, payload }));
    await sendAll(
      server,
      client,
      lines.map((l) => l.line),
    );
    // The newest events whose lines fit in the budget together.
    let kept = 0;
    let bytes = 0;
    for (const { bytes: size } of [...lines].reverse()) {
      if (bytes + size > MAX_BUFFERED_EVENT_BYTES) break;
      bytes += size;
      kept++;
    }
    expect(kept).toBe(7);
    server.endClients();
    const events = await drain(iterator, 100);
    expect(events.map((e) => e.data['n'])).toEqual([3, 4, 5, 6, 7, 8, 9]);
  });

  it('counts the bytes of each line (UTF-8), to the byte', async () => {
    const a = eventLine('A', { s: 'é€😀'.repeat(50) });
    const b = eventLine('B', { s: 'é€😀'.repeat(50) });
    expect(a.bytes).toBeGreaterThan(a.line.length);
    for (const [budget, expected] of [
      [a.bytes + b.bytes, ['A', 'B']],
      [a.bytes + b.bytes - 1, ['B']],
    ] as const) {
      const { server, client } = await startPair();
      const iterator = client.events({ maxBufferedBytes: budget });
      await sendAll(server, client, [a.line, b.line]);
      server.endClients();
      expect((await drain(iterator, 10)).map((e) => e.event)).toEqual(expected);
    }
  });

  it('logs the first drop once, at warn, with how many were dropped and the budgets', async () => {
    const { logger, records } = capturingLogger();
    const { server, client } = await startPair({}, { logger });
    const iterator = client.events({ maxBufferedBytes: 1_000 });
    const lines = Array.from({ length: 20 }, (_, n) => eventLine('E', { n, pad: 'p'.repeat(200) }));
    await sendAll(
      server,
      client,
      lines.map((l) => l.line),
    );
    const warnings = records.filter((r) => r['msg'] === 'QMP event iterator is not consumed: dropping the oldest events');
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({ level: 40, dropped: 1, maxBytes: 1_000, maxEvents: 10_000 });
    const perLine = lines[0]?.bytes ?? 0;
    const fit = Math.floor(1_000 / perLine);
    server.endClients();
    const events = await drain(iterator, 100);
    expect(events.map((e) => e.data['n'])).toEqual(Array.from({ length: fit }, (_, i) => 20 - fit + i));
  });

  it('keeps the newest event even when it alone is over the budget', async () => {
    const { server, client } = await startPair();
    const iterator = client.events({ maxBufferedBytes: 100 });
    await sendAll(server, client, [eventLine('SMALL', {}).line, eventLine('LARGE', { pad: 'p'.repeat(500) }).line]);
    server.endClients();
    expect((await drain(iterator, 10)).map((e) => e.event)).toEqual(['LARGE']);
  });

  it('still caps the count', async () => {
    const { server, client } = await startPair();
    const iterator = client.events({ maxBufferedEvents: 3 });
    await sendAll(
      server,
      client,
      ['A', 'B', 'C', 'D', 'E'].map((name) => eventLine(name, {}).line),
    );
    server.endClients();
    expect((await drain(iterator, 10)).map((e) => e.event)).toEqual(['C', 'D', 'E']);
  });

  it('frees the budget as events are consumed', async () => {
    const { server, client } = await startPair();
    const pad = 'p'.repeat(3_000);
    const line = (name: string) => eventLine(name, { pad });
    // Three such lines fit in the budget, four do not.
    const budget = line('A').bytes * 3 + 10;
    const iterator = client.events({ maxBufferedBytes: budget });
    await sendAll(
      server,
      client,
      ['A', 'B', 'C'].map((name) => line(name).line),
    );
    expect((await drain(iterator, 2)).map((e) => e.event)).toEqual(['A', 'B']);
    await sendAll(
      server,
      client,
      ['D', 'E'].map((name) => line(name).line),
    );
    server.endClients();
    expect((await drain(iterator, 10)).map((e) => e.event)).toEqual(['C', 'D', 'E']);
  });

  it('does not count events handed straight to a waiting consumer', async () => {
    const { server, client } = await startPair();
    const iterator = client.events({ maxBufferedBytes: 100 });
    const names: string[] = [];
    const consumed = (async () => {
      for await (const event of iterator) names.push(event.event);
    })();
    for (const name of ['A', 'B', 'C']) {
      const next = client.waitForEvent(name, undefined, { timeoutMs: 5_000 });
      server.sendLine(eventLine(name, { pad: 'p'.repeat(300) }).line);
      await next;
    }
    server.endClients();
    await consumed;
    expect(names).toEqual(['A', 'B', 'C']);
  });

  it('counts every event it dropped in droppedCount', async () => {
    const { server, client } = await startPair();
    const events = client.events({ maxBufferedEvents: 1 }) as AsyncGenerator<QmpEvent, void, undefined> & { droppedCount: number };
    expect(events.droppedCount).toBe(0);
    for (const name of ['A', 'B', 'C']) server.sendEvent(name);
    server.handle('query-status', () => ({}));
    await client.execute('query-status');
    expect(events.droppedCount).toBe(2);
    expect((await events.next()).value).toMatchObject({ event: 'C' });
    await events.return();
  });

  it('refuses a budget that is not a positive integer', async () => {
    const { client } = await startPair();
    for (const options of [{ maxBufferedBytes: 0 }, { maxBufferedBytes: NaN }, { maxBufferedEvents: 1.5 }, { maxBufferedEvents: -1 }]) {
      expect(() => client.events(options)).toThrow(InvalidArgumentError);
    }
    // Each names its option and what it got; 1 is the smallest budget there is.
    const cases: [options: object, argument: string, got: string][] = [
      [{ maxBufferedBytes: 0 }, 'maxBufferedBytes', 'not 0'],
      [{ maxBufferedEvents: 1.5 }, 'maxBufferedEvents', 'not 1.5'],
      [{ maxBufferedEvents: '10' }, 'maxBufferedEvents', 'not string'],
    ];
    for (const [options, argument, got] of cases) {
      expect(() => client.events(options)).toThrow(expect.objectContaining({ argument }));
      expect(() => client.events(options)).toThrow(`must be a positive integer (Infinity for no cap), ${got}`);
    }
    const smallest = client.events({ maxBufferedEvents: 1, maxBufferedBytes: 1 });
    await smallest.return();
    const uncapped = client.events({ maxBufferedBytes: Infinity });
    await uncapped.return();
  });
});
