// How a template's device state travels between QEMU and the file we opened for it: QEMU never
// opens a path in the template's directory; the fd is sent over QMP (SCM_RIGHTS) and the migration
// URI names it. The one concern here that varies with the QEMU, chosen by what its schema offers
// (features.migrationToFile), not by its version number:
// - 'file-fdset': `add-fd` puts the fd into an fd set, the URI is `file:/dev/fdset/<id>`. QEMU
//   offers it with the file migration address (8.2); `fd:` to a plain file is deprecated since 9.1
//   and QEMU 10.0 warns on it.
// - 'named-fd': `getfd` names the fd, the URI is `fd:<name>` (QEMU without a file address).
import { InvalidReplyError } from '../../hypervisor/errors.ts';
import type { QmpClient } from '../../qmp/index.ts';
import type { QemuFeatures } from '../features/qemu-features.ts';

export type StateChannel = 'file-fdset' | 'named-fd';

const FD_NAME = 'svmm-template-state';

export function stateChannelOf(features: Pick<QemuFeatures, 'migrationToFile'>): StateChannel {
  return features.migrationToFile ? 'file-fdset' : 'named-fd';
}

/** What a migration command names, and what to release once the migration ended (or failed). */
export interface StateUri {
  uri: string;
  /** Drops QEMU's copy of the fd where QEMU keeps it past the migration (an fd set); never throws. */
  release(): Promise<void>;
}

/** Hands `fd` to QEMU over `qmp`; the caller may close its own copy once this resolved. */
export async function sendStateFd(qmp: QmpClient, channel: StateChannel, fd: number, signal: AbortSignal): Promise<StateUri> {
  if (channel === 'named-fd') {
    await qmp.execute('getfd', { fdname: FD_NAME }, { signal, fd });
    // The migration takes the named fd from the monitor and closes it when done.
    return { uri: `fd:${FD_NAME}`, release: () => Promise.resolve() };
  }
  const { 'fdset-id': fdsetId } = await qmp.execute('add-fd', { opaque: FD_NAME }, { signal, fd });
  if (!Number.isSafeInteger(fdsetId) || fdsetId < 0) throw new InvalidReplyError('add-fd', `fd set ${String(fdsetId)} is not a set number`);
  return {
    uri: `file:/dev/fdset/${fdsetId}`,
    // The migration opened a duplicate; the set's own copy stays until removed (a QEMU that quit has none).
    release: () => qmp.execute('remove-fd', { 'fdset-id': fdsetId }).then(() => undefined, () => undefined),
  };
}
