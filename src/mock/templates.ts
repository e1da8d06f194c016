// The mock's templates: kept in this process, keyed by their directory (nothing is written to disk),
// under the same rules and errors as the QEMU backend's.
import type { SandboxConfig } from '../hypervisor/config/index.ts';
import { TemplateError } from '../hypervisor/errors.ts';
import { cloneConfigRefusal, templateConfigRefusal, type TemplateInfo } from '../hypervisor/templates.ts';

export const MOCK_HYPERVISOR_VERSION = 'mock-1';
const MOCK_MACHINE_TYPE = 'mock-q35';

interface SavedTemplate {
  config: SandboxConfig;
  info: TemplateInfo;
  corrupt: boolean;
}

/** Directories a template VM was created for, not saved yet. */
const reserved = new Set<string>();
const saved = new Map<string, SavedTemplate>();

/** createVM with templateDir: the directory is this VM's until it is saved or the VM stops. */
export function reserveTemplateDir(config: SandboxConfig, dir: string): void {
  const refusal = templateConfigRefusal(config, dir);
  if (refusal) throw refusal;
  if (reserved.has(dir) || saved.has(dir)) throw new TemplateError('exists', dir, 'the directory already exists: a template is made in a new directory');
  reserved.add(dir);
}

export function releaseTemplateDir(dir: string): void {
  reserved.delete(dir);
}

export function saveMockTemplate(config: SandboxConfig, dir: string): TemplateInfo {
  reserved.delete(dir);
  const info: TemplateInfo = { dir, hypervisorVersion: MOCK_HYPERVISOR_VERSION, machineType: MOCK_MACHINE_TYPE, stateBytes: 4096, ramBytes: config.memory.bootMiB * 1024 * 1024 };
  saved.set(dir, { config, info, corrupt: false });
  return info;
}

/** createVM with fromTemplate: the template must exist, be whole, and fit the clone's config. */
export function checkMockClone(config: SandboxConfig, dir: string): void {
  const template = saved.get(dir);
  if (!template) throw new TemplateError('not-a-template', dir, 'no template was saved there');
  if (template.corrupt) throw new TemplateError('corrupt', dir, 'the saved device state does not match what the template recorded');
  const refusal = cloneConfigRefusal(template.config, config, dir);
  if (refusal) throw refusal;
}

/** What a fault test does to a template on disk: its saved state no longer matches its record. */
export function corruptMockTemplate(dir: string): void {
  const template = saved.get(dir);
  if (template) template.corrupt = true;
}

/** Removing a template's directory; clones already running are not affected. */
export function deleteMockTemplate(dir: string): void {
  saved.delete(dir);
}
