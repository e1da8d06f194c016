// Which build of a program a path names now: device, inode, size and mtime (ns). A package upgrade
// replaces the file (new inode) or rewrites it (new mtime); either way what was learned is dropped.
import { statSync } from 'node:fs';

export function binaryKey(path: string): string {
  const stat = statSync(path, { bigint: true });
  return `${stat.dev}:${stat.ino}:${stat.size}:${stat.mtimeNs}`;
}
