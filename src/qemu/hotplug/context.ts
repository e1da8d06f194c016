import type { SandboxConfig } from '../../hypervisor/config/index.ts';
import type { VcpuRules } from '../../hypervisor/resources.ts';
import type { Deadline } from '../../util/deadline.ts';
import type { Logger } from '../../util/logger.ts';
import type { QmpClient } from '../../qmp/index.ts';
import type { HotplugState } from './state.ts';

/** What a hotplug or resize step works with: one QMP connection, one deadline, the VM's state. */
export interface HotplugContext {
  qmp: QmpClient;
  config: SandboxConfig;
  state: HotplugState;
  /** What may be done with vCPUs on this QEMU and accel (hypervisor/version-rules.ts). */
  vcpuRules: VcpuRules;
  deadline: Deadline;
  logger: Logger;
  /**
   * Refuses a device_add this QEMU cannot take (MissingFeatureError naming the driver or property),
   * as far as the feature probe knows. Absent: not checked.
   */
  checkDevice?: (props: { driver: string } & Record<string, unknown>) => void;
  /** How long a removal waits for the guest to let go of a device or vCPU. */
  removalTimeoutMs: number;
  /** How long the guest may go on acting on a slot a device left (ArchProfile.freedSlotSettleMs; see slots.ts). */
  freedSlotSettleMs: number;
}

/** QMP options carrying the operation's deadline. */
export function within(ctx: HotplugContext): { signal: AbortSignal } {
  return { signal: ctx.deadline.signal };
}
