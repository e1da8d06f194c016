// The QEMU half of an architecture's profile (the backend-neutral half is
// hypervisor/arch-profiles.ts): the options of -machine and -cpu, the RTC, what only exists under
// KVM, and how the serial console is attached. The argv builder asks this table and nothing else
// about the architecture.
import type { SandboxConfig } from '../../hypervisor/config/index.ts';
import type { Architecture } from '../../hypervisor/arch-profiles.ts';
import { renderOptions, type OptionProps } from '../argv/qemu-opts.ts';

type Accel = SandboxConfig['machine']['accel'];

export interface QemuArchProfile {
  /** -machine properties besides the type (and the memory backend the builder adds). */
  machineProps(accel: Accel): OptionProps;
  /** -cpu properties for `model` (after the model name). */
  cpuProps(accel: Accel, model: string): OptionProps;
  /** -rtc. */
  readonly rtc: OptionProps;
  /** Options only this architecture has under kvm. */
  kvmOptions: readonly string[];
  /** The options that put the serial console on chardev `chardevId`. */
  consoleArgs(chardevId: string): string[];
}

const X86_64: QemuArchProfile = {
  machineProps: () => ({}),
  cpuProps: () => ({}),
  // The guest clock catches up with ticks it missed (x86's periodic timer interrupts).
  rtc: { base: 'utc', driftfix: 'slew' },
  kvmOptions: ['-global', 'kvm-pit.lost_tick_policy=discard'],
  // q35 has no serial port under -nodefaults: the 16550 on the ISA bus (the guest's ttyS0).
  consoleArgs: (chardevId) => ['-device', renderOptions({ driver: 'isa-serial', id: 'serial0', chardev: chardevId }, 'driver')],
};

const AARCH64: QemuArchProfile = {
  // GICv3 (GICv2 stops at 8 vCPUs); under kvm, whatever the host's GIC is, as Kata does.
  machineProps: (accel) => ({ 'gic-version': accel === 'kvm' ? 'host' : 3 }),
  // QEMU 7.2's `max` emulates QARMA5 pointer authentication on every signed return: a 6 s boot
  // against 1.7 s with the implementation-defined algorithm, which 10.0 already defaults to. KVM
  // uses the host's, and the property does not exist there.
  cpuProps: (accel, model) => (accel === 'tcg' && model === 'max' ? { 'pauth-impdef': true } : {}),
  // driftfix=slew is x86-only (QEMU 10 warns that virt cannot do it).
  rtc: { base: 'utc' },
  kvmOptions: [],
  // virt's PL011 is always there and only needs a chardev (the guest's ttyAMA0).
  consoleArgs: (chardevId) => ['-serial', `chardev:${chardevId}`],
};

const PROFILES: Readonly<Record<Architecture, QemuArchProfile>> = { x86_64: X86_64, aarch64: AARCH64 };

export function qemuArchProfile(arch: Architecture): QemuArchProfile {
  return PROFILES[arch];
}
