// The only place a QEMU version number decides anything. Everything else QEMU can tell over QMP is
// probed (src/qemu/features/); these are bugs no QMP query reveals, found by running QEMU, each
// with its evidence. Backend-neutral so that the mock, pretending a version, follows the same rules.
import type { SandboxConfig } from './config/index.ts';

/** A QEMU version as `query-version` reports it. */
export interface QemuVersion {
  major: number;
  minor: number;
  micro: number;
}

/** A version rule: where it applies (accel, version range) and what it was seen to do. */
export interface VersionRule {
  id: string;
  accel: SandboxConfig['machine']['accel'];
  /** Applies from this version on (inclusive); undefined: from the oldest. */
  from?: QemuVersion;
  /** Applies below this version (exclusive); undefined: to the newest. */
  below?: QemuVersion;
  /** What happens, and how it was seen (docs/qemu-matrix: the compatibility run of issue 15). */
  evidence: string;
}

const QEMU_10: QemuVersion = { major: 10, minor: 0, micro: 0 };

/**
 * The rules, in one table. 8.x and 9.x were not tested: they fall under the older rule, the one
 * that refuses more. A VM whose version is unknown (never probed) does too.
 */
export const VERSION_RULES = [
  {
    id: 'tcg-vcpu-unplug-corrupts-heap',
    accel: 'tcg',
    below: QEMU_10,
    evidence:
      'QEMU 7.2.22 under tcg: after a vCPU unplug the next device_add (virtio-blk-pci) aborts with "malloc(): unsorted double ' +
      'linked list corrupted"; vCPU add/remove alone crashes on the 2nd or 3rd add (SIGSEGV, SIGABRT). KVM is not affected.',
  },
  {
    id: 'tcg-vcpu-contexts-never-returned',
    accel: 'tcg',
    from: QEMU_10,
    evidence:
      'QEMU 10.0.2 under tcg: vCPU unplug no longer corrupts the heap (6 rounds of unplug, then disk add and remove, passed), ' +
      'but a removed vCPU never returns its TCG context: with maxcpus=4 and 1 boot vCPU the 4th device_add of a vCPU aborts ' +
      'QEMU ("tcg_register_thread: assertion failed: (n < tcg_max_ctxs)"), so a VM can hot-add at most max - boot vCPUs in its life.',
  },
] as const satisfies readonly VersionRule[];

export type VersionRuleId = (typeof VERSION_RULES)[number]['id'];

export function compareVersions(a: QemuVersion, b: QemuVersion): number {
  return a.major - b.major || a.minor - b.minor || a.micro - b.micro;
}

/** The ids of the rules that apply to `accel` on `version` (undefined: unknown, judged as the oldest). */
export function applicableRules(accel: SandboxConfig['machine']['accel'], version: QemuVersion | undefined): Set<VersionRuleId> {
  const applies = (rule: VersionRule) =>
    rule.accel === accel &&
    (rule.from === undefined || (version !== undefined && compareVersions(version, rule.from) >= 0)) &&
    (rule.below === undefined || version === undefined || compareVersions(version, rule.below) < 0);
  return new Set(VERSION_RULES.filter(applies).map((rule) => rule.id));
}

export function formatVersion(version: QemuVersion | undefined): string {
  return version ? `${version.major}.${version.minor}.${version.micro}` : 'an unknown version';
}
