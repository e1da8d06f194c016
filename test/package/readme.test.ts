// Every ```ts block of README.md compiles against the packed package, as a consumer would write it
// (strict, and the package's declarations checked): the README cannot drift from the API.
import { readFileSync } from 'node:fs';
import { describe, expect, inject, it } from 'vitest';
import { typeScriptBlocks } from './helpers/readme-blocks.ts';
import { typecheck } from './helpers/tsc.ts';

const consumerDir = inject('consumerDir');
const blocks = typeScriptBlocks(readFileSync('README.md', 'utf8'));

describe('README.md', () => {
  it('has TypeScript examples, and says of each one left unchecked why', () => {
    expect(blocks.length).toBeGreaterThan(3);
    expect(blocks.filter((block) => block.skipReason !== undefined && block.skipReason.trim() === '').map((block) => block.line)).toEqual([]);
  });

  it('type-checks every TypeScript example against the packed package', async () => {
    const checked = blocks.filter((block) => block.skipReason === undefined);
    // One module per block (top-level await allowed), its prelude on the lines before it.
    const files = Object.fromEntries(checked.map((block) => [`readme-${block.line}.ts`, `${block.prelude}\n${block.code}\nexport {};\n`]));
    const diagnostics = await typecheck(consumerDir, 'readme', files);
    // tsc reports file(line,col): point at the README's own line instead.
    const located = diagnostics.map((text) =>
      text.replace(/^readme-(\d+)\.ts\((\d+),(\d+)\)/, (_, fence: string, line: string, column: string) => {
        const block = checked.find((b) => b.line === Number(fence));
        const preludeLines = block ? block.prelude.split('\n').length : 0;
        return `README.md:${Number(fence) + Number(line) - preludeLines}:${column}`;
      }),
    );
    expect(located).toEqual([]);
  });
});
