#!/usr/bin/env node
// pod-shim <pod-spec.json>: plays a container runtime's shim for one pod, the way Kata's
// containerd-shim-kata-v2 drives its hypervisor, with sandbox-vmm as that hypervisor layer.
//
//   start    the pod's network namespace; the VM created (which leases it a uid of its own); a tap
//            in the namespace owned by that uid; the VM started inside the namespace; the rootfs
//            and volume disks hot-plugged; the NIC given its address; the pod's command run
//            through the guest agent, its output on stdout
//   metrics  with `metrics` in the spec, the VM's statistics for Prometheus at GET /metrics
//   SIGHUP   the spec file is read again and the VM resized to its vCPUs and memory
//   SIGTERM  everything undone, newest first (VM, tap, files, namespace), and exit 0
//
// The shim's own progress goes to stderr as one JSON object a line. It must run as root.
import { randomBytes } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { isSandboxVmmError, QemuHypervisor, type HotplugResult, type SandboxConfigInput } from 'sandbox-vmm';
import { Agent } from './agent.js';
import { SandboxMetrics } from './metrics.js';
import { createNetns, createPodDir, createTap, createVolume, type Undo } from './host.js';
import { readPodSpec, type PodSpec } from './spec.js';

const TAP = 'tap0'; // one per namespace, so every pod's tap can have this name
const AGENT_CHANNEL = { id: 'agent', name: 'agent.0' };
const POD_DIRS = '/run/pod-shim';
const BOOT_TIMEOUT_MS = 120_000;

function report(event: string, fields: Record<string, unknown> = {}): void {
  process.stderr.write(`${JSON.stringify({ event, ...fields })}\n`);
}

class PodShim {
  readonly #vm = new QemuHypervisor();
  readonly #stop = new AbortController();
  readonly #undo: { what: string; run: Undo }[] = [];
  #agent: Agent | undefined;
  #size: { vcpus: number; memoryMiB: number } | undefined;
  #running: Promise<void> = Promise.resolve();
  #changes: Promise<void> = Promise.resolve();
  #stopping: Promise<void> | undefined;

  constructor(private readonly specPath: string) {}

  get stopping(): boolean {
    return this.#stop.signal.aborted;
  }

  /** Sets the pod up and runs its command; the pod then stays up until shutdown(). */
  run(): Promise<void> {
    this.#running = this.#run();
    return this.#running;
  }

  async #run(): Promise<void> {
    const spec = readPodSpec(this.specPath);
    const signal = this.#stop.signal;
    const netns = await createNetns(spec.name);
    this.#onShutdown('netns', netns.undo);
    const podDir = join(POD_DIRS, spec.name);
    this.#onShutdown('pod directory', createPodDir(podDir));

    const mac = spec.network.mac ?? `52:54:00:${randomBytes(3).toString('hex').replace(/(..)(?!$)/g, '$1:')}`;
    await this.#vm.createVM(vmConfig(spec, netns.path, mac), { signal });
    this.#onShutdown('VM', () => this.#vm.stopVM());
    // Known from createVM on: the uid and gid QEMU will run as, to give the tap and the disks to.
    const identity = this.#vm.identity;
    if (!identity) throw new Error('the VM has no identity of its own: run the shim as root');
    this.#onShutdown('tap', await createTap(spec.name, TAP, identity, spec.network.hostAddress));
    for (const volume of spec.volumes) createVolume(join(podDir, `${volume.name}.img`), volume.sizeMiB);

    await this.#vm.startVM({ signal });
    this.#vm.onExit((info) => {
      report('vm-exited', { ...info });
      void this.shutdown(1);
    });
    report('started', { pod: spec.name, qemuPid: this.#vm.getPids()[0], uid: identity.uid, netns: netns.path, tap: TAP, mac });
    if (spec.metrics) {
      const { server, address } = await new SandboxMetrics(this.#vm).serve(spec.metrics.host, spec.metrics.port);
      this.#onShutdown('metrics endpoint', () => new Promise<void>((resolve) => server.close(() => resolve())));
      report('metrics-listening', { url: `http://${address.address}:${address.port}/metrics` });
    }

    const channel = this.#vm.devices().find((d) => d.id === AGENT_CHANNEL.id)?.socketPath;
    if (!channel) throw new Error('the agent channel has no socket');
    const agent = await Agent.connect(channel, AbortSignal.any([signal, AbortSignal.timeout(BOOT_TIMEOUT_MS)]));
    this.#agent = agent;
    this.#onShutdown('agent channel', () => agent.close());
    report('guest-ready');

    // The image read-only, the volumes writable, each opened here and handed to QEMU as an fd (QEMU's
    // uid needs no access to them); the guest finds each by the PCI path the hotplug reports.
    await this.#plugDisk(agent, 'rootfs', { path: spec.rootfs.image, format: spec.rootfs.format ?? 'raw', readOnly: true });
    for (const volume of spec.volumes) await this.#plugDisk(agent, volume.name, { path: join(podDir, `${volume.name}.img`), format: 'raw', readOnly: false });
    await agent.output(guestNetworkSetup(mac, spec.network.guestAddress), signal);
    report('network-ready', { guestAddress: spec.network.guestAddress, hostAddress: spec.network.hostAddress });
    this.#size = { vcpus: spec.resources.vcpus, memoryMiB: spec.resources.memoryMiB };

    const exitCode = await agent.run(spec.command, (line) => process.stdout.write(`${line}\n`), signal);
    report('command-exited', { exitCode });
  }

  /** SIGHUP: the spec's resources applied to the running VM (one change at a time, after start). */
  reload(): void {
    this.#changes = this.#changes.then(() => this.#resize()).catch((error: unknown) => report('resize-failed', describe(error)));
  }

  /** Undoes every step that was done, newest first, once. */
  shutdown(exitCode: number): Promise<void> {
    this.#stopping ??= (async () => {
      this.#stop.abort(new Error('the pod is stopping')); // pending steps stop at once…
      await Promise.allSettled([this.#running, this.#changes]); // …and none is left half done
      for (const { what, run } of this.#undo.reverse()) {
        try {
          await run();
        } catch (error) {
          report('cleanup-failed', { what, ...describe(error) });
          exitCode = 1;
        }
      }
      report('stopped');
      process.exit(exitCode);
    })();
    return this.#stopping;
  }

  #onShutdown(what: string, run: Undo): void {
    this.#undo.push({ what, run });
  }

  async #plugDisk(agent: Agent, name: string, disk: { path: string; format: 'raw' | 'qcow2'; readOnly: boolean }): Promise<void> {
    const signal = this.#stop.signal;
    const fd = openSync(disk.path, disk.readOnly ? 'r' : 'r+');
    let plugged: HotplugResult;
    try {
      plugged = await this.#vm.hotplugAddDevice({ type: 'block', id: name, serial: name, fd, format: disk.format, readOnly: disk.readOnly }, { signal });
    } finally {
      closeSync(fd); // QEMU holds its own copy now
    }
    await agent.output(linkDiskByPciPath(name, plugged.pci.sysfs), signal);
    report('disk-ready', { name, pciPath: plugged.pci.path, guestPath: `/dev/pod/${name}` });
  }

  async #resize(): Promise<void> {
    const agent = this.#agent;
    if (!this.#size || !agent) return report('resize-skipped', { reason: 'the pod is not running yet' });
    const { vcpus, memoryMiB } = readPodSpec(this.specPath).resources;
    const signal = this.#stop.signal;
    if (vcpus !== this.#size.vcpus) this.#size.vcpus = (await this.#vm.resizeVCPUs(vcpus, { signal })).current;
    if (memoryMiB !== this.#size.memoryMiB) this.#size.memoryMiB = (await this.#vm.resizeMemory(memoryMiB, { signal })).currentMiB;
    // What Kata's agent does on OnlineCPUMem: hot-added vCPUs come up offline on x86.
    const guest = (await agent.output(onlineCpusAndReport(this.#size.vcpus), signal)).split(' ');
    report('resized', { ...this.#size, guest: { onlineCpus: Number(guest[0]), memTotalMiB: Math.floor(Number(guest[1]) / 1024) } });
  }
}

function vmConfig(spec: PodSpec, netnsPath: string, mac: string): SandboxConfigInput {
  const { guest, resources } = spec;
  return {
    id: `pod-${spec.name}`,
    machine: { accel: guest.accel ?? 'kvm' },
    boot: { kernel: guest.kernel, initrd: guest.initrd, kernelParams: guest.kernelParams },
    cpus: { boot: resources.vcpus, max: resources.maxVcpus },
    memory: { bootMiB: resources.memoryMiB, maxMiB: resources.maxMemoryMiB, hotplug: 'virtio-mem' },
    hotplug: { rootPorts: 1 + spec.volumes.length }, // one root port per hot-plugged disk
    devices: [
      { type: 'channel', ...AGENT_CHANNEL },
      { type: 'net', id: 'eth0', tap: { ifname: TAP }, mac }, // opened by QEMU inside the namespace
    ],
    runtime: { netns: netnsPath },
  };
}

// Guest-side steps, as shell lines for the test guest's agent (kata-agent has requests for them).
// Every value in them was checked: names and addresses by the spec, the MAC by createVM.

/**
 * Waits for the disk at the reported PCI path (its last hop: the function the guest finds it
 * under, as Kata's agent does with a PCI path) and links it as /dev/pod/<name>.
 */
function linkDiskByPciPath(name: string, sysfsPath: string): string {
  const fn = sysfsPath.split('/').at(-1) ?? '';
  if (!/^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/.test(fn)) throw new Error(`unexpected PCI path ${sysfsPath}`);
  return `for i in $(seq 100); do for b in /sys/bus/pci/devices/${fn}/virtio*/block/*; do [ -e "$b" ] && mkdir -p /dev/pod && ln -sfn /dev/\${b##*/} /dev/pod/${name} && exit 0; done; sleep 0.1; done; exit 1`;
}

/** Gives the NIC with this MAC its address and brings it up. */
function guestNetworkSetup(mac: string, address: string): string {
  return `for i in /sys/class/net/*; do [ "$(cat $i/address)" = ${mac.toLowerCase()} ] && ip addr add ${address} dev \${i##*/} && ip link set \${i##*/} up && exit 0; done; exit 1`;
}

/** Onlines offline vCPUs until `count` are online; prints "<online CPUs> <MemTotal in KiB>". */
function onlineCpusAndReport(count: number): string {
  const online = `$(tr , '\\n' < /sys/devices/system/cpu/online | awk -F- '{ n += NF == 2 ? $2 - $1 + 1 : 1 } END { print n }')`;
  return `for i in $(seq 100); do for c in /sys/devices/system/cpu/cpu[0-9]*/online; do [ "$(cat $c)" = 1 ] || echo 1 > $c; done; [ ${online} -ge ${count} ] && break; sleep 0.1; done; echo ${online} $(awk '/MemTotal/ { print $2 }' /proc/meminfo)`;
}

function describe(error: unknown): Record<string, unknown> {
  return isSandboxVmmError(error) ? { code: error.code, message: error.message } : { message: String(error) };
}

async function main(): Promise<void> {
  const specPath = process.argv[2];
  if (!specPath) {
    process.stderr.write('usage: pod-shim <pod-spec.json>\n');
    process.exit(2);
  }
  const shim = new PodShim(specPath);
  // A shim lives until it is told to stop, whatever its command does (signal handlers alone do not
  // keep Node running).
  setInterval(() => {}, 2 ** 30);
  process.on('SIGTERM', () => void shim.shutdown(0));
  process.on('SIGINT', () => void shim.shutdown(0));
  process.on('SIGHUP', () => shim.reload());
  try {
    await shim.run();
  } catch (error) {
    if (shim.stopping) return; // interrupted by SIGTERM: shutdown() is under way
    report('failed', describe(error));
    await shim.shutdown(1);
  }
}

await main();
