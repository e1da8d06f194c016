// A vitest reporter for CI (.ci/run): per integration project, that is per QEMU of the version
// matrix, how many tests passed, failed or were skipped, written as JSON to the file named by
// SANDBOX_VMM_MATRIX_REPORT. vitest's JSON report names test files only, and every version runs
// the same files. A project that ran nothing is listed too, with zero, so that CI can fail it.
import { writeFileSync } from 'node:fs';
import type { Reporter, TestModule, TestProject, Vitest } from 'vitest/node';
import { INTEGRATION_PROJECT_PREFIX } from '../../vitest.config.ts';

export interface MatrixEntry {
  project: string;
  qemu: string;
  passed: number;
  failed: number;
  skipped: number;
  /** Wall time from the project's first file starting to its last one ending. */
  durationMs: number;
}

export default class QemuMatrixReporter implements Reporter {
  #entries = new Map<string, MatrixEntry>();
  /** When each project's first file started and its last one ended (its projects run one after another). */
  #spans = new Map<string, { start: number; end: number }>();

  onInit(vitest: Vitest): void {
    for (const project of vitest.projects.filter((p) => p.name.startsWith(INTEGRATION_PROJECT_PREFIX))) this.#entryOf(project);
  }

  onTestModuleStart(module: TestModule): void {
    if (!module.project.name.startsWith(INTEGRATION_PROJECT_PREFIX)) return;
    const project = module.project.name;
    if (!this.#spans.has(project)) this.#spans.set(project, { start: Date.now(), end: Date.now() });
  }

  onTestModuleEnd(module: TestModule): void {
    const span = this.#spans.get(module.project.name);
    if (span) span.end = Date.now();
  }

  onTestRunEnd(testModules: ReadonlyArray<TestModule>): void {
    for (const module of testModules) {
      if (!module.project.name.startsWith(INTEGRATION_PROJECT_PREFIX)) continue;
      const entry = this.#entryOf(module.project);
      for (const test of module.children.allTests()) {
        const state = test.result().state;
        if (state === 'passed') entry.passed += 1;
        else if (state === 'failed') entry.failed += 1;
        else entry.skipped += 1;
      }
    }
    for (const [project, span] of this.#spans) this.#entryOf(project).durationMs = span.end - span.start;
    const path = process.env['SANDBOX_VMM_MATRIX_REPORT'];
    if (path) writeFileSync(path, `${JSON.stringify([...this.#entries.values()], null, 2)}\n`);
  }

  #entryOf(project: TestProject | string): MatrixEntry {
    const name = typeof project === 'string' ? project : project.name;
    let entry = this.#entries.get(name);
    if (!entry) {
      const qemu = typeof project === 'string' ? '' : (project.config.env['SANDBOX_VMM_QEMU'] ?? '');
      entry = { project: name, qemu, passed: 0, failed: 0, skipped: 0, durationMs: 0 };
      this.#entries.set(name, entry);
    }
    return entry;
  }
}
