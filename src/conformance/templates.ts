// Sandbox templates: a booted VM saved as a template, clones started from it, and what is refused
// (another config, devices that cannot be saved, a directory without a template, a damaged one),
// each before anything is made.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TemplateError } from '../hypervisor/errors.ts';
import type { Hypervisor } from '../hypervisor/types.ts';
import type { SandboxConfigInput } from '../hypervisor/config/index.ts';
import { rejectsWithCode, type Harness, type VmSpec } from './harness.ts';
import type { ConformanceTestApi } from './options.ts';

// One vCPU and no vCPU hotplug: what every machine can do (aarch64's virt has none).
const spec: VmSpec = { cpus: { boot: 1, max: 1 }, memory: { bootMiB: 256, hotplug: 'none' }, rootPorts: 2 };

export function defineTemplateTests(t: ConformanceTestApi, h: Harness): void {
  const ms = h.timeouts.testMs;
  const templateDir = h.options.templateDir;

  if (!templateDir) {
    t.it('without templates, saveTemplate is refused', async () => {
      await h.withVm(async (vm) => {
        assert.equal(vm.capabilities().templates, false, 'a backend with templates must be given ConformanceOptions.templateDir');
        await h.boot(vm, spec);
        await rejectsWithCode(vm.saveTemplate(h.op()), 'INVALID_STATE', 'saveTemplate of a VM not made to be a template');
      });
    }, ms);
    return;
  }

  /**
   * On a machine whose capabilities() say templates: false (aarch64's virt), making or using one is
   * refused with TemplateError before anything is made; true when that is the case (and was checked).
   */
  const refusedHere = async (): Promise<boolean> => {
    if ((await h.capabilities()).templates) return false;
    const dir = await templateDir('refused');
    for (const options of [{ templateDir: dir }, { fromTemplate: dir }]) {
      await h.withVm(async (vm) => {
        await rejectsWithCode(vm.createVM(h.config(spec), { ...h.op(), ...options }), 'TEMPLATE_REFUSED', 'a template where capabilities() say templates: false');
        assert.equal(vm.state, 'new', 'a refused createVM leaves the instance new');
      });
    }
    return true;
  };

  /** Boots a template VM in `dir` (until its agent answers, when the suite knows its channel) and saves it. */
  async function makeTemplate(dir: string): Promise<SandboxConfigInput> {
    const config = h.config(spec);
    await h.withVm(async (vm) => {
      assert.equal(vm.capabilities().templates, true);
      await vm.createVM(config, { ...h.op(), templateDir: dir });
      const channel = h.options.channels?.opened;
      await vm.startVM({ ...h.op(), ...(channel ? { waitForChannel: channel } : {}) });
      const info = await vm.saveTemplate(h.op());
      assert.equal(info.dir, dir);
      assert.ok(info.stateBytes > 0 && info.ramBytes >= 256 * 1024 * 1024, `the template holds state and RAM (${info.stateBytes}, ${info.ramBytes})`);
      assert.equal(vm.state, 'stopped', 'saveTemplate ends the template VM');
    });
    return config;
  }

  /** The template's config with an id of its own, as a clone's. */
  const cloneOf = (config: SandboxConfigInput): SandboxConfigInput => ({ ...config, id: `${String(config.id)}-c${Math.random().toString(36).slice(2, 8)}` });

  t.it('a booted VM saved as a template starts clones that run, pause, resume and stop like any VM', async () => {
    if (await refusedHere()) return;
    const dir = await templateDir('clones');
    const config = await makeTemplate(dir);
    const clones: Hypervisor[] = [await h.create(), await h.create()];
    try {
      for (const clone of clones) {
        await clone.createVM(cloneOf(config), { ...h.op(), fromTemplate: dir });
        await clone.startVM(h.op());
        assert.equal(clone.state, 'running');
      }
      for (const clone of clones) {
        await clone.check(h.op());
        await clone.pauseVM(h.op());
        await clone.resumeVM(h.op());
      }
      assert.notEqual(clones[0]?.getPids()[0], clones[1]?.getPids()[0], 'each clone has a hypervisor of its own');
    } finally {
      for (const clone of clones) await h.dispose(clone);
    }
    for (const clone of clones) assert.equal(clone.state, 'stopped');
  }, ms);

  t.it('what cannot be a template, or not this one, is refused at createVM with TemplateError naming why; nothing is made', async () => {
    if (await refusedHere()) return;
    const dir = await templateDir('refusals');
    const config = await makeTemplate(dir);
    const refused = async (input: SandboxConfigInput, options: { templateDir?: string; fromTemplate?: string }, problem: string, field?: string) => {
      await h.withVm(async (vm) => {
        const error = await rejectsWithCode<TemplateError>(vm.createVM(input, { ...h.op(), ...options }), 'TEMPLATE_REFUSED', `createVM refused (${problem})`);
        assert.equal(error.problem, problem, error.message);
        assert.equal(error.field, field, error.message);
        assert.equal(vm.state, 'new', 'a refused createVM leaves the instance as it was');
      });
    };
    await refused({ ...cloneOf(config), cpus: { boot: 2, max: 2 } }, { fromTemplate: dir }, 'config', 'cpus.boot');
    await refused(cloneOf(config), { fromTemplate: await templateDir('nothing-here') }, 'not-a-template');
    await refused(h.config(spec), { templateDir: dir }, 'exists');
    const withNic = h.config({ ...spec, devices: [{ type: 'net', id: 'nic0', tap: { ifname: 'svmm-none0' } }] });
    const nicIndex = (withNic.devices ?? []).length - 1;
    await refused(withNic, { templateDir: await templateDir('nic') }, 'device', `devices.${nicIndex}`);
    const withVfio = h.config({ ...spec, devices: [{ type: 'vfio', id: 'gpu0', hostAddress: '0000:ff:1f.7' }] });
    await refused(withVfio, { templateDir: await templateDir('vfio') }, 'device', `devices.${(withVfio.devices ?? []).length - 1}`);
    const corrupt = h.options.faults?.corruptTemplate;
    if (corrupt) {
      await corrupt(dir);
      await refused(cloneOf(config), { fromTemplate: dir }, 'corrupt');
    }
  }, ms);

  const shareDir = h.options.shareDir;
  if (shareDir) {
    t.it('a clone on shared memory takes virtio-fs shares by hot-plug once it runs (a share in its config is refused, naming it); other backings are refused', async () => {
      if (await refusedHere()) return;
      const dir = await templateDir('shares');
      const config = await makeTemplate(dir);
      const memory = { ...spec.memory, backing: { type: 'shared' as const } };
      await h.withVm(async (clone) => {
        const input: SandboxConfigInput = { ...cloneOf(config), memory };
        const shared = await shareDir('clone-share', clone);
        writeFileSync(join(shared, 'marker.txt'), 'from the host\n');
        const share = { type: 'fs' as const, driver: 'virtio-fs' as const, id: 'clone-share', tag: 'clone-share', sharedDir: shared };
        const withShare = { ...input, devices: [...(input.devices ?? []), share] };
        const inConfig = await rejectsWithCode<TemplateError>(clone.createVM(withShare, { ...h.op(), fromTemplate: dir }), 'TEMPLATE_REFUSED', 'a clone with a share in its config');
        assert.equal(inConfig.field, `devices.${withShare.devices.length - 1}`, inConfig.message);
        assert.equal(clone.state, 'new', 'a refused createVM leaves the instance unused');
        await clone.createVM(input, { ...h.op(), fromTemplate: dir });
        await clone.startVM(h.op());
        const probes = h.options.guest;
        // The share goes in once the guest runs: here, once it has answered a probe.
        if (probes?.memoryMiB) await probes.memoryMiB(clone);
        const plugged = await clone.hotplugAddDevice(share, h.op());
        assert.equal(plugged.id, 'clone-share');
        assert.equal(clone.devices().find((d) => d.id === 'clone-share')?.hotplugged, true);
        assert.equal(clone.getPids().length, 2, 'the share\'s daemon runs beside the hypervisor');
        assert.equal(clone.capabilities().fsHotplug, true);
        if (probes?.readShared) assert.equal(await probes.readShared(clone, 'clone-share', 'marker.txt'), 'from the host\n', 'the clone\'s guest reads the share');
      });
      await h.withVm(async (vm) => {
        const onFile = { ...cloneOf(config), memory: { ...spec.memory, backing: { type: 'file' as const, path: '/dev/shm/conformance-never' } } };
        const error = await rejectsWithCode<TemplateError>(vm.createVM(onFile, { ...h.op(), fromTemplate: dir }), 'TEMPLATE_REFUSED', 'a clone with memory on a file');
        assert.equal(error.field, 'memory.backing', error.message);
      });
    }, ms);
  }

  t.it('saveTemplate is refused for a VM not made to be one; a template VM stopped unsaved leaves its directory free', async () => {
    if (await refusedHere()) return;
    await h.withVm(async (vm) => {
      await h.boot(vm, spec);
      await rejectsWithCode(vm.saveTemplate(h.op()), 'INVALID_STATE', 'saveTemplate of a VM not made to be a template');
      assert.equal(vm.state, 'running');
    });
    const dir = await templateDir('unsaved');
    for (let i = 0; i < 2; i++) {
      await h.withVm(async (vm) => {
        await vm.createVM(h.config(spec), { ...h.op(), templateDir: dir });
        await vm.startVM({ ...h.op(), paused: true });
        await vm.stopVM();
      });
    }
    await h.withVm(async (vm) => {
      await rejectsWithCode(vm.createVM(h.config(spec), { ...h.op(), fromTemplate: dir }), 'TEMPLATE_REFUSED', 'an unsaved template directory holds no template');
    });
  }, ms);
}
