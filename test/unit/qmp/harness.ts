// Shared set-up of the QMP client tests: a fake QMP server and a client connected to it, both torn
// down when the test ends; and checks on how a promise settled.
import { setImmediate as nextTurn } from 'node:timers/promises';
import { expect, onTestFinished } from 'vitest';
import { isSandboxVmmError } from '../../../src/errors.ts';
import { QmpClient, type QmpConnectOptions } from '../../../src/qmp/index.ts';
import { FakeQmpServer, type FakeQmpServerOptions } from '../../helpers/fake-qmp-server.ts';

/** Every code the QMP client may reject with. */
export const QMP_ERROR_CODES = new Set(['QMP_COMMAND_FAILED', 'QMP_TIMEOUT', 'QMP_DISCONNECTED', 'QMP_PROTOCOL', 'QMP_CONNECT_FAILED', 'QMP_FD_PASSING_FAILED', 'INVALID_ARGUMENT', 'ABORTED', 'TIMEOUT']);

/** A fake server, closed when the current test ends. */
export async function startServer(options: FakeQmpServerOptions = {}): Promise<FakeQmpServer> {
  const server = await FakeQmpServer.start(options);
  onTestFinished(() => server.close());
  return server;
}

/** A client connected to `server`, closed when the current test ends. */
export async function connectClient(server: FakeQmpServer, options: QmpConnectOptions = {}): Promise<QmpClient> {
  const client = await QmpClient.connect(server.path, { timeoutMs: 5_000, ...options });
  onTestFinished(() => client.close());
  return client;
}

export async function startPair(
  serverOptions: FakeQmpServerOptions = {},
  clientOptions: QmpConnectOptions = {},
): Promise<{ server: FakeQmpServer; client: QmpClient }> {
  const server = await startServer(serverOptions);
  const client = await connectClient(server, clientOptions);
  return { server, client };
}

export type Outcome<T> = { status: 'pending' } | { status: 'fulfilled'; value: T } | { status: 'rejected'; reason: unknown };

/** Observes a promise without awaiting it: `outcome.current` says whether and how it has settled. */
export function track<T>(promise: Promise<T>): { current: Outcome<T> } {
  const box: { current: Outcome<T> } = { current: { status: 'pending' } };
  promise.then(
    (value) => (box.current = { status: 'fulfilled', value }),
    (reason: unknown) => (box.current = { status: 'rejected', reason }),
  );
  return box;
}

/** Lets pending I/O callbacks and microtasks run a few times. */
export async function settleIo(turns = 5): Promise<void> {
  for (let i = 0; i < turns; i++) await nextTurn();
}

/** Awaits a rejection and checks it is the given typed error; returns it for further checks. */
export async function rejection<E extends Error>(promise: Promise<unknown>, type: abstract new (...args: never[]) => E): Promise<E> {
  let error: unknown;
  try {
    await promise;
  } catch (caught) {
    error = caught;
  }
  expect(error, 'the promise should have rejected').toBeInstanceOf(type);
  expect(isSandboxVmmError(error)).toBe(true);
  expect(QMP_ERROR_CODES.has((error as { code: string }).code)).toBe(true);
  return error as E;
}
