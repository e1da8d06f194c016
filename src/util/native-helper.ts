// The package's native helpers (build/svmm-launch, build/svmm-sendfd, compiled from native/ by the
// install script): where they are, and whether one may be run as root. Whatever runs as root must
// not be replaceable by anyone else.
import { accessSync, constants, existsSync, lstatSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const BUILD_HINT = 'build it with `npm rebuild sandbox-vmm` (or `node scripts/build-launcher.mjs` in a clone)';

/**
 * build/<name> at the root of this package (found by walking up from this module: src/ under
 * tsx, dist/src/ once built); undefined when no sandbox-vmm package.json is above this module.
 */
export function builtHelperPath(name: string): string | undefined {
  const root = packageRoot();
  return root === undefined ? undefined : join(root, 'build', name);
}

/**
 * Why `path` may not be run as root, or undefined when it may: it must be an absolute path to a
 * regular file (not a symlink), owned by root or by us, not writable by group or others, and
 * executable. `configured`: the caller named it (else it is our own build, and the hint says how
 * to rebuild it).
 */
export function nativeHelperProblem(what: string, path: string, configured: boolean): string | undefined {
  if (!isAbsolute(path)) return `the ${what} path ${JSON.stringify(path)} must be absolute`;
  let stat;
  try {
    stat = lstatSync(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return configured ? `the ${what} ${path} does not exist` : `the ${what} ${path} is not built: ${BUILD_HINT}`;
    return `the ${what} ${path} cannot be inspected (${code ?? String(error)})`;
  }
  if (stat.isSymbolicLink()) return `the ${what} ${path} is a symlink: give the real file, which must be owned by root`;
  if (!stat.isFile()) return `the ${what} ${path} is not a regular file`;
  const euid = process.geteuid?.();
  if (stat.uid !== 0 && stat.uid !== euid) return `the ${what} ${path} is owned by uid ${stat.uid}, not by root or by this process (uid ${String(euid)}): ${configured ? 'chown it' : `remove it and ${BUILD_HINT}`}`;
  if ((stat.mode & 0o022) !== 0) return `the ${what} ${path} is writable by ${(stat.mode & 0o002) !== 0 ? 'others' : 'its group'} (mode ${(stat.mode & 0o777).toString(8)}): chmod go-w it`;
  try {
    accessSync(path, constants.X_OK);
  } catch {
    return `the ${what} ${path} is not executable (mode ${(stat.mode & 0o777).toString(8)}, or its file system is mounted noexec): ${configured ? 'chmod 755 it' : BUILD_HINT}`;
  }
  return undefined;
}

let root: string | null | undefined;

/** The nearest directory above this module whose package.json is this package's. */
function packageRoot(): string | undefined {
  if (root !== undefined) return root ?? undefined;
  const start = dirname(fileURLToPath(import.meta.url));
  for (let dir = start; ; dir = dirname(dir)) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest) && readPackageName(manifest) === 'sandbox-vmm') return (root = dir);
    if (dirname(dir) === dir) {
      root = null;
      return undefined;
    }
  }
}

function readPackageName(manifest: string): string | undefined {
  try {
    const parsed = JSON.parse(readFileSync(manifest, 'utf8')) as { name?: unknown };
    return typeof parsed.name === 'string' ? parsed.name : undefined;
  } catch {
    return undefined;
  }
}
