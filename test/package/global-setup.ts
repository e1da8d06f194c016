// Runs once before the package project: packs the library as a fresh clone of this work tree would
// (`npm pack`, whose `prepare` script builds dist/), then installs the tarball into a scratch
// consumer project offline, the way a runtime installs it. The tests read what this provides.
import { execFile } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import type { TestProject } from 'vitest/node';
import { consumerLock, type PackageLock } from './helpers/consumer-lock.ts';

const execFileAsync = promisify(execFile);

declare module 'vitest' {
  export interface ProvidedContext {
    /** The packed tarball (`npm pack` of a copy of the work tree). */
    tarball: string;
    /** The paths inside the tarball, without its `package/` prefix. */
    tarballFiles: string[];
    /** A scratch project with the tarball installed in node_modules/sandbox-vmm. */
    consumerDir: string;
  }
}

/** The environment of a nested npm run: none of `npm test`'s own settings but npm's cache. */
function npmEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.toLowerCase().startsWith('npm_') || key.toLowerCase() === 'npm_config_cache'));
}

async function run(file: string, args: string[], cwd: string): Promise<string> {
  try {
    return (await execFileAsync(file, args, { cwd, env: npmEnv(), maxBuffer: 64 * 1024 * 1024 })).stdout;
  } catch (error) {
    const { stdout = '', stderr = '' } = error as { stdout?: string; stderr?: string };
    throw new Error(`${file} ${args.join(' ')} failed in ${cwd}:\n${stdout}\n${stderr}`, { cause: error });
  }
}

/**
 * A copy of what a clone of the work tree holds (tracked files and untracked ones git does not
 * ignore, so uncommitted work is packed too): no dist/, no build/. Its node_modules is this
 * repository's, which a fresh clone's `npm ci` would install.
 */
async function copyWorkTree(root: string, to: string): Promise<void> {
  const listed = await run('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard', '--deduplicate'], root);
  const deleted = new Set((await run('git', ['ls-files', '-z', '--deleted'], root)).split('\0'));
  for (const path of listed.split('\0')) {
    if (!path || deleted.has(path)) continue;
    mkdirSync(dirname(join(to, path)), { recursive: true });
    copyFileSync(join(root, path), join(to, path));
  }
  symlinkSync(realpathSync(join(root, 'node_modules')), join(to, 'node_modules'));
}

export default async function setup(project: TestProject): Promise<() => void> {
  const root = process.cwd();
  const work = mkdtempSync(join(tmpdir(), 'svmm-package-'));
  const clone = join(work, 'clone');
  await copyWorkTree(root, clone);
  await run('npm', ['pack', '--silent', '--pack-destination', work], clone);
  const [name] = readdirSync(work).filter((file) => file.endsWith('.tgz'));
  if (!name) throw new Error(`npm pack wrote no tarball into ${work}`);
  const tarball = join(work, name);
  const tarballFiles = (await run('tar', ['-tzf', tarball], work))
    .split('\n')
    .filter(Boolean)
    .map((path) => path.replace(/^package\//, ''));

  // The consumer pins the library's dependencies at the versions this repository's lock pins, so
  // `npm ci --offline` finds every package in the cache the repository's own `npm ci` filled.
  const consumerDir = join(work, 'consumer');
  mkdirSync(consumerDir);
  copyFileSync(tarball, join(consumerDir, 'sandbox-vmm.tgz'));
  const manifest = JSON.parse(await run('tar', ['-xzOf', tarball, 'package/package.json'], work)) as Record<string, unknown>;
  const rootLock = JSON.parse(readFileSync(join(root, 'package-lock.json'), 'utf8')) as PackageLock;
  const consumer = { name: 'consumer', version: '0.0.0', private: true, type: 'module', dependencies: { 'sandbox-vmm': 'file:sandbox-vmm.tgz' } };
  writeFileSync(join(consumerDir, 'package.json'), `${JSON.stringify(consumer, null, 2)}\n`);
  writeFileSync(join(consumerDir, 'package-lock.json'), `${JSON.stringify(consumerLock(rootLock, manifest, consumer), null, 2)}\n`);
  await run('npm', ['ci', '--offline', '--no-audit', '--no-fund'], consumerDir).catch((error: Error) => {
    const hint = error.message.includes('ENOTCACHED') ? "\nnpm's cache lacks a package the library needs: run `npm ci` in the repository, which fills it" : '';
    throw new Error(`${error.message}${hint}`, { cause: error });
  });

  project.provide('tarball', tarball);
  project.provide('tarballFiles', tarballFiles);
  project.provide('consumerDir', consumerDir);
  return () => rmSync(work, { recursive: true, force: true });
}
