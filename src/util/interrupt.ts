// Half-written outputs removed when a command is interrupted. A `finally`
// does not run when SIGINT (Ctrl-C), SIGTERM or SIGHUP ends the process, so a
// command that writes through a temporary name registers it here while the
// write is under way; on such a signal the paths are removed and the process
// exits as the signal would have ended it (128 + its number).

import { rmSync } from 'node:fs';
import { constants } from 'node:os';

const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
const pending = new Set<string>();
let installed = false;

/** Removes every registered path (files or folders). */
function removePending(): void {
  for (const p of pending) rmSync(p, { recursive: true, force: true });
  pending.clear();
}

/**
 * Registers `path` (a temporary file or folder) for removal should the process
 * be interrupted before the returned function is called. The first call
 * installs the signal handlers, which then stay (a CLI process ends soon).
 */
export function removeOnInterrupt(path: string): () => void {
  pending.add(path);
  if (!installed) {
    installed = true;
    for (const sig of SIGNALS) {
      process.on(sig, () => {
        removePending();
        process.exit(128 + constants.signals[sig]);
      });
    }
  }
  return () => void pending.delete(path);
}
