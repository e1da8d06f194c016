// Paths QEMU's own uid cannot reach are refused before QEMU is asked to open them: at startVM before
// anything is spawned, at hotplug before any QMP step, with a ConfigError naming the field, the uid
// and what stands in the way. Fixed on the host, the same VM then starts and plugs.
import { chmodSync, copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/hypervisor/config/index.ts';
import { QemuHypervisor } from '../../src/qemu/qemu-hypervisor.ts';
import { guestAssets } from '../guest/index.ts';
import { eventually } from './helpers/eventually.ts';
import { connectAgent, expectLeasedIdentity, giveTo, guestConfig, rawDisk, scratchDir } from './helpers/sandbox.ts';
import { useCleanups } from './helpers/cleanups.ts';

const { cleanups, track } = useCleanups();

/** The ConfigError an operation rejects with. */
async function configError(operation: Promise<unknown>): Promise<ConfigError> {
  const error = await operation.catch((e: unknown) => e);
  expect(error).toBeInstanceOf(ConfigError);
  return error as ConfigError;
}

/** The guest's virtio disks: the vd* names under /sys/block. */
async function guestDisks(agent: Awaited<ReturnType<typeof connectAgent>>): Promise<string[]> {
  const out = await agent.runOk('for d in /sys/block/vd*; do [ -e "$d" ] && echo "${d##*/}"; done; true');
  return out.split('\n').filter((line) => line !== '');
}

describe('host paths QEMU cannot reach', () => {
  it('a kernel in a root-only directory fails startVM with a ConfigError naming boot.kernel and the uid, before QEMU is spawned', async () => {
    const scratch = scratchDir();
    cleanups.push(scratch.remove);
    const closed = join(scratch.dir, 'root-only');
    mkdirSync(closed, { mode: 0o700 });
    chmodSync(closed, 0o700);
    const kernel = join(closed, 'vmlinuz');
    copyFileSync(guestAssets().kernel, kernel);
    chmodSync(kernel, 0o644);
    const vm = track(new QemuHypervisor());
    const config = guestConfig();
    await vm.createVM({ ...config, boot: { ...config.boot, kernel } });
    const { uid, gid } = expectLeasedIdentity(vm.identity);

    const error = await configError(vm.startVM());
    expect(error.code).toBe('CONFIG_INVALID');
    expect(error.issues).toEqual([
      {
        path: 'boot.kernel',
        message: `QEMU runs as uid ${uid} (gid ${gid}) and cannot read ${kernel}: the directory ${closed} is mode 0700, owner 0:0, without search (x) permission for that user`,
      },
    ]);
    // Nothing was spawned and the VM is still only created.
    expect(vm.getPids()).toEqual([]);
    expect(vm.state).toBe('created');

    // Opened to QEMU's uid, the same VM starts and its guest boots.
    chmodSync(closed, 0o711);
    await vm.startVM();
    const agent = await connectAgent(vm);
    cleanups.push(() => agent.close());
    expect((await agent.runOk('echo booted')).trim()).toBe('booted');
  });

  it('a hot-plugged disk owned by root 0600 is refused as device.path, and nothing is plugged', async () => {
    const scratch = scratchDir();
    cleanups.push(scratch.remove);
    const vm = track(new QemuHypervisor());
    await vm.createVM(guestConfig({ hotplug: { rootPorts: 1 } }));
    const identity = expectLeasedIdentity(vm.identity);
    await vm.startVM();
    const agent = await connectAgent(vm);
    cleanups.push(() => agent.close());
    const before = await guestDisks(agent);

    const path = rawDisk(scratch.dir, 'root.img', 'ROOTS', { uid: 0, gid: 0 });
    const error = await configError(vm.hotplugAddDevice({ type: 'block', id: 'rootdisk', path }));
    expect(error.issues).toEqual([
      { path: 'device.path', message: `QEMU runs as uid ${identity.uid} (gid ${identity.gid}) and cannot write ${path}: it is mode 0600, owner 0:0` },
    ]);
    expect(vm.devices().some((d) => d.hotplugged)).toBe(false);
    expect(await guestDisks(agent)).toEqual(before);

    // Given to the VM's uid, the same disk plugs on the port left free, and the guest reads it.
    giveTo(path, identity);
    expect(await vm.hotplugAddDevice({ type: 'block', id: 'rootdisk', path })).toMatchObject({ bus: 'rp0' });
    const added = await eventually(
      async () => (await guestDisks(agent)).filter((disk) => !before.includes(disk)),
      (disks) => disks.length > 0,
    );
    expect(added).toHaveLength(1);
    expect((await agent.runOk(`head -c 5 /dev/${added[0] ?? ''}`)).trimEnd()).toBe('ROOTS');
  });
});
