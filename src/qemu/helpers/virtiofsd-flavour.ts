// Which virtiofsd a binary is, from its own --help: the Rust one (virtio-fs/virtiofsd, the only one
// QEMU >= 8 distributions ship) lists --shared-dir and wants its options in that form (it warns that
// `-o` is deprecated); Debian 12's C one (QEMU 7.2's tools) only knows `-o source=…,cache=…`.
// Asked once per build of the binary (path, inode, size, mtime).
import { execFile } from 'node:child_process';
import type { VirtioFsDeviceConfig } from '../../hypervisor/config/index.ts';
import { PerBinaryCache } from '../features/per-binary-cache.ts';

export type VirtiofsdFlavour = 'rust' | 'c';

const HELP_TIMEOUT_MS = 5_000;
const HELP_MAX_BYTES = 1024 * 1024;

const flavours = new PerBinaryCache<VirtiofsdFlavour>();
/** How many times --help was run (the tests count cache hits by it). */
export const flavourProbes = { count: 0 };

/** The flavour of `binary` (an absolute, resolved path), from its --help; one that cannot tell is taken for the C one. */
export function virtiofsdFlavour(binary: string): Promise<VirtiofsdFlavour> {
  return flavours.get(binary, () => {
    flavourProbes.count += 1;
    return new Promise<VirtiofsdFlavour>((resolve) => {
      // No shell, no environment: only the program's own text counts.
      execFile(binary, ['--help'], { env: {}, timeout: HELP_TIMEOUT_MS, maxBuffer: HELP_MAX_BYTES, killSignal: 'SIGKILL' }, (_error, stdout, stderr) => {
        resolve(flavourOfHelp(`${stdout}\n${stderr}`));
      });
    });
  });
}

export function flavourOfHelp(help: string): VirtiofsdFlavour {
  return /(^|\s)--shared-dir\b/m.test(help) ? 'rust' : 'c';
}

/** The Rust virtiofsd names QEMU's "none" cache policy "never". */
const RUST_CACHE: Record<NonNullable<VirtioFsDeviceConfig['cache']>, string> = { auto: 'auto', always: 'always', none: 'never' };

/** virtiofsd's argv (after the program) for a sharedDir device listening on `socket`. */
export function virtiofsdArgs(device: VirtioFsDeviceConfig & { sharedDir: string }, socket: string, flavour: VirtiofsdFlavour): string[] {
  const cache = device.cache ?? 'auto';
  if (flavour === 'rust') return [`--socket-path=${socket}`, '--shared-dir', device.sharedDir, '--cache', RUST_CACHE[cache]];
  return [`--socket-path=${socket}`, '-o', `source=${device.sharedDir}`, '-o', `cache=${cache}`];
}

export function clearVirtiofsdFlavours(): void {
  flavours.clear();
  flavourProbes.count = 0;
}
