// The API reference (TypeDoc, typedoc.json) builds from the doc comments of the exported surface:
// every export documented, every {@link} and relative link resolved, every type an export names
// exported too. `npm run docs` writes the HTML; this runs the same validation without writing it.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify, stripVTControlCharacters } from 'node:util';
import { describe, expect, it } from 'vitest';

const execFileAsync = promisify(execFile);

describe('the API reference', () => {
  it('builds with no warning: no undocumented export, no broken link', async () => {
    const typedoc = join(process.cwd(), 'node_modules', 'typedoc', 'bin', 'typedoc');
    const outcome = await execFileAsync(process.execPath, [typedoc, '--emit', 'none', '--logLevel', 'Warn'], { maxBuffer: 16 * 1024 * 1024 }).then(
      ({ stdout, stderr }) => ({ failed: false, output: `${stdout}${stderr}` }),
      (error: { stdout?: string; stderr?: string }) => ({ failed: true, output: `${error.stdout ?? ''}${error.stderr ?? ''}` }),
    );
    // One line per problem, without the terminal's colours, so that a failure lists them all.
    const problems = stripVTControlCharacters(outcome.output)
      .split('\n')
      .filter((line) => /^\[(warning|error)\]/.test(line) && !/^\[warning\] Found \d+ errors and \d+ warnings/.test(line));
    expect(problems).toEqual([]);
    expect(outcome.failed).toBe(false);
  });
});
