// The QMP side of saving and restoring a guest: the capability a template needs on both sides, and
// waiting for a migration to end under the operation's deadline.
import { sleep } from '../../util/deadline.ts';
import type { QmpClient } from '../../qmp/index.ts';
import { versionOfReply } from './qemu-version.ts';

/** RAM in a shared file (the template's) is not copied into the stream: only the device state is. */
export async function ignoreSharedRam(qmp: QmpClient, signal: AbortSignal): Promise<void> {
  await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] }, { signal });
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
