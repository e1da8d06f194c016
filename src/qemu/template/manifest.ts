// A template's manifest (template.json): what made it (QEMU version, machine type, the config it
// was booted with) and the size and digest of its files. Written last, when the template is whole,
// and read through checks that nobody but root could have changed the directory or its files.
import { createHash } from 'node:crypto';
import { constants, type BigIntStats, type Stats } from 'node:fs';
import { lstat, open } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { parseSandboxConfig, type SandboxConfig } from '../../hypervisor/config/index.ts';
import { TemplateError } from '../../hypervisor/errors.ts';
import { readRegularFile, writeFileAtomic } from '../../util/safe-fs.ts';
import { TEMPLATE_RAM_FILE } from './ram.ts';

export const MANIFEST_FILE = 'template.json';
export const STATE_FILE = 'state';
const MANIFEST_FORMAT = 1;
const MAX_MANIFEST_BYTES = 1024 * 1024;

const manifestSchema = z.strictObject({
  format: z.literal(MANIFEST_FORMAT),
  hypervisorVersion: z.string().regex(/^\d+\.\d+\.\d+$/),
  machineType: z.string().min(1).max(128),
  config: z.unknown(),
  ramBytes: z.int().positive(),
  stateBytes: z.int().positive(),
  stateSha256: z.string().regex(/^[0-9a-f]{64}$/),
});

export interface TemplateManifest {
  hypervisorVersion: string;
  machineType: string;
  config: SandboxConfig;
  ramBytes: number;
  stateBytes: number;
  stateSha256: string;
}

export async function writeManifest(dir: string, manifest: TemplateManifest): Promise<void> {
  // 0644 like the template's other files: anyone may read what a template is, only root change it.
  await writeFileAtomic(join(dir, MANIFEST_FILE), `${JSON.stringify({ format: MANIFEST_FORMAT, ...manifest }, null, 2)}\n`, 0o644);
}

/** The manifest of the template in `dir`, once the directory is found to be root's alone. */
export async function readManifest(dir: string): Promise<TemplateManifest> {
  const dirStats = await lstat(dir).catch((error: unknown) => {
    throw new TemplateError('not-a-template', dir, 'the directory does not exist', { cause: error });
  });
  const unsafe = ownershipProblem(dirStats, true);
  if (unsafe) throw new TemplateError('unsafe', dir, `the directory ${unsafe}`);
  let text: string;
  try {
    text = await readRegularFile(join(dir, MANIFEST_FILE), MAX_MANIFEST_BYTES);
  } catch (error) {
    const missing = (error as NodeJS.ErrnoException).code === 'ENOENT';
    throw new TemplateError(missing ? 'not-a-template' : 'corrupt', dir, missing ? `it has no ${MANIFEST_FILE} (never saved, or not a template)` : `${MANIFEST_FILE} cannot be read`, { cause: error });
  }
  try {
    const parsed = manifestSchema.parse(JSON.parse(text));
    return { ...parsed, config: parseSandboxConfig(parsed.config) };
  } catch (error) {
    throw new TemplateError('corrupt', dir, `${MANIFEST_FILE} is not a template manifest`, { cause: error });
  }
}

/** Checks a template's files against its manifest: present, root's alone, of the recorded sizes, the state of the recorded digest. */
export async function checkTemplateFiles(dir: string, manifest: TemplateManifest): Promise<void> {
  const ram = await lstat(join(dir, TEMPLATE_RAM_FILE)).catch((error: unknown) => {
    throw new TemplateError('ram-file-missing', dir, `its RAM file ${TEMPLATE_RAM_FILE} is missing`, { cause: error });
  });
  const ramProblem = ownershipProblem(ram, false);
  if (ramProblem) throw new TemplateError('unsafe', dir, `its RAM file ${ramProblem}`);
  if (ram.size !== manifest.ramBytes) throw new TemplateError('corrupt', dir, `its RAM file has ${ram.size} bytes, not the ${manifest.ramBytes} recorded`);
  const digest = await digestOf(dir, join(dir, STATE_FILE));
  if (digest.bytes !== manifest.stateBytes) throw new TemplateError('corrupt', dir, `its device state has ${digest.bytes} bytes, not the ${manifest.stateBytes} recorded (truncated?)`);
  if (digest.sha256 !== manifest.stateSha256) throw new TemplateError('corrupt', dir, 'its device state does not match the digest recorded');
}

/**
 * Digests already computed, by the file's identity: every clone of a template checks its device
 * state at createVM and again at startVM, and a storm of clones would hash the same few hundred KB
 * on the event loop a hundred times. Any change to the file (write, truncate, chmod) moves its
 * ctime, so a changed file is read again.
 */
const digests = new Map<string, { bytes: number; sha256: string }>();
const DIGESTS_KEPT = 64;

/** Size and SHA-256 of a file of the template, read without following a link. */
export async function digestOf(dir: string, path: string): Promise<{ bytes: number; sha256: string }> {
  let handle;
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (error) {
    throw new TemplateError('corrupt', dir, `${path} cannot be opened`, { cause: error });
  }
  try {
    const stats = await handle.stat({ bigint: true });
    const unsafe = ownershipProblem(stats, false);
    if (unsafe) throw new TemplateError('unsafe', dir, `${path} ${unsafe}`);
    const identity = [stats.dev, stats.ino, stats.size, stats.mtimeNs, stats.ctimeNs].join(':');
    const known = digests.get(identity);
    if (known) return known;
    // A device state is a few hundred KB: read whole.
    const data = await handle.readFile();
    const digest = { bytes: data.length, sha256: createHash('sha256').update(data).digest('hex') };
    if (digests.size >= DIGESTS_KEPT) digests.delete(digests.keys().next().value as string);
    digests.set(identity, digest);
    return digest;
  } finally {
    await handle.close();
  }
}

/** Why a template's directory or file could be changed by someone other than us (root), if it could. */
function ownershipProblem(stats: Stats | BigIntStats, directory: boolean): string | undefined {
  const euid = process.geteuid?.() ?? 0;
  if (directory ? !stats.isDirectory() : !stats.isFile()) return `is not a ${directory ? 'directory' : 'regular file'} (a link is refused)`;
  // Numbers whether the stats were read as bigint or not.
  const uid = Number(stats.uid);
  const mode = Number(stats.mode);
  if (uid !== euid) return `is owned by uid ${uid}, not ${euid}`;
  if ((mode & 0o022) !== 0) return `is writable by group or others (mode ${(mode & 0o7777).toString(8)})`;
  return undefined;
}
