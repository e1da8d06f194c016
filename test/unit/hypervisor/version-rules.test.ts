// The one table of version rules and what it makes of each accel and version (vcpuRules), shared by
// the QEMU backend and the mock.
import { describe, expect, it } from 'vitest';
import { parseSandboxConfig } from '../../../src/hypervisor/config/index.ts';
import { VcpuAddBudgetError } from '../../../src/hypervisor/errors.ts';
import { assertVcpuAddBudget, vcpuRules } from '../../../src/hypervisor/resources.ts';
import { applicableRules, compareVersions, VERSION_RULES, type QemuVersion } from '../../../src/hypervisor/version-rules.ts';

const v = (major: number, minor: number, micro: number): QemuVersion => ({ major, minor, micro });

describe('VERSION_RULES', () => {
  it('says for each rule where it applies and what was seen, naming the message QEMU died with', () => {
    expect(VERSION_RULES.map((rule) => rule.id)).toEqual(['tcg-vcpu-unplug-corrupts-heap', 'tcg-vcpu-contexts-never-returned']);
    expect(VERSION_RULES[0].evidence).toContain('malloc(): unsorted double linked list corrupted');
    expect(VERSION_RULES[1].evidence).toContain('tcg_max_ctxs');
  });

  it.each<[string, QemuVersion | undefined, string[]]>([
    ['6.2.0', v(6, 2, 0), ['tcg-vcpu-unplug-corrupts-heap']],
    ['7.2.22', v(7, 2, 22), ['tcg-vcpu-unplug-corrupts-heap']],
    ['9.2.99', v(9, 2, 99), ['tcg-vcpu-unplug-corrupts-heap']],
    ['10.0.0', v(10, 0, 0), ['tcg-vcpu-contexts-never-returned']],
    ['10.0.2', v(10, 0, 2), ['tcg-vcpu-contexts-never-returned']],
    ['11.1.0', v(11, 1, 0), ['tcg-vcpu-contexts-never-returned']],
    ['an unknown version (judged as the oldest)', undefined, ['tcg-vcpu-unplug-corrupts-heap']],
  ])('under tcg, QEMU %s falls under %j', (_name, version, expected) => {
    expect([...applicableRules('tcg', version)]).toEqual(expected);
  });

  it('has nothing for kvm, whatever the version', () => {
    for (const version of [v(7, 2, 0), v(10, 0, 2), undefined]) expect(applicableRules('kvm', version).size).toBe(0);
  });

  it('orders versions by major, then minor, then micro', () => {
    expect(compareVersions(v(10, 0, 0), v(9, 99, 99))).toBeGreaterThan(0);
    expect(compareVersions(v(7, 2, 1), v(7, 10, 0))).toBeLessThan(0);
    expect(compareVersions(v(7, 2, 22), v(7, 2, 22))).toBe(0);
  });
});

describe('vcpuRules', () => {
  const config = (accel: 'kvm' | 'tcg', tcgVcpuUnplug = false) =>
    parseSandboxConfig({ boot: { kernel: '/k' }, machine: { accel }, cpus: { boot: 2, max: 5 }, hotplug: { rootPorts: 2, tcgVcpuUnplug } });

  it('below 10 under tcg: removal only with consent, device changes unsafe after it, no budget', () => {
    expect(vcpuRules(config('tcg'), v(7, 2, 22))).toEqual({ version: v(7, 2, 22), unplug: false, changesUnsafeAfterUnplug: true, addBudget: undefined });
    expect(vcpuRules(config('tcg', true), v(7, 2, 22)).unplug).toBe(true);
  });

  it('from 10 on under tcg: removal allowed, device changes safe, a budget of max - boot adds', () => {
    expect(vcpuRules(config('tcg'), v(10, 0, 2))).toEqual({ version: v(10, 0, 2), unplug: true, changesUnsafeAfterUnplug: false, addBudget: 3 });
  });

  it('under kvm: everything allowed, no budget', () => {
    expect(vcpuRules(config('kvm'), v(7, 2, 22))).toEqual({ version: v(7, 2, 22), unplug: true, changesUnsafeAfterUnplug: false, addBudget: undefined });
  });
});

describe('assertVcpuAddBudget', () => {
  const rules = vcpuRules(parseSandboxConfig({ boot: { kernel: '/k' }, machine: { accel: 'tcg' }, cpus: { boot: 1, max: 3 } }), v(10, 0, 2));

  it('lets through what the budget pays for, and every shrink', () => {
    expect(() => assertVcpuAddBudget(rules, 0, 1, 3)).not.toThrow();
    expect(() => assertVcpuAddBudget(rules, 1, 1, 2)).not.toThrow();
    expect(() => assertVcpuAddBudget(rules, 2, 3, 1)).not.toThrow();
    expect(() => assertVcpuAddBudget(rules, 2, 1, 1)).not.toThrow();
  });

  it('refuses one add more, with the budget, what is used and the highest count still reachable', () => {
    const refusal = (used: number, current: number, requested: number) => {
      try {
        assertVcpuAddBudget(rules, used, current, requested);
      } catch (error) {
        return error;
      }
      return undefined;
    };
    expect(refusal(1, 1, 3)).toBeInstanceOf(VcpuAddBudgetError);
    expect(refusal(1, 1, 3)).toMatchObject({ budget: 2, used: 1, limit: 2, requested: 3 });
    expect(refusal(2, 1, 2)).toMatchObject({ budget: 2, used: 2, limit: 1 });
    expect((refusal(1, 1, 3) as Error).message).toContain('2 (cpus.max - cpus.boot) and 1 of it is used');
  });

  it('does nothing where no budget applies', () => {
    const kvm = vcpuRules(parseSandboxConfig({ boot: { kernel: '/k' }, cpus: { boot: 1, max: 3 } }), v(10, 0, 2));
    expect(() => assertVcpuAddBudget(kvm, 100, 1, 3)).not.toThrow();
  });
});
