// The QEMU versions `npm test` and `npm run bench` prove the library against: Debian 12's own QEMU
// (the system one, 7.2) and, side by side in the git-ignored cache, QEMU from Debian 12's backports.
// One table, read by scripts/bootstrap.mjs (which installs the side-by-side ones), vitest.config.ts
// and the benchmarks. Plain Node with no dependencies: the bootstrap imports it before npm ci.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

/** The system QEMU: Debian 12's qemu-system-x86 (7.2.x), installed by apt like any other package. */
export const SYSTEM_QEMU = '/usr/bin/qemu-system-x86_64';

/** Where the bootstrap's QEMU installs live: <repository>/.cache/qemu, or SANDBOX_VMM_QEMU_CACHE. */
export function qemuCacheDir(repositoryRoot) {
  return process.env.SANDBOX_VMM_QEMU_CACHE || join(repositoryRoot, '.cache', 'qemu');
}

/** Debian's archive, read through a private apt state (never the host's sources or lists). */
export const DEBIAN_ARCHIVE = {
  keyring: '/usr/share/keyrings/debian-archive-keyring.gpg',
  mirror: 'http://deb.debian.org/debian',
  suites: ['bookworm', 'bookworm-backports'],
};

const QEMU_10 = '1:10.0.2+ds-2+deb13u1~bpo12+1';

/**
 * QEMUs installed side by side: exact Debian package versions, unpacked with `dpkg-deb -x`.
 * qemu-system-x86 10 needs seabios >> 1.16.3-1~ (bookworm has 1.16.2), hence backports' seabios.
 */
export const SIDE_BY_SIDE = [
  {
    version: '10.0.2',
    packages: {
      'qemu-system-x86': QEMU_10,
      'qemu-system-common': QEMU_10,
      'qemu-system-data': QEMU_10,
      'qemu-system-arm': QEMU_10,
      seabios: '1.16.3-2~bpo12+1',
      'ipxe-qemu': '1.0.0+git-20190125.36a4c85-5.1',
    },
  },
];

/** The directory one side-by-side version is unpacked into (its usr/bin holds the binaries). */
export function sideBySideRoot(cacheDir, version) {
  return join(cacheDir, version, 'root');
}

/** The x86-64 QEMU of a side-by-side install. */
export function sideBySideQemu(cacheDir, version) {
  return join(sideBySideRoot(cacheDir, version), 'usr', 'bin', 'qemu-system-x86_64');
}

/** "10.0.2" from `qemu-system-x86_64 --version`, or undefined when it does not run. */
export function qemuVersionOf(binary) {
  const result = spawnSync(binary, ['--version'], { encoding: 'utf8', env: {} });
  if (result.status !== 0) return undefined;
  return /QEMU emulator version (\d+\.\d+\.\d+)/.exec(result.stdout)?.[1];
}

/**
 * The QEMUs the integration tests run against, each once: SANDBOX_VMM_QEMU alone when it is set
 * (any QEMU a user wants to check), else the system QEMU and every side-by-side version.
 * `label` is "major.minor" from the binary's own --version (the pinned one when it cannot run yet:
 * the test run's global setup then says how to install it).
 */
export function qemusUnderTest(repositoryRoot) {
  const chosen = process.env.SANDBOX_VMM_QEMU;
  const entries = chosen
    ? [{ binary: chosen, pinned: undefined }]
    : [
        { binary: SYSTEM_QEMU, pinned: '7.2' },
        ...SIDE_BY_SIDE.map((entry) => ({ binary: sideBySideQemu(qemuCacheDir(repositoryRoot), entry.version), pinned: entry.version })),
      ];
  return entries.map(({ binary, pinned }) => {
    const version = qemuVersionOf(binary) ?? pinned ?? 'unknown';
    return { binary, label: version.split('.').slice(0, 2).join('.') };
  });
}
