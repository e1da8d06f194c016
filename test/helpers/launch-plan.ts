// What of an argv this machine cannot run, and how QEMU itself checks that part instead. The rest
// is started for real. Nothing is dropped silently: each change names its reason and the claims
// (device properties, QOM types) a paused QEMU must confirm.
import { splitArgv, optionMap, IMPLIED_KEY } from './qemu-options.ts';
import type { QmpClient } from '../../src/qmp/index.ts';
import type { Architecture } from '../../src/hypervisor/arch-profiles.ts';
import { deviceProperties, qomTypes } from './qemu-state.ts';

/** Devices that need host support missing here. */
export const UNRUNNABLE_DEVICES: Readonly<Record<string, string>> = {
  'vhost-vsock-pci': 'no /dev/vhost-vsock on this machine',
  'vfio-pci': 'no device bound to vfio-pci on this machine',
};

const KVM_REASON = 'KVM guests hang on this machine: the rest runs under TCG';
/** An emulator for another architecture than the host's is built without KVM: nothing of it exists to check. */
const FOREIGN_KVM_REASON = 'qemu-system-aarch64 on an x86_64 host has no KVM: the rest runs under TCG';

/** What stands in for the KVM-only parts of an argv, per guest architecture. */
const KVM_STAND_INS: Readonly<Record<Architecture, { reason: string; accelTypes: string[]; hostCpuTypes: string[] }>> = {
  x86_64: { reason: KVM_REASON, accelTypes: ['kvm-accel'], hostCpuTypes: ['host-x86_64-cpu'] },
  aarch64: { reason: FOREIGN_KVM_REASON, accelTypes: [], hostCpuTypes: [] },
};

export interface PropertyClaim {
  /** A device type (device-list-properties). */
  typename: string;
  property: string;
  /** The value the argv gives it, as written. */
  value: string;
}

export interface Substitution {
  /** The option as the builder wrote it. */
  original: string[];
  /** What runs instead (nothing when the option is left out). */
  replacement: string[];
  reason: string;
  properties: PropertyClaim[];
  /** QOM types that must exist (an accelerator, a CPU model). */
  types: string[];
  /** The qdev id of a device left out, if any. */
  deviceId?: string;
}

export interface LaunchPlan {
  args: string[];
  substitutions: Substitution[];
}

export function planLaunch(args: readonly string[], arch: Architecture = 'x86_64'): LaunchPlan {
  const out: string[] = [];
  const substitutions: Substitution[] = [];
  for (const { flag, raw } of splitArgv(args)) {
    const original = raw === undefined ? [flag] : [flag, raw];
    const change = substitutionFor(flag, raw, KVM_STAND_INS[arch]);
    if (change) {
      substitutions.push({ original, ...change });
      out.push(...change.replacement);
    } else {
      out.push(...original);
    }
  }
  return { args: out, substitutions };
}

function substitutionFor(flag: string, raw: string | undefined, kvm: (typeof KVM_STAND_INS)[Architecture]): Omit<Substitution, 'original'> | undefined {
  if (flag === '-device' && raw !== undefined) {
    const props = optionMap(raw, IMPLIED_KEY['-device']);
    const driver = props.get('driver') ?? '';
    const reason = UNRUNNABLE_DEVICES[driver];
    if (!reason) return undefined;
    // bus is where it plugs (the port itself is started and checked), not a property.
    const properties = [...props].filter(([key]) => key !== 'driver' && key !== 'id' && key !== 'bus').map(([property, value]) => ({ typename: driver, property, value }));
    return { replacement: [], reason, properties, types: [driver], deviceId: props.get('id') as string };
  }
  if (flag === '-accel' && raw === 'kvm') return { replacement: ['-accel', 'tcg'], reason: kvm.reason, properties: [], types: kvm.accelTypes };
  if (flag === '-cpu' && raw === 'host') return { replacement: ['-cpu', 'max'], reason: kvm.reason, properties: [], types: kvm.hostCpuTypes };
  // virt's GIC as the host has it exists only under KVM; TCG emulates GICv3.
  if (flag === '-machine' && raw?.includes('gic-version=host')) return { replacement: ['-machine', raw.replace('gic-version=host', 'gic-version=3')], reason: kvm.reason, properties: [], types: [] };
  if (flag === '-global' && raw !== undefined) {
    const [target = '', value = ''] = raw.split('=');
    const [typename = '', property = ''] = target.split('.');
    return { replacement: [], reason: KVM_REASON, properties: [{ typename, property, value }], types: [typename] };
  }
  return undefined;
}

/** Checks each claim on a running QEMU; returns what it does not confirm. */
export async function unconfirmedClaims(qmp: QmpClient, substitutions: readonly Substitution[]): Promise<string[]> {
  const problems: string[] = [];
  const types = new Set(await qomTypes(qmp));
  for (const s of substitutions) {
    for (const type of s.types) if (!types.has(type)) problems.push(`${s.original.join(' ')}: QEMU has no type ${type}`);
    for (const claim of s.properties) {
      const property = (await deviceProperties(qmp, claim.typename)).find((p) => p.name === claim.property);
      if (!property) problems.push(`${s.original.join(' ')}: ${claim.typename} has no property ${claim.property}`);
      else if (!valueFitsType(claim.property, claim.value, property.type)) {
        problems.push(`${s.original.join(' ')}: ${claim.typename}.${claim.property} is a ${property.type}, which ${JSON.stringify(claim.value)} is not`);
      }
    }
  }
  return problems;
}

/** Whether an option value can be of a QOM property type: on/off for booleans, digits for integers, else a string or enum. */
export function valueFitsType(property: string, value: string, type: string): boolean {
  // A PCI address is parsed from "slot[.function]": an int32 property in QEMU 7.2, listed as a str in 10.
  if (property === 'addr') return (type === 'int32' || type === 'str') && /^0x[0-9a-f]+(\.[0-7])?$/.test(value);
  if (value === 'on' || value === 'off') return type === 'bool' || type === 'OnOffAuto';
  if (/^\d+$/.test(value)) return /^(u?int(8|16|32|64)?|size)$/.test(type);
  return !/^(u?int\d*|bool|size)$/.test(type);
}
