/**
 * `npm run bench`: start Vellum exactly as `npm start` does (embedded defaults, fresh data dir,
 * encryption on), run the standard FHIR workload (`bench/fhir-load.mjs`, a copy of the team's
 * shared/bench script) at concurrency 8, sample the server's RSS, and write the figures to
 * `bench/results/latest.json` and `bench/results/latest.md`.
 *
 * `--database postgres`: the same with the index, blocks and auth store on PostgreSQL (a throwaway
 * local cluster from Debian's packages, as the tests start one; or VELLUM_BENCH_DATABASE_URL), the
 * figures in `bench/results/postgres.{json,md}`.
 *
 * Other arguments are passed to fhir-load (e.g. `npm run bench -- --patients=2000`).
 */
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import { adminToken, comparisonTable, cpuMs, loadBaseline, root, rssKiB, runLoad, startServer, userCpuMs } from './lib.ts';

/**
 * Commit → mined latency: writes sent with `Prefer: anchor=wait` (8 in flight, like the workload),
 * each timed until the server answers, i.e. until its batch is mined.
 */
async function measureAnchorLatency(base: string, token: string | undefined, samples = 80): Promise<{ samples: number; p50_ms: number; p99_ms: number; max_ms: number }> {
  const latencies: number[] = [];
  let next = 0;
  const worker = async () => {
    while (next < samples) {
      next++;
      const started = performance.now();
      const res = await fetch(`${base}/Patient`, {
        method: 'POST',
        headers: { 'content-type': 'application/fhir+json', prefer: 'anchor=wait, return=minimal', ...(token ? { authorization: `Bearer ${token}` } : {}) },
        body: JSON.stringify({ resourceType: 'Patient', active: true }),
      });
      await res.arrayBuffer();
      if (res.status !== 201) throw new Error(`anchor=wait create answered ${res.status}`);
      latencies.push(performance.now() - started);
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  latencies.sort((a, b) => a - b);
  const at = (p: number) => Math.round(latencies[Math.min(latencies.length - 1, Math.ceil((p / 100) * latencies.length) - 1)]!);
  return { samples: latencies.length, p50_ms: at(50), p99_ms: at(99), max_ms: Math.round(latencies.at(-1)!) };
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const at = args.findIndex((a) => a === '--database' || a.startsWith('--database='));
  const database = at < 0 ? 'sqlite' : args[at]!.includes('=') ? args[at]!.split('=')[1]! : args[at + 1]!;
  if (at >= 0) args.splice(at, args[at]!.includes('=') ? 1 : 2);
  if (database !== 'sqlite' && database !== 'postgres') throw new Error('--database is sqlite or postgres');
  const n = args.findIndex((a) => a === '--nodes' || a.startsWith('--nodes='));
  const nodes = n < 0 ? 1 : Number(args[n]!.includes('=') ? args[n]!.split('=')[1] : args[n + 1]);
  if (n >= 0) args.splice(n, args[n]!.includes('=') ? 1 : 2);
  if (!Number.isInteger(nodes) || nodes < 1 || (nodes > 1 && database !== 'postgres')) throw new Error('--nodes (1 to 8) needs --database postgres');
  const name = database === 'postgres' ? (nodes > 1 ? `postgres-${nodes}-nodes` : 'postgres') : 'latest';
  const server = database === 'postgres' ? await startStack(nodes) : await startServer().then((s) => ({ ...s, pids: [s.child.pid!] }));
  const { origin, startupMs } = server;
  const pids: number[] = server.pids;
  const rss = () => pids.reduce((sum, pid) => sum + rssKiB(pid), 0);
  // Resident memory once ready and settled (2 s), before the workload's first request (aim: bench/baseline/medplum.json).
  await new Promise((resolve) => setTimeout(resolve, 2000));
  const idleRss = rss();
  let peakRss = 0;
  const sampler = setInterval(() => (peakRss = Math.max(peakRss, rss())), 200);
  const vellumCpu = () => pids.reduce((sum, pid) => sum + cpuMs(pid), 0);
  try {
    const cpuBefore = { vellum: vellumCpu(), postgres: database === 'postgres' ? userCpuMs('postgres') : 0 };
    const { code, summary } = await runLoad(`${origin}/fhir`, args, true, server.token);
    const ops = (summary.phases as { ops: number }[]).reduce((n, p) => n + p.ops, 0);
    const cpu = {
      vellum_ms_per_op: Number(((vellumCpu() - cpuBefore.vellum) / ops).toFixed(2)),
      ...(database === 'postgres' ? { postgres_ms_per_op: Number(((userCpuMs('postgres') - cpuBefore.postgres) / ops).toFixed(2)) } : {}),
    };
    console.log(`server CPU per operation: Vellum ${cpu.vellum_ms_per_op} ms${'postgres_ms_per_op' in cpu ? `, PostgreSQL ${cpu.postgres_ms_per_op} ms` : ''}`);
    const anchorLatency = await measureAnchorLatency(`${origin}/fhir`, server.token);
    console.log(
      `anchor latency (commit → mined, Prefer: anchor=wait, ${anchorLatency.samples} writes, 1 s window): ` +
        `p50 ${anchorLatency.p50_ms} ms, p99 ${anchorLatency.p99_ms} ms, max ${anchorLatency.max_ms} ms`,
    );
    const result = {
      ...summary,
      database,
      anchor_latency: anchorLatency,
      cpu,
      nodes,
      server: { startup_ms: startupMs, idle_rss_mib: Math.round(idleRss / 1024), peak_rss_mib: Math.round(peakRss / 1024), rss_end_mib: Math.round(rss() / 1024) },
    };
    const baseline = loadBaseline();
    const comparison = comparisonTable(summary, baseline);
    fs.mkdirSync(path.join(root, 'bench/results'), { recursive: true });
    fs.writeFileSync(path.join(root, `bench/results/${name}.json`), JSON.stringify(result, null, 2) + '\n');
    const rows = summary.phases.map((p) => `| ${p.phase} | ${p.ops} | ${p.ops_per_s} | ${p.p50_ms} | ${p.p95_ms} | ${p.p99_ms} | ${p.errors} |`);
    const s = summary as any;
    const md = [
      `Run ${s.started_at} on ${s.machine.cpus} cores, Node ${s.machine.node}, concurrency ${s.settings.concurrency}, ${s.settings.patients} patients, ` +
        `${database === 'postgres' ? `${nodes === 1 ? 'one node' : `${nodes} nodes behind the stack's balancer`} on PostgreSQL and \`hardhat node\` (\`npm run stack\`, same machine)` : 'embedded SQLite'}; server peak RSS ${result.server.peak_rss_mib} MiB${nodes > 1 ? ' (all nodes)' : ''}.`,
      '',
      '| phase | ops | ops/s | p50 ms | p95 ms | p99 ms | errors |',
      '|---|---:|---:|---:|---:|---:|---:|',
      ...rows,
      '',
      `Server CPU per operation of the workload: Vellum ${cpu.vellum_ms_per_op} ms${'postgres_ms_per_op' in cpu ? `, PostgreSQL ${cpu.postgres_ms_per_op} ms (every process of the \`postgres\` user)` : ''}.`,
      '',
      `Anchor latency (commit → batch mined, \`Prefer: anchor=wait\`, ${anchorLatency.samples} writes at 8 in flight, 1 s batch window): p50 ${anchorLatency.p50_ms} ms, p99 ${anchorLatency.p99_ms} ms, max ${anchorLatency.max_ms} ms.`,
      '',
      `Against ${baseline.server} (bench/baseline/medplum.json; ${baseline.measured}):`,
      '',
      ...comparison.rows,
      '',
      `Resident memory: ${result.server.idle_rss_mib} MiB idle before the first request (aim ≤ ${baseline.aims.rss_idle_mib}), ` +
        `${result.server.peak_rss_mib} MiB at most under the workload (aim ≤ ${baseline.aims.rss_under_load_mib}; Medplum ${baseline.first_round.rss_mib}).`,
    ].join('\n');
    console.log(`\n${comparison.rows.join('\n')}`);
    fs.writeFileSync(path.join(root, `bench/results/${name}.md`), md + '\n');
    console.log(`\nserver: startup ${startupMs} ms, idle RSS ${result.server.idle_rss_mib} MiB, peak RSS ${result.server.peak_rss_mib} MiB; figures written to bench/results/${name}.{json,md}`);
    process.exitCode = code;
  } finally {
    clearInterval(sampler);
    await server.stop();
  }
}

/**
 * The production topology (`npm run stack --no-ipfs --nodes n`: PostgreSQL, `hardhat node`, n
 * nodes and the balancer) in a temporary dir; one node is measured directly, several through the
 * balancer.
 */
async function startStack(nodes: number): Promise<{ origin: string; pids: number[]; startupMs: number; token: string; stop(): Promise<void> }> {
  const dir = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-bench-stack-')), 'stack');
  fs.chmodSync(path.dirname(dir), 0o755);
  const stack = (extra: string[]) => spawnSync(process.execPath, ['--import', 'tsx', 'scripts/stack.ts', '--dir', dir, ...extra], { cwd: root, encoding: 'utf8' });
  const started = Date.now();
  let result = stack(['--no-ipfs', '--nodes', String(nodes), '--port', String(20_000 + Math.floor(Math.random() * 30_000))]);
  if (result.status !== 0) result = stack(['--no-ipfs', '--nodes', String(nodes), '--port', String(20_000 + Math.floor(Math.random() * 30_000))]);
  if (result.status !== 0) throw new Error(`npm run stack failed:\n${result.stdout}${result.stderr}`);
  const state = JSON.parse(fs.readFileSync(path.join(dir, 'stack.json'), 'utf8')) as { pids: Record<string, number>; urls: Record<string, string> };
  const origin = nodes === 1 ? state.urls.node1! : state.urls.fhir!.replace(/\/fhir$/, '');
  return {
    origin,
    pids: Object.entries(state.pids).filter(([k]) => k.startsWith('node')).map(([, pid]) => pid),
    startupMs: Date.now() - started,
    token: await adminToken(dir),
    async stop() {
      stack(['--stop']);
      fs.rmSync(path.dirname(dir), { recursive: true, force: true });
    },
  };
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
