// virtio-fs in clones of a template, on the real guest: vhost-user-fs cannot be saved with a guest,
// so a clone's shares are hot-plugged by the caller once its guest runs (a share in a clone's config
// is refused), and its memory must be mappable by the share's daemon: with memory.backing "shared"
// the clone maps a RAM copy of its own, shared, on every QEMU version (over a private copy-on-write
// mapping of the template's file, which QEMU >= 8.2 uses otherwise, the daemon would see the
// template's pages, not the clone's). Proven from inside each clone: the template guest's marker is
// still there, the share is mounted and read, and a file the guest writes is seen on the host.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, type SandboxConfigInput } from '../../src/hypervisor/config/index.ts';
import { TemplateError } from '../../src/hypervisor/errors.ts';
import { QemuHypervisor } from '../../src/qemu/qemu-hypervisor.ts';
import { isProcessAlive } from '../../src/qemu/process/proc-fs.ts';
import { runtimePaths } from '../../src/qemu/runtime-paths.ts';
import { useCleanups } from './helpers/cleanups.ts';
import { eventually } from './helpers/eventually.ts';
import { connectAgent, guestConfig, RUNTIME_BASE, scratchDir } from './helpers/sandbox.ts';
import { makeTemplate, templatesRoot } from './helpers/templates.ts';

const MARKER = `template-marker-${process.pid}`;
const scratch = scratchDir();
const templates = templatesRoot('svmm-tmpl-vfs');
afterAll(() => scratch.remove());

const { cleanups, track } = useCleanups();

/** No virtio-mem: its memory would stay anonymous in a clone, out of a share daemon's reach. */
function templateConfig(): SandboxConfigInput {
  return guestConfig({ cpus: { boot: 1, max: 1 }, memory: { bootMiB: 256 } });
}

function shareDir(name: string): string {
  const dir = join(scratch.dir, name);
  mkdirSync(dir);
  writeFileSync(join(dir, 'from-host.txt'), `host file of ${name}\n`);
  return dir;
}

describe('virtio-fs in clones of a template', () => {
  const dir = join(templates, 'base');

  beforeAll(async () => {
    await makeTemplate(templateConfig(), dir, async (agent) => {
      await agent.runOk(`echo ${MARKER} > /tmp/marker`);
    });
  }, 180_000);

  it('a clone with memory.backing shared takes a share hot-plugged once its guest runs: mounted, read and written in its guest, beside the template guest\'s marker; a share in its config is refused', async () => {
    const share = shareDir('clone-share');
    const id = `tmpl-vfs-${process.pid}`;
    const base = templateConfig();
    const clone = { ...base, id, memory: { bootMiB: 256, backing: { type: 'shared' as const } } };
    const device = { type: 'fs' as const, driver: 'virtio-fs' as const, id: 'share', tag: 'clonetag', sharedDir: share };
    const vm = track(new QemuHypervisor());
    const inConfig = (await vm.createVM({ ...clone, devices: [...(base.devices ?? []), device] }, { fromTemplate: dir }).catch((e: unknown) => e)) as TemplateError;
    expect(inConfig).toBeInstanceOf(TemplateError);
    expect(inConfig).toMatchObject({ problem: 'config', field: `devices.${(base.devices ?? []).length}` });
    expect(existsSync(join(RUNTIME_BASE, id))).toBe(false);
    await vm.createVM(clone, { fromTemplate: dir });
    // Started paused and resumed once the agent's channel is connected (see templates.test.ts).
    await vm.startVM({ paused: true });
    const connecting = connectAgent(vm);
    connecting.then((agent) => cleanups.push(() => agent.close()), () => undefined);
    await vm.resumeVM();
    const agent = await connecting;
    expect((await agent.runOk('cat /tmp/marker')).trim()).toBe(MARKER);
    await vm.hotplugAddDevice(device);
    expect(vm.devices().find((d) => d.id === 'share')).toMatchObject({ type: 'fs', hotplugged: true });
    const [qemu = -1, daemon = -1] = vm.getPids();
    expect(vm.getPids()).toHaveLength(2);
    expect(readFileSync(`/proc/${daemon}/comm`, 'utf8').trim()).toBe('virtiofsd');
    // Its RAM is a copy of its own (made in its directory, unlinked once restored), mapped shared.
    const ramMapping = readFileSync(`/proc/${qemu}/maps`, 'utf8').split('\n').find((line) => line.includes('template-memory'));
    expect(ramMapping).toMatch(/ rw-s .*template-memory \(deleted\)$/);
    const mounted = await eventually(() => agent.run('mkdir -p /mnt/share && mount -t virtiofs clonetag /mnt/share && cat /mnt/share/from-host.txt'), (r) => r.exitCode === 0, 30_000);
    expect(mounted).toEqual({ exitCode: 0, output: 'host file of clone-share\n' });
    await agent.runOk('echo written in the clone > /mnt/share/from-clone.txt && sync');
    expect(readFileSync(join(share, 'from-clone.txt'), 'utf8')).toBe('written in the clone\n');
    // Guest memory the daemon reads and writes is the clone's: a large file through the share, both ways.
    await agent.runOk('dd if=/dev/urandom of=/tmp/big bs=1M count=8 2>/dev/null && cp /tmp/big /mnt/share/big && sync');
    const inGuest = (await agent.runOk('md5sum /tmp/big | cut -d" " -f1')).trim();
    expect(createHash('md5').update(readFileSync(join(share, 'big'))).digest('hex')).toBe(inGuest);
    await agent.runOk('umount /mnt/share');
    expect((await agent.runOk('cat /tmp/marker')).trim()).toBe(MARKER);
    await agent.close();
    await vm.stopVM();
    expect(isProcessAlive(daemon)).toBe(false);
    expect(existsSync(join(RUNTIME_BASE, id))).toBe(false);
  }, 240_000);

  it('a clone that keeps the template\'s anonymous memory (its pages shared with the template from QEMU 8.2 on) refuses a share (ConfigError naming device.driver)', async () => {
    const vm = track(new QemuHypervisor());
    await vm.createVM({ ...templateConfig(), id: `tmpl-vfs-anon-${process.pid}` }, { fromTemplate: dir });
    expect(vm.capabilities().fsHotplug).toBe(false);
    await vm.startVM();
    const agent = await connectAgent(vm);
    cleanups.push(() => agent.close());
    expect((await agent.runOk('cat /tmp/marker')).trim()).toBe(MARKER);
    const error = (await vm.hotplugAddDevice({ type: 'fs', driver: 'virtio-fs', id: 'share', tag: 'anon', sharedDir: shareDir('anon-share') }).catch((e: unknown) => e)) as ConfigError;
    expect(error).toBeInstanceOf(ConfigError);
    expect(error.paths).toEqual(['device.driver']);
    expect(vm.getPids()).toHaveLength(1);
    expect(existsSync(runtimePaths(vm.runtimeDir ?? '').virtiofsSocket('share'))).toBe(false);
  }, 180_000);
});
