// resolveIdentity and identityOfLease: who QEMU runs as, a uid leased from a small range in a
// temporary lease directory, plus the kvm group under kvm. /etc/group is replaced by what each test
// says (this host may have no kvm group); everything else is the real file system.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ConfigError, parseSandboxConfig, type SandboxConfigInput } from '../../../src/hypervisor/config/index.ts';
import { identityOfLease, resolveIdentity } from '../../../src/qemu/identity/identity.ts';
import { ownerIdentity } from '../../../src/qemu/identity/proc-uids.ts';
import { UidLeaseStore } from '../../../src/qemu/identity/uid-leases.ts';
import { UidRangeExhaustedError } from '../../../src/hypervisor/identity.ts';

const group = vi.hoisted(() => ({ text: undefined as string | undefined, unreadable: false, reads: 0 }));

vi.mock('node:fs', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs')>();
  return {
    ...real,
    readFileSync: ((...args: Parameters<typeof real.readFileSync>) => {
      if (args[0] === '/etc/group') {
        group.reads++;
        if (group.unreadable) throw Object.assign(new Error("ENOENT: no such file or directory, open '/etc/group'"), { code: 'ENOENT' });
        if (group.text !== undefined) return group.text;
      }
      return real.readFileSync(...args);
    }) as typeof real.readFileSync,
  };
});

const FIRST = 1_960_000_000;
const COUNT = 3;
const GROUPS = 'root:x:0:\nkvmx:x:11:\nlibvirt-kvm:x:12:\nkvm:x:993:qemu\nkvm:x:994:\n';

let tmp: string;
let leaseDir: string;
let leases: UidLeaseStore;

beforeEach(() => {
  tmp = mkdtempSync(join(tmpdir(), 'svmm-identity-'));
  leaseDir = join(tmp, 'leases');
  leases = new UidLeaseStore({ dir: leaseDir, range: { first: FIRST, count: COUNT } });
  group.text = GROUPS;
  group.unreadable = false;
  group.reads = 0;
});

afterEach(() => {
  rmSync(tmp, { recursive: true, force: true });
});

function config(id: string, input: Partial<SandboxConfigInput> = {}) {
  return parseSandboxConfig({ id, boot: { kernel: '/boot/vmlinuz' }, ...input });
}

// The lease files (the lock file, .lock, is not one).
const leaseFiles = (): string[] => (existsSync(leaseDir) ? readdirSync(leaseDir).filter((name) => name !== '.lock').sort() : []);

describe('identityOfLease', () => {
  it('is the uid with a group of the same number, plus kvm under kvm', () => {
    expect(identityOfLease(FIRST, 'kvm')).toEqual({ uid: FIRST, gid: FIRST, groups: [993] });
  });

  it('has no kvm group under tcg (and does not look it up)', () => {
    expect(identityOfLease(FIRST + 1, 'tcg')).toEqual({ uid: FIRST + 1, gid: FIRST + 1, groups: [] });
    expect(group.reads).toBe(0);
  });

  it('matches the group name exactly, skipping lines without a gid', () => {
    group.text = 'kvm\nkvm:x\nkvmx:x:11:\nxkvm:x:12:\nkvm:x:77:\n';
    expect(identityOfLease(FIRST, 'kvm').groups).toEqual([77]);
  });

  it('has no kvm group when the host has none', () => {
    group.text = 'root:x:0:\nkvmx:x:11:\n';
    expect(identityOfLease(FIRST, 'kvm')).toEqual({ uid: FIRST, gid: FIRST, groups: [] });
  });

  it('has no kvm group when there is no group database', () => {
    group.unreadable = true;
    expect(identityOfLease(FIRST, 'kvm')).toEqual({ uid: FIRST, gid: FIRST, groups: [] });
  });
});

describe('resolveIdentity (this process is root)', () => {
  it('checks that the tests run as root', () => {
    expect(process.geteuid?.()).toBe(0);
  });

  it("leases the lowest free uid for 'auto', recorded in the store under the VM id", async () => {
    const resolved = await resolveIdentity(config('vm-a', { machine: { accel: 'tcg' } }), leases);
    expect(resolved.identity).toEqual({ uid: FIRST, gid: FIRST, groups: [] });
    expect(resolved.lease).toMatchObject({ uid: FIRST, vmId: 'vm-a', owner: ownerIdentity() });
    expect(leaseFiles()).toEqual([String(FIRST)]);
    expect(JSON.parse(readFileSync(join(leaseDir, String(FIRST)), 'utf8'))).toMatchObject({ uid: FIRST, vmId: 'vm-a' });
  });

  it('adds the kvm group to a leased identity under kvm', async () => {
    const resolved = await resolveIdentity(config('vm-k', { machine: { accel: 'kvm' } }), leases);
    expect(resolved.identity).toEqual({ uid: FIRST, gid: FIRST, groups: [993] });
  });

  it('gives each VM its own uid until the range is exhausted', async () => {
    const uids: number[] = [];
    for (const id of ['vm-1', 'vm-2', 'vm-3']) {
      const resolved = await resolveIdentity(config(id, { machine: { accel: 'tcg' } }), leases);
      uids.push(resolved.identity?.uid ?? -1);
    }
    expect(uids).toEqual([FIRST, FIRST + 1, FIRST + 2]);
    await expect(resolveIdentity(config('vm-4'), leases)).rejects.toBeInstanceOf(UidRangeExhaustedError);
    await leases.release(FIRST + 1, 'vm-2');
    expect((await resolveIdentity(config('vm-5', { machine: { accel: 'tcg' } }), leases)).identity?.uid).toBe(FIRST + 1);
  });

  it("runs as this process for 'current' with allowRoot, leasing nothing", async () => {
    expect(await resolveIdentity(config('vm-c', { hardening: { user: 'current', allowRoot: true } }), leases)).toEqual({ identity: undefined, lease: undefined });
    expect(leaseFiles()).toEqual([]);
  });

  it("refuses 'current' without allowRoot, leasing nothing", async () => {
    const error = await resolveIdentity(config('vm-c', { hardening: { user: 'current' } }), leases).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).paths).toEqual(['hardening.user']);
    expect(leaseFiles()).toEqual([]);
  });

  it('returns a fixed identity as configured, without a lease and without the kvm group', async () => {
    const resolved = await resolveIdentity(config('vm-f', { hardening: { user: { uid: 4242, gid: 4343, groups: [5] } } }), leases);
    expect(resolved).toEqual({ identity: { uid: 4242, gid: 4343, groups: [5] }, lease: undefined });
    expect(leaseFiles()).toEqual([]);
  });

  it('refuses a fixed uid 0 without allowRoot, leasing nothing', async () => {
    const error = await resolveIdentity(config('vm-z', { hardening: { user: { uid: 0, gid: 5 } } }), leases).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).paths).toEqual(['hardening.user']);
    expect(leaseFiles()).toEqual([]);
  });

  it('applies the rules for the effective uid: as a non-root process, auto runs as that user', async () => {
    const spy = vi.spyOn(process, 'geteuid').mockReturnValue(1000);
    try {
      expect(await resolveIdentity(config('vm-u'), leases)).toEqual({ identity: undefined, lease: undefined });
    } finally {
      spy.mockRestore();
    }
    expect(leaseFiles()).toEqual([]);
  });
});
