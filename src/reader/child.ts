// A reader process started by a keeper (keeper.ts): it serves the mount the
// keeper holds, with requests from the keeper and replies written straight
// to /dev/fuse. The first one opens the image and mounts it; one that takes
// over opens the image from the manifest the keeper kept and serves the
// connection as it is. `hfk --reader-child` and `hfk-init --reader-child`
// run this; main.ts loads it only in that process.

import * as fs from 'node:fs';
import { describeError } from '../errors.ts';
import type { RequestFeed, SessionEnd } from '../fuse/session.ts';
import { runReader } from './reader.ts';
import { type ChildMessage, errorMessage, type KeeperMessage } from './spec.ts';

export async function readerChild(): Promise<void> {
  const log = (line: string) => process.stderr.write(`${new Date().toISOString()} ${line}\n`);
  if (!process.send) throw new Error('--reader-child is started by a keeper, with an IPC channel');
  const send = (m: ChildMessage) => process.send!(m);
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(sig, () => log(`reader: ignoring ${sig} (the keeper ends readers)`));
  // The keeper is the mount's owner: without it nobody reads /dev/fuse.
  let leaving = false;
  process.on('disconnect', () => {
    if (leaving) return;
    log('reader: the keeper is gone; exiting');
    process.exit(1);
  });

  let sink: Parameters<RequestFeed['attach']>[0] | undefined;
  let ended: SessionEnd | undefined;
  const early: Buffer[] = [];
  let replayFirst: Buffer | undefined;
  let handled: bigint[] = [];
  let inFlight = 0;
  let draining = false;
  const flush = () => {
    if (handled.length > 0) {
      send({ t: 'handled', u: handled });
      handled = [];
    }
    // Drained (another reader takes over): every answer is written and acknowledged; end as on an unmount.
    if (draining && inFlight === 0) end({ reason: 'stopped' });
  };
  const end = (e: SessionEnd) => {
    ended ??= e;
    leaving = true;
    sink?.end(e);
  };
  const feed: RequestFeed = {
    attach(s) {
      sink = s;
      if (replayFirst) s.request(replayFirst, true); // the connection's INIT, answered long ago: set up as then
      for (const b of early.splice(0)) s.request(b, false);
      if (ended) s.end(ended);
    },
    handled(u) {
      inFlight--;
      if (handled.push(u) === 1) setImmediate(flush);
    },
  };

  const start = await new Promise<Extract<KeeperMessage, { t: 'start' }>>((resolve) => {
    process.on('message', (m: KeeperMessage) => {
      if (m.t === 'start') resolve(m);
      else if (m.t === 'req') {
        inFlight++;
        const b = Buffer.from(m.b.buffer, m.b.byteOffset, m.b.byteLength);
        if (sink) sink.request(b, false);
        else early.push(b);
      } else if (m.t === 'end') end({ reason: 'unmounted' });
      else if (m.t === 'drain') {
        draining = true;
        setImmediate(flush);
      }
    });
  });
  process.title = start.title;
  if (start.spec.cpuProfile) await startProfiler(log);
  if (start.resume) replayFirst = Buffer.from(start.resume.init);
  try {
    // A reader may die and come back; the keeper (-1000 at boot) is the one the OOM killer must spare.
    fs.writeFileSync('/proc/self/oom_score_adj', '0\n');
  } catch {
    // not permitted: keep what was inherited
  }
  try {
    await runReader(start.spec, (m) => send({ t: 'ready', m }), log, {
      supervised: {
        fd: start.fd,
        feed,
        info: { keeper: { pid: start.keeperPid, generation: start.generation } },
        onMounted: (manifest) => send({ t: 'mounted', manifest }),
        ...(start.resume ? { resumeManifest: Buffer.from(start.resume.manifest) } : {}),
      },
    });
  } catch (e) {
    send({ t: 'ready', m: errorMessage(e) });
    log(`reader: ${describeError(e)}`);
    process.exitCode = 1;
  }
  leaving = true;
  process.disconnect();
}

/**
 * For developers: with `cpuProfile` in its spec (init.reader.cpuProfile in
 * hfk.yaml) the boot's reader profiles its main thread from the moment it
 * is handed its work; `kill -USR2` (to the reader, not its keeper) writes
 * the profile so far to reader.cpuprofile in its working folder (the block cache: /run/hfk/cache
 * after a tmpfs boot), for Chrome's DevTools or any .cpuprofile reader.
 * See docs/DEVELOPING.md.
 */
async function startProfiler(log: (line: string) => void): Promise<void> {
  const { Session } = await import('node:inspector/promises');
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: 1000 });
  await session.post('Profiler.start');
  process.on('SIGUSR2', () => {
    void (async () => {
      try {
        const { profile } = await session.post('Profiler.stop');
        fs.writeFileSync('reader.cpuprofile', JSON.stringify(profile));
        log(`reader: CPU profile written to ${process.cwd()}/reader.cpuprofile`);
        await session.post('Profiler.start');
      } catch (e) {
        log(`reader: cannot write the CPU profile: ${describeError(e)}`); // never fatal: this process serves the root filesystem
      }
    })();
  });
}
