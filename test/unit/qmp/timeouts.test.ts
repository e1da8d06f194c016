// A timeoutMs that is NaN, negative or not a number is refused with InvalidArgumentError at every
// entry point of the QMP client, before anything is sent or waited for (it used to mean "no bound":
// a connect to a QEMU that never greets stayed pending forever).
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError } from '../../../src/errors.ts';
import { QmpClient, type QmpConnectOptions } from '../../../src/qmp/index.ts';
import { NO_REPLY } from '../../helpers/fake-qmp-server.ts';
import { startPair, startServer } from './harness.ts';

async function invalidArgument(promise: Promise<unknown>, argument: string): Promise<InvalidArgumentError> {
  const error = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(InvalidArgumentError);
  expect((error as InvalidArgumentError).code).toBe('INVALID_ARGUMENT');
  expect((error as InvalidArgumentError).argument).toBe(argument);
  return error as InvalidArgumentError;
}

describe('QMP client timeouts', () => {
  describe('connect', () => {
    it.each([NaN, -1, '5000'])('refuses timeoutMs %s at once, against a QEMU that never greets', async (timeoutMs) => {
      const server = await startServer({ greeting: null });
      const started = performance.now();
      await invalidArgument(QmpClient.connect(server.path, { timeoutMs: timeoutMs as number }), 'timeoutMs');
      expect(performance.now() - started).toBeLessThan(1_000);
      expect(server.clientCount).toBe(0);
    });

    it('refuses an invalid defaultConnectTimeoutMs or commandTimeoutMs, naming it', async () => {
      const server = await startServer();
      await invalidArgument(QmpClient.connect(server.path, { defaultConnectTimeoutMs: NaN }), 'defaultConnectTimeoutMs');
      await invalidArgument(QmpClient.connect(server.path, { timeoutMs: 1_000, commandTimeoutMs: -5 }), 'commandTimeoutMs');
      expect(server.clientCount).toBe(0);
    });

    it('applies defaultConnectTimeoutMs when timeoutMs is undefined', async () => {
      const server = await startServer({ greeting: null });
      // As a JavaScript caller may pass it (the types, with exactOptionalPropertyTypes, would not).
      const options = { timeoutMs: undefined, defaultConnectTimeoutMs: 50 } as unknown as QmpConnectOptions;
      const error = await QmpClient.connect(server.path, options).catch((caught: unknown) => caught);
      expect((error as { code: string }).code).toBe('QMP_CONNECT_FAILED');
      expect((error as Error).message).toContain('within 50 ms');
    });
  });

  describe('execute', () => {
    it.each([NaN, -1, null])('rejects timeoutMs %s without sending the command', async (timeoutMs) => {
      const { server, client } = await startPair();
      server.handle('query-status', () => NO_REPLY);
      await invalidArgument(client.execute('query-status', undefined, { timeoutMs: timeoutMs as number }), 'timeoutMs');
      expect(client.pendingCount).toBe(0);
      expect(server.received.map((c) => c.execute)).toEqual(['qmp_capabilities']);
    });

    it('still waits without bound for Infinity, and times out for a finite value', async () => {
      const { server, client } = await startPair();
      server.handle('slow', () => new Promise((resolve) => setTimeout(() => resolve({ ok: true }), 60)));
      await expect(client.executeUntyped('slow', undefined, { timeoutMs: Infinity })).resolves.toEqual({ ok: true });
      const error = await client.executeUntyped('slow', undefined, { timeoutMs: 10 }).catch((caught: unknown) => caught);
      expect((error as { code: string }).code).toBe('QMP_TIMEOUT');
    });
  });

  describe('waitForEvent and armEvent', () => {
    it.each([NaN, -1])('reject timeoutMs %s, and leave no listener behind', async (timeoutMs) => {
      const { server, client } = await startPair();
      await invalidArgument(client.waitForEvent('STOP', undefined, { timeoutMs }), 'timeoutMs');
      const armed = client.armEvent('STOP', undefined, { timeoutMs });
      await invalidArgument(armed.promise, 'timeoutMs');
      // A later wait still sees the event: the refused ones took nothing.
      const later = client.waitForEvent('STOP', undefined, { timeoutMs: 5_000 });
      server.sendEvent('STOP');
      await expect(later).resolves.toMatchObject({ event: 'STOP' });
    });
  });
});
