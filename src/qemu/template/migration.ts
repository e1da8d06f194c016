// The QMP side of saving and restoring a guest: the capability a template needs on both sides, and
// waiting for a migration to end under the operation's deadline.
import { sleep } from '../../util/deadline.ts';
import type { MigrationCapabilityStatus, QmpClient } from '../../qmp/index.ts';
import { versionOfReply } from './qemu-version.ts';

/**
 * RAM in a shared file (the template's) is not copied into the stream: only the device state is.
 * With `events`, QEMU also reports each change of the migration's status (MIGRATION), which a
 * restore waits for (incomingMigrationDone) instead of polling.
 */
export async function ignoreSharedRam(qmp: QmpClient, signal: AbortSignal, options: { events?: boolean } = {}): Promise<void> {
  const capabilities: MigrationCapabilityStatus[] = [{ capability: 'x-ignore-shared', state: true }];
  if (options.events) capabilities.push({ capability: 'events', state: true });
  await qmp.execute('migrate-set-capabilities', { capabilities }, { signal });
}

const ENDED = new Set(['completed', 'failed', 'cancelled']);

/**
 * The end of the incoming migration, from its MIGRATION event (the `events` capability set):
 * armed when called, so call it before migrate-incoming, and cancel() it if that fails. In a start
 * storm each query a clone sends is a wake-up of its QEMU and a turn of our event loop, which the
 * polling of migrationDone multiplied. QEMU's reason for a failure is in query-migrate only.
 */
export function incomingMigrationDone(qmp: QmpClient, what: string, signal: AbortSignal): { promise: Promise<void>; cancel(): void } {
  const armed = qmp.armEvent('MIGRATION', (event) => ENDED.has(String(event.data?.['status'])), { signal });
  const promise = armed.promise.then(async (event) => {
    if (event.data?.['status'] !== 'completed') await migrationDone(qmp, what, signal);
  });
  // A wait cancelled, or ended by the deadline, after the restore failed otherwise: never unhandled.
  promise.catch(() => undefined);
  return { promise, cancel: () => armed.cancel() };
}

/** Polls query-migrate until the migration completed; throws with QEMU's reason when it failed. */
export async function migrationDone(qmp: QmpClient, what: string, signal: AbortSignal): Promise<void> {
  for (;;) {
    // Checked, not trusted: QEMU's reply is hostile input like any other.
    const reply = (await qmp.execute('query-migrate', undefined, { signal })) as { status?: unknown; 'error-desc'?: unknown } | undefined;
    const status = reply?.status;
    if (status === 'completed') return;
    if (status === 'failed' || status === 'cancelled') {
      const why = typeof reply?.['error-desc'] === 'string' ? reply['error-desc'] : `status ${status}`;
      throw new Error(`${what} failed: ${why}`);
    }
    await sleep(5, signal);
  }
}

/** The running QEMU's version and resolved machine type ('pc-q35-7.2'), as a template records them. */
export async function hypervisorIdentity(qmp: QmpClient, signal: AbortSignal): Promise<{ version: string; machineType: string }> {
  const [reply, machineType] = await Promise.all([qmp.execute('query-version', undefined, { signal }), runningMachineType(qmp, signal)]);
  const version = versionOfReply(reply);
  if (version === undefined) throw new Error('QEMU did not say its version');
  return { version, machineType };
}

/** The running QEMU's resolved machine type ('pc-q35-7.2' for 'q35'). */
export async function runningMachineType(qmp: QmpClient, signal: AbortSignal): Promise<string> {
  const type = await qmp.execute('qom-get', { path: '/machine', property: 'type' }, { signal });
  if (typeof type !== 'string') throw new Error('QEMU did not say its machine type');
  return type.replace(/-machine$/, '');
}
