// The QMP side of a template's restore, against a fake QMP server: the capabilities asked for, and
// the end of an incoming migration taken from its MIGRATION event, not from polling.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { QmpClient } from '../../../src/qmp/index.ts';
import { ignoreSharedRam, incomingMigrationDone } from '../../../src/qemu/template/migration.ts';
import { FakeQmpServer } from '../../helpers/fake-qmp-server.ts';

let server: FakeQmpServer;
let qmp: QmpClient;
let controller: AbortController;

beforeEach(async () => {
  server = await FakeQmpServer.start();
  server.handle('migrate-set-capabilities', () => ({}));
  qmp = await QmpClient.connect(server.path);
  controller = new AbortController();
});

afterEach(async () => {
  controller.abort();
  await qmp.close();
  await server.close();
});

/** Settles within `ms` or says it is still pending. */
function settledWithin<T>(promise: Promise<T>, ms: number): Promise<{ value?: T; error?: unknown } | 'pending'> {
  return Promise.race([
    promise.then(
      (value) => ({ value }),
      (error: unknown) => ({ error }),
    ),
    new Promise<'pending'>((resolve) => setTimeout(() => resolve('pending'), ms)),
  ]);
}

describe('ignoreSharedRam', () => {
  it('asks for x-ignore-shared only, unless MIGRATION events are wanted too', async () => {
    await ignoreSharedRam(qmp, controller.signal);
    await ignoreSharedRam(qmp, controller.signal, { events: true });
    const asked = server.received.filter((c) => c.execute === 'migrate-set-capabilities').map((c) => c.arguments);
    expect(asked).toEqual([
      { capabilities: [{ capability: 'x-ignore-shared', state: true }] },
      {
        capabilities: [
          { capability: 'x-ignore-shared', state: true },
          { capability: 'events', state: true },
        ],
      },
    ]);
  });
});

describe('incomingMigrationDone', () => {
  it('resolves on the MIGRATION event that says completed, without a query, and not before', async () => {
    const done = incomingMigrationDone(qmp, 'restoring', controller.signal);
    server.sendEvent('MIGRATION', { status: 'setup' });
    server.sendEvent('MIGRATION', { status: 'active' });
    expect(await settledWithin(done.promise, 50)).toBe('pending');
    server.sendEvent('MIGRATION', { status: 'completed' });
    expect(await settledWithin(done.promise, 1000)).toEqual({ value: undefined });
    expect(server.received.map((c) => c.execute)).not.toContain('query-migrate');
  });

  it('is armed when called: a completion sent before anyone awaits still counts', async () => {
    const done = incomingMigrationDone(qmp, 'restoring', controller.signal);
    server.sendEvent('MIGRATION', { status: 'completed' });
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(await settledWithin(done.promise, 1000)).toEqual({ value: undefined });
  });

  it.each(['failed', 'cancelled'])('on %s, rejects with the reason query-migrate gives, naming the operation', async (status) => {
    server.handle('query-migrate', () => ({ status, 'error-desc': 'Unknown savevm section or instance' }));
    const done = incomingMigrationDone(qmp, 'restoring the state', controller.signal);
    server.sendEvent('MIGRATION', { status });
    const outcome = await settledWithin(done.promise, 1000);
    expect(outcome).not.toBe('pending');
    expect(String((outcome as { error?: Error }).error?.message)).toBe('restoring the state failed: Unknown savevm section or instance');
  });

  it('ignores events of other names and statuses that are not an end', async () => {
    const done = incomingMigrationDone(qmp, 'restoring', controller.signal);
    server.sendEvent('MIGRATION_PASS', { pass: 1 });
    server.sendEvent('MIGRATION', { status: 'device' });
    server.sendEvent('MIGRATION', {});
    expect(await settledWithin(done.promise, 100)).toBe('pending');
    done.cancel();
  });

  it('cancelled (migrate-incoming refused) or aborted, it rejects, and leaves no unhandled rejection behind', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      const cancelled = incomingMigrationDone(qmp, 'restoring', controller.signal);
      cancelled.cancel();
      const aborted = incomingMigrationDone(qmp, 'restoring', controller.signal);
      controller.abort(new Error('deadline'));
      // Neither promise is awaited, as when the restore failed before reaching the wait.
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(unhandled).toEqual([]);
      const cancelledOutcome = await settledWithin(cancelled.promise, 100);
      const abortedOutcome = await settledWithin(aborted.promise, 100);
      expect((cancelledOutcome as { error?: { code?: string } }).error?.code).toBe('ABORTED');
      expect((abortedOutcome as { error?: { code?: string } }).error?.code).toBe('ABORTED');
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });
});
