import { SandboxVmmError, type SandboxVmmErrorOptions } from '../../errors.ts';

/** One problem of a config: the field's dotted path and what is wrong with it. */
export interface ConfigIssue {
  /** Where the bad value is, e.g. `memory.maxMiB` or `devices[2].mac`. */
  path: string;
  message: string;
}

/** The config is invalid. Lists every bad field at once, each by its path. */
export class ConfigError extends SandboxVmmError<'CONFIG_INVALID'> {
  readonly issues: readonly ConfigIssue[];

  constructor(issues: readonly ConfigIssue[], options: SandboxVmmErrorOptions = {}) {
    const list = issues.map((issue) => `${issue.path || '(config)'}: ${issue.message}`).join('; ');
    super('CONFIG_INVALID', `invalid sandbox config: ${list}`, options);
    this.issues = issues;
  }

  /** The paths of the bad fields, for a quick check. */
  get paths(): string[] {
    return this.issues.map((issue) => issue.path);
  }
}
