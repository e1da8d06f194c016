import type { SandboxConfig } from '../../hypervisor/config/index.ts';
import type { Deadline } from '../../util/deadline.ts';
import type { Logger } from '../../util/logger.ts';
import type { QmpClient } from '../../qmp/index.ts';
import type { HotplugState } from './state.ts';

/** What a hotplug or resize step works with: one QMP connection, one deadline, the VM's state. */
export interface HotplugContext {
  qmp: QmpClient;
  config: SandboxConfig;
  state: HotplugState;
  deadline: Deadline;
  logger: Logger;
  /** How long a removal waits for the guest to let go of a device or vCPU. */
  removalTimeoutMs: number;
}

/** QMP options carrying the operation's deadline. */
export function within(ctx: HotplugContext): { signal: AbortSignal } {
  return { signal: ctx.deadline.signal };
}
