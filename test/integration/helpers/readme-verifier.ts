// What README.md's main example imports when test/integration/readme-example.test.ts runs it: the
// real QemuHypervisor, with each call the example makes followed by a look from inside the guest
// (through the test guest's agent) at what the call did. A check that fails throws, which fails
// the example; each one that passes prints `README-CHECK <name> <json>` for the test to count.
import { pino } from 'pino';
import type { OperationOptions } from '../../../src/util/deadline.ts';
import type { HotplugDevice, HotplugResult, MemoryResizeResult, StartOptions, StopOptions, VcpuResizeResult } from '../../../src/hypervisor/types.ts';
import { QemuHypervisor as RealQemuHypervisor } from '../../../src/qemu/qemu-hypervisor.ts';
import { GuestAgent } from '../../guest/index.ts';
import { eventually } from './eventually.ts';

/** The example's `logger`: warnings and errors to stderr, which the test shows when it fails. */
export const logger = pino({ level: 'warn' }, pino.destination(2));

/** The marker file the test puts in the example's shared directory. */
export const SHARE_MARKER = 'readme-example-marker';
const GUEST_MS = 60_000;

function passed(name: string, detail: unknown): void {
  process.stdout.write(`README-CHECK ${name} ${JSON.stringify(detail)}\n`);
}

function fail(what: string, detail: unknown): never {
  throw new Error(`README example, seen from the guest: ${what} (${JSON.stringify(detail)})`);
}

export class QemuHypervisor extends RealQemuHypervisor {
  #agent: GuestAgent | undefined;
  #baseMemKiB = 0;
  #verifiedStop = false;

  override async startVM(options?: StartOptions): Promise<void> {
    await super.startVM(options);
    const socket = this.devices().find((d) => d.id === options?.waitForChannel)?.socketPath;
    if (!socket) fail('startVM waited for no channel the agent could be reached on', options);
    // waitForChannel resolved: the guest has booted and its agent opened the port, so the first
    // command round-trips without waiting for a boot.
    this.#agent = await GuestAgent.connect(socket, { timeoutMs: GUEST_MS });
    const cmdline = (await this.#agent.runOk('cat /proc/cmdline')).trim();
    const expected = this.config?.boot.kernelParams.join(' ');
    if (cmdline !== expected) fail('the kernel command line is not exactly kernelParams', { cmdline, expected });
    this.#baseMemKiB = await this.#agent.memTotalKiB();
    passed('started', { cmdline, memTotalKiB: this.#baseMemKiB });
  }

  override async hotplugAddDevice(device: HotplugDevice, options?: OperationOptions): Promise<HotplugResult> {
    const result = await super.hotplugAddDevice(device, options);
    const agent = this.#guest();
    if (device.type === 'block') {
      // The disk the guest has behind the PCI path the hotplug returned.
      const disk = await eventually(
        async () => (await agent.runOk(`for d in /sys/block/vd*; do case "$(readlink -f "$d")" in *${result.pci.sysfs}/*) echo "\${d##*/}";; esac; done`)).trim(),
        (name) => name !== '',
        GUEST_MS,
      );
      if (!disk) fail(`no disk behind ${result.pci.sysfs}`, result);
      const sectors = Number((await agent.runOk(`cat /sys/block/${disk}/size`)).trim());
      passed('block', { id: result.id, disk, bytes: sectors * 512 });
    } else if (device.type === 'net') {
      const mac = device.mac;
      const nics = await eventually(() => agent.netInterfaces(), (list) => list.some((nic) => nic.mac === mac), GUEST_MS);
      const nic = nics.find((n) => n.mac === mac);
      if (!nic) fail(`no interface with MAC ${String(mac)}`, nics);
      passed('net', { id: result.id, name: nic.name, mac: nic.mac });
    }
    return result;
  }

  override async resizeMemory(targetMiB: number, options?: OperationOptions): Promise<MemoryResizeResult> {
    const result = await super.resizeMemory(targetMiB, options);
    // currentMiB is what QEMU plugged; the guest's MemTotal follows once it has onlined it.
    const wantKiB = this.#baseMemKiB + (result.currentMiB - result.previousMiB) * 1024;
    const kib = await eventually(() => this.#guest().memTotalKiB(), (k) => k >= wantKiB, GUEST_MS);
    if (kib < wantKiB) fail(`MemTotal did not grow by ${result.currentMiB - result.previousMiB} MiB`, { baseKiB: this.#baseMemKiB, kib, result });
    passed('memory', { ...result, baseKiB: this.#baseMemKiB, memTotalKiB: kib });
    return result;
  }

  override async resizeVCPUs(count: number, options?: OperationOptions): Promise<VcpuResizeResult> {
    const result = await super.resizeVCPUs(count, options);
    const online = await eventually(() => this.#guest().onlineCpus(), (n) => n === result.current, GUEST_MS);
    if (online !== result.current) fail(`the guest has ${online} vCPUs online, not ${result.current}`, result);
    passed('vcpus', { ...result, online });
    return result;
  }

  override async stopVM(options?: StopOptions): Promise<void> {
    if (this.#agent && !this.#verifiedStop) {
      this.#verifiedStop = true;
      // The virtio-fs share the example configured, mounted by its tag, with the host's file in it.
      const fs = this.config?.devices.find((d) => d.type === 'fs');
      const tag = fs?.type === 'fs' ? fs.tag : fail('the example has no fs device', this.config?.devices);
      const marker = (await this.#agent.runOk(`mkdir -p /mnt/share && mount -t virtiofs ${tag} /mnt/share && cat /mnt/share/${SHARE_MARKER}`)).trim();
      passed('virtiofs', { tag, marker });
      await this.#agent.close();
      this.#agent = undefined;
      await super.stopVM(options);
      passed('stopped', { state: this.state, pids: this.getPids(), runtimeDir: this.runtimeDir ?? null });
      return;
    }
    await super.stopVM(options);
  }

  #guest(): GuestAgent {
    return this.#agent ?? fail('the guest agent is not connected (startVM was not called with waitForChannel)', null);
  }
}
