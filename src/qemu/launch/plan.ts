// A VM's launch plan: everything createVM decides before anything runs, as data. The config, the
// runtime paths, QEMU's argv with the fds it expects, and the absolute paths of every program
// involved. launch() carries it out; attach() rebuilds it to check what it adopts.
import { join } from 'node:path';
import { ConfigError, parseSandboxConfig, type SandboxConfig, type SandboxConfigInput } from '../../hypervisor/config/index.ts';
import { buildQemuArgv, type QemuArgv } from '../argv/index.ts';
import { resolveBinary } from '../binaries.ts';
import { findVirtiofsd, isManagedVirtioFs, VIRTIOFSD_CANDIDATES } from '../helpers/virtiofsd.ts';
import { defaultRuntimeBase } from '../runtime-dir.ts';
import { checkSocketPaths, runtimePaths, type RuntimePaths } from '../runtime-paths.ts';
import { netnsProblem } from '../../util/netns.ts';
import { findLauncher } from './launcher.ts';

export interface LaunchPlan {
  config: SandboxConfig;
  paths: RuntimePaths;
  argv: QemuArgv;
  /** Absolute real paths, resolved once. */
  qemuPath: string;
  virtiofsdPath: string | undefined;
  launcherPath: string;
}

/** Validates the input and resolves everything a launch needs; throws ConfigError naming each problem. */
export function planVm(input: SandboxConfigInput | SandboxConfig, dirOverride?: string): LaunchPlan {
  const config = parseSandboxConfig(input);
  const netns = config.runtime.netns;
  const netnsIssue = netns === undefined ? undefined : netnsProblem(netns);
  if (netnsIssue) throw new ConfigError([{ path: 'runtime.netns', message: netnsIssue }]);
  const dir = dirOverride ?? config.runtime.dir ?? join(defaultRuntimeBase(), config.id);
  const paths = runtimePaths(dir);
  checkSocketPaths(config, paths, config.runtime.dir === undefined && dirOverride === undefined);
  return {
    config,
    paths,
    argv: buildQemuArgv(config, paths),
    qemuPath: resolveBinary(config.runtime.qemuPath, 'runtime.qemuPath'),
    virtiofsdPath: resolveVirtiofsd(config),
    launcherPath: findLauncher(config.runtime.launcherPath),
  };
}

function resolveVirtiofsd(config: SandboxConfig): string | undefined {
  return config.devices.some(isManagedVirtioFs) ? virtiofsdOf(config) : undefined;
}

/** The absolute real path of the virtiofsd this config runs (runtime.virtiofsdPath, else the usual places); ConfigError when there is none. */
export function virtiofsdOf(config: SandboxConfig): string {
  const found = findVirtiofsd(config.runtime.virtiofsdPath);
  if (!found) {
    throw new ConfigError([
      { path: 'runtime.virtiofsdPath', message: `virtiofsd is needed for a sharedDir but is not installed (looked in ${VIRTIOFSD_CANDIDATES.join(', ')})` },
    ]);
  }
  return resolveBinary(found, 'runtime.virtiofsdPath');
}
