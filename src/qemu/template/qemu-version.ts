// The version of a QEMU binary, asked once per binary (`--version`, which starts no VM): a template
// records the version that made it, and only that version may restore it.
import { execFile } from 'node:child_process';
import { stat } from 'node:fs/promises';
import { promisify } from 'node:util';

const run = promisify(execFile);
const cache = new Map<string, Promise<string>>();

/** "7.2.22" for "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)". */
export async function qemuVersionOf(qemuPath: string): Promise<string> {
  const stats = await stat(qemuPath);
  // Keyed by the file itself: a binary upgraded in place is asked again.
  const key = `${qemuPath}\0${stats.ino}\0${stats.size}\0${stats.mtimeMs}`;
  let version = cache.get(key);
  if (!version) {
    version = run(qemuPath, ['--version'], { env: {}, timeout: 10_000 }).then(({ stdout }) => {
      const match = /version (\d+)\.(\d+)\.(\d+)/.exec(stdout);
      if (!match) throw new Error(`${qemuPath} --version did not say its version: ${stdout.slice(0, 200)}`);
      return `${match[1]}.${match[2]}.${match[3]}`;
    });
    version.catch(() => cache.delete(key));
    cache.set(key, version);
  }
  return version;
}

/** What query-version answers, as qemuVersionOf says it. */
export function versionOfReply(reply: unknown): string | undefined {
  const qemu = (reply as { qemu?: { major?: unknown; minor?: unknown; micro?: unknown } } | undefined)?.qemu;
  if (!qemu || typeof qemu.major !== 'number' || typeof qemu.minor !== 'number' || typeof qemu.micro !== 'number') return undefined;
  return `${qemu.major}.${qemu.minor}.${qemu.micro}`;
}

/** Whether `version` is at least major.minor. */
export function atLeast(version: string, major: number, minor: number): boolean {
  const [a = 0, b = 0] = version.split('.').map(Number);
  return a > major || (a === major && b >= minor);
}
