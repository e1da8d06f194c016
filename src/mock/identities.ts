// The mock's uid leases: the same rules as the QEMU backend's (hypervisor/identity.ts), with the
// table kept in this process, so that each mock VM has an identity of its own from createVM until
// it is gone, exactly like a QEMU VM under root.
import { ConfigError, type SandboxConfig } from '../hypervisor/config/index.ts';
import { mockRuntimeDir } from './detached.ts';
import { identityRequest } from '../hypervisor/identity.ts';
import type { VmIdentity } from '../hypervisor/types.ts';
import { DEFAULT_UID_RANGE, UidRangeExhaustedError } from '../hypervisor/identity.ts';

const leases = new Map<number, string>();
const identities = new Map<string, VmIdentity | undefined>();

/** The identity the VM's hypervisor would run as, leasing a fake uid when the rules say so. */
export function takeIdentity(config: SandboxConfig, processUid: number): VmIdentity | undefined {
  const request = identityRequest(config, processUid);
  // One VM per id, as the QEMU backend's <base>/<id> directory: a second would overwrite this entry.
  if (identities.has(config.id)) throw new ConfigError([{ path: 'runtime.dir', message: `runtime directory ${mockRuntimeDir(config.id)} already exists` }]);
  let identity: VmIdentity | undefined;
  if (request.kind === 'fixed') identity = { uid: request.uid, gid: request.gid, groups: request.groups };
  if (request.kind === 'lease') {
    const { first, count } = DEFAULT_UID_RANGE;
    let uid = first;
    while (leases.has(uid) && uid < first + count) uid++;
    if (uid >= first + count) throw new UidRangeExhaustedError(DEFAULT_UID_RANGE, '(the mock, in memory)', config.id);
    leases.set(uid, config.id);
    identity = { uid, gid: uid, groups: [] };
  }
  identities.set(config.id, identity);
  return identity;
}

/** The identity of a VM still known to this process (re-attach). */
export function identityOf(vmId: string): VmIdentity | undefined {
  return identities.get(vmId);
}

/** The VM is gone: its uid may go to another. */
export function giveBackIdentity(vmId: string): void {
  const identity = identities.get(vmId);
  identities.delete(vmId);
  if (identity && leases.get(identity.uid) === vmId) leases.delete(identity.uid);
}
