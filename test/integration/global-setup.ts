// Runs once before the integration project. QEMU, the launcher and the guest image are installed by
// `npm test` (scripts/bootstrap.mjs); here we only fail early, with a clear message, if they are not.
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, statSync } from 'node:fs';
import { join } from 'node:path';

export default function setup(): void {
  // x86-64 for most files; aarch64 for the arm64 guest (Debian's qemu-system-arm provides it).
  for (const qemu of ['qemu-system-x86_64', 'qemu-system-aarch64']) {
    try {
      execFileSync(qemu, ['--version'], { stdio: 'ignore' });
    } catch {
      throw new Error(`${qemu} is not installed: run \`npm test\`, which installs it`);
    }
  }
  // QEMU and virtiofsd are exec'd through the launcher; the library refuses to start without it.
  if (!existsSync(join(process.cwd(), 'build', 'svmm-launch'))) {
    throw new Error('the launcher build/svmm-launch is not built: run `node scripts/build-launcher.mjs --require` (or `npm test`)');
  }
  // Each VM's QEMU runs as a uid of its own and opens its tap through /dev/net/tun: as
  // scripts/bootstrap.mjs does for `npm test`, give it Debian's default mode when we can.
  const tun = '/dev/net/tun';
  if (process.geteuid?.() === 0 && existsSync(tun) && (statSync(tun).mode & 0o777) !== 0o666) {
    process.stderr.write(`[global-setup] ${tun} is not 0666: setting Debian's default so that an unprivileged QEMU can open its taps\n`);
    chmodSync(tun, 0o666);
  }
}
