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
 *   records' durability relaxed to the WAL (`VELLUM_AUDIT_DURABILITY=wal`); `--feature=auth-split`
 *   splits the cost: both off, authorization only, the audit trail only, both on
 *   → `bench/results/auth-split-overhead.{json,md}`.
 *
 * `npm run bench:anchoring -- --rounds=5 --patients=500`
 */
import fs from 'node:fs';
import path from 'node:path';
import { root, runLoad, startServer } from './lib.ts';

const PHASES = ['create_patient', 'create_observation', 'read_patient', 'search_obs_subject', 'search_obs_code_date', 'update_patient', 'history_patient'];

interface Feature {
  file: string;
  /** Variant name → its label and environment; the first is the baseline the others are compared with. */
  variants: Record<string, { label: string; env: Record<string, string> }>;
}

const AUTH_OFF = { VELLUM_AUTH: 'off', VELLUM_AUDIT: 'off' };

const FEATURES: Record<string, Feature> = {
  anchoring: {
    file: 'anchoring-overhead',
    variants: {
      off: { label: 'anchoring off', env: { VELLUM_CHAIN: 'off', ...AUTH_OFF } },
      embedded: { label: 'anchoring on (embedded chain)', env: { VELLUM_CHAIN: 'embedded', ...AUTH_OFF } },
    },
  },
  auth: {
    file: 'auth-overhead',
    variants: {
      off: { label: 'authorization + audit off', env: AUTH_OFF },
      embedded: { label: 'authorization + audit on', env: {} },
    },
  },
  'auth-wal': {
    file: 'auth-wal-overhead',
    variants: {
      off: { label: 'authorization + audit off', env: AUTH_OFF },
      embedded: { label: 'authorization + audit on, VELLUM_AUDIT_DURABILITY=wal', env: { VELLUM_AUDIT_DURABILITY: 'wal' } },
    },
  },
  // Where the layer's cost goes: authorization alone, the audit trail alone, both.
  'auth-split': {
    file: 'auth-split-overhead',
    variants: {
      off: { label: 'both off', env: AUTH_OFF },
      auth: { label: 'authorization only', env: { VELLUM_AUDIT: 'off' } },
      audit: { label: 'audit only', env: { VELLUM_AUTH: 'off' } },
      both: { label: 'both on', env: {} },
    },
  },
};

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
  const featureName = process.argv.find((a) => a.startsWith('--feature='))?.slice('--feature='.length) ?? 'anchoring';
  const feature = FEATURES[featureName];
  if (!feature) throw new Error(`--feature must be one of ${Object.keys(FEATURES).join(', ')}`);
  const names = Object.keys(feature.variants);
  const samples: Record<string, Record<string, number[]>> = Object.fromEntries(names.map((n) => [n, {}]));
  for (let round = 0; round < rounds; round++) {
    // Rotate which variant goes first, so a slow spell does not always hit the same one.
    const order = names.map((_, i) => names[(i + round) % names.length]!);
    if (names.length === 2 && round % 2 === 1) order.reverse();
    for (const mode of order) {
      const server = await startServer(feature.variants[mode]!.env);
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
  const [base, ...others] = names as [string, ...string[]];
  const pct = (on: number, off: number) => Math.round(((on - off) / off) * 1000) / 10;
  const sign = (x: number) => `${x > 0 ? '+' : ''}${x} %`;
  const rows = PHASES.map((phase) => {
    const off = median(samples[base]![phase]!);
    const row: Record<string, string | number> = { phase, [`${base}_ops_per_s`]: Math.round(off) };
    for (const name of others) {
      const on = median(samples[name]![phase]!);
      row[`${name}_ops_per_s`] = Math.round(on);
      row[`${name}_change_pct`] = pct(on, off);
    }
    // The two-variant features keep their original field names.
    if (others.length === 1) {
      Object.assign(row, { off_ops_per_s: Math.round(off), anchored_ops_per_s: row[`${others[0]}_ops_per_s`], change_pct: row[`${others[0]}_change_pct`] });
    }
    return row;
  });
  const result = { feature: featureName, rounds, patients, concurrency: 8, variants: names, phases: rows, samples, at: new Date().toISOString() };
  fs.mkdirSync(path.join(root, 'bench/results'), { recursive: true });
  fs.writeFileSync(path.join(root, `bench/results/${feature.file}.json`), JSON.stringify(result, null, 2) + '\n');
  const label = (n: string) => feature.variants[n]!.label;
  const md = [
    `Median of ${rounds} alternating rounds, ${patients} patients, 8 clients (${result.at}).`,
    '',
    `| phase | ${label(base)}, ops/s | ${others.map((n) => `${label(n)}, ops/s | change`).join(' | ')} |`,
    `|---|---:|${others.map(() => '---:|---:').join('|')}|`,
    ...rows.map((r) => `| ${r.phase} | ${r[`${base}_ops_per_s`]} | ${others.map((n) => `${r[`${n}_ops_per_s`]} | ${sign(r[`${n}_change_pct`] as number)}`).join(' | ')} |`),
  ].join('\n');
  fs.writeFileSync(path.join(root, `bench/results/${feature.file}.md`), md + '\n');
  console.log(`\n${md}\n\nwritten to bench/results/${feature.file}.{json,md}`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
