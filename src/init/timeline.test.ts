import { describe, expect, it } from 'vitest';
import { BootReport } from './report.ts';
import { bootTimelineSvg, formatBootReport, stageSpans } from './timeline.ts';

const sample = (): BootReport =>
  BootReport.parse({
    format: 'hfk-boot-report/1',
    ok: true,
    failedStage: null,
    error: null,
    kernel: { release: '6.12.0-test', cmdline: 'hfk.image=knoppix' },
    uptime: { initStart: 1.5, switchRoot: 4.1 },
    stages: [
      { stage: 'modules', description: 'load the drivers <ahci & virtio>', ms: 400, ok: true },
      { stage: 'network', description: 'DHCP on eth0', ms: 900, ok: true },
      { stage: 'rank', description: 'rank 2 mirrors', ms: 300, ok: true },
      { stage: 'root', description: 'mount the image', ms: 1000, ok: true },
    ],
    image: { name: 'knoppix', version: 3, size: 64 << 20, blockSize: 256 << 10, blocks: 256, filesystem: 'squashfs', manifestFrom: 'http://m1/', offline: false },
    mirrors: {
      chosen: 'http://m1/',
      ranking: [
        { url: 'http://m1/', ttfbMs: 2.5, blockMs: 10, throughputMBps: 80, score: 12.5, version: 3, error: null },
        { url: 'http://m2/', ttfbMs: null, blockMs: null, throughputMBps: null, score: null, version: null, error: 'connection refused' },
      ],
      rankingMs: 280,
    },
    modules: { loaded: ['virtio_net'], builtin: [], failed: [], devices: 4 },
    network: { method: 'dhcp', interface: 'eth0', address: '10.0.2.15', gateway: '10.0.2.2', dns: [] },
    reader: { pid: 99, mountpoint: '/run/hfk/fuse' },
    fetched: { bytes: 12 << 20, blocks: 48, memoryHits: 10, diskHits: 0 },
    cache: '/run/hfk/cache',
    warnings: ['a warning'],
    timeline: {
      startMs: 3100,
      bucketMs: 100,
      blocks: [5, 0, 12, 20, 11],
      bytes: [5 << 18, 0, 12 << 18, 20 << 18, 11 << 18],
      switches: [
        { atMs: 3120, from: null, to: 'http://m1/' },
        { atMs: 3350, from: 'http://m1/', to: 'http://m2/' },
      ],
    },
  });

/** Checks that the text is well-formed XML as far as an SVG needs: one root, every tag closed in order, attributes quoted, entities escaped. */
function wellFormed(xml: string): string[] {
  const body = xml.replace(/^<\?xml[^?]*\?>\s*/, '');
  const stack: string[] = [];
  const roots: string[] = [];
  const tag = /<(\/?)([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>/g;
  let last = 0;
  for (let m = tag.exec(body); m; m = tag.exec(body)) {
    const text = body.slice(last, m.index);
    if (/<|&(?!(amp|lt|gt|quot|apos);)/.test(text)) throw new Error(`bad text before offset ${m.index}: ${text.slice(0, 60)}`);
    last = tag.lastIndex;
    const [, close, name, , selfClose] = m;
    if (close) {
      if (stack.pop() !== name) throw new Error(`</${name}> closes the wrong element at ${m.index}`);
    } else {
      if (stack.length === 0) roots.push(name!);
      if (!selfClose) stack.push(name!);
    }
  }
  if (body.slice(last).trim() !== '') throw new Error(`text after the root element: ${body.slice(last, last + 60)}`);
  if (stack.length) throw new Error(`unclosed: ${stack.join(' ')}`);
  return roots;
}

describe('the boot timeline (SVG)', () => {
  it('is one well-formed svg element, with the markup in descriptions escaped', () => {
    const svg = bootTimelineSvg(sample());
    expect(wellFormed(svg)).toEqual(['svg']);
    expect(svg).toContain('load the drivers &lt;ahci &amp; virtio&gt;');
  });

  it('draws a bar for each stage where it ran, bars of blocks, and a marker for each mirror switch', () => {
    const svg = bootTimelineSvg(sample());
    const stages = [...svg.matchAll(/<rect class="stage" data-stage="(\w+)" x="([\d.]+)" y="[\d.]+" width="([\d.]+)"/g)].map((m) => ({ stage: m[1], x: Number(m[2]), w: Number(m[3]) }));
    expect(stages.map((s) => s.stage)).toEqual(['modules', 'network', 'rank', 'root']);
    // In turn on the axis, each as long as its time: network (900 ms) is 2.25 times modules (400 ms).
    for (let i = 1; i < stages.length; i++) expect(stages[i]!.x).toBeCloseTo(stages[i - 1]!.x + stages[i - 1]!.w, 0);
    expect(stages[1]!.w / stages[0]!.w).toBeCloseTo(2.25, 1);
    expect(svg.match(/<rect class="blocks"/g)).toHaveLength(4); // the empty bucket draws nothing
    expect(svg.match(/<g class="switch">/g)).toHaveLength(2);
    expect(svg).toContain('→ http://m2/');
    expect(svg).toContain('class="switch-root"');
  });

  it('draws the stages alone for a report without a timeline (older readers)', () => {
    const r = { ...sample(), timeline: undefined };
    const svg = bootTimelineSvg(r);
    expect(wellFormed(svg)).toEqual(['svg']);
    expect(svg.match(/<rect class="stage"/g)).toHaveLength(4);
    expect(svg).not.toContain('class="blocks"');
    expect(svg).toContain('not recorded');
  });
});

describe('the boot report as text', () => {
  it('lists stages with start and duration, the ranking with the choice marked, the bytes fetched and the switches', () => {
    const text = formatBootReport(sample());
    expect(text).toMatch(/^boot of knoppix v3 \(squashfs, 64\.0 MiB in 256 blocks of 256 KiB\): ok\n/);
    expect(text).toContain('init started at 1.50 s of uptime, switch_root at 4.10 s (2.60 s in the init)');
    expect(text).toMatch(/\n {2}network {2}\s+1\.90 s\s+900 ms {2}DHCP on eth0\n/);
    expect(text).toMatch(/\n {2}\* http:\/\/m1\/ +TTFB 2\.5 ms, block 10 ms, 80 MB\/s, score 12\.5, version 3\n/);
    expect(text).toMatch(/\n {4}http:\/\/m2\/ +error: connection refused\n/);
    expect(text).toContain('fetched: 12.0 MiB in 48 blocks (18.8% of the image); 10 memory hits, 0 disk cache hits');
    expect(text).toContain('http://m1/ -> http://m2/');
  });

  it('says which stage failed and why', () => {
    const r = { ...sample(), ok: false, failedStage: 'network', error: { code: 'E_NETWORK', message: 'no DHCP answer on eth0', hint: 'check the cable' } };
    const text = formatBootReport(r);
    expect(text).toMatch(/^boot of .*: FAILED in stage network\n {2}E_NETWORK: no DHCP answer on eth0\n {2}hint: check the cable\n/);
  });

  it('puts the stages one after another from the start of the init', () => {
    expect(stageSpans(sample()).map((s) => [s.startMs, s.endMs])).toEqual([
      [1500, 1900],
      [1900, 2800],
      [2800, 3100],
      [3100, 4100],
    ]);
  });
});
