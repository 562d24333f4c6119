// hfk mkinitrd: build the initramfs that boots a machine from hfk mirrors,
// and its boot entries. The building is src/mkinitrd/; this file reads the
// options, checks them before the (long) build, and reports.

import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { InputError, UsageError } from '../../errors.ts';
import { formatPublicKey, loadPublicKey } from '../../format/keys.ts';
import { bakeConfig, entrySettings, missingSettings } from '../../mkinitrd/bake.ts';
import { type BootEntriesPlan, type BootEntriesReport, formatBootEntries, PXE_FILES, planBootEntries, splitParams, writeBootEntries } from '../../mkinitrd/bootentries.ts';
import { buildInitramfs, COMPRESSIONS, type Compression, CONFIG_PATH, DEFAULT_LEVEL, formatSizeReport, PUBLIC_KEY_PATH } from '../../mkinitrd/build.ts';
import { sourceDateEpoch } from '../../mkinitrd/cpio.ts';
import { DEFAULT_MODULE_SPECS, kernelVersionOf } from '../../mkinitrd/modules.ts';
import { HOST_CA_CERTS } from '../../mkinitrd/runtime.ts';
import { normalizeBaseUrl } from '../../store/http.ts';
import { type Command, flag, int, list, printJson, required, str } from '../command.ts';
import { ProgressBar } from '../progress.ts';

/**
 * The init bundle to pack: --init, else hfk-init.mjs next to the running
 * bundle (dist/hfk-init.mjs beside dist/hfk.mjs), else — when running from
 * the sources — the checkout's dist/hfk-init.mjs.
 */
export function resolveInit(given: string | undefined, exists: (p: string) => boolean = existsSync): string {
  if (given !== undefined) {
    if (!exists(given)) throw new InputError(`the init bundle ${given} does not exist`, { hint: 'pass the hfk-init.mjs that npm run build writes' });
    return given;
  }
  const sibling = fileURLToPath(new URL('./hfk-init.mjs', import.meta.url));
  const fromSources = import.meta.url.endsWith('.ts'); // this file in a checkout: src/cli/commands/
  const checkout = fromSources ? fileURLToPath(new URL('../../../dist/hfk-init.mjs', import.meta.url)) : sibling;
  const found = [sibling, checkout].find((p) => exists(p));
  if (found) return found;
  throw new InputError(`the init bundle ${sibling} does not exist`, {
    hint: 'build it first: npm run build (writes dist/hfk-init.mjs next to dist/hfk.mjs), or pass --init FILE',
  });
}

/** Where the initrd goes: --out, else the PXE tree's initrd.img, else a temporary file (only --iso or --uki). */
export function initrdTarget(o: { out?: string; iso?: string; pxe?: string; uki?: string }): { path: string; temporary: boolean } {
  if (o.out) return { path: o.out, temporary: false };
  if (o.pxe) return { path: join(o.pxe, PXE_FILES.initrd), temporary: false };
  if (o.iso || o.uki) return { path: join(mkdtempSync(join(tmpdir(), 'hfk-mkinitrd-iso-')), 'initrd.img'), temporary: true };
  throw new UsageError('--out is required: the initramfs file to write (or give --iso FILE, --pxe DIR or --uki FILE with --kernel)');
}

export const mkinitrdCommand: Command = {
  name: 'mkinitrd',
  summary: 'Build the initramfs that boots a machine from hfk mirrors (Node, busybox, modules, hfk-init), and boot entries for it.',
  usage: '--modules /lib/modules/VERSION (--out FILE | --iso FILE | --pxe DIR | --uki FILE) [--kernel VMLINUZ] [options]',
  description: `
The initramfs holds the Node binary running this command with its libraries,
a static busybox, the kernel modules a network boot needs (NICs, virtio,
disks and CDs, fuse, squashfs, overlay, isofs, erofs, nls) with depmod's
index, CA certificates, and hfk-init as /init. --image, --mirrors and --key
are baked into ${CONFIG_PATH} and ${PUBLIC_KEY_PATH}; with --config they
replace that file's keys (--mirrors replaces its whole mirror list). The
same inputs give the same bytes (mtimes are SOURCE_DATE_EPOCH or 0).

Boot entries (with --kernel, the vmlinuz of the --modules version):
  --pxe DIR  writes a network boot tree: pxelinux.0 and its modules,
             pxelinux.cfg/default, boot.ipxe, a grub.cfg snippet, vmlinuz
             and initrd.img (the initrd is built there unless --out is
             given); for UEFI also bootx64.efi (shim), grubx64.efi and
             grub/grub.cfg (GRUB reads grub/ at the TFTP root)
  --iso FILE writes a hybrid ISO: boots as a CD, or written to a USB stick,
             on BIOS (isolinux) and on UEFI (shim and GRUB, signed by
             Microsoft and Debian: boots with Secure Boot on)
  --uki FILE writes a unified kernel image (kernel, initrd and command line
             in one EFI program) for UEFI HTTP Boot or a stick; with
             --uki-key and --uki-cert it is signed for Secure Boot with
             your own key, which then covers the initrd too (the UKI
             holds the default entry only)
Which to use:
  BIOS or UEFI, CD or USB stick (Secure Boot on or off)  --iso
  BIOS network boot (PXE ROM)    --pxe, DHCP boot file pxelinux.0 (boot.ipxe for iPXE)
  UEFI network boot (PXE)        --pxe, DHCP boot file bootx64.efi
  UEFI HTTP Boot                 --uki, boot URL http://SERVER/PATH/hfk.efi
  Secure Boot with your own key  --uki --uki-key KEY --uki-cert CERT
The UEFI files come from Debian's shim-signed and grub-efi-amd64-signed
(--no-uefi: BIOS only); the UKI needs systemd-boot-efi and sbsigntool.
Their kernel command line is console=tty0 console=ttyS0,115200n8, then
hfk.image= and hfk.mirrors= from the baked config, then --append. Menus
start the first entry after 2 seconds. See docs/BOOT.md.`,
  options: {
    modules: { type: 'string', arg: 'DIR', description: "the boot kernel's module folder, /lib/modules/VERSION" },
    out: { type: 'string', arg: 'FILE', description: 'the initramfs to write (replaced atomically)', default: 'DIR/initrd.img with --pxe' },
    key: { type: 'string', arg: 'PREFIX.pub', description: 'public key manifests must be signed with (from hfk keygen)' },
    mirrors: { type: 'string', arg: 'URL,…', multiple: true, description: 'mirror base URLs' },
    image: { type: 'string', arg: 'NAME[@VERSION]', description: 'the image to boot (the kernel parameter hfk.image=)' },
    name: { type: 'string', arg: 'NAME[@VERSION]', description: 'the same as --image, as hfk mount and hfk get name it' },
    config: { type: 'string', arg: 'FILE', description: 'a base hfk.yaml to bake in' },
    compress: { type: 'string', arg: COMPRESSIONS.join('|'), description: 'compression', default: 'zstd' },
    level: { type: 'string', arg: 'N', description: 'compression level', default: `zstd ${DEFAULT_LEVEL.zstd}, gzip ${DEFAULT_LEVEL.gzip}` },
    'compile-cache': { type: 'boolean', description: "pack V8's compile cache for the init (faster start on slow machines; needs root; the image is then not byte-reproducible)" },
    init: { type: 'string', arg: 'FILE', description: 'the init bundle', default: 'hfk-init.mjs next to the hfk bundle' },
    module: { type: 'string', arg: 'SPEC', multiple: true, description: `more modules or module folders (name, fs/fuse, dir/**; defaults: ${DEFAULT_MODULE_SPECS.length} specs)` },
    node: { type: 'string', arg: 'FILE', description: 'the Node 24 binary to pack', default: 'the node running hfk' },
    'ca-certs': { type: 'string', arg: 'FILE', description: "CA bundle (PEM) that HTTPS mirrors' certificates are checked against, besides Node's roots", default: HOST_CA_CERTS },
    'no-strip': { type: 'boolean', description: 'pack Node with its symbols (18 MB more; by default they are stripped with binutils strip when it is installed)' },
    iso: { type: 'string', arg: 'FILE', description: 'also write a bootable hybrid ISO (CD or USB stick; needs --kernel)' },
    pxe: { type: 'string', arg: 'DIR', description: 'also write a PXE/iPXE/GRUB boot tree into DIR (needs --kernel)' },
    uki: { type: 'string', arg: 'FILE', description: 'also write a unified kernel image, one EFI program (needs --kernel)' },
    'uki-key': { type: 'string', arg: 'KEY', description: 'sign the UKI with this private key (PEM; with --uki-cert)' },
    'uki-cert': { type: 'string', arg: 'CERT', description: "the key's X.509 certificate (PEM), the one enrolled in the firmware's db" },
    'no-uefi': { type: 'boolean', description: 'BIOS entries only: no shim or GRUB for UEFI on the ISO or in the PXE tree' },
    kernel: { type: 'string', arg: 'VMLINUZ', description: 'the kernel the boot entries start (the --modules version)' },
    append: { type: 'string', arg: 'PARAMS', multiple: true, description: "more kernel parameters for the boot entries, e.g. 'hfk.timeout=60 quiet'" },
    json: { type: 'boolean', description: 'print the report as JSON' },
  },
  positionals: { min: 0, max: 0 },
  async run(ctx) {
    const modulesDir = required(ctx, 'modules', 'the kernel module folder, e.g. /lib/modules/$(uname -r)');
    const iso = str(ctx, 'iso');
    const pxe = str(ctx, 'pxe');
    const uki = str(ctx, 'uki');
    const ukiKey = str(ctx, 'uki-key');
    const ukiCert = str(ctx, 'uki-cert');
    if ((ukiKey === undefined) !== (ukiCert === undefined)) throw new UsageError(`--${ukiKey === undefined ? 'uki-cert' : 'uki-key'} needs --${ukiKey === undefined ? 'uki-key' : 'uki-cert'}: sbsign takes the key and its certificate together`);
    if (ukiKey !== undefined && uki === undefined) throw new UsageError('--uki-key and --uki-cert sign the UKI: give --uki FILE with them');
    const kernel = str(ctx, 'kernel');
    const appendValues = ctx.values.append; // not list(): a parameter may hold commas
    const append = splitParams(Array.isArray(appendValues) ? appendValues : typeof appendValues === 'string' ? [appendValues] : []);
    if (!iso && !pxe && !uki) {
      if (kernel !== undefined) throw new UsageError('--kernel is for boot entries: give --iso FILE, --pxe DIR or --uki FILE with it');
      if (append.length) throw new UsageError('--append is for boot entries: give --iso FILE, --pxe DIR or --uki FILE with it');
    } else if (kernel === undefined) {
      throw new UsageError(`--${iso ? 'iso' : pxe ? 'pxe' : 'uki'} needs --kernel VMLINUZ: the kernel its entries start (the one ${modulesDir} belongs to)`);
    }
    const compressText = str(ctx, 'compress') ?? 'zstd';
    if (!(COMPRESSIONS as readonly string[]).includes(compressText)) throw new UsageError(`--compress must be one of ${COMPRESSIONS.join(', ')}: got '${compressText}'`);
    const compress = compressText as Compression;
    const level = int(ctx, 'level', 1, compress === 'zstd' ? 19 : 9);
    const init = resolveInit(str(ctx, 'init'));
    const configPath = str(ctx, 'config');
    const keyPath = str(ctx, 'key');
    const mirrors = list(ctx, 'mirrors');
    for (const m of mirrors) normalizeBaseUrl(m, '--mirrors'); // named as the option here, not as a line of the baked config
    const named = str(ctx, 'name');
    let image = str(ctx, 'image');
    if (named !== undefined && image !== undefined) throw new UsageError(`the image is given twice (--image ${image} and --name ${named}): give it once`);
    image ??= named;
    const baked = bakeConfig({
      ...(configPath ? { base: { text: readText(configPath, 'config file'), path: configPath } } : {}),
      ...(image !== undefined ? { image } : {}),
      ...(mirrors.length ? { mirrors } : {}),
      ...(keyPath ? { publicKey: formatPublicKey(loadPublicKey(keyPath), 'hfk') } : {}),
    });
    const extra = list(ctx, 'module');
    const node = str(ctx, 'node');
    const caCerts = str(ctx, 'ca-certs');
    if (caCerts !== undefined && !/-----BEGIN CERTIFICATE-----/.test(readText(caCerts, '--ca-certs bundle'))) {
      throw new InputError(`--ca-certs ${caCerts} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`, { hint: `give a PEM bundle, e.g. your CA appended to ${HOST_CA_CERTS}` });
    }
    const json = flag(ctx, 'json');
    const unset = missingSettings(baked);
    if (unset.length) {
      ctx.io.err(`note: nothing baked in for ${unset.map((u) => u.what).join(', ')}: each boot must then give ${unset.map((u) => u.param).join(', ')} on the kernel command line (or pass ${unset.map((u) => u.option).join(', ')} here)\n`);
    }
    // Everything the entries need is checked before the (long) build.
    let plan: BootEntriesPlan | undefined;
    if (kernel !== undefined) {
      plan = planBootEntries({
        entry: { ...entrySettings(baked.config), append },
        kernel,
        modulesVersion: kernelVersionOf(modulesDir.replace(/\/+$/, '')),
        ...(iso ? { iso } : {}),
        ...(pxe ? { pxe } : {}),
        ...(uki ? { uki } : {}),
        ...(ukiKey !== undefined && ukiCert !== undefined ? { ukiSigning: { key: ukiKey, cert: ukiCert } } : {}),
        uefi: !flag(ctx, 'no-uefi'),
        mtime: sourceDateEpoch(),
      });
      if (pxe) mkdirSync(pxe, { recursive: true });
    }
    const target = initrdTarget({ ...(str(ctx, 'out') ? { out: str(ctx, 'out')! } : {}), ...(iso ? { iso } : {}), ...(pxe ? { pxe } : {}), ...(uki ? { uki } : {}) });
    try {
      const bar = new ProgressBar(ctx.io, { label: `mkinitrd ${compress}`, total: 0, unit: 'bytes' });
      const report = await buildInitramfs(
        {
          out: target.path,
          modulesDir,
          init: { kind: 'node', path: init },
          config: baked.config,
          ...(baked.publicKey !== undefined ? { publicKey: baked.publicKey } : {}),
          ...(extra.length ? { modules: [...DEFAULT_MODULE_SPECS, ...extra] } : {}),
          compress,
          ...(level !== undefined ? { level } : {}),
          ...(node ? { node } : {}),
          ...(caCerts !== undefined ? { caCerts } : {}),
          compileCache: flag(ctx, 'compile-cache'),
          stripNode: !flag(ctx, 'no-strip'),
        },
        { onProgress: (done, total) => bar.update(done, total) },
      );
      bar.done();
      const entries: BootEntriesReport | undefined = plan ? writeBootEntries(plan, target.path) : undefined;
      const shown = target.temporary ? { ...report, out: null } : report;
      if (json) printJson(ctx.io, entries ? { ...shown, bootEntries: entries } : shown);
      else {
        const text = formatSizeReport(report);
        ctx.io.out(target.temporary ? text.replace(/^wrote \S+: /, 'built the initrd for the boot entries: ') : text);
        if (entries) ctx.io.out(formatBootEntries(entries));
      }
      return 0;
    } finally {
      if (target.temporary) rmSync(dirname(target.path), { recursive: true, force: true });
    }
  },
};

function readText(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw new InputError(`cannot read ${what} ${path}: ${(e as Error).message}`, { cause: e });
  }
}
