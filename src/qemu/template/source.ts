// A VM booted to become a template: its directory (made by createVM, root's, 0755), its RAM file
// (QEMU's while it runs), saving the device state into it, and sealing it once QEMU is gone: the
// RAM file becomes root's and read-only to everyone else, and the manifest is written last.
import { constants } from 'node:fs';
import { mkdir, open } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { SandboxConfig } from '../../hypervisor/config/index.ts';
import { TemplateError } from '../../hypervisor/errors.ts';
import type { TemplateInfo } from '../../hypervisor/templates.ts';
import { templateConfigRefusal } from '../../hypervisor/templates.ts';
import type { VmIdentity } from '../../hypervisor/types.ts';
import { InvalidArgumentError } from '../../errors.ts';
import type { QmpClient } from '../../qmp/index.ts';
import type { Logger } from '../../util/logger.ts';
import { removeTree } from '../../util/safe-fs.ts';
import { buildQemuArgv } from '../argv/index.ts';
import { BOOT_MEMORY_ID } from '../devices/memory.ts';
import type { LaunchPlan } from '../launch/plan.ts';
import { templateArgv } from './argv.ts';
import { digestOf, STATE_FILE, writeManifest } from './manifest.ts';
import { hypervisorIdentity, ignoreSharedRam, migrationDone } from './migration.ts';
import { TEMPLATE_RAM_FILE, templateRamProps } from './ram.ts';
import { releaseStateFd, sendStateFd, type StateChannel } from './state-channel.ts';

const MiB = 1024 * 1024;
const NEW_FILE = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

export class TemplateSource {
  readonly kind = 'source';
  readonly dir: string;
  readonly #config: SandboxConfig;
  #made: { version: string; machineType: string } | undefined;
  #sealed = false;

  private constructor(dir: string, config: SandboxConfig) {
    this.dir = dir;
    this.#config = config;
  }

  /** Refuses what cannot be a template, then makes the directory and the RAM file QEMU maps. */
  static async make(dir: string, config: SandboxConfig, identity: VmIdentity | undefined): Promise<TemplateSource> {
    const refusal = templateConfigRefusal(config, dir);
    if (refusal) throw refusal;
    try {
      await mkdir(dir, { mode: 0o755 });
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') throw new TemplateError('exists', dir, 'the directory already exists: a template is made in a new directory', { cause: error });
      if (code === 'ENOENT') throw new InvalidArgumentError('templateDir', `its parent ${dirname(dir)} does not exist`, { cause: error });
      throw error;
    }
    const source = new TemplateSource(dir, config);
    try {
      const ram = await open(join(dir, TEMPLATE_RAM_FILE), NEW_FILE, 0o600);
      try {
        // Sized by us and handed to QEMU's uid: QEMU never needs to write in the directory itself.
        await ram.truncate(config.memory.bootMiB * MiB);
        await ram.chmod(0o600);
        if (identity) await ram.chown(identity.uid, identity.gid);
      } finally {
        await ram.close();
      }
    } catch (error) {
      // The directory is new and ours: nothing of a template that could not be made stays.
      await source.discard();
      throw error;
    }
    return source;
  }

  /** The template VM's argv: its boot RAM is the template's file, shared. */
  launchPlan(plan: LaunchPlan): LaunchPlan {
    const config = plan.config;
    const argv = buildQemuArgv({ ...config, memory: { ...config.memory, prealloc: false } }, plan.paths);
    const ram = templateRamProps(BOOT_MEMORY_ID, config.memory.bootMiB * MiB, join(this.dir, TEMPLATE_RAM_FILE), 'template', config.memory.prealloc);
    return { ...plan, argv: templateArgv(argv, ram) };
  }

  /**
   * Pauses the guest and saves its device state into the directory, through `channel` (what this
   * QEMU offers, see state-channel.ts); QEMU keeps running (paused).
   */
  async save(qmp: QmpClient, channel: StateChannel, signal: AbortSignal): Promise<void> {
    await qmp.execute('stop', undefined, { signal });
    await ignoreSharedRam(qmp, signal);
    // Opened by us, handed over as an fd: QEMU never opens a path in the directory.
    const file = await open(join(this.dir, STATE_FILE), NEW_FILE, 0o644);
    let state;
    try {
      // Whatever the umask: 0644 like the sealed RAM file, writable by root alone.
      await file.chmod(0o644);
      state = await sendStateFd(qmp, channel, file.fd, signal);
    } finally {
      await file.close();
    }
    try {
      await qmp.execute('migrate', { uri: state.uri }, { signal });
      await migrationDone(qmp, 'saving the device state', signal);
    } finally {
      await releaseStateFd(qmp, state);
    }
    this.#made = await hypervisorIdentity(qmp, signal);
  }

  /** Once QEMU is gone: the RAM file becomes root's, read-only to others; the manifest makes it a template. */
  async seal(): Promise<TemplateInfo> {
    const made = this.#made;
    if (!made) throw new Error('the device state was not saved');
    const ramBytes = this.#config.memory.bootMiB * MiB;
    const ram = await open(join(this.dir, TEMPLATE_RAM_FILE), constants.O_RDONLY | constants.O_NOFOLLOW);
    try {
      const stats = await ram.stat();
      if (!stats.isFile() || stats.size !== ramBytes) throw new TemplateError('corrupt', this.dir, `the RAM file changed while the template VM ran (${stats.size} bytes, ${ramBytes} expected)`);
      // Through the fd opened without following a link: what becomes root's is the file we checked.
      await ram.chown(process.geteuid?.() ?? 0, process.getegid?.() ?? 0);
      await ram.chmod(0o644);
    } finally {
      await ram.close();
    }
    const state = await digestOf(this.dir, join(this.dir, STATE_FILE));
    await writeManifest(this.dir, {
      hypervisorVersion: made.version,
      machineType: made.machineType,
      config: this.#config,
      ramBytes,
      stateBytes: state.bytes,
      stateSha256: state.sha256,
    });
    this.#sealed = true;
    return { dir: this.dir, hypervisorVersion: made.version, machineType: made.machineType, stateBytes: state.bytes, ramBytes };
  }

  /** After the VM ended: a template that was not sealed leaves nothing behind. */
  async afterStop(logger: Logger): Promise<void> {
    if (!this.#sealed && this.#made === undefined) await this.discard(logger);
  }

  async discard(logger?: Logger): Promise<void> {
    await removeTree(this.dir).catch((error: unknown) => logger?.warn({ err: error, dir: this.dir }, 'could not remove an unfinished template'));
  }
}
