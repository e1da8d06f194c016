// The identity rules every backend applies to `hardening`: a hypervisor process never runs as root
// unless the config says so, and only root can run it as someone else; under root each VM gets a
// uid of its own from a reserved range.
import { SandboxVmmError } from '../errors.ts';
import { ConfigError, type SandboxConfig } from './config/index.ts';

/** What the hardening settings ask for, once checked against who this process is. */
export type IdentityRequest = { kind: 'lease' } | { kind: 'current' } | { kind: 'fixed'; uid: number; gid: number; groups: number[] };

/** Checks `hardening.user` against `processUid` (this process's euid); throws ConfigError at hardening.user. */
export function identityRequest(config: SandboxConfig, processUid: number): IdentityRequest {
  const { user, allowRoot } = config.hardening;
  const asRoot = processUid === 0;
  const refuseRoot = (why: string) => {
    if (!allowRoot) throw new ConfigError([{ path: 'hardening.user', message: `${why}: an escaped guest would own the host (set hardening.allowRoot: true to accept that)` }]);
  };
  if (user === 'current') {
    if (asRoot) refuseRoot('QEMU would run as root ("current" while this process is root)');
    return { kind: 'current' };
  }
  if (user === 'auto') return asRoot ? { kind: 'lease' } : { kind: 'current' };
  if (user.uid === 0 || user.gid === 0) refuseRoot('the hypervisor would run with uid or gid 0');
  if (!asRoot && user.uid !== processUid) {
    throw new ConfigError([{ path: 'hardening.user', message: `only root can run the hypervisor as another user (this process is uid ${processUid})` }]);
  }
  return { kind: 'fixed', uid: user.uid, gid: user.gid, groups: user.groups ?? [] };
}

/** Where VMs' uids (and equal gids) come from. */
export interface UidRange {
  first: number;
  count: number;
}

/** Just above systemd-nspawn's container range (524288–1879048191) and below 2^31 (tools that read uids as signed ints). */
export const DEFAULT_UID_RANGE: UidRange = Object.freeze({ first: 1_900_000_000, count: 65_536 });

/** Every uid of the range is leased or held by a live process, even after reclaiming stale leases. */
export class UidRangeExhaustedError extends SandboxVmmError<'RESOURCE_LIMIT'> {
  readonly range: UidRange;
  readonly dir: string;

  /** `dir`: where the leases are kept (the QEMU backend's lease directory, or the mock's table). */
  constructor(range: UidRange, dir: string, vmId: string) {
    super(
      'RESOURCE_LIMIT',
      `no free uid for VM ${vmId} in the range ${range.first}–${range.first + range.count - 1} (${range.count} uids): ` +
        `each is leased in ${dir} or held by a live process`,
    );
    this.range = { ...range };
    this.dir = dir;
  }
}
