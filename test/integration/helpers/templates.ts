// What the template tests share: a directory of templates in /dev/shm (as a runtime would keep
// them in tmpfs), removed after the file, and a template made from a booted guest the test prepares.
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { afterAll } from 'vitest';
import type { SandboxConfigInput } from '../../../src/hypervisor/config/index.ts';
import type { TemplateInfo } from '../../../src/hypervisor/templates.ts';
import { QemuHypervisor } from '../../../src/qemu/qemu-hypervisor.ts';
import type { GuestAgent } from '../../guest/index.ts';
import { connectAgent } from './sandbox.ts';

/** A fresh directory for this file's templates, searchable by the VMs' QEMU users, removed after the file. */
export function templatesRoot(prefix: string): string {
  const root = mkdtempSync(`/dev/shm/${prefix}-`);
  chmodSync(root, 0o755);
  afterAll(() => rmSync(root, { recursive: true, force: true }));
  return root;
}

/**
 * Boots `config` with its template going to `dir`, lets `prepare` shape the guest through its agent,
 * and saves the template with the agent still connected: closing first would save the guest
 * wherever its agent is in reopening its port on the hang-up (a quiesced guest, as a runtime would
 * make one, not a guest caught mid-reconnect). The template VM is stopped however it ends.
 */
export async function makeTemplate(
  config: SandboxConfigInput,
  dir: string,
  prepare: (agent: GuestAgent) => Promise<void>,
): Promise<{ info: TemplateInfo; stateAfterSave: string; savedAt: number }> {
  const vm = new QemuHypervisor();
  try {
    await vm.createVM(config, { templateDir: dir });
    await vm.startVM();
    const agent = await connectAgent(vm);
    await prepare(agent);
    const info = await vm.saveTemplate();
    const savedAt = Date.now();
    await agent.close();
    return { info, stateAfterSave: vm.state, savedAt };
  } finally {
    await vm.stopVM();
  }
}
