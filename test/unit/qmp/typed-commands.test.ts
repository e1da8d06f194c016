// execute() takes only the commands the library knows (QmpCommandMap), typed: a misspelt name or a
// wrong argument does not compile (the @ts-expect-error lines below fail `tsc` the day one of them
// compiles). executeUntyped() sends anything, by name, and behaves the same at run time.
import { describe, expect, it } from 'vitest';
import { OperationTimeoutError, QmpCommandError, QmpTimeoutError, type QmpClient, type StatusInfo } from '../../../src/qmp/index.ts';
import { startPair } from './harness.ts';

/** Never called: what the compiler accepts and refuses. */
export async function compileTimeChecks(qmp: QmpClient): Promise<void> {
  const status: StatusInfo = await qmp.execute('query-status');
  void status;
  await qmp.execute('device_del', { id: 'disk1' }, { timeoutMs: 1_000 });
  // @ts-expect-error: a misspelt command is not one execute knows
  await qmp.execute('query-statuss');
  // @ts-expect-error: device_del needs its arguments
  await qmp.execute('device_del');
  // @ts-expect-error: and by their names
  await qmp.execute('device_del', { idd: 'disk1' });
  // @ts-expect-error: of their types
  await qmp.execute('qom-get', { path: '/machine', property: 1 });
  // @ts-expect-error: query-status takes no arguments
  await qmp.execute('query-status', { bogus: true });
  const name: string = 'query-kvm';
  // @ts-expect-error: a name only known at run time goes through executeUntyped
  await qmp.execute(name);
  const anything: unknown = await qmp.executeUntyped(name, { any: 'thing' }, { timeoutMs: 1_000 });
  void anything;
  // The errors the client rejects with come from the same entry point.
  void [OperationTimeoutError, QmpTimeoutError, QmpCommandError];
}

describe('QmpClient.executeUntyped', () => {
  it('sends any command by name with its arguments and resolves with `return`, like execute', async () => {
    const { server, client } = await startPair();
    server.handle('query-kvm', (args) => ({ enabled: false, present: true, args }));
    expect(await client.executeUntyped('query-kvm', { extra: 1 })).toEqual({ enabled: false, present: true, args: { extra: 1 } });
    expect(server.received.at(-1)).toMatchObject({ execute: 'query-kvm', arguments: { extra: 1 } });
    await expect(client.executeUntyped('no-such-command')).rejects.toBeInstanceOf(QmpCommandError);
  });
});
