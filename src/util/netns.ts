// Checking a network-namespace path before anything is started in it: that it exists, that it is a
// namespace file (nsfs), and, where the kernel tells, that it is a network namespace. The launcher
// checks the kind again with NS_GET_NSTYPE as it enters it.
import { readFileSync, readlinkSync, realpathSync, statfsSync } from 'node:fs';

/** statfs(2)'s f_type for namespace files (NSFS_MAGIC in linux/magic.h). */
const NSFS_MAGIC = 0x6e736673;

/** Why `path` is not a network namespace we can start a VM in, or undefined when it is. */
export function netnsProblem(path: string): string | undefined {
  let type: number;
  try {
    type = statfsSync(path).type;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return `${path} does not exist (create the namespace first, e.g. \`ip netns add <name>\`)`;
    return `${path} cannot be inspected (${code ?? String(error)})`;
  }
  if (type !== NSFS_MAGIC) return `${path} is not a namespace file (give /run/netns/<name> or /proc/<pid>/ns/net)`;
  const kind = namespaceKind(path);
  if (kind !== undefined && kind !== 'net') return `${path} is a ${kind} namespace, not a network namespace`;
  return undefined;
}

/**
 * The kind of namespace at `path` ("net", "uts", …) when it can be read without opening it: a
 * /proc/<pid>/ns link names it, and a bind mount (as `ip netns add` makes) shows it as the mount's
 * root in mountinfo. Undefined when neither says.
 */
function namespaceKind(path: string): string | undefined {
  try {
    return kindOf(readlinkSync(path));
  } catch {
    // Not a link: a bind-mounted namespace file.
  }
  let mountPoint: string;
  let mountinfo: string;
  try {
    mountPoint = realpathSync(path);
    mountinfo = readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return undefined;
  }
  let kind: string | undefined;
  for (const line of mountinfo.split('\n')) {
    // id parent major:minor root mount-point …; octal escapes for spaces and the like.
    const fields = line.split(' ');
    if (fields.length > 4 && unescapeMountField(fields[4] as string) === mountPoint) kind = kindOf(fields[3] as string) ?? kind;
  }
  return kind;
}

function kindOf(target: string): string | undefined {
  return /^([a-z_]+):\[\d+\]$/.exec(target)?.[1];
}

function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}
