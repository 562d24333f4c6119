import { LocalStore } from '../../store/local.ts';
import { serveStore } from '../../store/serve.ts';
import { type Command, flag, int, str, required } from '../command.ts';

export const serveCommand: Command = {
  name: 'serve',
  summary: 'Serve a store folder over HTTP (for trying things out; use nginx for real mirrors).',
  usage: '--store DIR [--host 127.0.0.1] [--port P] [--quiet]',
  options: {
    store: { type: 'string', arg: 'DIR', description: 'store folder' },
    host: { type: 'string', arg: 'ADDR', description: 'address to listen on', default: '127.0.0.1' },
    port: { type: 'string', arg: 'P', description: 'port (0 picks a free one)', default: '8080' },
    quiet: { type: 'boolean', description: 'do not log requests' },
  },
  positionals: { min: 0, max: 0 },
  async run(ctx) {
    const store = await LocalStore.open(required(ctx, 'store', 'the store folder to serve'));
    const quiet = flag(ctx, 'quiet');
    const s = await serveStore({
      root: store.root,
      host: str(ctx, 'host') ?? '127.0.0.1',
      port: int(ctx, 'port', 0, 65535) ?? 8080,
      ...(quiet ? {} : { log: (l: string) => ctx.io.err(`${l}\n`) }),
    });
    ctx.io.out(`serving ${store.root} at ${s.url} (Ctrl-C to stop)\n`);
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
