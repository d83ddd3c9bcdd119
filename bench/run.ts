/**
 * `npm run bench`: start Vellum exactly as `npm start` does (embedded defaults, fresh data dir,
 * encryption on), run the standard FHIR workload (`bench/fhir-load.mjs`, a copy of the team's
 * shared/bench script) at concurrency 8, sample the server's RSS, and write the figures to
 * `bench/results/latest.json` and `bench/results/latest.md`.
 *
 * Extra arguments are passed to fhir-load (e.g. `npm run bench -- --patients=2000`).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });
}

function rssKiB(pid: number): number {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  } catch {
    return 0;
  }
}

async function waitReady(base: string, deadline: number): Promise<void> {
  while (Date.now() < deadline) {
    try {
      const res = await fetch(`${base}/ready`);
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('Vellum did not become ready in time');
}

/**
 * Commit → mined latency: writes sent with `Prefer: anchor=wait` (8 in flight, like the workload),
 * each timed until the server answers, i.e. until its batch is mined.
 */
async function measureAnchorLatency(base: string, samples = 80): Promise<{ samples: number; p50_ms: number; p99_ms: number; max_ms: number }> {
  const latencies: number[] = [];
  let next = 0;
  const worker = async () => {
    while (next < samples) {
      next++;
      const started = performance.now();
      const res = await fetch(`${base}/Patient`, {
        method: 'POST',
        headers: { 'content-type': 'application/fhir+json', prefer: 'anchor=wait, return=minimal' },
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
  const port = await freePort();
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-bench-'));
  const origin = `http://127.0.0.1:${port}`;
  const started = Date.now();
  const server = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: root,
    env: { ...process.env, PORT: String(port), HOST: '127.0.0.1', VELLUM_DATA_DIR: dataDir, VELLUM_LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  let peakRss = 0;
  const sampler = setInterval(() => (peakRss = Math.max(peakRss, rssKiB(server.pid!))), 200);
  try {
    await waitReady(origin, Date.now() + 60_000);
    const startupMs = Date.now() - started;
    const load = spawn(process.execPath, [path.join(root, 'bench/fhir-load.mjs'), `--base-url=${origin}/fhir`, '--concurrency=8', ...process.argv.slice(2)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    load.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      process.stdout.write(chunk);
    });
    const code: number = await new Promise((resolve) => load.on('close', (c) => resolve(c ?? 1)));
    const summary = JSON.parse(out.trim().split('\n').at(-1)!);
    const anchorLatency = await measureAnchorLatency(`${origin}/fhir`);
    console.log(
      `anchor latency (commit → mined, Prefer: anchor=wait, ${anchorLatency.samples} writes, 1 s window): ` +
        `p50 ${anchorLatency.p50_ms} ms, p99 ${anchorLatency.p99_ms} ms, max ${anchorLatency.max_ms} ms`,
    );
    const result = { ...summary, anchor_latency: anchorLatency, server: { startup_ms: startupMs, peak_rss_mib: Math.round(peakRss / 1024), rss_end_mib: Math.round(rssKiB(server.pid!) / 1024) } };
    fs.mkdirSync(path.join(root, 'bench/results'), { recursive: true });
    fs.writeFileSync(path.join(root, 'bench/results/latest.json'), JSON.stringify(result, null, 2) + '\n');
    const rows = summary.phases.map(
      (p: { phase: string; ops: number; ops_per_s: number; p50_ms: number; p95_ms: number; p99_ms: number; errors: number }) =>
        `| ${p.phase} | ${p.ops} | ${p.ops_per_s} | ${p.p50_ms} | ${p.p95_ms} | ${p.p99_ms} | ${p.errors} |`,
    );
    const md = [
      `Run ${summary.started_at} on ${summary.machine.cpus} cores, Node ${summary.machine.node}, concurrency ${summary.settings.concurrency}, ${summary.settings.patients} patients; server peak RSS ${result.server.peak_rss_mib} MiB.`,
      '',
      '| phase | ops | ops/s | p50 ms | p95 ms | p99 ms | errors |',
      '|---|---:|---:|---:|---:|---:|---:|',
      ...rows,
      '',
      `Anchor latency (commit → batch mined, \`Prefer: anchor=wait\`, ${anchorLatency.samples} writes at 8 in flight, 1 s batch window): p50 ${anchorLatency.p50_ms} ms, p99 ${anchorLatency.p99_ms} ms, max ${anchorLatency.max_ms} ms.`,
    ].join('\n');
    fs.writeFileSync(path.join(root, 'bench/results/latest.md'), md + '\n');
    console.log(`\nserver: startup ${startupMs} ms, peak RSS ${result.server.peak_rss_mib} MiB; figures written to bench/results/latest.{json,md}`);
    process.exitCode = code;
  } finally {
    clearInterval(sampler);
    server.kill('SIGTERM');
    await new Promise((r) => server.on('close', r));
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
