/**
 * `npm run bench:search`: search latency on real data, and how it grows with the store.
 *
 * 1. Start Vellum as `npm start` does (fresh data dir, encryption on) with `VELLUM_CHAIN=off`,
 *    `VELLUM_AUTH=off` and `VELLUM_AUDIT=off`: anchoring runs after the commit, and tokens and
 *    AuditEvents are per request, not per match — none of them touches the index, so the figures
 *    are search figures.
 * 2. Load Blaze's Synthea set (CORPORA/search/blaze-synthea, 92,114 resources) in the documented
 *    order — the two `0-*` batch bundles (ifNoneExist) one after the other, then the 120 patient
 *    transactions (conditional references to the first two) — and time the whole load.
 * 3. Run a dozen representative searches, each `--runs` times (default 50) after a warm-up, one at
 *    a time, and report p50/p95 of the client-side latency (request sent → body read).
 * 4. Growth: on a second fresh server, generate Observations (1,000-entry transactions) up to
 *    10k, 100k and 1M, running the same few searches at each size. The sizes stop early when the
 *    next one would not fit in `--growth-minutes` (default 10): the output says so.
 *
 * Writes bench/results/search.json and bench/results/search.md and prints the tables.
 * Options: --runs N, --warmup N, --sizes 10000,100000,1000000, --growth-minutes M,
 * --concurrency N (transactions in flight while loading), --skip-blaze, --skip-growth.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { loadBlaze, postBundle, request, root, rssKiB, startServer, type Answer, type BenchServer } from './lib.ts';

const LOINC = 'http://loinc.org';
const SNOMED = 'http://snomed.info/sct';
/**
 * Search figures: no anchoring (it runs after the commit, outside search), no SMART tokens and no
 * AuditEvent per request (both orthogonal to the index; measured by their own benchmarks).
 */
const SERVER_ENV = { VELLUM_CHAIN: 'off', VELLUM_AUTH: 'off', VELLUM_AUDIT: 'off' };

const { values: opts } = parseArgs({
  options: {
    runs: { type: 'string', default: '50' },
    warmup: { type: 'string', default: '5' },
    sizes: { type: 'string', default: '10000,100000,1000000' },
    'growth-minutes': { type: 'string', default: '10' },
    concurrency: { type: 'string', default: '4' },
    'skip-blaze': { type: 'boolean', default: false },
    'skip-growth': { type: 'boolean', default: false },
  },
});
const RUNS = Number(opts.runs);
const WARMUP = Number(opts.warmup);
const CONCURRENCY = Number(opts.concurrency);

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

const round1 = (ms: number) => Math.round(ms * 10) / 10;

// ---- timing searches ----

interface Query {
  name: string;
  /** Relative to the FHIR base. */
  url: string;
  /** Follow `next` this many times first, and time the page reached (sort + page N). */
  page?: number;
}

interface Timing {
  name: string;
  url: string;
  /** Matches (`_summary=count` of the same search). */
  total: number | undefined;
  entries: number;
  p50_ms: number;
  p95_ms: number;
  max_ms: number;
  error?: string;
}

async function resolvePage(base: string, q: Query): Promise<string> {
  let url = `${base}/${q.url}`;
  for (let i = 1; i < (q.page ?? 1); i++) {
    const res = await request(url);
    if (res.status !== 200) throw new Error(`${q.name}: ${res.status}`);
    const next = (res.json.link ?? []).find((l: any) => l.relation === 'next')?.url as string | undefined;
    if (!next) throw new Error(`${q.name}: no page ${i + 1}`);
    url = next;
  }
  return url;
}

/** Time one query; a query that fails is reported with its error rather than ending the run. */
async function time(base: string, q: Query): Promise<Timing> {
  try {
    return await timeOrThrow(base, q);
  } catch (err) {
    console.error(`  ${q.name}: ${(err as Error).message}`);
    return { name: q.name, url: q.url, total: undefined, entries: 0, p50_ms: Number.NaN, p95_ms: Number.NaN, max_ms: Number.NaN, error: (err as Error).message };
  }
}

async function timeOrThrow(base: string, q: Query): Promise<Timing> {
  const url = await resolvePage(base, q);
  let last: Answer | undefined;
  for (let i = 0; i < WARMUP; i++) last = await request(url);
  if (last && last.status !== 200) throw new Error(`${q.name} (${q.url}): ${last.status} ${JSON.stringify(last.json?.issue?.[0] ?? '')}`);
  const samples: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const started = performance.now();
    const res = await request(url);
    samples.push(performance.now() - started);
    if (res.status !== 200) throw new Error(`${q.name}: ${res.status}`);
    last = res;
  }
  samples.sort((a, b) => a - b);
  const entries = (last?.json?.entry ?? []).length;
  // The matches, counted apart from the timed requests (a page gives `total` only when asked or when it holds them all).
  const counted = await request(`${base}/${q.url}${q.url.includes('?') ? '&' : '?'}_summary=count`);
  return {
    name: q.name,
    url: q.url + (q.page ? ` (page ${q.page})` : ''),
    total: counted.json?.total,
    entries,
    p50_ms: round1(percentile(samples, 50)),
    p95_ms: round1(percentile(samples, 95)),
    max_ms: round1(samples.at(-1)!),
  };
}

function blazeQueries(patientRef: string): Query[] {
  return [
    { name: 'token', url: `Observation?code=${LOINC}|8302-2` },
    { name: 'token OR list', url: `Observation?code=${LOINC}|8302-2,${LOINC}|29463-7,${LOINC}|39156-5` },
    { name: 'reference (patient chart)', url: `Observation?subject=${patientRef}&_sort=-date` },
    { name: 'date range (1 month)', url: 'Observation?date=ge2019-01-01&date=lt2019-02-01' },
    { name: 'string', url: 'Patient?family=Rosenbaum' },
    { name: 'chain, one level', url: 'Observation?subject:Patient.family=Rosenbaum' },
    { name: 'chain, two levels', url: 'Observation?encounter:Encounter.subject:Patient.family=Rosenbaum' },
    { name: '_include', url: `Observation?code=${LOINC}|8302-2&_include=Observation:subject` },
    { name: '_revinclude', url: 'Patient?family=Rosenbaum&_revinclude=Encounter:subject' },
    { name: '_has', url: `Patient?_has:Condition:subject:code=${SNOMED}|840539006` },
    { name: 'composite', url: `Observation?component-code-value-quantity=${LOINC}|8480-6$gt140` },
    { name: 'sort + page 3', url: `Observation?code=${LOINC}|8867-4&_sort=-date&_count=20`, page: 3 },
    { name: '_summary=count', url: `Observation?code=${LOINC}|85354-9&_summary=count` },
  ];
}

// ---- growth: generated Observations ----

const CODES = Array.from({ length: 20 }, (_, i) => `bench-${i}`);
const OBS_PER_PATIENT = 100;
const DAY = 86_400_000;
const FROM = Date.UTC(2010, 0, 1);
const SPAN_DAYS = 3653; // ten years

/** A small deterministic generator, so every run loads the same data. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Growth {
  observations: number;
  patients: number;
  load_seconds: number;
  obs_per_s: number;
  db_mib: number;
  queries: Timing[];
}

/**
 * The searches of the growth series. `patient` is one of the patients added with the latest
 * Observations: it has about OBS_PER_PATIENT of them at every size.
 */
function growthQueries(patient: number): Query[] {
  return [
    { name: 'token, 1 match (identifier)', url: 'Observation?identifier=urn:bench:obs|o-1234' },
    { name: 'token, N/20 matches (code)', url: `Observation?code=urn:bench:code|${CODES[3]}` },
    { name: 'date range (1 day)', url: 'Observation?date=ge2015-06-01&date=lt2015-06-02' },
    { name: 'chain (subject:Patient.family)', url: `Observation?subject:Patient.family=Fam${patient}` },
    { name: 'sort + page 3 (one patient)', url: `Observation?subject=Patient/bench-p-${patient}&_sort=-date&_count=20`, page: 3 },
    { name: 'sort + page 3 (code, N/20)', url: `Observation?code=urn:bench:code|${CODES[3]}&_sort=-date&_count=20`, page: 3 },
    // Broad searches: every Observation matches, so the matches grow with the store and the page must not.
    { name: 'broad: every Observation, page 3', url: 'Observation?_count=50', page: 3 },
    { name: 'broad: token + open date (the workload search)', url: 'Observation?status=final&date=ge2010-01-01&_count=50' },
    { name: 'broad: _sort=-date, page 3', url: 'Observation?status=final&_sort=-date&_count=50', page: 3 },
    { name: 'broad: _sort=_lastUpdated', url: 'Observation?_sort=_lastUpdated&_count=50' },
    { name: 'broad, counted (_total=accurate)', url: 'Observation?status=final&_total=accurate&_count=50' },
  ];
}

async function growthSeries(sizes: number[], budgetMs: number): Promise<{ results: Growth[]; stopped?: string }> {
  const server = await startServer(SERVER_ENV);
  const base = `${server.origin}/fhir`;
  const results: Growth[] = [];
  const random = rng(42);
  let written = 0;
  let patients = 0;
  let loadMs = 0;
  const started = performance.now();
  let stopped: string | undefined;
  try {
    for (const size of sizes) {
      // Project the time to reach `size` from the rate so far (the first size always runs).
      if (written > 0) {
        const rate = written / loadMs; // obs per ms
        const projected = (size - written) / rate;
        const elapsed = performance.now() - started;
        if (elapsed + projected > budgetMs) {
          stopped = `stopped before ${size.toLocaleString('en')} Observations: at ${Math.round(rate * 1000)} Observations/s it would take another ${Math.round(projected / 60_000)} min (budget ${Math.round(budgetMs / 60_000)} min in all)`;
          break;
        }
      }
      const loadStart = performance.now();
      // Patients grow with the Observations (100 each), so per-patient queries keep their size.
      const firstNew = patients;
      const wantPatients = Math.ceil(size / OBS_PER_PATIENT);
      const batches: string[][] = [];
      while (patients < wantPatients) {
        const entries: string[] = [];
        for (; patients < wantPatients && entries.length < 1000; patients++) {
          const id = `bench-p-${patients}`;
          entries.push(
            JSON.stringify({
              resource: { resourceType: 'Patient', id, name: [{ family: `Fam${patients}`, given: ['Bench'] }], gender: patients % 2 ? 'male' : 'female' },
              request: { method: 'PUT', url: `Patient/${id}` },
            }),
          );
        }
        batches.push(entries);
      }
      for (const entries of batches) await postBundle(base, `{"resourceType":"Bundle","type":"transaction","entry":[${entries.join(',')}]}`);
      let next = written;
      const makeTransaction = (): string | undefined => {
        if (next >= size) return undefined;
        const entries: string[] = [];
        for (; next < size && entries.length < 1000; next++) {
          const day = Math.floor(random() * SPAN_DAYS);
          const when = new Date(FROM + day * DAY + Math.floor(random() * DAY)).toISOString();
          entries.push(
            JSON.stringify({
              resource: {
                resourceType: 'Observation',
                identifier: [{ system: 'urn:bench:obs', value: `o-${next}` }],
                status: 'final',
                code: { coding: [{ system: 'urn:bench:code', code: CODES[next % CODES.length] }] },
                // Each segment's Observations go to every patient so far, uniformly.
                subject: { reference: `Patient/bench-p-${Math.floor(random() * wantPatients)}` },
                effectiveDateTime: when,
                valueQuantity: { value: Math.round(random() * 2000) / 10, unit: 'mg/dL', system: 'http://unitsofmeasure.org', code: 'mg/dL' },
              },
              request: { method: 'POST', url: 'Observation' },
            }),
          );
        }
        return `{"resourceType":"Bundle","type":"transaction","entry":[${entries.join(',')}]}`;
      };
      const worker = async () => {
        for (let body = makeTransaction(); body !== undefined; body = makeTransaction()) await postBundle(base, body);
      };
      await Promise.all(Array.from({ length: CONCURRENCY }, worker));
      loadMs += performance.now() - loadStart;
      const loadSeconds = (performance.now() - loadStart) / 1000;
      const added = size - written;
      written = size;
      const queries: Timing[] = [];
      // A patient of this segment (only this segment's Observations can name it): ~100 of them.
      const patient = firstNew + Math.floor((wantPatients - firstNew) / 2);
      for (const q of growthQueries(patient)) queries.push(await time(base, q));
      const db = path.join(server.dataDir, 'vellum.db');
      const dbMiB = ['', '-wal'].reduce((n, s) => n + (fs.existsSync(db + s) ? fs.statSync(db + s).size : 0), 0) / 2 ** 20;
      results.push({
        observations: size,
        patients,
        load_seconds: Math.round(loadSeconds),
        obs_per_s: Math.round(added / loadSeconds),
        db_mib: Math.round(dbMiB),
        queries,
      });
      console.log(`growth: ${size.toLocaleString('en')} Observations (${patients} patients) loaded; +${added} at ${Math.round(added / loadSeconds)}/s`);
      for (const q of queries) console.log(`  ${q.name.padEnd(34)} p50 ${String(q.p50_ms).padStart(7)} ms  p95 ${String(q.p95_ms).padStart(7)} ms  total ${q.total}`);
    }
  } finally {
    await server.stop();
  }
  return { results, ...(stopped ? { stopped } : {}) };
}

// ---- report ----

function blazeTable(timings: Timing[]): string[] {
  return [
    '| query | matches | entries | p50 ms | p95 ms |',
    '|---|---:|---:|---:|---:|',
    ...timings.map((q) => `| ${q.name} — \`${q.url.replaceAll('|', '\\|')}\` | ${q.total ?? '—'} | ${q.entries} | ${q.p50_ms} | ${q.p95_ms} |`),
  ];
}

function growthTable(results: Growth[]): string[] {
  if (!results.length) return [];
  const names = results[0]!.queries.map((q) => q.name);
  const header = `| query (p50 / p95 ms, matches) | ${results.map((r) => `${r.observations.toLocaleString('en')} obs`).join(' | ')} |`;
  return [
    header,
    `|---|${results.map(() => '---:').join('|')}|`,
    ...names.map((name) => {
      const cells = results.map((r) => {
        const q = r.queries.find((x) => x.name === name)!;
        return `${q.p50_ms} / ${q.p95_ms} (${q.total ?? '—'})`;
      });
      return `| ${name} | ${cells.join(' | ')} |`;
    }),
    `| load rate (Observations/s) | ${results.map((r) => r.obs_per_s).join(' | ')} |`,
    `| database size (MiB) | ${results.map((r) => r.db_mib).join(' | ')} |`,
  ];
}

async function main(): Promise<void> {
  const machine = { cpus: os.cpus().length, cpu: os.cpus()[0]?.model, node: process.version, loadavg: os.loadavg().map((n) => Math.round(n * 10) / 10) };
  const result: Record<string, unknown> = {
    started_at: new Date().toISOString(),
    machine,
    settings: { runs: RUNS, warmup: WARMUP, concurrency: CONCURRENCY, server_env: SERVER_ENV },
  };
  const md: string[] = [
    `Run ${result.started_at} on ${machine.cpus} cores (${machine.cpu}), Node ${machine.node}, load average at start ${machine.loadavg.join(' ')}.`,
    `Vellum with VELLUM_CHAIN=off, VELLUM_AUTH=off, VELLUM_AUDIT=off (anchoring runs after the commit; tokens and AuditEvents are per request — none touches the index), encryption on; each query ${RUNS} times after ${WARMUP} warm-ups, one at a time; latency is client-side (request → body read).`,
    '',
  ];

  if (!opts['skip-blaze']) {
    let server: BenchServer | undefined;
    try {
      server = await startServer(SERVER_ENV);
      const base = `${server.origin}/fhir`;
      let peakRss = 0;
      const sampler = setInterval(() => (peakRss = Math.max(peakRss, rssKiB(server!.child.pid!))), 500);
      const load = await loadBlaze(base, CONCURRENCY);
      clearInterval(sampler);
      console.log(`Blaze Synthea: ${load.resources} resources in ${load.bundles} bundles loaded in ${load.seconds} s (${load.resources_per_s}/s, ${load.concurrency} transactions in flight)`);
      const patientRef = [...load.refs.values()].find((r) => r.startsWith('Patient/'))!;
      const timings: Timing[] = [];
      for (const q of blazeQueries(patientRef)) {
        const t = await time(base, q);
        timings.push(t);
        console.log(`  ${t.name.padEnd(28)} p50 ${String(t.p50_ms).padStart(7)} ms  p95 ${String(t.p95_ms).padStart(7)} ms  matches ${t.total ?? '—'}`);
      }
      const { refs: _refs, ...loadFigures } = load;
      result.blaze = { load: { ...loadFigures, peak_rss_mib: Math.round(peakRss / 1024) }, queries: timings };
      md.push(
        `### Blaze Synthea (${load.resources.toLocaleString('en')} resources)`,
        '',
        `Load (2 batch bundles, then 120 transactions, ${load.concurrency} in flight): **${load.seconds} s** (${load.resources_per_s} resources/s; server peak RSS ${Math.round(peakRss / 1024)} MiB).`,
        '',
        ...blazeTable(timings),
        '',
      );
    } finally {
      await server?.stop();
    }
  }

  if (!opts['skip-growth']) {
    const sizes = opts.sizes.split(',').map(Number).filter((n) => Number.isInteger(n) && n > 0).sort((a, b) => a - b);
    const { results, stopped } = await growthSeries(sizes, Number(opts['growth-minutes']) * 60_000);
    result.growth = { sizes, results, ...(stopped ? { stopped } : {}) };
    md.push(
      '### Growth: generated Observations',
      '',
      `Observations written through 1,000-entry transactions (${CONCURRENCY} in flight), with 1 Patient per ${OBS_PER_PATIENT} Observations (so per-patient queries keep their size), 20 codes, dates over ten years.`,
      '',
      ...growthTable(results),
      ...(stopped ? ['', `Note: ${stopped}.`] : []),
      '',
    );
  }

  fs.mkdirSync(path.join(root, 'bench/results'), { recursive: true });
  fs.writeFileSync(path.join(root, 'bench/results/search.json'), `${JSON.stringify(result, null, 2)}\n`);
  fs.writeFileSync(path.join(root, 'bench/results/search.md'), `${md.join('\n')}\n`);
  console.log(`\n${md.join('\n')}`);
}

await main();
