// The lock of the scratch consumer project: the packed library by file name, and every package the
// library needs at run time exactly as this repository's lock pins it (same version, same
// integrity), so that `npm ci --offline` installs it from the cache the repository's `npm ci` filled.

export interface LockEntry {
  version?: string;
  resolved?: string;
  integrity?: string;
  dev?: boolean;
  link?: boolean;
  [field: string]: unknown;
}

export interface PackageLock {
  name?: string;
  lockfileVersion: number;
  packages: Record<string, LockEntry>;
}

export function consumerLock(rootLock: PackageLock, library: Record<string, unknown>, consumer: { name: string; version: string; dependencies: Record<string, string> }): PackageLock {
  // The repository's own non-dev packages are the library's dependency tree, laid out as npm
  // hoisted it; the consumer has no other dependency, so the same layout holds there.
  const runtime = Object.entries(rootLock.packages).filter(([path, entry]) => path !== '' && entry.dev !== true && entry.link !== true);
  const pick = (field: string) => (library[field] === undefined ? {} : { [field]: library[field] });
  return {
    name: consumer.name,
    lockfileVersion: 3,
    packages: {
      '': { name: consumer.name, version: consumer.version, dependencies: consumer.dependencies },
      // A new tarball at every pack: no integrity, or the lock would refuse the next one.
      'node_modules/sandbox-vmm': {
        version: String(library['version']),
        resolved: 'file:sandbox-vmm.tgz',
        ...pick('license'),
        hasInstallScript: true,
        ...pick('dependencies'),
        ...pick('engines'),
      },
      ...Object.fromEntries(runtime),
    },
  };
}
