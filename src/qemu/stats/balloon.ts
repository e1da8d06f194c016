// The balloon's guest statistics: QEMU asks the guest's driver for them only once a polling
// interval is set, and that is a QOM property of the device, not a -device option, so it is set
// over QMP before the guest runs (and kept by QEMU across a re-attach).
import type { SandboxConfig } from '../../hypervisor/config/index.ts';
import type { QmpClient } from '../../qmp/index.ts';

type BalloonDevice = Extract<SandboxConfig['devices'][number], { type: 'balloon' }>;

export function balloonOf(config: SandboxConfig): BalloonDevice | undefined {
  return config.devices.find((d): d is BalloonDevice => d.type === 'balloon');
}

/** The balloon device's QOM path (a -device with an id lives under /machine/peripheral). */
export function balloonQomPath(balloon: BalloonDevice): string {
  return `/machine/peripheral/${balloon.id}`;
}

/** Sets the balloon's polling interval when the config asks for guest statistics. */
export async function enableBalloonStats(qmp: QmpClient, config: SandboxConfig, signal: AbortSignal): Promise<void> {
  const balloon = balloonOf(config);
  if (balloon?.statsIntervalSeconds === undefined) return;
  await qmp.execute('qom-set', { path: balloonQomPath(balloon), property: 'guest-stats-polling-interval', value: balloon.statsIntervalSeconds }, { signal });
}
