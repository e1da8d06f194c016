// Host resources a real QEMU needs (disk images, taps, a loop device, huge pages, a virtio-fs
// daemon), each registered for removal the moment it is created; cleanup() undoes them newest first.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

const VIRTIOFSD = '/usr/lib/qemu/virtiofsd';
const NR_HUGEPAGES = '/proc/sys/vm/nr_hugepages';

export class HostResources {
  readonly #undo: { what: string; run: () => void | Promise<void> }[] = [];

  /** Registers an undo step; runs in reverse order of registration. */
  onCleanup(what: string, run: () => void | Promise<void>): void {
    this.#undo.push({ what, run });
  }

  /** A sparse raw image; `marker` is written at its start. */
  rawImage(path: string, sizeMiB = 16, marker = ''): string {
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, marker);
    execFileSync('truncate', ['-s', `${sizeMiB}M`, path]);
    return path;
  }

  qcow2Image(path: string, sizeMiB = 16): string {
    mkdirSync(dirname(path), { recursive: true });
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', path, `${sizeMiB}M`]);
    return path;
  }

  /** A persistent tap; multi-queue taps must be created as such for QEMU to attach several queues. */
  tap(name: string, options: { multiQueue?: boolean; ownerUid?: number } = {}): string {
    const args = ['tuntap', 'add', 'dev', name, 'mode', 'tap'];
    if (options.multiQueue) args.push('multi_queue');
    if (options.ownerUid !== undefined) args.push('user', String(options.ownerUid));
    execFileSync('ip', args);
    this.onCleanup(`tap ${name}`, () => void execFileSync('ip', ['link', 'del', name]));
    return name;
  }

  /** A loop device over a new image file: a real host block device. */
  loopDevice(imagePath: string, sizeMiB = 16): string {
    this.rawImage(imagePath, sizeMiB);
    const device = execFileSync('losetup', ['--find', '--show', imagePath], { encoding: 'utf8' }).trim();
    this.onCleanup(`loop device ${device}`, () => void execFileSync('losetup', ['--detach', device]));
    if (!statSync(device).isBlockDevice()) throw new Error(`${device} is not a block device`);
    return device;
  }

  /**
   * A hugetlbfs mount with `pages` more 2 MiB pages reserved in the kernel's pool; the pool size is
   * put back afterwards.
   */
  hugepages(mountPoint: string, pages: number): string {
    const before = Number(readFileSync(NR_HUGEPAGES, 'utf8').trim());
    writeFileSync(NR_HUGEPAGES, String(before + pages));
    this.onCleanup('the huge page pool', () => writeFileSync(NR_HUGEPAGES, String(before)));
    const free = hugePagesFree();
    if (free < pages) throw new Error(`only ${free} huge pages could be reserved, ${pages} needed`);
    mkdirSync(mountPoint, { recursive: true });
    execFileSync('mount', ['-t', 'hugetlbfs', '-o', 'pagesize=2M', 'none', mountPoint]);
    this.onCleanup(`hugetlbfs at ${mountPoint}`, () => void execFileSync('umount', [mountPoint]));
    return mountPoint;
  }

  /** Starts QEMU's virtiofsd sharing `source` on `socketPath`, and waits for the socket. */
  async virtiofsd(socketPath: string, source: string): Promise<ChildProcess> {
    mkdirSync(source, { recursive: true });
    const daemon = spawn(VIRTIOFSD, [`--socket-path=${socketPath}`, '-o', `source=${source}`, '-o', 'cache=none'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    daemon.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = new Promise<void>((resolve) => daemon.once('exit', () => resolve()));
    this.onCleanup(`virtiofsd ${daemon.pid}`, async () => {
      if (daemon.exitCode === null && daemon.signalCode === null) daemon.kill('SIGKILL');
      await exited;
    });
    let gone = false;
    void exited.then(() => (gone = true));
    while (!existsSync(socketPath)) {
      if (gone) throw new Error(`virtiofsd exited before listening on ${socketPath}: ${stderr}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    return daemon;
  }

  /** Undoes everything, newest first; reports every step that failed at the end. */
  async cleanup(): Promise<void> {
    const failures: string[] = [];
    while (this.#undo.length > 0) {
      const step = this.#undo.pop() as { what: string; run: () => void | Promise<void> };
      try {
        await step.run();
      } catch (error) {
        failures.push(`${step.what}: ${(error as Error).message}`);
      }
    }
    if (failures.length > 0) throw new Error(`cleanup failed for ${failures.join('; ')}`);
  }
}

export function hugePagesFree(): number {
  const match = /^HugePages_Free:\s+(\d+)/m.exec(readFileSync('/proc/meminfo', 'utf8'));
  return Number(match?.[1] ?? 0);
}
