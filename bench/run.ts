// `npm run bench -- [name...]`: runs the named benchmarks (all when none is named) on every QEMU of
// the version matrix (scripts/qemu-versions.mjs; SANDBOX_VMM_QEMU alone when it is set), one QEMU
// after another, each in a child process of its own with SANDBOX_VMM_QEMU set. Each benchmark is a
// module under bench/ exporting `run()`, which writes its JSON under bench/results/, per version.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { qemusUnderTest } from '../scripts/qemu-versions.mjs';
import { updateReadmeTable } from './readme-table.ts';

const here = dirname(fileURLToPath(import.meta.url));
/** Set in the child processes: the one that runs the benchmarks on the QEMU in SANDBOX_VMM_QEMU. */
const CHILD = 'SANDBOX_VMM_BENCH_CHILD';

const available = readdirSync(here)
  .filter((f) => f.endsWith('.bench.ts'))
  .map((f) => f.replace(/\.bench\.ts$/, ''))
  .sort();
const wanted = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const names = wanted.length > 0 ? wanted : available;

for (const name of names) {
  if (!available.includes(name)) {
    console.error(`unknown benchmark '${name}'; available: ${available.join(', ')}`);
    process.exit(2);
  }
}

if (process.env[CHILD]) {
  for (const name of names) {
    const mod = (await import(join(here, `${name}.bench.ts`))) as { run: () => Promise<void> };
    console.log(`\n== bench ${name}`);
    await mod.run();
  }
} else {
  let failed = 0;
  for (const { binary, label } of qemusUnderTest(join(here, '..'))) {
    console.log(`\n==== QEMU ${label} (${binary})`);
    const child = spawnSync(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
      stdio: 'inherit',
      env: { ...process.env, SANDBOX_VMM_QEMU: binary, [CHILD]: '1' },
    });
    if (child.status !== 0) {
      console.error(`the benchmarks on QEMU ${label} failed (exit ${String(child.status ?? child.signal)})`);
      failed += 1;
    }
  }
  if (updateReadmeTable()) console.log('\nupdated the benchmark table in README.md');
  if (failed > 0) process.exit(1);
}
