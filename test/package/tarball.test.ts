// What `npm pack` puts in the tarball: the built library with its declarations and the exports
// map's entry points, the native helpers' sources and their build script, the LICENSE, nothing
// else; and publint finds nothing to say about it.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { publint } from 'publint';
import { formatMessage } from 'publint/utils';
import { describe, expect, inject, it } from 'vitest';

const tarball = inject('tarball');
const files = inject('tarballFiles');
const consumerDir = inject('consumerDir');
const manifest = JSON.parse(readFileSync(join(consumerDir, 'node_modules', 'sandbox-vmm', 'package.json'), 'utf8')) as {
  exports: Record<string, string | Record<string, string>>;
};

describe('the packed tarball', () => {
  it('holds the built modules with their declarations, the native sources, their build script and the license, and nothing else', () => {
    const extras = new Set(['package.json', 'README.md', 'LICENSE', 'native/svmm-launch.c', 'native/svmm-sendfd.c', 'native/svmm-memfd.c', 'native/svmm-fail.h', 'scripts/build-launcher.mjs']);
    expect(files.filter((path) => !extras.has(path) && !/^dist\/src\/.+\.(js|d\.ts)$/.test(path))).toEqual([]);
    expect(files).toEqual(expect.arrayContaining([...extras]));
    const modules = files.filter((path) => path.endsWith('.js'));
    expect(modules.filter((path) => !files.includes(path.replace(/\.js$/, '.d.ts')))).toEqual([]);
  });

  it('points every exports entry at a shipped file, for types and code alike', () => {
    expect(Object.keys(manifest.exports).sort()).toEqual(['.', './conformance', './package.json', './qmp']);
    const targets = Object.values(manifest.exports).flatMap((entry) => (typeof entry === 'string' ? [entry] : Object.values(entry)));
    expect(targets.map((target) => target.replace(/^\.\//, '')).filter((path) => !files.includes(path))).toEqual([]);
  });

  it('ships no source map, and no module refers to one', () => {
    const installed = join(consumerDir, 'node_modules', 'sandbox-vmm');
    const mapped = files.filter((path) => path.endsWith('.map') || (/\.(js|d\.ts)$/.test(path) && readFileSync(join(installed, path), 'utf8').includes('sourceMappingURL')));
    expect(mapped).toEqual([]);
  });

  it('passes publint, strict, with no suggestion either', async () => {
    const bytes = readFileSync(tarball);
    const { messages, pkg } = await publint({ pack: { tarball: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) }, strict: true, level: 'suggestion' });
    expect(messages.map((message) => `${message.type} ${message.code}: ${formatMessage(message, pkg) ?? ''}`)).toEqual([]);
  });
});
