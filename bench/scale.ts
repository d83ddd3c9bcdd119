/**
 * `npm run bench:scale`: how the cost grows. The standard workload (`bench/fhir-load.mjs`) on a
 * fresh server per run, at 1×, 4× and 16× the data (500, 2,000 and 8,000 patients, 8 clients) and
 * at 1, 8 and 32 clients (500 patients), each in Vellum's default configuration ("on") and with
 * the layers off ("off": VELLUM_AUTH=off, VELLUM_AUDIT=off, VELLUM_CHAIN=off — encryption and
 * validation stay). Prints and writes `bench/results/scale.{json,md}`: ops/s per phase and total,
 * p99 of each phase, and the server's CPU (all threads) per operation.
 *
 * `node --import tsx bench/scale.ts [--data=1,4,16] [--clients=1,8,32]`
 */
import fs from 'node:fs';
import path from 'node:path';
import { cpuMs, root, rssKiB, runLoad, startServer, type LoadSummary } from './lib.ts';

const arg = (name: string, fallback: string) => process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3) ?? fallback;
const data = arg('data', '1,4,16').split(',').map(Number);
const clients = arg('clients', '1,8,32').split(',').map(Number);
const BASE_PATIENTS = 500;
const CONFIGS: Record<string, Record<string, string>> = {
  on: {},
  off: { VELLUM_AUTH: 'off', VELLUM_AUDIT: 'off', VELLUM_CHAIN: 'off' },
};

interface Run {
  config: string;
  patients: number;
  clients: number;
  total_ops_per_s: number;
  phases: Record<string, { ops_per_s: number; p99_ms: number }>;
  peak_rss_mib: number;
  /** Server CPU (all threads) per operation of the workload, µs. */
  cpu_us_per_op: number;
}

async function run(config: string, patients: number, concurrency: number): Promise<Run> {
  const server = await startServer(CONFIGS[config]!);
  let peak = 0;
  const sampler = setInterval(() => (peak = Math.max(peak, rssKiB(server.child.pid!))), 500);
  try {
    // fhir-load's own --concurrency wins over the one runLoad passes (flags are read in order).
    const cpuBefore = cpuMs(server.child.pid!);
    const { summary } = await runLoad(`${server.origin}/fhir`, [`--patients=${patients}`, `--concurrency=${concurrency}`, '--max-seconds=1800'], false, server.token);
    const r: Run = {
      config,
      patients,
      clients: concurrency,
      total_ops_per_s: (summary as LoadSummary & { total: { ops_per_s: number } }).total.ops_per_s,
      phases: Object.fromEntries(summary.phases.map((p) => [p.phase, { ops_per_s: p.ops_per_s, p99_ms: p.p99_ms }])),
      peak_rss_mib: Math.round(peak / 1024),
      cpu_us_per_op: Math.round(((cpuMs(server.child.pid!) - cpuBefore) * 1000) / summary.phases.reduce((n, p) => n + p.ops, 0)),
    };
    console.log(`${config}: ${patients} patients, ${concurrency} clients: total ${r.total_ops_per_s} ops/s, ${r.cpu_us_per_op} µs server CPU per op, peak RSS ${r.peak_rss_mib} MiB`);
    return r;
  } finally {
    clearInterval(sampler);
    await server.stop();
  }
}

const runs: Run[] = [];
const plan: [number, number][] = [...data.map((d): [number, number] => [d * BASE_PATIENTS, 8]), ...clients.filter((c) => c !== 8).map((c): [number, number] => [BASE_PATIENTS, c])];
for (const [patients, concurrency] of plan) {
  for (const config of Object.keys(CONFIGS)) runs.push(await run(config, patients, concurrency));
}

const phases = Object.keys(runs[0]!.phases);
const table = (rows: Run[], label: (r: Run) => string) => [
  `| ${['run', 'total', 'CPU µs/op', ...phases].join(' | ')} |`,
  `|---|${['total', 'cpu', ...phases].map(() => '---:').join('|')}|`,
  ...rows.map(
    (r) => `| ${label(r)} | ${Math.round(r.total_ops_per_s)} | ${r.cpu_us_per_op} | ${phases.map((p) => `${Math.round(r.phases[p]!.ops_per_s)} (${r.phases[p]!.p99_ms})`).join(' | ')} |`,
  ),
];
const md = [
  `Scale ${new Date().toISOString()}: ops/s (p99 ms) per phase; "on" = default configuration, "off" = authorization, audit trail and anchoring off.`,
  '',
  'By data (8 clients):',
  '',
  ...table(runs.filter((r) => r.clients === 8), (r) => `${r.config}, ${r.patients.toLocaleString('en')} patients (${(r.patients / BASE_PATIENTS)}×)`),
  '',
  `By clients (${BASE_PATIENTS} patients):`,
  '',
  ...table(runs.filter((r) => r.patients === BASE_PATIENTS).sort((a, b) => a.clients - b.clients || a.config.localeCompare(b.config)), (r) => `${r.config}, ${r.clients} clients`),
].join('\n');
console.log(`\n${md}`);
fs.mkdirSync(path.join(root, 'bench/results'), { recursive: true });
fs.writeFileSync(path.join(root, 'bench/results/scale.json'), JSON.stringify(runs, null, 2) + '\n');
fs.writeFileSync(path.join(root, 'bench/results/scale.md'), md + '\n');
