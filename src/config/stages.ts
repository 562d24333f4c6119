// The names of hfk-init's stages, in boot order. They live here, below the
// init, because the config (init.break) and the kernel command line
// (hfk.break=) name them too; the stages themselves are in src/init.

import { z } from 'zod';

/** The stages of hfk-init, in boot order. `hfk.break=STAGE` names one of them. */
export const STAGES = [
  'early', // mount /proc, /sys, /dev, /run; open the log
  'config', // read /proc/cmdline and /etc/hfk/hfk.yaml
  'probe', // load drivers for the hardware found in /sys, then hfk's own modules
  'network', // bring up an interface: DHCP or ip=
  'mirrors', // read the mirror list, rank the mirrors
  'cache', // set up the block cache (tmpfs or a disk)
  'manifest', // fetch and verify the image's pointer and manifest
  'fuse', // start the FUSE block reader: NAME.img
  'rootfs', // loop-mount the image read-only
  'overlay', // overlay a writable layer on it
  'switchroot', // move the mounts and switch_root into the image's init
] as const;

export type StageName = (typeof STAGES)[number];

export const StageName = z.enum(STAGES);

export function isStageName(text: string): text is StageName {
  return (STAGES as readonly string[]).includes(text);
}
