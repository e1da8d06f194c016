// Fuzzing the client with a hostile peer: random and malformed frames (random bytes, truncated JSON,
// replies with random or unknown ids, events, huge lines), random splits of what it sends, and
// random hang-ups, against a client that sends commands with random timeouts and cancellations.
// Whatever happens: nothing crashes, no rejection goes unhandled, every call settles (at the latest
// when the client is closed), every rejection is one of our typed errors, and whatever the client
// does report (a reply value, a command error, an event) is what the peer really sent.
//
// Seeded: QMP_FUZZ_SEED=<n> replays a run's random choices (the seed is printed on failure; how the
// kernel cuts the socket's reads may still differ); QMP_FUZZ_ITERATIONS changes its length.
import { setImmediate as nextTurn } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isSandboxVmmError } from '../../../src/errors.ts';
import { QmpClient, QmpCommandError, type ArmedEvent, type QmpEvent } from '../../../src/qmp/index.ts';
import { DEFAULT_GREETING, FakeQmpServer, NO_REPLY, type ReceivedCommand } from '../../helpers/fake-qmp-server.ts';
import { QMP_ERROR_CODES, track, type Outcome } from './harness.ts';
import { seededRandom } from '../../helpers/random.ts';

const SEED = Number(process.env['QMP_FUZZ_SEED'] ?? Math.floor(Math.random() * 2 ** 32));
const ITERATIONS = Number(process.env['QMP_FUZZ_ITERATIONS'] ?? 4000);
const MAX_LINE_BYTES = 2048;
const COMMANDS = ['query-status', 'stop', 'cont', 'device_del', 'x-fuzz'];
const EVENTS = ['STOP', 'RESUME', 'DEVICE_DELETED', 'SHUTDOWN'];
const ERROR_CLASSES = ['GenericError', 'CommandNotFound', 'DeviceNotFound', 'KVMMissingCap'];
/** Far beyond the ids a client reaches in one round. */
const NEVER_ISSUED = 1_000_000;


class Dice {
  constructor(readonly random: () => number) {}
  int(min: number, max: number): number {
    return min + Math.floor(this.random() * (max - min + 1));
  }
  chance(p: number): boolean {
    return this.random() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.random() * items.length)] as T;
  }
  bytes(length: number): Buffer {
    return Buffer.from(Array.from({ length }, () => this.int(0, 255)));
  }
}

type Reply = { kind: 'return'; value: unknown } | { kind: 'error'; errorClass: string };

interface Call {
  tag: number;
  command: string;
  outcome: { current: Outcome<unknown> };
}

/** One connection's worth of fuzzing: the peer's script and what it sent, the client's calls. */
class Round {
  readonly #dice: Dice;
  readonly #server: FakeQmpServer;
  /** Commands the peer received and may answer. */
  readonly inbox: ReceivedCommand[] = [];
  /** The first reply the peer sent for each id after receiving that command. */
  readonly replies = new Map<unknown, Reply>();
  readonly #receivedByTag = new Map<unknown, ReceivedCommand>();
  readonly #receivedIds = new Set<unknown>();
  readonly sentEventSeqs = new Set<number>();
  readonly calls: Call[] = [];
  readonly waits: { current: Outcome<QmpEvent> }[] = [];
  readonly seenEventSeqs: number[] = [];
  #outbox: Buffer[] = [];
  #nextValue = 0;
  #nextEventSeq = 0;
  #nextTag = 0;
  #hungUp = false;

  constructor(dice: Dice, server: FakeQmpServer) {
    this.#dice = dice;
    this.#server = server;
  }

  // ---------------------------------------------------------------- the peer

  queue(text: string | Buffer): void {
    this.#outbox.push(typeof text === 'string' ? Buffer.from(text) : text);
  }

  line(message: unknown, eol = this.#dice.chance(0.8) ? '\r\n' : '\n'): void {
    this.queue(`${typeof message === 'string' ? message : JSON.stringify(message)}${eol}`);
  }

  /** Sends what is queued as one stream cut at random places, each piece read on its own. */
  async flush(): Promise<void> {
    if (this.#outbox.length === 0 || this.#hungUp) return;
    const stream = Buffer.concat(this.#outbox);
    this.#outbox = [];
    const cuts = Array.from({ length: this.#dice.int(0, 5) }, () => this.#dice.int(1, Math.max(1, stream.length - 1))).sort((a, b) => a - b);
    const chunks: Buffer[] = [];
    let start = 0;
    for (const cut of [...cuts, stream.length]) {
      if (cut > start) chunks.push(stream.subarray(start, cut));
      start = Math.max(start, cut);
    }
    if (this.#dice.chance(0.5)) await this.#server.sendChunks(chunks);
    else this.#server.sendRaw(stream);
  }

  reply(command: ReceivedCommand, reply: Reply): void {
    this.#sendReply(command.id, reply);
  }

  /** Any reply, to any id: it counts as the answer when the peer did get a command with that id. */
  #sendReply(id: unknown, reply: Reply): void {
    if (this.#receivedIds.has(id) && !this.replies.has(id)) this.replies.set(id, reply);
    this.line(reply.kind === 'return' ? { return: reply.value, id } : { error: { class: reply.errorClass, desc: 'fuzzed' }, id });
  }

  answer(command: ReceivedCommand): void {
    if (this.#dice.chance(0.8)) this.reply(command, { kind: 'return', value: { v: this.#nextValue++ } });
    else this.reply(command, { kind: 'error', errorClass: this.#dice.pick(ERROR_CLASSES) });
  }

  event(): void {
    const seq = this.#nextEventSeq++;
    this.sentEventSeqs.add(seq);
    this.line({ event: this.#dice.pick(EVENTS), data: { seq }, timestamp: { seconds: seq, microseconds: 0 } });
  }

  /** One random thing a peer may do: hostile with probability `hostility`, well-behaved otherwise. */
  async act(hostility: number): Promise<void> {
    if (this.#dice.chance(hostility)) await this.#misbehave();
    else await this.#behave();
  }

  async #behave(): Promise<void> {
    const d = this.#dice;
    const roll = d.random();
    if (roll < 0.4 && this.inbox.length > 0) {
      this.answer(this.inbox.splice(d.int(0, this.inbox.length - 1), 1)[0] as ReceivedCommand);
    } else if (roll < 0.6) {
      this.event();
    } else if (roll < 0.7) {
      // Late replies (to commands already received, answered or not), and replies to ids the client
      // never uses: negative, huge, of another type, or none. (Guessing ids the client may use next
      // would make the peer's record of what it answered depend on timing.)
      const late = this.#receivedIds.size > 0 && d.chance(0.4) ? [...this.#receivedIds][d.int(0, this.#receivedIds.size - 1)] : undefined;
      const id = late ?? d.pick<unknown>([-d.int(1, 300), NEVER_ISSUED + d.int(0, 1000), String(d.int(0, 50)), null, undefined, 1.5]);
      this.#sendReply(id, d.chance(0.5) ? { kind: 'return', value: { stray: true } } : { kind: 'error', errorClass: 'GenericError' });
    } else if (roll < 0.9) {
      await this.flush();
    } else {
      await nextTurn();
    }
  }

  async #misbehave(): Promise<void> {
    const d = this.#dice;
    const roll = d.random();
    if (roll < 0.2) {
      const bytes = d.bytes(d.int(1, 40));
      this.queue(d.chance(0.5) ? Buffer.concat([bytes, Buffer.from('\n')]) : bytes);
    } else if (roll < 0.4) {
      const frame = JSON.stringify({ return: { status: 'running' }, id: NEVER_ISSUED + d.int(0, 1000) });
      this.queue(frame.slice(0, d.int(1, frame.length - 1)) + (d.chance(0.7) ? '\r\n' : ''));
    } else if (roll < 0.55) {
      this.line(d.pick(['42', '"text"', '[1,2]', 'null', 'true', '{}', '{"event": 5}']));
    } else if (roll < 0.75) {
      // Around the size cap: a reply just under it is fine, anything over it breaks the connection.
      const value = 'h'.repeat(d.int(MAX_LINE_BYTES - 40, MAX_LINE_BYTES * 4));
      const target = this.inbox[0];
      if (target && Buffer.byteLength(JSON.stringify({ return: value, id: target.id })) <= MAX_LINE_BYTES) {
        this.inbox.shift();
        this.reply(target, { kind: 'return', value });
      } else {
        const huge = JSON.stringify({ return: value, id: NEVER_ISSUED });
        this.queue(d.chance(0.7) ? `${huge}\r\n` : huge);
      }
    } else if (roll < 0.85) {
      this.line(DEFAULT_GREETING);
    } else {
      await this.hangUp();
    }
  }

  async hangUp(): Promise<void> {
    await this.flush();
    this.#hungUp = true;
    if (this.#dice.chance(0.5)) this.#server.endClients();
    else this.#server.resetClients();
  }

  // ---------------------------------------------------------------- the client

  /** A command with a random timeout, signal, or neither; the peer can tell calls apart by tag. */
  execute(client: QmpClient, controllers: AbortController[]): void {
    const d = this.#dice;
    const command = d.pick(COMMANDS);
    const tag = this.#nextTag++;
    const roll = d.random();
    const options: { timeoutMs?: number; signal?: AbortSignal } = {};
    if (roll < 0.25) options.timeoutMs = d.int(0, 15);
    else if (roll < 0.5) {
      const controller = new AbortController();
      controllers.push(controller);
      options.signal = controller.signal;
    }
    this.calls.push({ tag, command, outcome: track(client.executeUntyped(command, { tag }, options)) });
  }

  waitForEvent(client: QmpClient, armed: ArmedEvent[]): void {
    const d = this.#dice;
    const name = d.pick(EVENTS);
    const timeoutMs = d.chance(0.5) ? d.int(0, 20) : undefined;
    const wait = client.armEvent(name, (e) => typeof e.data['seq'] === 'number', timeoutMs === undefined ? {} : { timeoutMs });
    armed.push(wait);
    this.waits.push(track(wait.promise));
  }

  // ---------------------------------------------------------------- checks

  /** Whatever the client reported must be what the peer sent; every failure must be typed. */
  check(tally: Tally): void {
    for (const call of this.calls) {
      const outcome = call.outcome.current;
      count(tally, outcome.status === 'rejected' ? String((outcome.reason as { code?: string }).code) : 'ok');
      expect(outcome.status, `call ${call.tag} (${call.command}) never settled`).not.toBe('pending');
      const received = this.#received(call.tag);
      if (outcome.status === 'fulfilled') {
        expect(received, `call ${call.tag} resolved though the peer never got it`).toBeDefined();
        const reply = this.replies.get(received?.id);
        expect(reply, `call ${call.tag} resolved without a reply`).toEqual({ kind: 'return', value: outcome.value });
      } else if (outcome.status === 'rejected') {
        expectTyped(outcome.reason);
        if (outcome.reason instanceof QmpCommandError) {
          expect(outcome.reason.command).toBe(call.command);
          expect(this.replies.get(received?.id)).toEqual({ kind: 'error', errorClass: outcome.reason.errorClass });
        }
      }
    }
    if (this.seenEventSeqs.length > 0) count(tally, 'events seen');
    for (const wait of this.waits) {
      const outcome = wait.current;
      if (outcome.status === 'fulfilled') count(tally, 'event waits met');
      expect(outcome.status, 'an event wait never settled').not.toBe('pending');
      if (outcome.status === 'rejected') expectTyped(outcome.reason);
      if (outcome.status === 'fulfilled') expect(this.sentEventSeqs.has(outcome.value.data['seq'] as number)).toBe(true);
    }
    for (let i = 0; i < this.seenEventSeqs.length; i++) {
      const seq = this.seenEventSeqs[i] as number;
      expect(this.sentEventSeqs.has(seq), `event ${seq} was never sent`).toBe(true);
      if (i > 0) expect(seq, 'events out of order').toBeGreaterThan(this.seenEventSeqs[i - 1] as number);
    }
  }


  /** Records a command the peer got; returns it for the script. */
  receive(command: ReceivedCommand): void {
    if (command.arguments?.['tag'] !== undefined) this.#receivedByTag.set(command.arguments['tag'], command);
    this.#receivedIds.add(command.id);
    this.inbox.push(command);
  }

  #received(tag: number): ReceivedCommand | undefined {
    return this.#receivedByTag.get(tag);
  }
}

/** How the calls ended, by code ('ok' for a reply): proof the fuzzer reached every path. */
type Tally = Map<string, number>;

function count(tally: Tally, key: string): void {
  tally.set(key, (tally.get(key) ?? 0) + 1);
}

function expectTyped(reason: unknown): void {
  expect(isSandboxVmmError(reason), `untyped rejection: ${String(reason)}`).toBe(true);
  expect(QMP_ERROR_CODES.has((reason as { code: string }).code), `unexpected code ${(reason as { code: string }).code}`).toBe(true);
}

describe('QMP client fuzzing', () => {
  let server: FakeQmpServer;
  let round: Round | undefined;
  const tally: Tally = new Map();
  const connects: Tally = new Map();
  const unhandled: unknown[] = [];
  const uncaught: unknown[] = [];
  const onUnhandled = (reason: unknown) => unhandled.push(reason);
  const onUncaught = (error: unknown) => uncaught.push(error);

  beforeAll(async () => {
    process.on('unhandledRejection', onUnhandled);
    process.on('uncaughtExceptionMonitor', onUncaught);
    server = await FakeQmpServer.start({ greeting: null });
    for (const command of ['qmp_capabilities', ...COMMANDS]) {
      server.handle(command, (_args, received) => {
        round?.receive(received);
        return NO_REPLY;
      });
    }
  });

  afterAll(async () => {
    process.off('unhandledRejection', onUnhandled);
    process.off('uncaughtExceptionMonitor', onUncaught);
    await server.close();
  });

  async function iteration(dice: Dice): Promise<void> {
    const current = new Round(dice, server);
    round = current;
    const connectController = new AbortController();
    const connecting = QmpClient.connect(server.path, {
      signal: connectController.signal,
      maxLineBytes: MAX_LINE_BYTES,
      commandTimeoutMs: dice.pick([5, 50, 30_000]),
    });
    const connection = track(connecting);
    await server.waitForClient();

    // The greeting, usually fine, sometimes after events, sometimes broken.
    if (dice.chance(0.2)) current.event();
    const greetingRoll = dice.random();
    if (greetingRoll < 0.85) current.line(DEFAULT_GREETING);
    else if (greetingRoll < 0.9) current.line({ QMP: { version: { qemu: { major: '7' } }, capabilities: [] } });
    else if (greetingRoll < 0.95) current.queue(dice.bytes(dice.int(1, 30)));
    await current.flush();
    // Negotiation: usually answered properly.
    for (let turn = 0; turn < 50 && connection.current.status === 'pending' && current.inbox.length === 0; turn++) await nextTurn();
    const negotiation = current.inbox.shift();
    if (negotiation) {
      if (dice.chance(0.9)) current.reply(negotiation, { kind: 'return', value: {} });
      else await current.act(0.5);
      await current.flush();
    }
    for (let turn = 0; turn < 20 && connection.current.status === 'pending'; turn++) await nextTurn();

    const controllers: AbortController[] = [];
    const armed: ArmedEvent[] = [];
    let client: QmpClient | undefined;
    let iterated: Promise<void> | undefined;
    if (connection.current.status === 'fulfilled') {
      client = connection.current.value;
      client.on('*', (e) => current.seenEventSeqs.push(e.data['seq'] as number));
      // Not from the dice: how many events arrive depends on timing, the dice's sequence must not.
      client.on('*', (e) => {
        if ((e.data['seq'] as number) % 7 === 3) throw new Error('a listener that throws');
      });
      if (dice.chance(0.3)) {
        const stream = client.events();
        iterated = (async () => {
          for await (const event of stream) expect(current.sentEventSeqs.has(event.data['seq'] as number)).toBe(true);
        })();
      }
      // Some rounds are calm, some are a storm.
      const hostility = dice.pick([0, 0.02, 0.1, 0.3]);
      const steps = dice.int(3, 25);
      for (let step = 0; step < steps; step++) {
        const roll = dice.random();
        if (roll < 0.35) current.execute(client, controllers);
        else if (roll < 0.42) current.waitForEvent(client, armed);
        else if (roll < 0.47 && controllers.length > 0) controllers[dice.int(0, controllers.length - 1)]?.abort(dice.chance(0.5) ? 'fuzz' : undefined);
        else if (roll < 0.49) armed[dice.int(0, armed.length - 1)]?.cancel();
        else if (roll < 0.5) void client.close();
        else await current.act(hostility);
      }
      // Let the peer answer what it holds, then the client reads what it can.
      while (current.inbox.length > 0 && dice.chance(0.7)) current.answer(current.inbox.shift() as ReceivedCommand);
      await current.flush();
      for (let turn = 0; turn < 3; turn++) await nextTurn();
      await client.close();
      expect(client.closed).toBe(true);
      const after = track(client.execute('query-status'));
      await nextTurn();
      expect(after.current.status).toBe('rejected');
      if (after.current.status === 'rejected') expect((after.current.reason as { code: string }).code).toBe('QMP_DISCONNECTED');
    } else {
      connectController.abort();
      // It may have connected just before the abort.
      const lateClient = await connecting.catch(() => undefined);
      await lateClient?.close();
    }
    await nextTurn();
    if (connection.current.status === 'rejected') expectTyped(connection.current.reason);
    count(connects, connection.current.status === 'rejected' ? String((connection.current.reason as { code?: string }).code) : 'ok');
    expect(connection.current.status).not.toBe('pending');
    await iterated;
    current.check(tally);
    await server.waitForNoClient();
    server.received.length = 0;
  }

  it(`survives ${ITERATIONS} rounds with a hostile peer (seed ${SEED})`, { timeout: 60_000 }, async () => {
    const dice = new Dice(seededRandom(SEED));
    for (let i = 0; i < ITERATIONS; i++) {
      try {
        await iteration(dice);
        await nextTurn();
        expect(unhandled, 'unhandled rejections').toEqual([]);
        expect(uncaught, 'uncaught exceptions').toEqual([]);
      } catch (error) {
        const message = `QMP fuzz failed at iteration ${i}; replay with QMP_FUZZ_SEED=${SEED}`;
        console.error(message);
        throw new Error(`${message}: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
      }
    }
    // A fuzzer that stopped reaching some outcome would pass without testing it.
    const outcomes = ['ok', 'QMP_COMMAND_FAILED', 'QMP_TIMEOUT', 'QMP_DISCONNECTED', 'QMP_PROTOCOL', 'ABORTED', 'events seen', 'event waits met'];
    for (const outcome of outcomes) expect(tally.get(outcome) ?? 0, `calls ending ${outcome}: ${JSON.stringify([...tally])}`).toBeGreaterThan(0);
    for (const outcome of ['ok', 'QMP_PROTOCOL', 'ABORTED']) expect(connects.get(outcome) ?? 0, `connects ending ${outcome}: ${JSON.stringify([...connects])}`).toBeGreaterThan(0);
    console.log(`seed ${SEED}: calls ${JSON.stringify(Object.fromEntries(tally))}; connects ${JSON.stringify(Object.fromEntries(connects))}`);
  });
});
