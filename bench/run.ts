// `npm run bench -- [name...]`: runs the named benchmarks (all when none is named). Each one is a
// module under bench/ exporting `run()`, which writes its JSON under bench/results/.
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { updateReadmeTable } from './readme-table.ts';

const here = dirname(fileURLToPath(import.meta.url));
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
  const mod = (await import(join(here, `${name}.bench.ts`))) as { run: () => Promise<void> };
  console.log(`\n== bench ${name}`);
  await mod.run();
}

if (updateReadmeTable()) console.log('\nupdated the benchmark table in README.md');
