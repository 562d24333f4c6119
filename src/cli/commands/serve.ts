import { errnoCode, UsageError } from '../../errors.ts';
import { LocalStore } from '../../store/local.ts';
import { serveStore } from '../../store/serve.ts';
import { type Command, flag, int, str, required } from '../command.ts';

/** What a person can do about a failed listen: the option to change, named. */
function listenError(e: unknown, host: string, port: number): unknown {
  const code = errnoCode(e);
  if (code === 'EADDRINUSE') return new UsageError(`--port ${port}: ${host}:${port} is in use`, { hint: 'choose another --port, or --port 0 for a free one' });
  if (code === 'EACCES') return new UsageError(`--port ${port}: not allowed to listen on ${host}:${port}`, { hint: 'ports below 1024 need root; choose --port 1024 or above' });
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN' || code === 'EADDRNOTAVAIL' || code === 'EINVAL') {
    return new UsageError(`--host ${host}: not an address of this machine (${code})`, { hint: 'give one of its addresses (ip -brief addr), 127.0.0.1, or 0.0.0.0 for all' });
  }
  return e;
}

export const serveCommand: Command = {
  name: 'serve',
  summary: 'Serve a store folder over HTTP (for trying things out; use nginx for real mirrors).',
  usage: '--store DIR [--host 127.0.0.1] [--port P] [--quiet] [--json]',
  options: {
    store: { type: 'string', arg: 'DIR', description: 'store folder' },
    host: { type: 'string', arg: 'ADDR', description: 'address to listen on', default: '127.0.0.1' },
    port: { type: 'string', arg: 'P', description: 'port (0 picks a free one)', default: '8080' },
    quiet: { type: 'boolean', description: 'do not log requests' },
    json: { type: 'boolean', description: 'once listening, print one line of JSON: url, host, port, store (with --port 0, the port picked)' },
  },
  positionals: { min: 0, max: 0 },
  async run(ctx) {
    const store = await LocalStore.open(required(ctx, 'store', 'the store folder to serve'));
    const quiet = flag(ctx, 'quiet');
    const host = str(ctx, 'host') ?? '127.0.0.1';
    const port = int(ctx, 'port', 0, 65535) ?? 8080;
    const s = await serveStore({ root: store.root, host, port, ...(quiet ? {} : { log: (l: string) => ctx.io.err(`${l}\n`) }) }).catch((e: unknown) => {
      throw listenError(e, host, port);
    });
    if (flag(ctx, 'json')) ctx.io.out(`${JSON.stringify({ url: s.url, host, port: Number(new URL(s.url).port), store: store.root })}\n`);
    else ctx.io.out(`serving ${store.root} at ${s.url} (Ctrl-C to stop)\n`);
    await new Promise<void>((resolve) => {
      const stop = () => {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
        void s.close().then(resolve);
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
    });
    return 0;
  },
};
