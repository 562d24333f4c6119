// The log of mirror trouble: a mirror that fails, serves a corrupt block,
// or is failed over from, said once per mirror and kind per window (a
// minute), so a dead mirror under a busy reader is one line a minute, not
// thousands. The first event of a window is logged at once; the ones after
// it are counted and said with the next event after the window has passed
// (or on flush()): "mirror http://m1/ failed 12 times in the last minute: …".

export type MirrorTrouble = 'failed' | 'corrupt';

export interface FailureLogOptions {
  /** One line per mirror and kind per this many ms (default 60 s). */
  windowMs?: number;
  now?: () => number;
}

interface Window {
  /** When the window's first line was logged. */
  since: number;
  /** Events after it, not yet said. */
  suppressed: number;
  lastReason: string;
  lastSwitch: string | undefined;
}

const WHAT: Record<MirrorTrouble, string> = { failed: 'failed', corrupt: 'served a corrupt block' };

export class FailureLog {
  private readonly log: (line: string) => void;
  private readonly windowMs: number;
  private readonly now: () => number;
  private readonly windows = new Map<string, Window>();

  constructor(log: (line: string) => void, options: FailureLogOptions = {}) {
    this.log = log;
    this.windowMs = options.windowMs ?? 60_000;
    this.now = options.now ?? Date.now;
  }

  /**
   * One failure of `mirror`: why, and the mirror the request went to next
   * (undefined: none was left).
   */
  note(mirror: string, kind: MirrorTrouble, reason: string, switchedTo?: string | null): void {
    const key = `${kind} ${mirror}`;
    const t = this.now();
    const w = this.windows.get(key);
    const next = switchedTo === undefined ? undefined : (switchedTo ?? 'no other mirror');
    if (w && t - w.since < this.windowMs) {
      w.suppressed++;
      w.lastReason = reason;
      w.lastSwitch = next;
      return;
    }
    const times = w && w.suppressed > 0 ? w.suppressed + 1 : 1;
    this.windows.set(key, { since: t, suppressed: 0, lastReason: reason, lastSwitch: next });
    this.log(line(mirror, kind, times, this.windowMs, reason, next));
  }

  /** Says what the open windows have counted and not said yet (at close). */
  flush(): void {
    for (const [key, w] of this.windows) {
      if (w.suppressed === 0) continue;
      const space = key.indexOf(' ');
      const kind = key.slice(0, space) as MirrorTrouble;
      this.log(line(key.slice(space + 1), kind, w.suppressed, this.windowMs, w.lastReason, w.lastSwitch, true));
      w.suppressed = 0;
    }
  }
}

function line(mirror: string, kind: MirrorTrouble, times: number, windowMs: number, reason: string, next: string | undefined, more = false): string {
  const span = windowMs === 60_000 ? 'the last minute' : `the last ${Math.round(windowMs / 1000)} s`;
  const count = times > 1 || more ? ` ${more ? `${times} more` : times} time${times === 1 ? '' : 's'} in ${span}` : '';
  const to = next === undefined ? '' : next === 'no other mirror' ? ' (no other mirror left)' : ` (switched to ${next})`;
  return `mirror ${mirror} ${WHAT[kind]}${count}: ${stripMirror(reason, mirror)}${to}`;
}

/** The reason without the URL it starts with ("http://m1/blocks/…: HTTP 503"): the line names the mirror already. */
function stripMirror(reason: string, mirror: string): string {
  if (!reason.startsWith(mirror)) return reason;
  const colon = reason.indexOf(': ', mirror.length - 1);
  return colon < 0 || /\s/.test(reason.slice(mirror.length, colon)) ? reason : reason.slice(colon + 2);
}
