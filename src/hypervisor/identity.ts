// The identity rules every backend applies to `hardening`: a hypervisor process never runs as root
// unless the config says so, and only root can run it as someone else.
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
