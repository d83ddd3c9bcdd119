/**
 * What a layer costs: runs the standard workload (`bench/fhir-load.mjs`, 8 clients) against
 * Vellum with the layer off and on, in alternating rounds so that machine noise hits both alike,
 * and compares the medians.
 *
 * - `npm run bench:anchoring`: anchoring off (`VELLUM_CHAIN=off`: the foundation's write path) vs
 *   on (the embedded chain, the default) → `bench/results/anchoring-overhead.{json,md}`;
 * - `npm run bench:auth`: SMART authorization + audit trail off (`VELLUM_AUTH=off VELLUM_AUDIT=off`)
 *   vs on (the default: every request carries a token, every access writes an AuditEvent) →
 *   `bench/results/auth-overhead.{json,md}`; `-- --feature=auth-wal` compares with the audit
 *   records' durability relaxed to the WAL (`VELLUM_AUDIT_DURABILITY=wal`).
 *
 * `npm run bench:anchoring -- --rounds=5 --patients=500`
 */
import fs from 'node:fs';
import path from 'node:path';
import { root, runLoad, startServer } from './lib.ts';

const PHASES = ['create_patient', 'create_observation', 'read_patient', 'search_obs_subject', 'search_obs_code_date', 'update_patient', 'history_patient'];

const FEATURES = {
  anchoring: {
    file: 'anchoring-overhead',
    label: ['anchoring off', 'anchoring on (embedded chain)'],
    off: { VELLUM_CHAIN: 'off', VELLUM_AUTH: 'off', VELLUM_AUDIT: 'off' },
    on: { VELLUM_CHAIN: 'embedded', VELLUM_AUTH: 'off', VELLUM_AUDIT: 'off' },
  },
  auth: {
    file: 'auth-overhead',
    label: ['authorization + audit off', 'authorization + audit on'],
    off: { VELLUM_AUTH: 'off', VELLUM_AUDIT: 'off' },
    on: {},
  },
  'auth-wal': {
    file: 'auth-wal-overhead',
    label: ['authorization + audit off', 'authorization + audit on, VELLUM_AUDIT_DURABILITY=wal'],
    off: { VELLUM_AUTH: 'off', VELLUM_AUDIT: 'off' },
    on: { VELLUM_AUDIT_DURABILITY: 'wal' },
  },
} as const;

function option(name: string, fallback: number): number {
  const arg = process.argv.find((a) => a.startsWith(`--${name}=`));
  const value = arg ? Number(arg.slice(name.length + 3)) : fallback;
  if (!Number.isSafeInteger(value) || value < 1) throw new Error(`--${name} must be a positive integer`);
  return value;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

async function main(): Promise<void> {
  const rounds = option('rounds', 3);
  const patients = option('patients', 300);
  const featureName = (process.argv.find((a) => a.startsWith('--feature='))?.slice('--feature='.length) ?? 'anchoring') as keyof typeof FEATURES;
  const feature = FEATURES[featureName];
  if (!feature) throw new Error(`--feature must be one of ${Object.keys(FEATURES).join(', ')}`);
  const modes = { off: feature.off, embedded: feature.on } as Record<'off' | 'embedded', Record<string, string>>;
  const samples: Record<string, Record<string, number[]>> = { off: {}, embedded: {} };
  for (let round = 0; round < rounds; round++) {
    // Alternate which mode goes first, so a slow spell does not always hit the same one.
    const order = round % 2 === 0 ? (['off', 'embedded'] as const) : (['embedded', 'off'] as const);
    for (const mode of order) {
      const server = await startServer(modes[mode]);
      try {
        const { code, summary } = await runLoad(`${server.origin}/fhir`, [`--patients=${patients}`], false, server.token);
        if (code !== 0) throw new Error(`workload failed (${featureName} ${mode})`);
        for (const p of summary.phases) if (PHASES.includes(p.phase)) (samples[mode]![p.phase] ??= []).push(p.ops_per_s);
        console.log(`round ${round + 1} ${mode}: ${PHASES.map((ph) => `${ph} ${samples[mode]![ph]!.at(-1)}/s`).join(', ')}`);
      } finally {
        await server.stop();
      }
    }
  }
  const rows = PHASES.map((phase) => {
    const off = median(samples.off![phase]!);
    const on = median(samples.embedded![phase]!);
    return { phase, off_ops_per_s: Math.round(off), anchored_ops_per_s: Math.round(on), change_pct: Math.round(((on - off) / off) * 1000) / 10 };
  });
  const result = { feature: featureName, rounds, patients, concurrency: 8, phases: rows, samples, at: new Date().toISOString() };
  fs.mkdirSync(path.join(root, 'bench/results'), { recursive: true });
  fs.writeFileSync(path.join(root, `bench/results/${feature.file}.json`), JSON.stringify(result, null, 2) + '\n');
  const md = [
    `Median of ${rounds} alternating rounds, ${patients} patients, 8 clients (${result.at}).`,
    '',
    `| phase | ${feature.label[0]}, ops/s | ${feature.label[1]}, ops/s | change |`,
    '|---|---:|---:|---:|',
    ...rows.map((r) => `| ${r.phase} | ${r.off_ops_per_s} | ${r.anchored_ops_per_s} | ${r.change_pct > 0 ? '+' : ''}${r.change_pct} % |`),
  ].join('\n');
  fs.writeFileSync(path.join(root, `bench/results/${feature.file}.md`), md + '\n');
  console.log(`\n${md}\n\nwritten to bench/results/${feature.file}.{json,md}`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
