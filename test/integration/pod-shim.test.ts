// examples/pod-shim embedded the way a runtime embeds the library: the package packed with
// `npm pack`, installed from the tarball into a copy of the example, the example compiled with tsc
// against the published declarations (so the exports map and the public surface are what is
// tested), then run as a pod's shim against the test guest. What the pod sees is read from inside
// the guest (the pod's command prints it); the network is also checked from the namespace's side.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cpSync, existsSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isProcessAlive } from '../../src/qemu/process/proc-fs.ts';
import { guestAssets } from '../guest/index.ts';
import { dropLeases, leasesOnDisk, processesRunningAs, RUNTIME_BASE, scratchDir } from './helpers/sandbox.ts';

const execFileAsync = promisify(execFile);
const root = process.cwd();
const work = scratchDir();
const pod = `shim-${randomBytes(3).toString('hex')}`;
/** A second pod, whose guest never gets to its agent: it is stopped while the shim waits for it. */
const interruptedPod = `${pod}-b`;
const net = { guestAddress: '10.88.0.2/24', hostAddress: '10.88.0.1/24', mac: '52:54:00:5e:00:02' };
const timings: Record<string, string> = {};
/** Every metric the shim exports for a running VM with a NIC and disks (src/metrics.ts in the example). */
const METRICS = [
  'sandbox_uptime_seconds',
  'sandbox_vcpu_cpu_seconds_total',
  'sandbox_process_resident_memory_bytes',
  'sandbox_process_proportional_memory_bytes',
  'sandbox_guest_memory_boot_bytes',
  'sandbox_guest_memory_plugged_bytes',
  'sandbox_disk_read_bytes_total',
  'sandbox_disk_written_bytes_total',
  'sandbox_disk_read_operations_total',
  'sandbox_disk_write_operations_total',
  'sandbox_disk_flush_operations_total',
  'sandbox_network_tap_receive_bytes_total',
  'sandbox_network_tap_transmit_bytes_total',
  'sandbox_network_tap_receive_packets_total',
  'sandbox_network_tap_transmit_packets_total',
];

/** Runs a command to completion, timing it; nested npm runs get none of `npm test`'s own settings. */
async function run(label: string, file: string, args: string[], cwd: string): Promise<string> {
  const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.toLowerCase().startsWith('npm_')));
  const started = performance.now();
  const { stdout } = await execFileAsync(file, args, { cwd, env, maxBuffer: 16 * 1024 * 1024 });
  timings[label] = `${((performance.now() - started) / 1000).toFixed(1)} s`;
  return stdout;
}

interface ShimEvent {
  event: string;
  [field: string]: unknown;
}

/** The running shim: its stdout (the pod's output) and its stderr events, one JSON object a line. */
class ShimProcess {
  readonly child: ChildProcess;
  stdout = '';
  readonly events: ShimEvent[] = [];
  readonly exited: Promise<number | null>;
  #waiters: { name: string; resolve: (event: ShimEvent) => void; reject: (error: Error) => void }[] = [];

  constructor(dir: string, specPath: string) {
    this.child = spawn(process.execPath, ['dist/main.js', specPath], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (this.stdout += chunk));
    let partial = '';
    this.child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      const lines = (partial + chunk).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) this.#onEvent(JSON.parse(line) as ShimEvent);
    });
    this.exited = new Promise((resolve) => this.child.once('exit', (code) => resolve(code)));
  }

  /** The first event named `name` (past or future); fails if the shim reports a failure or exits first. */
  event(name: string): Promise<ShimEvent> {
    const seen = this.events.find((e) => e.event === name);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      this.#waiters.push({ name, resolve, reject });
      void this.exited.then((code) => reject(new Error(`the shim exited (${code}) before '${name}': ${JSON.stringify(this.events)}`)));
    });
  }

  #onEvent(event: ShimEvent): void {
    this.events.push(event);
    const failed = event.event === 'failed' || event.event === 'resize-failed';
    for (const waiter of this.#waiters) {
      if (failed) waiter.reject(new Error(`the shim reported ${JSON.stringify(event)}`));
      else if (waiter.name === event.event) waiter.resolve(event);
    }
    this.#waiters = failed ? [] : this.#waiters.filter((w) => w.name !== event.event);
  }
}

async function ip(...args: string[]): Promise<string> {
  return (await execFileAsync('ip', args)).stdout;
}

/** The inode of a network namespace, to tell which one a process is in. */
function netnsInode(path: string): number {
  return statSync(path).ino;
}

describe('examples/pod-shim, built against the packed library', () => {
  let exampleDir = '';
  let specPath = '';
  let spec: Record<string, unknown> & { resources: Record<string, number> };
  let shim: ShimProcess | undefined;

  beforeAll(async () => {
    // npm pack runs the package's prepare script, which builds dist/ from src/.
    await run('npm pack', 'npm', ['pack', '--pack-destination', work.dir, '--silent'], root);
    const [tarball] = readdirSync(work.dir).filter((name) => name.endsWith('.tgz'));
    if (!tarball) throw new Error(`npm pack wrote no tarball into ${work.dir}`);
    exampleDir = join(work.dir, 'pod-shim');
    const source = join(root, 'examples', 'pod-shim');
    const leftovers = new Set(['node_modules', 'dist', 'sandbox-vmm.tgz']);
    cpSync(source, exampleDir, { recursive: true, filter: (path) => !leftovers.has(relative(source, path).split('/')[0] ?? '') });
    renameSync(join(work.dir, tarball), join(exampleDir, 'sandbox-vmm.tgz'));
    // The example's lock pins what the root's lock pins (checked below): the root's `npm ci` left
    // every package it needs in npm's cache.
    await run('npm install', 'npm', ['install', '--prefer-offline', '--no-audit', '--no-fund'], exampleDir);
    await run('tsc', join(exampleDir, 'node_modules', '.bin', 'tsc'), ['-p', '.'], exampleDir);

    const guest = guestAssets();
    const rootfs = join(work.dir, 'rootfs.img');
    // Root's alone: the shim hands it to QEMU as an fd, so QEMU's uid never needs to open it.
    writeFileSync(rootfs, Buffer.concat([Buffer.from('rootfs-marker-7\n'), Buffer.alloc(4 * 1024 * 1024)]), { mode: 0o600 });
    spec = {
      name: pod,
      guest: { kernel: guest.kernel, initrd: guest.initrd, kernelParams: guest.kernelParams, accel: 'tcg' },
      resources: { vcpus: 1, memoryMiB: 256, maxVcpus: 2, maxMemoryMiB: 768 },
      network: net,
      rootfs: { image: rootfs },
      volumes: [{ name: 'data', sizeMiB: 8 }],
      metrics: { host: '127.0.0.1', port: 0 },
      command: [
        'for d in /sys/block/vd*; do echo "disk $(cat $d/serial) ro=$(cat $d/ro)"; done',
        'echo "rootfs says $(head -c 15 /dev/pod/rootfs)"',
        'echo volume-ok | dd of=/dev/pod/data 2>/dev/null',
        'echo "volume says $(head -c 9 /dev/pod/data)"',
        'ip -o -4 addr show | grep -v " lo "',
        `ping -c 1 -W 10 ${net.hostAddress.split('/')[0] ?? ''} > /dev/null && echo ping-ok`,
        'grep MemTotal /proc/meminfo',
      ].join('; '),
    };
    specPath = join(work.dir, 'pod.json');
    writeFileSync(specPath, JSON.stringify(spec));
  }, 600_000);

  afterAll(async () => {
    // Only after a failure is anything left: the shim killed outright takes QEMU with it.
    if (shim && shim.child.exitCode === null && shim.child.signalCode === null) {
      shim.child.kill('SIGKILL');
      await shim.exited;
    }
    for (const name of [pod, interruptedPod]) {
      await ip('netns', 'del', name).catch(() => {});
      rmSync(join('/run/pod-shim', name), { recursive: true, force: true });
      rmSync(join(RUNTIME_BASE, `pod-${name}`), { recursive: true, force: true });
      dropLeases(`pod-${name}`);
    }
    console.info(`pod-shim timings: ${JSON.stringify(timings)}`);
    work.remove();
  });

  it("pins in the example's lock the versions the root's lock pins, and the tarball by name only", () => {
    type Lock = { packages: Record<string, { version?: string; resolved?: string; integrity?: string }> };
    const lock = (path: string) => (JSON.parse(readFileSync(path, 'utf8')) as Lock).packages;
    const rootLock = lock(join(root, 'package-lock.json'));
    const { '': _self, 'node_modules/sandbox-vmm': library, ...pinned } = lock(join(root, 'examples', 'pod-shim', 'package-lock.json'));
    const drifted = Object.entries(pinned).filter(([path, entry]) => rootLock[path]?.version !== entry.version || rootLock[path]?.integrity !== entry.integrity);
    expect(drifted.map(([path]) => path)).toEqual([]);
    // Every pack of the library is a new tarball: an integrity in the lock would refuse it.
    expect(library).toMatchObject({ resolved: 'file:sandbox-vmm.tgz' });
    expect(library).not.toHaveProperty('integrity');
  });

  it('packs the built library (JS and declarations), the native helpers’ sources and their build script, and nothing else', async () => {
    const installed = join(exampleDir, 'node_modules', 'sandbox-vmm');
    const files = (await execFileAsync('find', ['.', '-type', 'f'], { cwd: installed })).stdout
      .split('\n')
      .filter(Boolean)
      .map((path) => path.slice(2));
    const shipped = new Set(['package.json', 'README.md', 'LICENSE', 'native/svmm-launch.c', 'native/svmm-sendfd.c', 'native/svmm-memfd.c', 'native/svmm-fail.h', 'scripts/build-launcher.mjs', 'build/svmm-launch', 'build/svmm-sendfd', 'build/svmm-memfd']);
    expect(files.filter((path) => !shipped.has(path) && !/^dist\/src\/.+\.(js|d\.ts)$/.test(path))).toEqual([]);
    // Every module has its declarations, including each entry of the exports map.
    const modules = files.filter((path) => path.endsWith('.js'));
    expect(modules.filter((path) => !files.includes(path.replace(/\.js$/, '.d.ts')))).toEqual([]);
    expect(files).toEqual(expect.arrayContaining(['dist/src/index.js', 'dist/src/qmp/index.js', 'dist/src/conformance/index.js', 'LICENSE']));
    // The package's install script built the native helpers on this machine.
    for (const helper of ['svmm-launch', 'svmm-sendfd', 'svmm-memfd']) expect(statSync(join(installed, 'build', helper)).mode & 0o777).toBe(0o755);
  });

  it('starts the pod in its network namespace, plugs its disks and runs its command, streaming the output', async () => {
    shim = new ShimProcess(exampleDir, specPath);
    const started = await shim.event('started');
    await shim.event('command-exited');
    expect(shim.events.find((e) => e.event === 'command-exited')).toEqual({ event: 'command-exited', exitCode: 0 });

    // From inside the guest: both disks by serial (the image read-only), their bytes, the NIC's
    // address, and a ping answered by the namespace's side of the tap.
    expect(shim.stdout).toContain('disk rootfs ro=1\n');
    expect(shim.stdout).toContain('disk data ro=0\n');
    expect(shim.stdout).toContain('rootfs says rootfs-marker-7\n');
    expect(shim.stdout).toContain('volume says volume-ok\n');
    expect(shim.stdout).toMatch(new RegExp(`inet ${net.guestAddress.replace(/\./g, '\\.')} `));
    expect(shim.stdout).toContain('ping-ok\n');

    // From the host: QEMU runs in the pod's namespace, the tap is there and owned by QEMU's uid,
    // the namespace learned the guest's MAC and reaches the guest, and the host's own namespace
    // holds no tap of the VM's.
    const qemuPid = started['qemuPid'] as number;
    const uid = started['uid'] as number;
    expect(netnsInode(`/proc/${qemuPid}/ns/net`)).toBe(netnsInode(`/run/netns/${pod}`));
    expect(netnsInode(`/proc/${qemuPid}/ns/net`)).not.toBe(netnsInode('/proc/self/ns/net'));
    expect(await ip('-n', pod, '-d', 'link', 'show', 'tap0')).toMatch(new RegExp(`tun type tap .* user ${uid} `));
    expect(await ip('-n', pod, 'neigh', 'show', net.guestAddress.split('/')[0] ?? '')).toContain(`lladdr ${net.mac}`);
    const fromNetns = await execFileAsync('ip', ['netns', 'exec', pod, 'busybox', 'ping', '-c', '1', '-W', '10', net.guestAddress.split('/')[0] ?? '']);
    expect(fromNetns.stdout).toContain('1 packets received');
    const hostTaps = readdirSync('/sys/class/net').filter((name) => existsSync(`/sys/class/net/${name}/owner`) && readFileSync(`/sys/class/net/${name}/owner`, 'utf8').trim() === String(uid));
    expect(hostTaps).toEqual([]);
  });

  it("serves the VM's statistics for Prometheus: every metric, labelled with the sandbox and its devices", async () => {
    if (!shim) throw new Error('the shim did not start');
    const { url } = (await shim.event('metrics-listening')) as ShimEvent & { url: string };
    const response = await fetch(url);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toContain('text/plain');
    const text = await response.text();
    const types = new Map([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1], m[2]]));
    expect([...types.keys()]).toEqual(expect.arrayContaining(METRICS));
    for (const name of METRICS) expect(types.get(name), name).toBe(name.endsWith('_total') ? 'counter' : 'gauge');
    const sandbox = `sandbox_id="pod-${pod}"`;
    /** The value of one series, found by its labels. */
    const value = (name: string, labels: string): number => {
      const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(sandbox) && l.includes(labels));
      if (!line) throw new Error(`no ${name} series with ${labels} in:\n${text}`);
      return Number(line.slice(line.lastIndexOf(' ') + 1));
    };
    expect(value('sandbox_vcpu_cpu_seconds_total', 'vcpu="0"')).toBeGreaterThan(0);
    expect(value('sandbox_process_resident_memory_bytes', 'role="hypervisor"')).toBeGreaterThan(0);
    expect(value('sandbox_guest_memory_boot_bytes', '')).toBe(256 * 1024 * 1024);
    // The pod's command read its rootfs and pinged the namespace's side of the tap.
    expect(value('sandbox_disk_read_bytes_total', 'device="rootfs"')).toBeGreaterThan(0);
    expect(value('sandbox_disk_written_bytes_total', 'device="data"')).toBeGreaterThanOrEqual(0);
    expect(value('sandbox_network_tap_receive_packets_total', 'device="eth0",tap="tap0"')).toBeGreaterThan(0);
    expect(value('sandbox_network_tap_transmit_packets_total', 'device="eth0",tap="tap0"')).toBeGreaterThan(0);
  });

  it('resizes the VM to the spec on SIGHUP, as the guest sees it', async () => {
    if (!shim) throw new Error('the shim did not start');
    const bootMemTotalMiB = Number(/MemTotal:\s+(\d+) kB/.exec(shim.stdout)?.[1]) / 1024;
    writeFileSync(specPath, JSON.stringify({ ...spec, resources: { ...spec.resources, vcpus: 2, memoryMiB: 512 } }));
    shim.child.kill('SIGHUP');
    const resized = await shim.event('resized');
    expect(resized).toMatchObject({ vcpus: 2, memoryMiB: 512, guest: { onlineCpus: 2 } });
    // virtio-mem added 256 MiB, all of which the guest onlined.
    const memTotalMiB = (resized['guest'] as { memTotalMiB: number }).memTotalMiB;
    expect(memTotalMiB - bootMemTotalMiB).toBeGreaterThanOrEqual(255);
    expect(memTotalMiB - bootMemTotalMiB).toBeLessThanOrEqual(256);
  });

  it('tears everything down on SIGTERM and leaves nothing behind', async () => {
    if (!shim) throw new Error('the shim did not start');
    await expectCleanStop(shim, pod);
  });

  it('stops cleanly when SIGTERM comes while the shim waits for the guest', async () => {
    // No such init: the guest's kernel panics and hangs (panic=0), so the agent never answers.
    const guest = { ...(spec['guest'] as { kernelParams: string[] }) };
    guest.kernelParams = [...guest.kernelParams, 'rdinit=/no-such-init'];
    const path = join(work.dir, 'interrupted.json');
    writeFileSync(path, JSON.stringify({ ...spec, name: interruptedPod, guest }));
    const interrupted = new ShimProcess(exampleDir, path);
    try {
      await interrupted.event('started');
      await expectCleanStop(interrupted, interruptedPod);
      expect(interrupted.events.map((e) => e.event)).not.toContain('guest-ready');
    } finally {
      interrupted.child.kill('SIGKILL');
    }
  });
});

/** SIGTERMs a started shim and checks it exits 0 leaving no process, namespace, directory or lease. */
async function expectCleanStop(shim: ShimProcess, name: string): Promise<void> {
  const started = await shim.event('started');
  const qemuPid = started['qemuPid'] as number;
  const uid = started['uid'] as number;
  shim.child.kill('SIGTERM');
  expect(await shim.exited).toBe(0);
  expect(shim.events.filter((e) => e.event === 'cleanup-failed' || e.event === 'failed')).toEqual([]);
  expect(shim.events.at(-1)).toEqual({ event: 'stopped' });

  expect(isProcessAlive(qemuPid)).toBe(false);
  expect(processesRunningAs(new Set([uid]))).toEqual([]);
  expect(await ip('netns', 'list')).not.toMatch(new RegExp(`^${name}(\\s|$)`, 'm'));
  expect(existsSync(`/run/netns/${name}`)).toBe(false);
  expect(existsSync(join('/run/pod-shim', name))).toBe(false);
  expect(existsSync(join(RUNTIME_BASE, `pod-${name}`))).toBe(false);
  expect(leasesOnDisk(`pod-${name}`)).toEqual([]);
}
