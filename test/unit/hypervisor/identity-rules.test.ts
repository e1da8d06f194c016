// identityRequest: the rules every backend applies to hardening.user and hardening.allowRoot.
import { describe, expect, it } from 'vitest';
import { ConfigError, parseSandboxConfig, type SandboxConfigInput } from '../../../src/hypervisor/config/index.ts';
import { identityRequest } from '../../../src/hypervisor/identity.ts';

const ROOT = 0;
const USER = 1000;
const ESCAPE = 'an escaped guest would own the host (set hardening.allowRoot: true to accept that)';
const CURRENT_AS_ROOT = `QEMU would run as root ("current" while this process is root): ${ESCAPE}`;
const ZERO_ID = `the hypervisor would run with uid or gid 0: ${ESCAPE}`;

function config(hardening: SandboxConfigInput['hardening']) {
  return parseSandboxConfig({ id: 'vm', boot: { kernel: '/boot/vmlinuz' }, hardening });
}

function refusal(hardening: SandboxConfigInput['hardening'], processUid: number): string {
  try {
    identityRequest(config(hardening), processUid);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    const { issues, message } = error as ConfigError;
    expect(issues).toHaveLength(1);
    expect(issues[0]?.path).toBe('hardening.user');
    expect(message).toBe(`invalid sandbox config: hardening.user: ${issues[0]?.message}`);
    return issues[0]?.message ?? '';
  }
  throw new Error('identityRequest did not throw');
}

describe('identityRequest', () => {
  describe("user 'auto' (the default)", () => {
    it('leases a uid as root', () => {
      expect(identityRequest(config({}), ROOT)).toEqual({ kind: 'lease' });
      expect(identityRequest(config({ user: 'auto' }), ROOT)).toEqual({ kind: 'lease' });
    });

    it('leases a uid as root even with allowRoot', () => {
      expect(identityRequest(config({ user: 'auto', allowRoot: true }), ROOT)).toEqual({ kind: 'lease' });
    });

    it('stays the current user when not root', () => {
      expect(identityRequest(config({ user: 'auto' }), USER)).toEqual({ kind: 'current' });
      expect(identityRequest(config({ user: 'auto' }), 1)).toEqual({ kind: 'current' });
    });
  });

  describe("user 'current'", () => {
    it('is refused as root without allowRoot', () => {
      expect(refusal({ user: 'current' }, ROOT)).toBe(CURRENT_AS_ROOT);
      expect(refusal({ user: 'current', allowRoot: false }, ROOT)).toBe(CURRENT_AS_ROOT);
    });

    it('is accepted as root with allowRoot', () => {
      expect(identityRequest(config({ user: 'current', allowRoot: true }), ROOT)).toEqual({ kind: 'current' });
    });

    it('is accepted when not root, without allowRoot', () => {
      expect(identityRequest(config({ user: 'current' }), USER)).toEqual({ kind: 'current' });
    });
  });

  describe('a fixed uid and gid', () => {
    it('is taken as given by root, groups included', () => {
      expect(identityRequest(config({ user: { uid: 1234, gid: 1235, groups: [7, 8] } }), ROOT)).toEqual({ kind: 'fixed', uid: 1234, gid: 1235, groups: [7, 8] });
    });

    it('has no groups when none are given', () => {
      expect(identityRequest(config({ user: { uid: 1234, gid: 1234 } }), ROOT)).toEqual({ kind: 'fixed', uid: 1234, gid: 1234, groups: [] });
    });

    it('refuses uid 0 or gid 0 without allowRoot', () => {
      expect(refusal({ user: { uid: 0, gid: 1234 } }, ROOT)).toBe(ZERO_ID);
      expect(refusal({ user: { uid: 1234, gid: 0 } }, ROOT)).toBe(ZERO_ID);
      expect(refusal({ user: { uid: 0, gid: 0 } }, ROOT)).toBe(ZERO_ID);
    });

    it('accepts uid 0 and gid 0 with allowRoot', () => {
      expect(identityRequest(config({ user: { uid: 0, gid: 0 }, allowRoot: true }), ROOT)).toEqual({ kind: 'fixed', uid: 0, gid: 0, groups: [] });
      expect(identityRequest(config({ user: { uid: 1234, gid: 0, groups: [0] }, allowRoot: true }), ROOT)).toEqual({ kind: 'fixed', uid: 1234, gid: 0, groups: [0] });
    });

    it('accepts the uid of a non-root process', () => {
      expect(identityRequest(config({ user: { uid: USER, gid: USER } }), USER)).toEqual({ kind: 'fixed', uid: USER, gid: USER, groups: [] });
    });

    it('refuses another uid when not root', () => {
      expect(refusal({ user: { uid: USER + 1, gid: USER } }, USER)).toBe(`only root can run the hypervisor as another user (this process is uid ${USER})`);
      expect(refusal({ user: { uid: USER + 1, gid: USER + 1 }, allowRoot: true }, USER)).toBe(`only root can run the hypervisor as another user (this process is uid ${USER})`);
    });

    it('refuses uid 0 to a non-root process: as root without allowRoot, as another user with it', () => {
      expect(refusal({ user: { uid: 0, gid: 0 } }, USER)).toBe(ZERO_ID);
      expect(refusal({ user: { uid: 0, gid: 0 }, allowRoot: true }, USER)).toBe(`only root can run the hypervisor as another user (this process is uid ${USER})`);
    });
  });
});
