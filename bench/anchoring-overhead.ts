/**
 * `npm run bench:anchoring`: what anchoring costs writes. Runs the standard workload
 * (`bench/fhir-load.mjs`, 8 clients) against Vellum with anchoring off (`VELLUM_CHAIN=off`: the
 * foundation's write path) and on (the embedded chain, the default), in alternating rounds so
 * that machine noise hits both alike, and compares the median creates/s and updates/s.
 * Figures go to `bench/results/anchoring-overhead.{json,md}`.
 *
 * `npm run bench:anchoring -- --rounds=5 --patients=500`
 */
import fs from 'node:fs';
import path from 'node:path';
import { root, runLoad, startServer } from './lib.ts';

const PHASES = ['create_patient', 'create_observation', 'update_patient', 'read_patient'];

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
  const modes = { off: { VELLUM_CHAIN: 'off' }, embedded: { VELLUM_CHAIN: 'embedded' } } as const;
  const samples: Record<string, Record<string, number[]>> = { off: {}, embedded: {} };
  for (let round = 0; round < rounds; round++) {
    // Alternate which mode goes first, so a slow spell does not always hit the same one.
    const order = round % 2 === 0 ? (['off', 'embedded'] as const) : (['embedded', 'off'] as const);
    for (const mode of order) {
      const server = await startServer(modes[mode]);
      try {
        const { code, summary } = await runLoad(`${server.origin}/fhir`, [`--patients=${patients}`], false);
        if (code !== 0) throw new Error(`workload failed against VELLUM_CHAIN=${mode}`);
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
  const result = { rounds, patients, concurrency: 8, phases: rows, samples, at: new Date().toISOString() };
  fs.mkdirSync(path.join(root, 'bench/results'), { recursive: true });
  fs.writeFileSync(path.join(root, 'bench/results/anchoring-overhead.json'), JSON.stringify(result, null, 2) + '\n');
  const md = [
    `Median of ${rounds} alternating rounds, ${patients} patients, 8 clients (${result.at}).`,
    '',
    '| phase | anchoring off, ops/s | anchoring on (embedded chain), ops/s | change |',
    '|---|---:|---:|---:|',
    ...rows.map((r) => `| ${r.phase} | ${r.off_ops_per_s} | ${r.anchored_ops_per_s} | ${r.change_pct > 0 ? '+' : ''}${r.change_pct} % |`),
  ].join('\n');
  fs.writeFileSync(path.join(root, 'bench/results/anchoring-overhead.md'), md + '\n');
  console.log(`\n${md}\n\nwritten to bench/results/anchoring-overhead.{json,md}`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
