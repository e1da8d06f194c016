// Runs once before each integration project (one per QEMU of the version matrix, see
// vitest.config.ts). QEMU, the launcher and the guest image are installed by `npm test`
// (scripts/bootstrap.mjs); here we only fail early, with a clear message, if they are not.
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { QEMU_UNDER_TEST } from '../helpers/qemu-under-test.ts';

export default function setup(project: TestProject): void {
  const qemu = project.config.env['SANDBOX_VMM_QEMU'] ?? QEMU_UNDER_TEST;
  // x86-64 for most files; the aarch64 binary of the same version for the arm64 files.
  for (const binary of [qemu, join(dirname(qemu), 'qemu-system-aarch64')]) {
    try {
      execFileSync(binary, ['--version'], { stdio: 'ignore' });
    } catch {
      throw new Error(`${binary} (project ${project.name}) does not run: run \`npm test\`, which installs the QEMUs of the version matrix (Debian's qemu-system-x86 and qemu-system-arm, and the side-by-side ones)`);
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
