// The conformance suite against the QEMU backend on a real test guest under TCG, for each guest
// architecture: the guest agent proves each effect from inside the guest, where the mock answers
// from its model (test/unit/conformance-mock.test.ts).
import { chmodSync, mkdirSync, mkdtempSync, openSync, readSync, rmSync, closeSync, writeSync } from 'node:fs';
import { eventually } from './eventually.ts';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { defineConformanceSuite } from '../../../src/conformance/index.ts';
import { QemuHypervisor } from '../../../src/qemu/qemu-hypervisor.ts';
import type { GuestAgent } from '../../guest/index.ts';
import { diskWithMarker, powerOffSlotOf } from './eject.ts';
import type { SandboxConfigInput } from '../../../src/hypervisor/config/index.ts';
import { AGENT_DEVICE_ID, connectAgent, rawDisk, scratchDir } from './sandbox.ts';

/**
 * Registers the suite for one test guest: `baseConfig` is the VM every test starts from (guest,
 * machine, QEMU binary); `canPanic` when the guest kernel has a pvpanic driver.
 */
export function defineQemuConformance(name: string, baseConfig: () => SandboxConfigInput, canPanic: boolean): void {
  const SILENT_CHANNEL_ID = 'silent';

  const scratch = scratchDir();
  afterAll(() => scratch.remove());
  // Templates on tmpfs, as a runtime keeps them; each test names a directory of its own in here.
  const templates = mkdtempSync('/dev/shm/svmm-conformance-');
  chmodSync(templates, 0o755);
  afterAll(() => rmSync(templates, { recursive: true, force: true }));

  let shares = 0;
  /** One agent connection per VM, opened when a probe first needs it (it waits for the guest to boot). */
  const agents = new Map<QemuHypervisor, Promise<GuestAgent>>();

  function agentOf(vm: QemuHypervisor): Promise<GuestAgent> {
    let agent = agents.get(vm);
    if (!agent) {
      agent = connectAgent(vm);
      agents.set(vm, agent);
    }
    return agent;
  }

  async function diskCount(vm: QemuHypervisor): Promise<number> {
    const out = await (await agentOf(vm)).runOk('for d in /sys/block/vd* /sys/block/sd*; do [ -e "$d" ] && echo "$d"; done; true');
    return out.split('\n').filter(Boolean).length;
  }

  defineConformanceSuite(
    { describe, it, beforeAll, afterAll },
    {
      name,
      create: (settings) => new QemuHypervisor({ deviceRemovalTimeoutMs: settings.deviceRemovalTimeoutMs }),
      // The test guest's agent opens agent.0 once booted; nothing in it opens silent.0.
      config: () => {
        const base = baseConfig();
        return { ...base, devices: [...(base.devices ?? []), { type: 'channel', id: SILENT_CHANNEL_ID, name: 'silent.0' }] };
      },
      channels: { opened: AGENT_DEVICE_ID, neverOpened: SILENT_CHANNEL_ID },
      // Given to the VM's own uid, as a runtime does once createVM has leased it; a path asked for
      // before createVM is only named (never opened), so it stays root's.
      templateDir: (name) => join(templates, name),
      disk: (name, vm) => rawDisk(scratch.dir, `${name}.img`, name.slice(0, 16), vm.identity ?? { uid: 0, gid: 0 }),
      // Read by virtiofsd, which runs as root: the directory stays root's.
      shareDir: (name) => {
        const dir = join(scratch.dir, `share-${name}-${++shares}`);
        mkdirSync(dir);
        return dir;
      },
      guest: {
        diskCount,
        onlineCpus: async (vm) => (await agentOf(vm)).onlineCpus(),
        memoryMiB: async (vm) => (await (await agentOf(vm)).memTotalKiB()) / 1024,
        // Mounted once the guest has taken the hot-plugged device (retried until then), read, unmounted.
        readShared: async (vm, tag, file) => {
          const agent = await agentOf(vm);
          const mount = `mkdir -p /mnt/${tag} && mount -t virtiofs ${tag} /mnt/${tag}`;
          const mounted = await eventually(() => agent.run(mount), (r) => r.exitCode === 0, 30_000);
          if (mounted.exitCode !== 0) throw new Error(`the guest cannot mount share ${tag}: ${mounted.output}`);
          return agent.runOk(`cat /mnt/${tag}/${file}; umount /mnt/${tag}`);
        },
        release: async (vm) => {
          const agent = agents.get(vm);
          agents.delete(vm);
          await (await agent?.catch(() => undefined))?.close();
        },
      },
      faults: {
        // One byte of the saved device state flipped, its size kept.
        corruptTemplate: (dir) => {
          const fd = openSync(join(dir, 'state'), 'r+');
          try {
            const byte = Buffer.alloc(1);
            readSync(fd, byte, 0, 1, 100);
            writeSync(fd, Buffer.from([(byte[0] ?? 0) ^ 0xff]), 0, 1, 100);
          } finally {
            closeSync(fd);
          }
        },
        crash: (vm) => {
          const [pid] = vm.getPids();
          if (pid === undefined) throw new Error('QEMU does not run');
          process.kill(pid, 'SIGKILL');
        },
        // The agent never answers this one: the guest is gone by then. Only with a pvpanic driver.
        ...(canPanic
          ? {
              panic: async (vm: QemuHypervisor) => {
                await (await agentOf(vm)).run('echo c > /proc/sysrq-trigger', { timeoutMs: 2_000 }).catch(() => undefined);
              },
            }
          : {}),
        // The agent never answers this one either: the guest reboots at once (and QEMU, -no-reboot, exits).
        resetGuest: async (vm) => {
          await (await agentOf(vm)).run('echo b > /proc/sysrq-trigger', { timeoutMs: 2_000 }).catch(() => undefined);
        },
        // The suite's disks begin with the first 16 characters of their name (see `disk`), which
        // begins with the device id: the guest finds the disk by them and powers its slot off.
        ejectDevice: async (vm, id) => {
          const agent = await agentOf(vm);
          const disk = await diskWithMarker(agent, id.slice(0, 16));
          if (!disk) throw new Error(`the guest has no disk beginning with ${id.slice(0, 16)}`);
          await powerOffSlotOf(agent, `/sys/block/${disk}/device`);
        },
      },
      // No removalMs: each machine keeps its own removal timeout (virt's native PCIe hotplug takes seconds).
      timeouts: { testMs: 180_000, guestMs: 30_000 },
    },
  );
}
