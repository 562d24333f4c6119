// Typed errors of the FUSE layer: what a filesystem throws to pick an errno,
// what the protocol layer reports about the kernel, and why a mount failed.
// Every mount error names the thing and says what to do about it.

import { HfkError, type HfkErrorOptions } from '../errors.ts';

/**
 * Thrown by a filesystem to answer a request with one exact errno (for
 * example ENOENT from lookup, ERANGE from getxattr). Anything else a
 * filesystem throws is mapped by `errnoOf` (protocol.ts), by default to EIO.
 */
export class FuseErrnoError extends HfkError {
  override name = 'FuseErrnoError';
  readonly errno: number;
  constructor(errno: number, message: string, options: HfkErrorOptions = {}) {
    super('E_FUSE_ERRNO', message, options);
    this.errno = errno;
  }
}

/** The kernel speaks a FUSE protocol version we cannot serve, or sent malformed bytes. */
export class FuseProtocolError extends HfkError {
  override name = 'FuseProtocolError';
  constructor(message: string, options: HfkErrorOptions = {}) {
    super('E_FUSE_PROTOCOL', message, options);
  }
}

/** /dev/fuse is missing or cannot be opened. */
export class FuseDeviceError extends HfkError {
  override name = 'FuseDeviceError';
  constructor(message: string, options: HfkErrorOptions = {}) {
    super('E_FUSE_DEVICE', message, { hint: 'load the fuse module (modprobe fuse) and check that /dev/fuse exists', ...options });
  }
}

/** Mounting needs root (mount(2) with fd=, allow_other). */
export class NotRootError extends HfkError {
  override name = 'NotRootError';
  constructor(message: string, options: HfkErrorOptions = {}) {
    super('E_NOT_ROOT', message, { hint: 'run as root (sudo)', ...options });
  }
}

/** Why a mountpoint cannot be used. */
export type MountpointProblem = 'missing' | 'not-directory' | 'busy';

const MOUNTPOINT_CODES: Record<MountpointProblem, string> = {
  missing: 'E_MOUNTPOINT_MISSING',
  'not-directory': 'E_MOUNTPOINT_NOT_DIR',
  busy: 'E_MOUNTPOINT_BUSY',
};

const MOUNTPOINT_HINTS: Record<MountpointProblem, string> = {
  missing: 'create the folder first (mkdir -p)',
  'not-directory': 'mount on an empty folder, not on a file',
  busy: 'unmount what is mounted there first (umount), or choose another folder',
};

/** The mountpoint is missing, not a folder, or already has something mounted on it. */
export class MountpointError extends HfkError {
  override name = 'MountpointError';
  readonly problem: MountpointProblem;
  readonly mountpoint: string;
  constructor(problem: MountpointProblem, mountpoint: string, message: string, options: HfkErrorOptions = {}) {
    super(MOUNTPOINT_CODES[problem], message, { hint: MOUNTPOINT_HINTS[problem], ...options });
    this.problem = problem;
    this.mountpoint = mountpoint;
  }
}

/** The mount or umount command failed (its status and stderr are in the message). */
export class MountError extends HfkError {
  override name = 'MountError';
  constructor(message: string, options: HfkErrorOptions = {}) {
    super('E_MOUNT', message, options);
  }
}
