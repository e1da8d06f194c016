// Sandbox templates, backend-neutral: what createVM takes to make or use one, what saveTemplate
// returns, and the rules every backend applies before anything runs: which devices a template may
// hold and which parts of a clone's config must equal the template's.
import { isDeepStrictEqual } from 'node:util';
import { InvalidArgumentError } from '../errors.ts';
import type { SandboxConfig, VirtioFsDeviceConfig } from './config/index.ts';
import { TemplateError } from './errors.ts';
import { archProfile } from './arch-profiles.ts';
import type { OperationOptions } from '../util/deadline.ts';

export interface CreateOptions extends OperationOptions {
  /**
   * Boot this VM to become a template in this directory (it must not exist; its parent must). Its
   * RAM lives in a file there from the start; saveTemplate then saves the device state next to it.
   */
  templateDir?: string;
  /**
   * Start this VM from the template saved in this directory: startVM restores the template's guest
   * instead of booting. The config must equal the template's except for the per-sandbox fields
   * (id, runtime, hardening.user/allowRoot, console.logFile); NICs and disks of its own are
   * hot-plugged after startVM. It may add virtio-fs shares, with memory.backing `shared`: startVM
   * hot-plugs them once the guest is restored (devices() lists them hot-plugged, `config` holds the
   * template's layout). Shared memory costs the clone a RAM copy of its own (its pages are not
   * shared with the template's): a share's daemon must map the clone's memory, which a private
   * copy-on-write mapping of the template's file cannot give it.
   */
  fromTemplate?: string;
}

/** What saveTemplate made. */
export interface TemplateInfo {
  dir: string;
  /** The hypervisor version that made it, and alone may restore it ('7.2.22' for QEMU). */
  hypervisorVersion: string;
  /** The machine type it was made with, resolved ('pc-q35-7.2'). */
  machineType: string;
  /** Size of the saved device state. */
  stateBytes: number;
  /** Size of the guest RAM file. */
  ramBytes: number;
}

/** createVM's template options, checked before anything is made. */
export function templateRole(options: CreateOptions): { kind: 'source' | 'clone'; dir: string } | undefined {
  const { templateDir, fromTemplate } = options;
  if (templateDir !== undefined && fromTemplate !== undefined) throw new InvalidArgumentError('templateDir', 'give templateDir (make a template) or fromTemplate (use one), not both');
  for (const [name, dir] of [['templateDir', templateDir], ['fromTemplate', fromTemplate]] as const) {
    if (dir !== undefined && (typeof dir !== 'string' || !dir.startsWith('/') || dir.includes('\0') || dir.split('/').includes('..'))) {
      throw new InvalidArgumentError(name, 'must be an absolute path without ".." or NUL');
    }
  }
  if (templateDir !== undefined) return { kind: 'source', dir: templateDir.replace(/\/+$/, '') || '/' };
  if (fromTemplate !== undefined) return { kind: 'clone', dir: fromTemplate.replace(/\/+$/, '') || '/' };
  return undefined;
}

/**
 * Why `config` cannot be a template VM or a clone at all: its machine has no templates
 * (arch-profiles.ts), or it is detached (a template VM or a clone is started with a command line
 * its config alone does not build, so a restarted runtime could not check and re-attach it).
 */
export function templateUseRefusal(config: SandboxConfig, dir: string): TemplateError | undefined {
  const profile = archProfile(config.machine.arch);
  if (!profile.templates) return new TemplateError('unsupported', dir, profile.templatesMissing, { field: 'machine.arch' });
  if (!config.runtime.detached) return undefined;
  return new TemplateError('config', dir, 'a template VM or a clone cannot be detached (re-attaching one is not supported)', { field: 'runtime.detached' });
}

/**
 * Why `config` cannot be a template's, if it cannot: devices whose state cannot be saved with the
 * guest (vfio, vhost-user-fs, 9p), or that must differ per sandbox (NICs, writable or caller-fd
 * disks, a vsock CID), and a memory backing of its own (the template's RAM file is the backing).
 */
export function templateConfigRefusal(config: SandboxConfig, dir: string): TemplateError | undefined {
  // Devices first: virtio-fs needs a backing of its own, and is what the caller must hear about.
  for (const [index, device] of config.devices.entries()) {
    const why = deviceRefusal(device);
    if (why) return new TemplateError('device', dir, `devices[${index}] ('${device.id}'): ${why}`, { field: `devices.${index}` });
  }
  if (config.memory.backing.type !== 'anonymous') {
    return new TemplateError('config', dir, 'memory.backing must be left anonymous: a template VM\'s RAM is the template\'s own file', { field: 'memory.backing' });
  }
  return undefined;
}

function deviceRefusal(device: SandboxConfig['devices'][number]): string | undefined {
  switch (device.type) {
    case 'vfio':
      return 'a VFIO device\'s state lives in the host hardware and cannot be saved';
    case 'fs':
      return device.driver === 'virtio-fs'
        ? 'vhost-user-fs cannot be saved with the guest: attach the share to each clone after startVM'
        : 'a mounted 9p share blocks saving the guest';
    case 'net':
      return 'a NIC belongs to one sandbox: hot-plug it into each clone after startVM';
    case 'vsock':
      return 'a vsock CID belongs to one sandbox, and clones would share it';
    case 'block':
      if (!device.readOnly) return 'a writable disk belongs to one sandbox: hot-plug it into each clone after startVM';
      if (device.path === undefined) return 'a disk given as a caller fd belongs to one process: give a path';
      return undefined;
    case 'rng':
    case 'balloon':
    case 'channel':
    case 'pvpanic':
      return undefined;
  }
}

/** The per-sandbox parts of a config: a clone sets them as it likes. */
function layoutOf(config: SandboxConfig): unknown {
  const { id: _id, runtime: _runtime, hardening, console, ...layout } = config;
  return { ...layout, seccomp: hardening.seccomp, consoleSocket: console.socket };
}

function isVirtioFs(device: SandboxConfig['devices'][number]): device is VirtioFsDeviceConfig {
  return device.type === 'fs' && device.driver === 'virtio-fs';
}

/**
 * Why a clone's `config` does not fit the template's, if it does not: a virtio-fs share in it (a
 * clone's shares are hot-plugged by the caller once its guest runs), its memory.backing neither the
 * template's nor `shared` (a RAM copy of its own, which a share's daemon can map), or the first
 * field (in the config's own order) where the guest's layout differs.
 */
export function cloneConfigRefusal(template: SandboxConfig, config: SandboxConfig, dir: string): TemplateError | undefined {
  const share = config.devices.findIndex(isVirtioFs);
  if (share >= 0) {
    // Measured: a share plugged while a restored guest settles (before or right after cont) stalled
    // the guest in 1 start of 8 under load, on QEMU 7.2 and 10.0.2; plugged once its agent had
    // answered, 0 of 8. Only the caller can tell that its guest runs.
    return new TemplateError('config', dir, `devices[${share}] is a virtio-fs share: start the clone (with memory.backing "shared") without it, and hot-plug it with hotplugAddDevice once the clone's guest runs (a share attached while a restored guest settles can stall it)`, { field: `devices.${share}` });
  }
  const backing = config.memory.backing.type;
  if (backing !== template.memory.backing.type && backing !== 'shared') {
    return new TemplateError('config', dir, `a clone's memory is the template's RAM file: memory.backing must be "${template.memory.backing.type}" (pages shared with the template) or "shared" (a copy of its own, which virtio-fs needs)`, { field: 'memory.backing' });
  }
  if (backing === 'shared' && template.memory.hotplug === 'virtio-mem') {
    return new TemplateError('config', dir, 'a clone with shared memory (for virtio-fs) needs a template without virtio-mem: the template\'s virtio-mem memory is anonymous, no share\'s daemon could map it', { field: 'memory.backing' });
  }
  const layout = { ...config, memory: { ...config.memory, backing: template.memory.backing } };
  const path = firstDifference(layoutOf(template), layoutOf(layout), []);
  if (path === undefined) return undefined;
  const field = path.join('.').replace(/^seccomp$/, 'hardening.seccomp').replace(/^consoleSocket$/, 'console.socket');
  return new TemplateError('config', dir, `the config differs from the template's at ${field}: a clone's guest must see the devices and resources the template was booted with`, { field });
}

function firstDifference(a: unknown, b: unknown, path: string[]): string[] | undefined {
  if (isDeepStrictEqual(a, b)) return undefined;
  if (Array.isArray(a) && Array.isArray(b)) {
    if (a.length !== b.length) return path;
    for (const [index, item] of a.entries()) {
      const found = firstDifference(item, b[index], [...path, String(index)]);
      if (found) return found;
    }
    return path;
  }
  if (isObject(a) && isObject(b)) {
    for (const key of new Set([...Object.keys(a), ...Object.keys(b)])) {
      const found = firstDifference(a[key], b[key], [...path, key]);
      if (found) return found;
    }
  }
  return path;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
