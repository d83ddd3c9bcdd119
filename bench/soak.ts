/**
 * `npm run bench:soak`: the standard workload (`bench/fhir-load.mjs`, 500 patients, 8 clients)
 * back to back against one Vellum in its default configuration for `--minutes` (default 20), so
 * every round runs on the data of all the rounds before it (each adds 500 patients and 2,000
 * Observations). Prints and writes (`bench/results/soak.{json,md}`) the growth table: total ops/s
 * and code+date searches/s of the first round and of the rounds nearest 5, 12 and 20 minutes,
 * beside Medplum's figures (bench/baseline/medplum.json), the server's RSS, and whether the last
 * round's total is within 20 % of the first's.
 *
 * `node --import tsx bench/soak.ts [--minutes=20] [--report-only]` (`--report-only`: the table again from
 * bench/results/soak.json, without a run).
 */
import fs from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { loadBaseline, root, rssKiB, runLoad, startServer } from './lib.ts';

const minutes = Number(process.argv.find((a) => a.startsWith('--minutes='))?.slice(10) ?? '20');
if (!(minutes > 0)) throw new Error('--minutes must be a positive number');

interface Round {
  round: number;
  /** Minutes since the first round started, at this round's end. */
  minutes: number;
  total_ops_per_s: number;
  search_obs_code_date_ops_per_s: number;
  read_patient_ops_per_s: number;
  observations: number;
  rss_mib: number;
  errors: number;
}

const baseline = loadBaseline();
const reportOnly = process.argv.includes('--report-only');
let rounds: Round[] = [];
let peakRss = 0;
if (reportOnly) {
  // Re-render the table from the last run's figures (bench/results/soak.json).
  const saved = JSON.parse(fs.readFileSync(path.join(root, 'bench/results/soak.json'), 'utf8')) as { rounds: Round[]; peak_rss_mib: number };
  rounds = saved.rounds;
  peakRss = saved.peak_rss_mib * 1024;
} else {
const server = await startServer();
const sampler = setInterval(() => (peakRss = Math.max(peakRss, rssKiB(server.child.pid!))), 500);
try {
  const started = performance.now();
  for (let round = 1; (performance.now() - started) / 60_000 < minutes; round++) {
    // Each round its own seed: new identifiers and values, the same shape.
    const { code, summary } = await runLoad(`${server.origin}/fhir`, [`--seed=${round}`], false, server.token);
    const phase = (name: string) => summary.phases.find((p) => p.phase === name);
    const r: Round = {
      round,
      minutes: Math.round(((performance.now() - started) / 60_000) * 10) / 10,
      total_ops_per_s: (summary as { total?: { ops_per_s: number } }).total?.ops_per_s ?? 0,
      search_obs_code_date_ops_per_s: phase('search_obs_code_date')?.ops_per_s ?? 0,
      read_patient_ops_per_s: phase('read_patient')?.ops_per_s ?? 0,
      observations: round * 2000,
      rss_mib: Math.round(rssKiB(server.child.pid!) / 1024),
      errors: summary.phases.reduce((n, p) => n + p.errors, 0),
    };
    rounds.push(r);
    console.log(
      `round ${round} (${r.minutes} min, ${r.observations.toLocaleString('en')} Observations): total ${r.total_ops_per_s} ops/s, ` +
        `code+date ${r.search_obs_code_date_ops_per_s}/s, reads ${r.read_patient_ops_per_s}/s, RSS ${r.rss_mib} MiB, errors ${r.errors}${code ? ` (exit ${code})` : ''}`,
    );
  }
} finally {
  clearInterval(sampler);
  await server.stop();
}
}

// The rounds the baseline reports: the first, then the one ending nearest each of its marks.
const nearest = (mark: number) => rounds.reduce((best, r) => (Math.abs(r.minutes - mark) < Math.abs(best.minutes - mark) ? r : best));
const first = rounds[0]!;
const last = rounds.at(-1)!;
const held = last.total_ops_per_s >= first.total_ops_per_s * baseline.aims.soak_last_vs_first;
// Single rounds move ±30 % on this shared machine: the medians of the first and last three say more.
const median3 = (rs: Round[]) => [...rs].map((r) => r.total_ops_per_s).sort((a, b) => a - b)[Math.floor(rs.length / 2)]!;
const firstMedian = median3(rounds.slice(0, 3));
const lastMedian = median3(rounds.slice(-3));
const rows = baseline.soak.rounds.map((b) => {
  const r = b.minutes === 0 ? first : nearest(b.minutes);
  const x = (a: number, m: number) => `${Math.round((a / m) * 100) / 100}×`;
  return (
    `| ${b.after} (round ${r.round}, ${r.minutes} min, ${r.observations.toLocaleString('en')} obs) | ${Math.round(r.total_ops_per_s)} | ${Math.round(r.search_obs_code_date_ops_per_s)} | ` +
    `${b.total_ops_per_s} | ${b.search_obs_code_date_ops_per_s} | ${x(r.total_ops_per_s, b.total_ops_per_s)} | ${x(r.search_obs_code_date_ops_per_s, b.search_obs_code_date_ops_per_s)} | ${r.rss_mib} |`
  );
});
const md = [
  `Soak ${new Date().toISOString()}: the shared workload back to back for ${minutes} min against one Vellum (default configuration), ${rounds.length} rounds, ` +
    `${rounds.reduce((n, r) => n + r.errors, 0)} errors, peak RSS ${Math.round(peakRss / 1024)} MiB. Medplum: ${baseline.server} (bench/baseline/medplum.json).`,
  '',
  '| after | Vellum total ops/s | Vellum code+date/s | Medplum total | Medplum code+date | total ratio | code+date ratio | Vellum RSS MiB |',
  '|---|---:|---:|---:|---:|---:|---:|---:|',
  ...rows,
  '',
  `Last round ${Math.round(last.total_ops_per_s)} ops/s vs first ${Math.round(first.total_ops_per_s)}: ` +
    `${Math.round((last.total_ops_per_s / first.total_ops_per_s) * 100)} % (${held ? 'within' : 'NOT within'} ${Math.round((1 - baseline.aims.soak_last_vs_first) * 100)} %); ` +
    `median of the last three rounds ${Math.round(lastMedian)} vs of the first three ${Math.round(firstMedian)}: ${Math.round((lastMedian / firstMedian) * 100)} %.`,
].join('\n');
console.log(`\n${md}`);
fs.mkdirSync(path.join(root, 'bench/results'), { recursive: true });
if (!reportOnly) fs.writeFileSync(path.join(root, 'bench/results/soak.json'), JSON.stringify({ minutes, peak_rss_mib: Math.round(peakRss / 1024), rounds, held }, null, 2) + '\n');
fs.writeFileSync(path.join(root, 'bench/results/soak.md'), md + '\n');
process.exitCode = held && rounds.every((r) => r.errors === 0) ? 0 : 1;
