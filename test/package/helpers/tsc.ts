// Type-checks files of the scratch consumer project with this repository's TypeScript, as a
// consumer's strict tsconfig would: the package's own declarations are checked too (no skipLibCheck).
import { execFile } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);
const root = process.cwd();

/** How a consumer resolves modules: Node's own rules, or a bundler's. */
export type Resolution = 'nodenext' | 'bundler';

const moduleOptions: Record<Resolution, Record<string, string>> = {
  nodenext: { module: 'NodeNext', moduleResolution: 'NodeNext' },
  bundler: { module: 'ESNext', moduleResolution: 'Bundler' },
};

/**
 * Writes `files` (name → source) into `<consumerDir>/<name of the check>/` with a tsconfig, runs
 * tsc on them and returns its diagnostics, one a line (empty when the files type-check).
 */
export async function typecheck(consumerDir: string, check: string, files: Record<string, string>, resolution: Resolution = 'nodenext'): Promise<string[]> {
  const dir = join(consumerDir, check);
  mkdirSync(dir, { recursive: true });
  for (const [name, source] of Object.entries(files)) writeFileSync(join(dir, name), source);
  const compilerOptions = {
    target: 'ES2022',
    lib: ['ES2023'],
    ...moduleOptions[resolution],
    types: ['node'],
    // @types/node is the consumer's own dev dependency; this repository's stands in for it.
    typeRoots: [join(root, 'node_modules', '@types')],
    strict: true,
    noUncheckedIndexedAccess: true,
    exactOptionalPropertyTypes: true,
    verbatimModuleSyntax: true,
    skipLibCheck: false,
    noEmit: true,
  };
  writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({ compilerOptions, files: Object.keys(files) }, null, 2));
  try {
    await execFileAsync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', dir, '--pretty', 'false'], { cwd: dir, maxBuffer: 16 * 1024 * 1024 });
    return [];
  } catch (error) {
    const { stdout = '', stderr = '' } = error as { stdout?: string; stderr?: string };
    const lines = `${stdout}${stderr}`.split('\n').filter(Boolean);
    if (lines.length === 0) throw error;
    return lines;
  }
}
