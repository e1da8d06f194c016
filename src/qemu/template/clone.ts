// A VM started from a template: checked at createVM (manifest, config, QEMU version, files), then
// at startVM QEMU gets the template's layout, its RAM mapped privately (or a copy of its own, see
// ram.ts) and, once it answers QMP, its device state on an fd (state-channel.ts); the guest is
// restored before it runs.
import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import { chmod, chown, open, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { SandboxConfig } from '../../hypervisor/config/index.ts';
import { TemplateError } from '../../hypervisor/errors.ts';
import { cloneConfigRefusal } from '../../hypervisor/templates.ts';
import type { VmIdentity } from '../../hypervisor/types.ts';
import type { QmpClient } from '../../qmp/index.ts';
import type { Logger } from '../../util/logger.ts';
import { buildQemuArgv } from '../argv/index.ts';
import { BOOT_MEMORY_ID } from '../devices/memory.ts';
import type { LaunchPlan } from '../launch/plan.ts';
import { templateArgv } from './argv.ts';
import { checkTemplateFiles, readManifest, STATE_FILE, type TemplateManifest } from './manifest.ts';
import { ignoreSharedRam, incomingMigrationDone, runningMachineType } from './migration.ts';
import { qemuVersionOf } from './qemu-version.ts';
import { CLONE_RAM_COPY, cloneRamMode, inheritSealedRam, TEMPLATE_RAM_FILE, templateRamProps, type CloneRamMode } from './ram.ts';
import { leaseSealedRam, type SealedRamLease } from './sealed-ram.ts';
import { inheritStateFd, releaseStateFd, sendStateFd, stateChannelOf, type StateChannel, type StateUri } from './state-channel.ts';
import type { QemuFeatures } from '../features/qemu-features.ts';

const run = promisify(execFile);

export class TemplateClone {
  readonly kind = 'clone';
  readonly dir: string;
  readonly #manifest: TemplateManifest;
  readonly #ramMode: CloneRamMode;
  /**
   * The state file, opened right after its check at startVM and held until QEMU has its copy: a
   * template deleted meanwhile still restores (see checkTemplateFiles).
   */
  #state: FileHandle | undefined;
  /** Where QEMU finds the state when it inherited it at spawn. */
  #inherited: StateUri | undefined;
  #ramCopy: string | undefined;
  /** The sealed copy of the template's RAM ('map-sealed'), held while this clone may run. */
  #sealedRam: SealedRamLease | undefined;

  private constructor(dir: string, manifest: TemplateManifest, ramMode: CloneRamMode) {
    this.dir = dir;
    this.#manifest = manifest;
    this.#ramMode = ramMode;
  }

  /** Everything that can be checked before a process runs: TemplateError says what is wrong. */
  static async open(dir: string, config: SandboxConfig, qemuPath: string): Promise<TemplateClone> {
    const manifest = await readManifest(dir);
    const refusal = cloneConfigRefusal(manifest.config, config, dir);
    if (refusal) throw refusal;
    const version = await qemuVersionOf(qemuPath);
    if (version !== manifest.hypervisorVersion) {
      throw new TemplateError('hypervisor-version', dir, `made by QEMU ${manifest.hypervisorVersion}, but ${qemuPath} is QEMU ${version}: a guest's saved state is only restored by the version that saved it`, {
        field: 'runtime.qemuPath',
      });
    }
    await checkTemplateFiles(dir, manifest);
    return new TemplateClone(dir, manifest, cloneRamMode(manifest.hypervisorVersion, config.memory.backing.type === 'shared'));
  }

  get ramMode(): CloneRamMode {
    return this.#ramMode;
  }

  /**
   * Just before QEMU is spawned: the files checked again (the template may be gone since createVM),
   * the RAM made ready, the state opened; the plan's argv then waits for a state (-incoming defer)
   * instead of booting. With the binary's features `known`, QEMU inherits the state at spawn in the
   * form they call for; without, restore sends it over QMP.
   */
  async launchPlan(plan: LaunchPlan, identity: VmIdentity | undefined, known: QemuFeatures | undefined, signal?: AbortSignal): Promise<LaunchPlan> {
    await checkTemplateFiles(this.dir, this.#manifest);
    const config = plan.config;
    const bytes = config.memory.bootMiB * 1024 * 1024;
    let ramPath = join(this.dir, TEMPLATE_RAM_FILE);
    let sealedFd: number | undefined;
    if (this.#ramMode === 'private-copy') {
      const copy = join(plan.paths.dir, CLONE_RAM_COPY);
      // Holes stay holes: the copy costs what the template's guest had touched. Made by us, in the
      // VM's own directory, then given to its uid.
      await run('cp', ['--sparse=always', '--no-preserve=all', '--', ramPath, copy], { env: {} });
      this.#ramCopy = copy;
      if (identity) await chown(copy, identity.uid, identity.gid);
      await chmod(copy, 0o600);
      ramPath = copy;
    } else if (this.#ramMode === 'map-sealed') {
      this.#sealedRam ??= await leaseSealedRam(ramPath, BOOT_MEMORY_ID, signal);
      sealedFd = this.#sealedRam.fd;
    }
    const state = await open(join(this.dir, STATE_FILE), constants.O_RDONLY | constants.O_NOFOLLOW);
    this.#state = state;
    // The template's layout: its boot RAM is the backend below, its other memory as the template's (anonymous).
    const argv = buildQemuArgv({ ...config, memory: { ...config.memory, prealloc: false, backing: { type: 'anonymous' } } }, plan.paths);
    const withRam = sealedFd === undefined ? { argv, ramPath } : inheritSealedRam(argv, sealedFd);
    const ram = templateRamProps(BOOT_MEMORY_ID, bytes, withRam.ramPath, this.#ramMode, config.memory.prealloc);
    const restoring = templateArgv(withRam.argv, ram, { incoming: true });
    if (!known) return { ...plan, argv: restoring };
    const inherited = inheritStateFd(restoring, state.fd, stateChannelOf(known));
    this.#inherited = inherited.state;
    return { ...plan, argv: inherited.argv };
  }

  /**
   * Restores the guest (left paused) from the state QEMU inherited, or else sends it through
   * `channel` (what this QEMU offers, see state-channel.ts); the same QEMU and machine that made
   * it, or TemplateError. `version` is the running binary's, as its feature probe read it.
   *
   * Commands that do not depend on each other's answer go out in one write: in a storm of clones,
   * each write to a QEMU costs the event loop a wake-up of that QEMU, so the restore takes as many
   * as a bare script's (capabilities, incoming, polls).
   */
  async restore(qmp: QmpClient, channel: StateChannel, version: string, signal: AbortSignal): Promise<void> {
    if (version !== this.#manifest.hypervisorVersion) {
      throw new TemplateError('hypervisor-version', this.dir, `made by QEMU ${this.#manifest.hypervisorVersion}, restored by QEMU ${version}`);
    }
    // Setting the capability commits nothing: a machine found wrong is refused before any state is read.
    const [machineType] = await Promise.all([runningMachineType(qmp, signal), ignoreSharedRam(qmp, signal, { events: true })]);
    if (machineType !== this.#manifest.machineType) {
      throw new TemplateError('machine-type', this.dir, `made on machine ${this.#manifest.machineType}, restored on ${machineType}`, { field: 'machine.type' });
    }
    const file = this.#state;
    if (file === undefined) throw new Error('restore before launchPlan');
    const state = this.#inherited ?? (await sendStateFd(qmp, channel, file.fd, signal));
    await this.#closeState();
    // QEMU opens its own duplicate of the fd set while it handles migrate-incoming, so the set may be
    // released right behind it, in the same write, whether or not the migration will succeed.
    const done = incomingMigrationDone(qmp, 'restoring the template\'s device state', signal);
    const incoming = qmp.execute('migrate-incoming', { uri: state.uri }, { signal });
    const released = releaseStateFd(qmp, state);
    try {
      await incoming.catch((error: unknown) => {
        done.cancel();
        throw error;
      });
      await done.promise;
    } finally {
      await released;
    }
    // QEMU has its copy mapped: the name is no longer needed, the pages go when QEMU does.
    if (this.#ramCopy) await unlink(this.#ramCopy).catch(() => undefined);
  }

  /** Nothing of the template is the clone's: only our state file, should the restore never have taken it, and our hold on a sealed copy. */
  async afterStop(_logger: Logger): Promise<void> {
    await this.#closeState();
    const sealed = this.#sealedRam;
    this.#sealedRam = undefined;
    await sealed?.release();
  }

  async #closeState(): Promise<void> {
    const file = this.#state;
    this.#state = undefined;
    await file?.close();
  }
}
