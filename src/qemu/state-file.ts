// What a VM's directory records so that another process can take the VM over: who the QEMU process
// is, who it runs as, its config, and what was plugged and resized since it started. The file is
// root's, in a directory only root writes; it is still validated field by field when read back,
// because attach() acts on it (signals pids, leases a uid).
import { z } from 'zod';
import { hotplugDeviceSchema, parseSandboxConfig, type SandboxConfig } from '../hypervisor/config/index.ts';
import type { VmIdentity } from '../hypervisor/types.ts';
import type { QemuVersion } from '../hypervisor/version-rules.ts';
import { readRegularFile, writeFileAtomic } from '../util/safe-fs.ts';
import type { HotplugState } from './hotplug/state.ts';
import type { SavedHelper } from './helpers/helper-set.ts';

export const STATE_FILE_VERSION = 3;
/** Version 2 lacks qemuVersion and hotplug.vcpuAdds: read with the conservative defaults (see readStateFile). */
const OLDEST_READABLE_VERSION = 2;
/** A state file is a few KiB; anything far larger is not one of ours. */
const MAX_STATE_BYTES = 1024 * 1024;

const id = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/);
const qemuId = z.string().regex(/^[A-Za-z0-9/_.-]{1,128}$/);
const pid = z.int().min(2).max(2 ** 22);
const startTime = z.int().min(0);
const unixId = z.int().min(0).max(0xfffffffe);

const identitySchema = z.strictObject({ uid: unixId, gid: unixId, groups: z.array(unixId).max(64) });

const hotplugSchema = z.strictObject({
  devices: z.array(
    z.strictObject({
      id,
      device: hotplugDeviceSchema,
      bus: qemuId,
      backends: z.array(
        z.discriminatedUnion('kind', [
          z.strictObject({ kind: z.literal('blockdev'), nodeName: qemuId }),
          z.strictObject({ kind: z.literal('netdev'), id: qemuId }),
          z.strictObject({ kind: z.literal('fdset'), id: z.int().min(0) }),
          z.strictObject({ kind: z.literal('chardev'), id: qemuId }),
          z.strictObject({ kind: z.literal('helper'), deviceId: qemuId }),
        ]),
      ),
      removalRequested: z.boolean().optional(),
    }),
  ),
  infrastructure: z.array(z.strictObject({ id: qemuId, bus: qemuId })),
  cpus: z.array(z.strictObject({ qemuId, coreId: z.int().min(0) })),
  virtioMemMiB: z.int().min(0),
  dimms: z.array(z.strictObject({ qemuId, backendId: qemuId, sizeMiB: z.int().min(1) })),
  vcpuRemoved: z.boolean(),
  vcpuAdds: z.int().min(0).max(4096).optional(),
});

const qemuVersionSchema = z.strictObject({ major: z.int().min(0).max(999), minor: z.int().min(0).max(999), micro: z.int().min(0).max(99999) });

const stateSchema = z.strictObject({
  version: z.union([z.literal(STATE_FILE_VERSION), z.literal(OLDEST_READABLE_VERSION)]),
  id,
  pid,
  startTime,
  /** QEMU's executable as resolved at createVM: /proc/<pid>/exe must name it. */
  qemuPath: z.string().startsWith('/'),
  /** As probed before the guest first ran (query-version): the version rules' input. Null: unknown. */
  qemuVersion: qemuVersionSchema.nullable().optional(),
  detached: z.boolean(),
  identity: identitySchema.nullable(),
  /** Whether the identity is a lease (released when the VM is gone). */
  leased: z.boolean(),
  config: z.unknown(),
  paused: z.boolean(),
  hotplug: hotplugSchema,
  helpers: z.array(z.strictObject({ name: z.literal('virtiofsd'), deviceId: id, pid, startTime, binary: z.string().startsWith('/') })),
});

export interface SavedVmState {
  version: typeof STATE_FILE_VERSION;
  id: string;
  pid: number;
  startTime: number;
  qemuPath: string;
  /** As probed at startVM, before the guest ran; null when unknown (judged as the oldest by the version rules). */
  qemuVersion: QemuVersion | null;
  detached: boolean;
  identity: VmIdentity | null;
  leased: boolean;
  config: SandboxConfig;
  paused: boolean;
  hotplug: HotplugState;
  /** Helper daemons (virtiofsd), so that a new owner lists and stops them too. */
  helpers: SavedHelper[];
}

/** The file's text, taken when the change is made (the hotplug state keeps changing after). */
export function serializeState(state: SavedVmState): string {
  return JSON.stringify(state);
}

/** Written to a fresh temporary name and renamed, so a reader never sees half a file. */
export async function writeStateFile(path: string, text: string): Promise<void> {
  await writeFileAtomic(path, text);
}

/** Reads and validates a state file; throws (with the reason) when it is not one this version wrote. */
export async function readStateFile(path: string): Promise<SavedVmState> {
  const parsed = stateSchema.safeParse(JSON.parse(await readRegularFile(path, MAX_STATE_BYTES)));
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    throw new Error(`not a sandbox-vmm state file of version ${STATE_FILE_VERSION}: ${first?.path.join('.') ?? ''} ${first?.message ?? ''}`);
  }
  const state = parsed.data;
  const config = parseSandboxConfig(state.config);
  if (config.id !== state.id) throw new Error(`the saved config is for VM ${config.id}, not ${state.id}`);
  if (state.version === STATE_FILE_VERSION) {
    const absent = state.qemuVersion === undefined ? 'qemuVersion' : state.hotplug.vcpuAdds === undefined ? 'hotplug.vcpuAdds' : undefined;
    if (absent) throw new Error(`not a sandbox-vmm state file of version ${STATE_FILE_VERSION}: ${absent} is required`);
  }
  // A version 2 file (an older library): the vCPUs it holds are the adds known, the version unknown.
  const hotplug = { ...state.hotplug, vcpuAdds: state.hotplug.vcpuAdds ?? state.hotplug.cpus.length };
  return { ...state, version: STATE_FILE_VERSION, qemuVersion: state.qemuVersion ?? null, hotplug, config };
}
