/**
 * `npm run bench:export`: Bulk Data export (`$export`, Bulk Data Access 2.0) — throughput, memory,
 * and what an export does to the API's latency.
 *
 * Aims (the issue): the Blaze set (92,114 resources) exported at ≥ 10,000 resources/s; the
 * server's RSS grows by under 150 MiB whatever the size (files are streamed out in parts); an
 * export of 1,000,000 Observations completes; the export runs off the request thread (API p95
 * during an export ≤ 2× idle).
 *
 * 1. Start Vellum as `npm start` does, with the README defaults (SMART auth, AuditEvents,
 *    anchoring on the embedded chain; encryption always on), on a fresh data dir. Requests carry the
 *    bootstrap administrator's token (not consent-gated: it sees everything).
 * 2. Load Blaze's Synthea set (CORPORA/search/blaze-synthea, 92,114 resources) as bench:search
 *    does, then wait for the anchor backlog to drain (so anchoring does not run under the figures).
 * 3. Idle latency, once the server is quiet (under 0.1 core for 2 s: the audit thread and WAL
 *    checkpoints finish what the load left): `--reads` (default 1000) `GET Patient/{id}` of loaded
 *    patients, `--concurrency` (default 4) in flight, after 50 warm-up reads; p50/p95 (client-side,
 *    request → body read).
 * 4. Exports, each `GET /fhir/$export` with `Prefer: respond-async`, the status URL polled every
 *    min(Retry-After, `--poll-ms` = 250 ms); the duration runs from the kick-off to the first 200
 *    status (the manifest). The server's RSS is sampled every 100 ms: "before" is the median over
 *    the second before the kick-off, "peak" the highest sample until the manifest.
 *    Also: the server's CPU (all threads, and the busiest threads by name: MainThread is the
 *    request thread), resources per server CPU-second (what the export costs, which other load on
 *    this 2-core VM disturbs far less than resources/s), an RSS timeline (1 s), and the machine's
 *    load average (other jobs running show there). The first export also starts the export thread.
 *    a. quiet: nothing else runs; resources/s, RSS, server CPU; then every file is downloaded once
 *       (MB/s, 1 MB = 10^6 bytes) and its lines counted against the manifest's counts;
 *    b. under load: the same export while the read load of 3. runs without pause; read p50/p95
 *       during the export against idle;
 *    c. `_type=Observation`, quiet (skip with --skip-type).
 *    Each job is deleted once measured (its files removed).
 * 5. `--observations N` (default 0: off, it takes long): on a second fresh server with anchoring
 *    and AuditEvents OFF (VELLUM_CHAIN=off, VELLUM_AUDIT=off; auth as in 1.), load N/100 Patients
 *    and N tiny Observations referencing them (1,000-entry transactions, `--load-concurrency` in
 *    flight), then idle reads, and `_type=Observation` exports quiet (with download) and under load.
 *
 * Writes bench/results/export.json (with the commit measured and any uncommitted change under
 * src/) and bench/results/export.md, and prints the tables. The server inherits the environment,
 * so e.g. `VELLUM_EXPORT_FILE_BYTES=8388608 npm run bench:export` measures another part size.
 * Options: --reads N, --concurrency N (reads in flight), --load-concurrency N (transactions in
 * flight while loading), --poll-ms MS, --observations N, --skip-blaze, --skip-type, --skip-load
 * (no export under read load), --auth off, --audit off, --chain off (override the defaults of 1.),
 * --cpu-prof DIR (the server writes a V8 CPU profile there when it stops), --merge (keep the
 * datasets of the last results file that this run does not measure: e.g. re-measure the Blaze
 * set without the long Observations run; each dataset records when and on which code it ran).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { adminToken, cpuMs, loadBlaze, postBundle, root, rssKiB, startServer, type BenchServer } from './lib.ts';

const { values: opts } = parseArgs({
  options: {
    reads: { type: 'string', default: '1000' },
    concurrency: { type: 'string', default: '4' },
    'load-concurrency': { type: 'string', default: '4' },
    'poll-ms': { type: 'string', default: '250' },
    observations: { type: 'string', default: '0' },
    'skip-blaze': { type: 'boolean', default: false },
    'skip-type': { type: 'boolean', default: false },
    'skip-load': { type: 'boolean', default: false },
    auth: { type: 'string', default: 'on' },
    audit: { type: 'string', default: 'on' },
    chain: { type: 'string', default: 'on' },
    'cpu-prof': { type: 'string' },
    merge: { type: 'boolean', default: false },
  },
});
const READS = Number(opts.reads);
const CONCURRENCY = Number(opts.concurrency);
const LOAD_CONCURRENCY = Number(opts['load-concurrency']);
const POLL_MS = Number(opts['poll-ms']);
const OBSERVATIONS = Number(opts.observations);
const AIMS = { resources_per_s: 10_000, rss_growth_mib: 150, p95_ratio: 2 };

/** The README defaults, but for what a flag turns off. */
const onOff = (flag: string, name: string, off: string): Record<string, string> => (flag === 'off' ? { [name]: off } : {});
const BLAZE_ENV: Record<string, string> = {
  ...onOff(opts.auth, 'VELLUM_AUTH', 'off'),
  ...onOff(opts.audit, 'VELLUM_AUDIT', 'off'),
  ...onOff(opts.chain, 'VELLUM_CHAIN', 'off'),
};
/** The Observations run: loading a million resources with anchoring and audit on takes too long. */
const OBS_ENV: Record<string, string> = { VELLUM_CHAIN: 'off', VELLUM_AUDIT: 'off', ...onOff(opts.auth, 'VELLUM_AUTH', 'off') };

function serverEnv(env: Record<string, string>): Record<string, string> {
  if (!opts['cpu-prof']) return env;
  fs.mkdirSync(opts['cpu-prof'], { recursive: true });
  return { ...env, NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --cpu-prof --cpu-prof-dir=${path.resolve(opts['cpu-prof'])}`.trim() };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const round1 = (n: number) => Math.round(n * 10) / 10;
const mib = (kib: number) => Math.round(kib / 1024);

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

// ---- the server, its token ----

/** The administrator's token, fetched again before it could expire (1 h by default). */
class Auth {
  #token: string | undefined;
  #at = 0;
  constructor(private readonly server: BenchServer) {
    this.#token = server.token;
    this.#at = Date.now();
  }
  async token(): Promise<string | undefined> {
    if (this.#token && Date.now() - this.#at > 20 * 60_000) {
      this.#token = await adminToken(this.server.dataDir);
      this.#at = Date.now();
    }
    return this.#token;
  }
  /** Synchronous, for the hot paths (refreshed by `token()` between phases). */
  get current(): string | undefined {
    return this.#token;
  }
  headers(): Record<string, string> {
    return this.#token ? { authorization: `Bearer ${this.#token}` } : {};
  }
}

/** Wait until the anchor backlog is empty (chain on); the seconds waited. */
async function drainAnchoring(origin: string, limitMs = 10 * 60_000): Promise<number> {
  const started = Date.now();
  for (;;) {
    const ready = (await (await fetch(`${origin}/ready`)).json()) as { anchorBacklog?: number; chain?: string };
    if (!ready.anchorBacklog) return round1((Date.now() - started) / 1000);
    if (Date.now() - started > limitMs) throw new Error(`anchor backlog still ${ready.anchorBacklog} after ${limitMs / 1000} s`);
    await sleep(500);
  }
}

// ---- threads ----

/** CPU ms of each thread of `pid`, with its name (`comm`). */
function threadCpu(pid: number): Map<number, { name: string; ms: number }> {
  const out = new Map<number, { name: string; ms: number }>();
  let tids: string[] = [];
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const name = fs.readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
      out.set(Number(tid), { name: Number(tid) === pid ? `${name} (main)` : name, ms: cpuMs(pid, Number(tid)) });
    } catch {
      // the thread ended
    }
  }
  return out;
}

/** The threads that used more than 2% of the window, busiest first: name and cores used. */
function busyThreads(before: Map<number, { name: string; ms: number }>, after: Map<number, { name: string; ms: number }>, wallMs: number): { thread: string; cores: number }[] {
  return [...after]
    .map(([tid, a]) => ({ thread: `${a.name} [${tid}]`, cores: Math.round(((a.ms - (before.get(tid)?.ms ?? 0)) / wallMs) * 100) / 100 }))
    .filter((t) => t.cores >= 0.02)
    .sort((x, y) => y.cores - x.cores);
}

/**
 * Wait until the server is quiet — under 0.1 core over 2 s (the audit thread, anchoring and WAL
 * checkpoints finish what a load left) — for at most `limitMs`; the seconds waited.
 */
async function settle(pid: number, limitMs = 120_000): Promise<number> {
  const started = Date.now();
  for (;;) {
    const before = cpuMs(pid);
    await sleep(2000);
    if (cpuMs(pid) - before < 200 || Date.now() - started > limitMs) return round1((Date.now() - started) / 1000);
  }
}

// ---- memory ----

class RssSampler {
  samples: { t: number; kib: number }[] = [];
  #timer: NodeJS.Timeout;
  constructor(readonly pid: number) {
    this.#timer = setInterval(() => this.samples.push({ t: performance.now(), kib: rssKiB(pid) }), 100);
  }
  /** Median over [from, to). */
  median(from: number, to: number): number {
    const xs = this.samples.filter((s) => s.t >= from && s.t < to).map((s) => s.kib).sort((a, b) => a - b);
    return xs.length ? xs[Math.floor(xs.length / 2)]! : rssKiB(this.pid);
  }
  peak(from: number, to: number): number {
    return Math.max(0, ...this.samples.filter((s) => s.t >= from && s.t < to).map((s) => s.kib));
  }
  /** Highest sample of each second of [from, to), MiB. */
  timeline(from: number, to: number): number[] {
    const out: number[] = [];
    for (const s of this.samples) {
      if (s.t < from || s.t >= to) continue;
      const i = Math.floor((s.t - from) / 1000);
      out[i] = Math.max(out[i] ?? 0, mib(s.kib));
    }
    return Array.from(out, (x) => x ?? 0);
  }
  stop(): void {
    clearInterval(this.#timer);
  }
}

// ---- read load ----

interface Latency {
  reads: number;
  reads_per_s: number;
  p50_ms: number;
  p95_ms: number;
  p99_ms: number;
  max_ms: number;
  errors: number;
}

/**
 * `GET Patient/{id}`, `CONCURRENCY` in flight, until `count` reads are done or `stop()` is true;
 * ids in a fixed shuffled order.
 */
async function readLoad(base: string, auth: Auth, ids: string[], until: { count?: number; stop?: () => boolean }): Promise<Latency> {
  const samples: number[] = [];
  let errors = 0;
  let issued = 0;
  const started = performance.now();
  const more = () => (until.count !== undefined ? issued < until.count : !until.stop!());
  const worker = async () => {
    while (more()) {
      const id = ids[(issued++ * 7919) % ids.length]!;
      const t = performance.now();
      try {
        const res = await fetch(`${base}/Patient/${id}`, { headers: { accept: 'application/fhir+json', ...auth.headers() } });
        await res.arrayBuffer();
        if (res.status !== 200) errors++;
      } catch {
        errors++;
      }
      samples.push(performance.now() - t);
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  const seconds = (performance.now() - started) / 1000;
  samples.sort((a, b) => a - b);
  return {
    reads: samples.length,
    reads_per_s: Math.round(samples.length / seconds),
    p50_ms: round1(percentile(samples, 50)),
    p95_ms: round1(percentile(samples, 95)),
    p99_ms: round1(percentile(samples, 99)),
    max_ms: round1(samples.at(-1) ?? Number.NaN),
    errors,
  };
}

// ---- one export ----

interface ManifestFile {
  type?: string;
  url: string;
  count?: number;
}
interface Manifest {
  transactionTime: string;
  output: ManifestFile[];
  deleted: ManifestFile[];
  error: ManifestFile[];
  extension?: Record<string, unknown>;
}

interface Download {
  files: number;
  bytes: number;
  seconds: number;
  mb_per_s: number;
  /** Every output and proofs file has as many lines as the manifest says. */
  counts_match: boolean;
  mismatches: string[];
  peak_rss_mib: number;
}

interface ExportRun {
  name: string;
  query: string;
  under_load: boolean;
  exported: number;
  output_files: number;
  proofs_files: number;
  error_lines: number;
  seconds: number;
  resources_per_s: number;
  polls: number;
  rss_before_mib: number;
  rss_peak_mib: number;
  rss_growth_mib: number;
  /** Server CPU (all threads) during the export, in cores (1.0 = one core busy throughout). */
  server_cpu_cores: number;
  /**
   * Resources per CPU-second of the server (all threads): the export's cost, which other load on
   * the machine disturbs far less than resources/s.
   */
  resources_per_cpu_s: number;
  /** Threads of the server busy during the export (cores each; main = the request thread). */
  threads: { thread: string; cores: number }[];
  /** RSS (MiB), highest sample of each second from 1 s before the kick-off to the manifest. */
  rss_timeline_mib: number[];
  /** 1-minute load average of the machine when the manifest came (2 cores: above ~2, something else ran). */
  loadavg_1m: number;
  /** With --cpu-prof: the export's window on CLOCK_MONOTONIC (µs), the clock of the profile's timestamps. */
  window_us?: [number, number];
  reads?: Latency;
  download?: Download;
}

/** Lines (newline count) and bytes of a file, streamed. */
async function fetchCounting(url: string, auth: Auth): Promise<{ status: number; bytes: number; lines: number }> {
  const res = await fetch(url, { headers: { accept: 'application/fhir+ndjson', ...auth.headers() } });
  let bytes = 0;
  let lines = 0;
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    bytes += chunk.length;
    for (let i = chunk.indexOf(10); i >= 0; i = chunk.indexOf(10, i + 1)) lines++;
  }
  return { status: res.status, bytes, lines };
}

async function download(manifest: Manifest, auth: Auth, rss: RssSampler): Promise<Download> {
  const proofs = (manifest.extension?.['https://vellum.dev/fhir/bulk/proofs'] ?? []) as ManifestFile[];
  const files = [...manifest.output, ...proofs, ...manifest.deleted, ...manifest.error];
  const mismatches: string[] = [];
  let bytes = 0;
  const started = performance.now();
  for (const file of files) {
    const got = await fetchCounting(file.url, auth);
    if (got.status !== 200) mismatches.push(`${file.url}: status ${got.status}`);
    else if (file.count !== undefined && got.lines !== file.count) mismatches.push(`${file.url.split('/').at(-1)}: ${got.lines} lines, manifest ${file.count}`);
    bytes += got.bytes;
  }
  const ended = performance.now();
  const seconds = (ended - started) / 1000;
  return {
    files: files.length,
    bytes,
    seconds: round1(seconds),
    mb_per_s: round1(bytes / 1e6 / seconds),
    counts_match: mismatches.length === 0,
    mismatches,
    peak_rss_mib: mib(rss.peak(started, ended + 1)),
  };
}

async function runExport(
  base: string,
  server: BenchServer,
  auth: Auth,
  rss: RssSampler,
  ids: string[],
  o: { name: string; query: string; underLoad: boolean; download: boolean },
): Promise<ExportRun> {
  await auth.token();
  // The second before the kick-off: the baseline of the RSS.
  const settle = performance.now();
  await sleep(1000);
  const pid = server.child.pid!;
  const cpu0 = cpuMs(pid);
  const threads0 = threadCpu(pid);
  const kicked = performance.now();
  const monoKicked = Number(process.hrtime.bigint() / 1000n);
  const kick = await fetch(`${base}/$export${o.query}`, { headers: { accept: 'application/fhir+json', prefer: 'respond-async', ...auth.headers() } });
  await kick.arrayBuffer();
  const statusUrl = kick.headers.get('content-location');
  if (kick.status !== 202 || !statusUrl) throw new Error(`$export${o.query} kick-off answered ${kick.status}`);
  let done = false;
  const reads = o.underLoad ? readLoad(base, auth, ids, { stop: () => done }) : undefined;
  let manifest: Manifest | undefined;
  let polls = 0;
  let lastProgress = '';
  let lastPrint = performance.now();
  let ended = 0;
  let monoEnded = 0;
  try {
    while (!manifest) {
      const res = await fetch(statusUrl, { headers: { accept: 'application/json', ...auth.headers() } });
      polls++;
      if (res.status === 200) {
        ended = performance.now();
        monoEnded = Number(process.hrtime.bigint() / 1000n);
        manifest = (await res.json()) as Manifest;
        break;
      }
      await res.arrayBuffer();
      if (res.status !== 202) throw new Error(`export status answered ${res.status}`);
      lastProgress = res.headers.get('x-progress') ?? lastProgress;
      if (performance.now() - lastPrint > 10_000) {
        console.log(`    … ${round1((performance.now() - kicked) / 1000)} s: ${lastProgress}`);
        lastPrint = performance.now();
      }
      const retryAfter = Number(res.headers.get('retry-after') ?? '1') * 1000;
      await sleep(Math.min(Number.isFinite(retryAfter) ? retryAfter : POLL_MS, POLL_MS));
    }
  } finally {
    done = true;
  }
  const cpu1 = cpuMs(pid);
  const threads1 = threadCpu(pid);
  const readFigures = await reads;
  const seconds = (ended - kicked) / 1000;
  const before = rss.median(settle, kicked);
  const peak = rss.peak(kicked, ended + 1);
  const exported = manifest.output.reduce((n, f) => n + (f.count ?? 0), 0);
  const proofs = (manifest.extension?.['https://vellum.dev/fhir/bulk/proofs'] ?? []) as ManifestFile[];
  const run: ExportRun = {
    name: o.name,
    query: o.query,
    under_load: o.underLoad,
    exported,
    output_files: manifest.output.length,
    proofs_files: proofs.length,
    error_lines: manifest.error.reduce((n, f) => n + (f.count ?? 0), 0),
    seconds: round1(seconds),
    resources_per_s: Math.round(exported / seconds),
    polls,
    rss_before_mib: mib(before),
    rss_peak_mib: mib(peak),
    rss_growth_mib: mib(Math.max(0, peak - before)),
    server_cpu_cores: Math.round(((cpu1 - cpu0) / (ended - kicked)) * 100) / 100,
    resources_per_cpu_s: Math.round(exported / ((cpu1 - cpu0) / 1000)),
    threads: busyThreads(threads0, threads1, ended - kicked),
    rss_timeline_mib: rss.timeline(settle, ended + 1),
    loadavg_1m: round1(os.loadavg()[0]!),
    ...(readFigures ? { reads: readFigures } : {}),
    ...(opts['cpu-prof'] ? { window_us: [monoKicked, monoEnded] as [number, number] } : {}),
  };
  if (o.download) run.download = await download(manifest, auth, rss);
  // Remove the job and its files (a finished job: DELETE removes it).
  const del = await fetch(statusUrl, { method: 'DELETE', headers: auth.headers() });
  await del.arrayBuffer();
  console.log(
    `  ${o.name}: ${exported.toLocaleString('en')} resources in ${run.seconds} s = ${run.resources_per_s.toLocaleString('en')}/s; ` +
      `RSS ${run.rss_before_mib} → peak ${run.rss_peak_mib} MiB (+${run.rss_growth_mib}); server CPU ${run.server_cpu_cores} cores (${run.threads.slice(0, 3).map((t) => `${t.thread} ${t.cores}`).join(', ')})` +
      (readFigures ? `; reads during: p50 ${readFigures.p50_ms} ms p95 ${readFigures.p95_ms} ms (${readFigures.reads}, ${readFigures.errors} errors)` : '') +
      (run.download ? `; download ${run.download.files} files ${round1(run.download.bytes / 1e6)} MB at ${run.download.mb_per_s} MB/s, counts ${run.download.counts_match ? 'match' : `DIFFER: ${run.download.mismatches.slice(0, 3).join('; ')}`}` : ''),
  );
  return run;
}

// ---- a dataset: idle reads, then the exports ----

interface Dataset {
  name: string;
  server_env: Record<string, string>;
  load: Record<string, unknown>;
  anchoring_drain_s?: number;
  /** Seconds until the server was quiet after the load (before the idle reads). */
  settle_s: number;
  idle_reads: Latency;
  exports: ExportRun[];
}

async function measure(
  name: string,
  server: BenchServer,
  auth: Auth,
  ids: string[],
  load: Record<string, unknown>,
  env: Record<string, string>,
  exports: { name: string; query: string; underLoad: boolean; download: boolean }[],
): Promise<Dataset> {
  const base = `${server.origin}/fhir`;
  const rss = new RssSampler(server.child.pid!);
  try {
    await auth.token();
    const settled = await settle(server.child.pid!);
    console.log(`  server quiet after ${settled} s`);
    await readLoad(base, auth, ids, { count: 50 }); // warm-up
    const idle = await readLoad(base, auth, ids, { count: READS });
    console.log(`  idle reads: p50 ${idle.p50_ms} ms, p95 ${idle.p95_ms} ms (${idle.reads} at ${CONCURRENCY} in flight, ${idle.reads_per_s}/s, ${idle.errors} errors)`);
    const runs: ExportRun[] = [];
    for (const e of exports) runs.push(await runExport(base, server, auth, rss, ids, e));
    return { name, server_env: env, load, settle_s: settled, idle_reads: idle, exports: runs };
  } finally {
    rss.stop();
  }
}

async function blaze(): Promise<Dataset> {
  const server = await startServer(serverEnv(BLAZE_ENV));
  try {
    const auth = new Auth(server);
    const base = `${server.origin}/fhir`;
    console.log(`Blaze Synthea: loading (server started in ${server.startupMs} ms) …`);
    const load = await loadBlaze(base, LOAD_CONCURRENCY, auth.current);
    console.log(`  ${load.resources} resources in ${load.bundles} bundles loaded in ${load.seconds} s (${load.resources_per_s}/s, ${load.concurrency} transactions in flight)`);
    const drained = opts.chain === 'off' ? 0 : await drainAnchoring(server.origin);
    if (drained) console.log(`  anchor backlog drained in ${drained} s more`);
    const ids = [...load.refs.values()].filter((r) => r.startsWith('Patient/')).map((r) => r.slice('Patient/'.length));
    const { refs: _refs, ...loadFigures } = load;
    const exports = [
      { name: 'system, quiet', query: '', underLoad: false, download: true },
      ...(opts['skip-load'] ? [] : [{ name: 'system, under read load', query: '', underLoad: true, download: false }]),
      ...(opts['skip-type'] ? [] : [{ name: '_type=Observation, quiet', query: '?_type=Observation', underLoad: false, download: true }]),
    ];
    const dataset = await measure(`Blaze Synthea (${load.resources.toLocaleString('en')} resources)`, server, auth, ids, { ...loadFigures, patients: ids.length }, BLAZE_ENV, exports);
    dataset.anchoring_drain_s = drained;
    return dataset;
  } finally {
    await server.stop();
  }
}

// ---- generated Observations ----

const OBS_PER_PATIENT = 100;
const TX = 1000;

async function observations(n: number): Promise<Dataset> {
  const server = await startServer(serverEnv(OBS_ENV));
  try {
    const auth = new Auth(server);
    const base = `${server.origin}/fhir`;
    const patients = Math.max(1, Math.ceil(n / OBS_PER_PATIENT));
    const ids = Array.from({ length: patients }, (_, i) => `bench-p-${i}`);
    console.log(`Observations: loading ${patients.toLocaleString('en')} Patients and ${n.toLocaleString('en')} Observations (anchoring and audit off) …`);
    const started = performance.now();
    for (let i = 0; i < patients; i += TX) {
      const entries = ids.slice(i, i + TX).map((id, j) =>
        JSON.stringify({ resource: { resourceType: 'Patient', id, name: [{ family: `Fam${i + j}` }] }, request: { method: 'PUT', url: `Patient/${id}` } }),
      );
      await postBundle(base, `{"resourceType":"Bundle","type":"transaction","entry":[${entries.join(',')}]}`, await auth.token());
    }
    let next = 0;
    let lastPrint = performance.now();
    const makeTransaction = (): string | undefined => {
      if (next >= n) return undefined;
      const entries: string[] = [];
      for (; next < n && entries.length < TX; next++) {
        entries.push(
          JSON.stringify({
            resource: {
              resourceType: 'Observation',
              status: 'final',
              code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
              subject: { reference: `Patient/${ids[next % patients]}` },
              effectiveDateTime: new Date(Date.UTC(2020, 0, 1) + next * 60_000).toISOString(),
              valueQuantity: { value: 60 + (next % 40), unit: '/min', system: 'http://unitsofmeasure.org', code: '/min' },
            },
            request: { method: 'POST', url: 'Observation' },
          }),
        );
      }
      return `{"resourceType":"Bundle","type":"transaction","entry":[${entries.join(',')}]}`;
    };
    const worker = async () => {
      for (let body = makeTransaction(); body !== undefined; body = makeTransaction()) {
        await postBundle(base, body, await auth.token());
        if (performance.now() - lastPrint > 60_000) {
          lastPrint = performance.now();
          const s = (lastPrint - started) / 1000;
          console.log(`    … ${Math.round(s)} s: ${next.toLocaleString('en')} Observations queued (${Math.round(next / s)}/s)`);
        }
      }
    };
    await Promise.all(Array.from({ length: LOAD_CONCURRENCY }, worker));
    const seconds = (performance.now() - started) / 1000;
    const load = { observations: n, patients, seconds: Math.round(seconds), resources_per_s: Math.round((n + patients) / seconds), concurrency: LOAD_CONCURRENCY };
    console.log(`  loaded in ${load.seconds} s (${load.resources_per_s} resources/s)`);
    const exports = [
      { name: '_type=Observation, quiet', query: '?_type=Observation', underLoad: false, download: true },
      ...(opts['skip-load'] ? [] : [{ name: '_type=Observation, under read load', query: '?_type=Observation', underLoad: true, download: false }]),
    ];
    return await measure(`${n.toLocaleString('en')} generated Observations`, server, auth, ids, load, OBS_ENV, exports);
  } finally {
    await server.stop();
  }
}

// ---- report ----

const envText = (env: Record<string, string>) => (Object.keys(env).length ? Object.entries(env).map(([k, v]) => `${k}=${v}`).join(', ') : 'README defaults (auth, audit, anchoring on)');

function table(d: Dataset): string[] {
  const rows = [
    `### ${d.name}`,
    '',
    `Server: ${envText(d.server_env)}; encryption on. Load: ${JSON.stringify(d.load)}${d.anchoring_drain_s ? `; anchor backlog drained ${d.anchoring_drain_s} s after the load` : ''}.`,
    '',
    `Idle reads (\`GET Patient/{id}\`, ${CONCURRENCY} in flight, ${d.idle_reads.reads} reads, once the server was quiet — ${d.settle_s} s after the load): p50 ${d.idle_reads.p50_ms} ms, p95 ${d.idle_reads.p95_ms} ms, ${d.idle_reads.reads_per_s} reads/s.`,
    '',
    '| export | resources | seconds | resources/s | per server CPU-s | RSS before → peak (MiB) | growth MiB | server CPU (cores) | load avg | reads p50 / p95 ms (idle p95 ×) | download MB/s | line counts |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|',
  ];
  for (const e of d.exports) {
    const reads = e.reads ? `${e.reads.p50_ms} / ${e.reads.p95_ms} (${round1(e.reads.p95_ms / d.idle_reads.p95_ms)}×)` : '—';
    const dl = e.download ? `${e.download.mb_per_s} (${round1(e.download.bytes / 1e6)} MB, ${e.download.files} files)` : '—';
    const counts = e.download ? (e.download.counts_match ? '✓ = manifest' : `✗ ${e.download.mismatches.length} differ`) : '—';
    rows.push(
      `| ${e.name} \`$export${e.query}\` | ${e.exported.toLocaleString('en')} | ${e.seconds} | ${e.resources_per_s.toLocaleString('en')} ${e.resources_per_s >= AIMS.resources_per_s ? '✓' : '✗'} | ${e.resources_per_cpu_s.toLocaleString('en')} | ${e.rss_before_mib} → ${e.rss_peak_mib} | ${e.rss_growth_mib} ${e.rss_growth_mib < AIMS.rss_growth_mib ? '✓' : '✗'} | ${e.server_cpu_cores} | ${e.loadavg_1m} | ${reads}${e.reads ? (e.reads.p95_ms <= AIMS.p95_ratio * d.idle_reads.p95_ms ? ' ✓' : ' ✗') : ''} | ${dl} | ${counts} |`,
    );
  }
  rows.push('');
  return rows;
}

/** The commit measured, and the files under src/ changed since it (a working tree measured mid-change says so). */
function codeVersion(): { commit: string; src_changes: string[] } {
  const git = (...args: string[]) => spawnSync('git', args, { cwd: root, encoding: 'utf8' }).stdout?.trim() ?? '';
  return { commit: git('rev-parse', 'HEAD'), src_changes: git('status', '--porcelain', '--', 'src').split('\n').filter(Boolean) };
}

interface Measured {
  kind: 'blaze' | 'observations';
  measured_at: string;
  code: ReturnType<typeof codeVersion>;
  /** Load average of the machine when the dataset's run began. */
  loadavg_at_start: number[];
}

/** The datasets of the last results file, for `--merge` (files written before `kind` existed: told by name). */
function previousDatasets(): (Dataset & Measured)[] {
  const file = path.join(root, 'bench/results/export.json');
  if (!fs.existsSync(file)) return [];
  const old = JSON.parse(fs.readFileSync(file, 'utf8')) as { started_at?: string; code?: Measured['code']; machine?: { loadavg?: number[] }; datasets?: (Dataset & Partial<Measured>)[] };
  return (old.datasets ?? []).map((d) => ({
    ...d,
    kind: d.kind ?? (d.name.startsWith('Blaze') ? 'blaze' : 'observations'),
    measured_at: d.measured_at ?? old.started_at ?? '',
    code: d.code ?? old.code ?? { commit: 'unknown', src_changes: [] },
    loadavg_at_start: d.loadavg_at_start ?? old.machine?.loadavg ?? [],
  }));
}

async function main(): Promise<void> {
  const loadavg = () => os.loadavg().map((n) => Math.round(n * 10) / 10);
  const machine = { cpus: os.cpus().length, cpu: os.cpus()[0]?.model, node: process.version };
  const measuring = new Set<Measured['kind']>([...(opts['skip-blaze'] ? [] : ['blaze' as const]), ...(OBSERVATIONS > 0 ? ['observations' as const] : [])]);
  const kept = opts.merge ? previousDatasets().filter((d) => !measuring.has(d.kind)) : [];
  const result = {
    started_at: new Date().toISOString(),
    finished_at: undefined as string | undefined,
    machine,
    settings: { reads: READS, concurrency: CONCURRENCY, load_concurrency: LOAD_CONCURRENCY, poll_ms: POLL_MS, observations: OBSERVATIONS },
    aims: AIMS,
    ...(kept.length ? { merged: `${kept.map((d) => d.name).join(', ')}: kept from an earlier run (--merge)` } : {}),
    datasets: [...kept] as (Dataset & Measured)[],
  };
  const markdown = (): string[] => [
    `Runs on ${machine.cpus} cores (${machine.cpu}), Node ${machine.node}.`,
    `Export duration: kick-off (\`Prefer: respond-async\`) → first 200 status, the status polled every ${POLL_MS} ms; resources = sum of the manifest's output counts. ` +
      `RSS: server, sampled every 100 ms; before = median of the second before the kick-off, peak = highest until the manifest. ` +
      `Per server CPU-s: resources / CPU time of the server process (all threads) during the export. Load avg: the machine's 1-minute load average at the manifest (2 cores; above ~2.5, something else was running). ` +
      `Aims: ≥ ${AIMS.resources_per_s.toLocaleString('en')} resources/s, RSS growth < ${AIMS.rss_growth_mib} MiB, read p95 during an export ≤ ${AIMS.p95_ratio}× idle.`,
    '',
    ...result.datasets.flatMap((d) => {
      const [heading, ...rest] = table(d);
      return [
        heading!,
        '',
        `Measured ${d.measured_at} (machine load average ${d.loadavg_at_start.join(' ')} at the start), code ${d.code.commit.slice(0, 10)}${d.code.src_changes.length ? ` with ${d.code.src_changes.length} uncommitted change(s) under src/` : ''}.`,
        ...rest,
      ];
    }),
  ];
  const save = () => {
    fs.mkdirSync(path.join(root, 'bench/results'), { recursive: true });
    fs.writeFileSync(path.join(root, 'bench/results/export.json'), `${JSON.stringify(result, null, 2)}\n`);
    fs.writeFileSync(path.join(root, 'bench/results/export.md'), `${markdown().join('\n')}\n`);
  };
  const run = async (kind: Measured['kind'], measure: () => Promise<Dataset>) => {
    const at = { kind, measured_at: new Date().toISOString(), code: codeVersion(), loadavg_at_start: loadavg() };
    result.datasets.push({ ...(await measure()), ...at });
    result.datasets.sort((a, b) => (a.kind === b.kind ? 0 : a.kind === 'blaze' ? -1 : 1));
    save();
  };
  if (measuring.has('blaze')) await run('blaze', blaze);
  if (measuring.has('observations')) await run('observations', () => observations(OBSERVATIONS));
  result.finished_at = new Date().toISOString();
  save();
  console.log(`\n${markdown().join('\n')}`);
}

await main();
