// How a template's device state travels between QEMU and the file we opened for it: QEMU never
// opens a path in the template's directory; it gets our fd, and the migration URI names it. The one
// concern here that varies with the QEMU, chosen by what its schema offers (features.migrationToFile),
// not by its version number:
// - 'file-fdset': the fd is in an fd set, the URI is `file:/dev/fdset/<id>`. QEMU offers it with
//   the file migration address (8.2); `fd:` to a plain file is deprecated since 9.1, and 10.0 warns.
// - 'named-fd': the URI is `fd:<name or number>` (QEMU without a file address).
// The fd is inherited at spawn when the binary's features are known before it (a clone's QEMU:
// a storm of clones spawns no fd-sending helper), else sent over QMP (SCM_RIGHTS: getfd / add-fd).
import { InvalidReplyError } from '../../hypervisor/errors.ts';
import type { QmpClient } from '../../qmp/index.ts';
import type { QemuArgv } from '../argv/index.ts';
import { inheritAfter } from '../argv/fd-plan.ts';
import type { QemuFeatures } from '../features/qemu-features.ts';

export type StateChannel = 'file-fdset' | 'named-fd';

const FD_NAME = 'svmm-template-state';

export function stateChannelOf(features: Pick<QemuFeatures, 'migrationToFile'>): StateChannel {
  return features.migrationToFile ? 'file-fdset' : 'named-fd';
}

/** What a migration command names; `fdSet`: the set QEMU keeps past the migration, to remove after it. */
export interface StateUri {
  uri: string;
  fdSet: number | undefined;
}

/** Hands `fd` to QEMU over `qmp`; the caller may close its own copy once this resolved. */
export async function sendStateFd(qmp: QmpClient, channel: StateChannel, fd: number, signal: AbortSignal): Promise<StateUri> {
  if (channel === 'named-fd') {
    await qmp.execute('getfd', { fdname: FD_NAME }, { signal, fd });
    // The migration takes the named fd from the monitor and closes it when done.
    return { uri: `fd:${FD_NAME}`, fdSet: undefined };
  }
  const { 'fdset-id': fdSet } = await qmp.execute('add-fd', { opaque: FD_NAME }, { signal, fd });
  if (!Number.isSafeInteger(fdSet) || fdSet < 0) throw new InvalidReplyError('add-fd', `fd set ${String(fdSet)} is not a set number`);
  return { uri: `file:/dev/fdset/${fdSet}`, fdSet };
}

/**
 * Hands our fd `from` to QEMU at spawn: at the next free fd (`fd:<n>`, which the migration closes),
 * or in an fd set of its own after any the argv has (`-add-fd`: QEMU keeps a duplicate in the set
 * and closes the fd it inherited).
 */
export function inheritStateFd<A extends Pick<QemuArgv, 'args' | 'fds'>>(argv: A, from: number, channel: StateChannel): { argv: A; state: StateUri } {
  const { argv: withFd, fd } = inheritAfter(argv, from);
  if (channel === 'named-fd') return { argv: withFd, state: { uri: `fd:${fd}`, fdSet: undefined } };
  const sets = argv.args.flatMap((arg, i) => (argv.args[i - 1] === '-add-fd' ? [Number(/(?:^|,)set=(\d+)/.exec(arg)?.[1] ?? -1)] : []));
  const fdSet = Math.max(-1, ...sets) + 1;
  return { argv: { ...withFd, args: [...argv.args, '-add-fd', `fd=${fd},set=${fdSet}`] }, state: { uri: `file:/dev/fdset/${fdSet}`, fdSet } };
}

/** Once the migration ended (or failed): drops the fd set QEMU would otherwise keep open for its lifetime; never throws. */
export async function releaseStateFd(qmp: QmpClient, state: StateUri): Promise<void> {
  if (state.fdSet !== undefined) await qmp.execute('remove-fd', { 'fdset-id': state.fdSet }).catch(() => undefined);
}
