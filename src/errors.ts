// One error base class for all of hfk. Every error carries a stable `code`
// (scripts and failover logic branch on it), a message that says what was
// expected and what was found, and an optional `hint` that tells the user
// what to do about it.

export interface HfkErrorOptions {
  hint?: string;
  cause?: unknown;
}

export class HfkError extends Error {
  override name = 'HfkError';
  readonly code: string;
  readonly hint: string | undefined;

  constructor(code: string, message: string, options: HfkErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.hint = options.hint;
  }
}

/** Bad command-line or configuration input. CLI exit status 2. */
export class UsageError extends HfkError {
  override name = 'UsageError';
  constructor(message: string, options: HfkErrorOptions = {}) {
    super('E_USAGE', message, options);
  }
}

/** A file the user named cannot be used (missing, unreadable, wrong kind). */
export class InputError extends HfkError {
  override name = 'InputError';
  constructor(message: string, options: HfkErrorOptions = {}) {
    super('E_INPUT', message, options);
  }
}

/** Bytes that do not follow a format hfk reads (manifest, cloop, pointer). */
export class FormatError extends HfkError {
  override name = 'FormatError';
  constructor(message: string, options: HfkErrorOptions = {}) {
    super('E_FORMAT', message, options);
  }
}

/** A key file that is missing, malformed, or of the wrong kind. */
export class KeyError extends HfkError {
  override name = 'KeyError';
  constructor(message: string, options: HfkErrorOptions = {}) {
    super('E_KEY', message, options);
  }
}

/** A manifest whose signature does not verify against the pinned key. */
export class SignatureError extends HfkError {
  override name = 'SignatureError';
  constructor(message: string, options: HfkErrorOptions = {}) {
    super('E_SIGNATURE', message, options);
  }
}

/** A manifest older than one this machine has already seen. */
export class RollbackError extends HfkError {
  override name = 'RollbackError';
  constructor(message: string, options: HfkErrorOptions = {}) {
    super('E_ROLLBACK', message, options);
  }
}

/** A store that cannot be written or read as a whole (permissions, layout). */
export class StoreError extends HfkError {
  override name = 'StoreError';
  constructor(message: string, options: HfkErrorOptions = {}) {
    super('E_STORE', message, options);
  }
}

// The three kinds of failure a block source can report (desync's taxonomy).
// They decide what the fetcher does next; only `BrokenError` is retried.

/** A failure of one block source; `source` names it (a mirror URL, a cache). */
export abstract class SourceError extends HfkError {
  readonly source: string;
  constructor(code: string, source: string, message: string, options: HfkErrorOptions = {}) {
    super(code, message, options);
    this.source = source;
  }
}

/** The source does not have the object (HTTP 404, ENOENT): try elsewhere. */
export class MissingError extends SourceError {
  override name = 'MissingError';
  /** What is absent: an object (a block, a file), a whole image, or one version of an image. */
  readonly absent: 'object' | 'image' | 'version';
  constructor(source: string, message: string, options: HfkErrorOptions & { absent?: 'object' | 'image' | 'version' } = {}) {
    super('E_MISSING', source, message, options);
    this.absent = options.absent ?? 'object';
  }
}

/** The source served bytes that fail verification: discard, count against it. */
export class InvalidError extends SourceError {
  override name = 'InvalidError';
  constructor(source: string, message: string, options: HfkErrorOptions = {}) {
    super('E_INVALID', source, message, options);
  }
}

/** Transport failure: connection refused/reset, timeout, 5xx, short body. */
export class BrokenError extends SourceError {
  override name = 'BrokenError';
  constructor(source: string, message: string, options: HfkErrorOptions = {}) {
    super('E_BROKEN', source, message, options);
  }
}

/** The operation was cancelled (INTERRUPT, hedge lost, shutdown). */
export class AbortedError extends HfkError {
  override name = 'AbortedError';
  constructor(message = 'operation aborted', options: HfkErrorOptions = {}) {
    super('E_ABORTED', message, options);
  }
}

/** Text for a person: the message, then the hint on its own line. */
export function describeError(e: unknown): string {
  if (e instanceof HfkError) {
    return e.hint ? `${e.message}\n  hint: ${e.hint}` : e.message;
  }
  if (e instanceof Error) {
    const code = (e as NodeJS.ErrnoException).code;
    return code ? `${e.message} (${code})` : e.message;
  }
  return String(e);
}

/** Node's errno code of a system error, if it has one. */
export function errnoCode(e: unknown): string | undefined {
  if (e && typeof e === 'object' && 'code' in e && typeof (e as { code: unknown }).code === 'string') {
    return (e as { code: string }).code;
  }
  return undefined;
}
