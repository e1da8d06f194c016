// The programs the backend runs (QEMU, virtiofsd) are resolved to absolute real paths once, at
// createVM: root never looks a name up in PATH at spawn time, and re-attach can compare the path
// with /proc/<pid>/exe.
import { accessSync, constants, realpathSync, statSync } from 'node:fs';
import { delimiter, isAbsolute, join } from 'node:path';
import { ConfigError } from '../hypervisor/config/index.ts';

/** What a name resolved to, per PATH: a burst of createVM calls looks each binary up once. */
const resolved = new Map<string, string>();

/** `nameOrPath` as an absolute real path to an executable regular file; a ConfigError at `field` otherwise. */
export function resolveBinary(nameOrPath: string, field: string): string {
  const key = `${nameOrPath}\0${process.env['PATH'] ?? ''}`;
  const known = resolved.get(key);
  // Still there and executable (a package upgrade may have moved it): else look again.
  if (known !== undefined && executable(known) === known) return known;
  const found = lookUp(nameOrPath, field);
  resolved.set(key, found);
  return found;
}

function lookUp(nameOrPath: string, field: string): string {
  const fail = (message: string): never => {
    throw new ConfigError([{ path: field, message }]);
  };
  if (nameOrPath.includes('/')) {
    if (!isAbsolute(nameOrPath)) fail(`must be an absolute path or a bare name found in PATH (got ${nameOrPath})`);
    return executable(nameOrPath) ?? fail(`${nameOrPath} is not an executable file`);
  }
  const dirs = (process.env['PATH'] ?? '').split(delimiter).filter((dir) => isAbsolute(dir));
  for (const dir of dirs) {
    const found = executable(join(dir, nameOrPath));
    if (found) return found;
  }
  return fail(`${nameOrPath} was not found in PATH (${dirs.join(delimiter)})`);
}

function executable(path: string): string | undefined {
  try {
    const real = realpathSync(path);
    if (!statSync(real).isFile()) return undefined;
    accessSync(real, constants.X_OK);
    return real;
  } catch {
    return undefined;
  }
}
