// What one QEMU binary offers, learned over QMP (query-version, query-qmp-schema, qom-list-properties
// of the machine type, device-list-properties of each driver a VM uses), and the check of a VM's
// needs against it. The probe runs on the VM's own monitor while QEMU waits at -S: no guest code has
// run yet, so the answers are the binary's, and they are kept for every later VM of that binary.
import { InvalidReplyError, MissingFeatureError } from '../../hypervisor/errors.ts';
import { formatVersion, type QemuVersion } from '../../hypervisor/version-rules.ts';
import { QmpCommandError, type QmpClient, type QmpExecuteOptions } from '../../qmp/index.ts';
import { QmpSchema } from '../../qmp/schema-check.ts';
import type { FeatureNeeds } from './needs.ts';

export interface QemuFeatures {
  version: QemuVersion;
  commands: ReadonlySet<string>;
  /** Driver → its properties, or null: this QEMU has no such device. Drivers never probed are absent. */
  devices: ReadonlyMap<string, ReadonlySet<string> | null>;
  /** Machine type as configs name it (q35) → its QOM type and properties. */
  machines: ReadonlyMap<string, { type: string; props: ReadonlySet<string> }>;
  /**
   * `migrate` takes a `file` address (its `channels` argument, QEMU 8.2 and later): a saved state
   * then goes to a file as `file:/dev/fdset/N`. Without it, `fd:<name>`, deprecated for files
   * since QEMU 9.1 (see template/state-channel.ts).
   */
  migrationToFile: boolean;
}

type Options = Pick<QmpExecuteOptions, 'signal'>;

/** The drivers and machine of `needs` that `known` has not probed yet (all of it when nothing is known). */
export function unprobed(known: QemuFeatures | undefined, needs: FeatureNeeds): { base: boolean; machine: boolean; drivers: string[] } {
  const drivers = [...needs.devices.keys(), ...needs.hotplugDrivers].filter((driver, i, all) => all.indexOf(driver) === i && !known?.devices.has(driver));
  return { base: known === undefined, machine: !known?.machines.has(needs.machine.name), drivers };
}

/** Probes what `known` lacks for `needs` and returns everything known afterwards. */
export async function probeFeatures(qmp: QmpClient, needs: FeatureNeeds, known: QemuFeatures | undefined, options: Options): Promise<QemuFeatures> {
  const missing = unprobed(known, needs);
  const version = known?.version ?? parseVersion(await qmp.execute('query-version', undefined, options));
  const schema = known ? undefined : await qmp.execute('query-qmp-schema', undefined, options);
  const commands = known?.commands ?? commandNames(schema);
  const migrationToFile = known?.migrationToFile ?? offersMigrationToFile(schema);
  const machines = new Map(known?.machines);
  if (missing.machine) machines.set(needs.machine.name, await probeMachine(qmp, options));
  const devices = new Map(known?.devices);
  for (const driver of missing.drivers) devices.set(driver, await probeDevice(qmp, driver, options));
  return { version, commands, devices, machines, migrationToFile };
}

/**
 * The first thing `needs` asks for that `features` lacks, as a MissingFeatureError naming it and
 * `binary`; with `partial`, drivers and machines not probed yet are let pass (checked later).
 */
export function assertFeatures(binary: string, features: QemuFeatures, needs: FeatureNeeds, partial = false): void {
  const version = formatVersion(features.version);
  const missing = (kind: MissingFeatureError['kind'], name: string) => new MissingFeatureError(binary, kind, name, version);
  for (const command of needs.commands) if (!features.commands.has(command)) throw missing('command', command);
  const machine = features.machines.get(needs.machine.name);
  if (machine) {
    for (const prop of needs.machine.props) if (!machine.props.has(prop)) throw missing('machine-property', `${machine.type}.${prop}`);
  } else if (!partial) {
    throw missing('machine-property', `${needs.machine.name} (not probed)`);
  }
  for (const [driver, props] of needs.devices) {
    const offered = features.devices.get(driver);
    if (offered === undefined && partial) continue;
    assertDevice(binary, features, driver, props);
  }
}

/** `driver` with `props` set on it, as hotplug is about to send it. */
export function assertDevice(binary: string, features: QemuFeatures, driver: string, props: Iterable<string>): void {
  const version = formatVersion(features.version);
  const offered = features.devices.get(driver);
  if (!offered) throw new MissingFeatureError(binary, 'device', driver, version);
  for (const prop of props) if (!offered.has(prop)) throw new MissingFeatureError(binary, 'device-property', `${driver}.${prop}`, version);
}

function parseVersion(reply: unknown): QemuVersion {
  const qemu = (reply as { qemu?: unknown } | null)?.qemu as Partial<Record<keyof QemuVersion, unknown>> | undefined;
  const part = (value: unknown) => (typeof value === 'number' && Number.isInteger(value) && value >= 0 && value < 100_000 ? value : undefined);
  const major = part(qemu?.major);
  const minor = part(qemu?.minor);
  const micro = part(qemu?.micro);
  if (major === undefined || minor === undefined || micro === undefined) throw new InvalidReplyError('query-version', 'no whole major, minor and micro numbers');
  return { major, minor, micro };
}

function commandNames(reply: unknown): Set<string> {
  if (!Array.isArray(reply)) throw new InvalidReplyError('query-qmp-schema', 'not a list');
  const names = new Set<string>();
  for (const entry of reply as unknown[]) {
    const { name, 'meta-type': kind } = (entry ?? {}) as { name?: unknown; 'meta-type'?: unknown };
    if (kind === 'command' && typeof name === 'string') names.add(name);
  }
  return names;
}

/**
 * Whether the schema's `migrate` command takes channels whose address may be a file: migrate →
 * its `channels` argument → the list's element (MigrationChannel) → its `addr` union → a `file`
 * case. Type names in an introspected schema are opaque: each step resolves through the schema.
 */
export function offersMigrationToFile(reply: unknown): boolean {
  let schema: QmpSchema;
  try {
    schema = new QmpSchema(reply);
  } catch (error) {
    throw new InvalidReplyError('query-qmp-schema', (error as Error).message);
  }
  const memberType = (typeName: string | undefined, member: string) => (typeName === undefined ? undefined : schema.type(typeName)?.members?.find((m) => m.name === member)?.type);
  const channels = memberType(schema.command('migrate')?.['arg-type'], 'channels');
  const channel = channels === undefined ? undefined : schema.type(channels)?.['element-type'];
  const address = memberType(channel, 'addr');
  return (address !== undefined && schema.type(address)?.variants?.some((variant) => variant.case === 'file')) === true;
}

function propertyNames(command: string, reply: unknown): Set<string> {
  if (!Array.isArray(reply)) throw new InvalidReplyError(command, 'not a list of properties');
  return new Set((reply as unknown[]).map((p) => (p as { name?: unknown } | null)?.name).filter((name): name is string => typeof name === 'string'));
}

/** The VM's machine: its QOM type (pc-q35-10.0-machine for q35) and that type's properties. */
async function probeMachine(qmp: QmpClient, options: Options): Promise<{ type: string; props: ReadonlySet<string> }> {
  const type = await qmp.execute('qom-get', { path: '/machine', property: 'type' }, options);
  if (typeof type !== 'string' || !/^[A-Za-z0-9_.-]{1,128}$/.test(type)) throw new InvalidReplyError('qom-get', 'the machine type is not a type name');
  return { type, props: propertyNames('qom-list-properties', await qmp.execute('qom-list-properties', { typename: type }, options)) };
}

/** A driver's properties; null when QEMU has no such device (it answers DeviceNotFound, or GenericError before 2.x-era classes). */
async function probeDevice(qmp: QmpClient, driver: string, options: Options): Promise<ReadonlySet<string> | null> {
  try {
    return propertyNames('device-list-properties', await qmp.execute('device-list-properties', { typename: driver }, options));
  } catch (error) {
    if (error instanceof QmpCommandError && /not found|not a valid|abstract|is not a device/i.test(error.message)) return null;
    throw error;
  }
}
