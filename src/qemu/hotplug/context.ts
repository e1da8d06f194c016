import type { SandboxConfig, VirtioFsDeviceConfig } from '../../hypervisor/config/index.ts';
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
  /** The VM's helper daemons, for virtio-fs shares with a sharedDir. Absent: such a share cannot be hot-plugged. */
  helpers?: HotplugHelpers;
}

/** Starting and stopping the virtiofsd of a hot-plugged share (helpers/helper-set.ts, under the VM's rules). */
export interface HotplugHelpers {
  /** The socket QEMU connects to for the share the backend serves. */
  socketOf(deviceId: string): string;
  /** Starts its virtiofsd; resolves once QEMU's user may connect to its socket. */
  startVirtiofsd(device: VirtioFsDeviceConfig & { sharedDir: string }, signal: AbortSignal): Promise<void>;
  /** Stops its virtiofsd (if it runs) and removes its socket and pid file. */
  stop(deviceId: string): Promise<void>;
}

/** QMP options carrying the operation's deadline. */
export function within(ctx: HotplugContext): { signal: AbortSignal } {
  return { signal: ctx.deadline.signal };
}
