// Runs once before the integration project. QEMU and the guest image are installed by
// `npm test` (scripts/bootstrap.mjs); here we only fail early, with a clear message, if they are not.
import { execFileSync } from 'node:child_process';

export default function setup(): void {
  try {
    execFileSync('qemu-system-x86_64', ['--version'], { stdio: 'ignore' });
  } catch {
    throw new Error('qemu-system-x86_64 is not installed: run `npm test`, which installs it');
  }
}
