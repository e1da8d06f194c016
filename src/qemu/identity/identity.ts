// Who QEMU runs as. As root, every VM gets a uid and gid of its own, leased from a reserved range,
// so that a guest escaping into its QEMU reaches nothing of another VM's (Firecracker's jailer
// takes a uid per microVM, libvirt's DAC driver labels per domain). Running QEMU as root needs an
// explicit opt-in.
import { readFileSync } from 'node:fs';
import type { SandboxConfig } from '../../hypervisor/config/index.ts';
import { identityRequest } from '../../hypervisor/identity.ts';
import type { VmIdentity } from '../../hypervisor/types.ts';
import type { OperationOptions } from '../../util/deadline.ts';
import type { LeaseRecord, UidLeaseStore } from './uid-leases.ts';

export interface ResolvedIdentity {
  /** undefined: QEMU runs as this process's user. */
  identity: VmIdentity | undefined;
  /** Set when the identity is leased: released once the VM and its processes are gone. */
  lease: LeaseRecord | undefined;
}

/** Applies the shared rules (hypervisor/identity.ts), leasing a uid when it is 'auto' under root. */
export async function resolveIdentity(config: SandboxConfig, leases: UidLeaseStore, options: OperationOptions = {}): Promise<ResolvedIdentity> {
  const request = identityRequest(config, process.geteuid?.() ?? -1);
  switch (request.kind) {
    case 'current':
      return { identity: undefined, lease: undefined };
    case 'fixed':
      return { identity: { uid: request.uid, gid: request.gid, groups: request.groups }, lease: undefined };
    case 'lease': {
      const lease = await leases.acquire(config.id, options);
      return { identity: identityOfLease(lease.uid, config.machine.accel), lease };
    }
  }
}

/** A leased uid's identity: its own group of the same number, plus kvm when KVM is used. */
export function identityOfLease(uid: number, accel: string): VmIdentity {
  const kvm = accel === 'kvm' ? groupId('kvm') : undefined;
  return { uid, gid: uid, groups: kvm === undefined ? [] : [kvm] };
}

function groupId(name: string): number | undefined {
  try {
    for (const line of readFileSync('/etc/group', 'utf8').split('\n')) {
      const fields = line.split(':');
      if (fields[0] === name && fields[2] !== undefined) return Number(fields[2]);
    }
  } catch {
    // No group database: no kvm group to add.
  }
  return undefined;
}
