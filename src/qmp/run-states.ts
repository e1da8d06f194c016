// QEMU's run states (qapi/run-state.json) as a value, for what checks a reply at runtime: the
// client's schema surface and the backend's query-status check. A state missing here fails to compile.
import type { RunState } from './types.ts';

export const RUN_STATES = [
  'debug',
  'inmigrate',
  'internal-error',
  'io-error',
  'paused',
  'postmigrate',
  'prelaunch',
  'finish-migrate',
  'restore-vm',
  'running',
  'save-vm',
  'shutdown',
  'suspended',
  'watchdog',
  'guest-panicked',
  'colo',
] as const satisfies readonly RunState[];
const _allRunStates: Exclude<RunState, (typeof RUN_STATES)[number]> extends never ? true : never = true;
void _allRunStates;
