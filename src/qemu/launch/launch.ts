// Carries a launch plan out, in order: the helper daemons first (QEMU connects to their sockets as
// it starts), then QEMU through the launcher, as the VM's own identity, with no capability, no
// inherited fd and no environment. The VM's home (directory, uid lease) was made by createVM.
import type { VmIdentity } from '../../hypervisor/types.ts';
import { HelperSet } from '../helpers/helper-set.ts';
import { SpawnedProcess } from '../process/vmm-process.ts';
import { spawnTurn } from '../process/spawn-turns.ts';
import type { VmHome } from './home.ts';
import type { LaunchSpec } from './launcher.ts';
import type { LaunchPlan } from './plan.ts';
import { VmSession, type SessionOptions } from './session.ts';

export async function launchVm(plan: LaunchPlan, home: VmHome, options: SessionOptions & { signal: AbortSignal }): Promise<VmSession> {
  const helpers = new HelperSet();
  await helpers.startAll(plan.config, plan.paths, {
    launcher: plan.launcherPath,
    virtiofsd: plan.virtiofsdPath,
    qemuUser: home.identity,
    runtime: plan.config.runtime,
    logger: options.logger,
    signal: options.signal,
  });
  try {
    // A start storm's spawns, a few per event-loop turn (see spawn-turns.ts).
    await spawnTurn(options.signal);
    const process = SpawnedProcess.spawn({
      launcher: plan.launcherPath,
      launch: qemuLaunchSpec(plan, home.identity),
      detached: plan.config.runtime.detached,
      stderrFile: plan.paths.stderrFile,
      logger: options.logger,
    });
    options.logger.debug({ pid: process.pid }, 'qemu spawned');
    return new VmSession(process, helpers, home, options);
  } catch (error) {
    await helpers.stopAll();
    throw error;
  }
}

/** What the launcher does for QEMU: everything an escaped guest could use is gone before exec. */
export function qemuLaunchSpec(plan: LaunchPlan, identity: VmIdentity | undefined): LaunchSpec {
  return {
    program: plan.qemuPath,
    args: plan.argv.args,
    fds: plan.argv.fds,
    user: identity,
    dropCapabilities: true,
    dieWithParent: !plan.config.runtime.detached,
    netns: plan.config.runtime.netns,
  };
}
