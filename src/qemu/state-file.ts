// What a VM's runtime directory records so that another process can take the VM over: who the
// QEMU process is, its config, and what was plugged and resized since it started.
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import type { SandboxConfig } from '../hypervisor/config/index.ts';
import type { DropPrivileges } from './process/vmm-process.ts';
import type { HotplugState } from './hotplug/state.ts';
import type { SavedHelper } from './helpers/helper-set.ts';

export const STATE_FILE_VERSION = 1;

export interface SavedVmState {
  version: typeof STATE_FILE_VERSION;
  id: string;
  pid: number;
  startTime: number | undefined;
  detached: boolean;
  user: DropPrivileges | undefined;
  config: SandboxConfig;
  paused: boolean;
  hotplug: HotplugState;
  /** Helper daemons (virtiofsd), so that a new owner lists and stops them too. */
  helpers: SavedHelper[];
}

/** Written to a temporary name and renamed, so a reader never sees half a file. */
export function writeStateFile(path: string, state: SavedVmState): void {
  const tmp = `${path}.tmp`;
  writeFileSync(tmp, JSON.stringify(state), { mode: 0o600 });
  renameSync(tmp, path);
}

export function readStateFile(path: string): SavedVmState {
  const parsed = JSON.parse(readFileSync(path, 'utf8')) as Partial<SavedVmState>;
  if (parsed.version !== STATE_FILE_VERSION || typeof parsed.pid !== 'number' || !parsed.config) {
    throw new Error(`${path} is not a sandbox-vmm state file of version ${STATE_FILE_VERSION}`);
  }
  return parsed as SavedVmState;
}
