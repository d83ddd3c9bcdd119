/**
 * What one read costs the server, with a layer off and on: reads `Patient/{id}` with 8 clients
 * for a fixed time and reports throughput and the server's CPU per read — the whole process
 * (request thread, audit converter, libuv, GC), and the request thread alone — including the
 * CPU spent afterwards converting the audit records those reads queued. CPU per read is far less
 * sensitive to a shared machine's noise than throughput.
 *
 * `node --import tsx bench/read-cost.ts [--seconds=5] [--rounds=3] [--variants=off,auth,audit,both]
 * [--prof-dir=/tmp/prof] [--threads]` (`--prof-dir`: a `--cpu-prof` profile per thread of each
 * server; `--threads`: CPU per read of each of the server's threads). Other variants:
 * `off-nochain`, `audit-nochain` (no chain: what anchoring the AuditEvents adds), `audit-wal`.
 */
import fs from 'node:fs';
import { performance } from 'node:perf_hooks';
import { cpuMs, startServer } from './lib.ts';

const arg = (name: string, fallback: string) => process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3) ?? fallback;
const seconds = Number(arg('seconds', '5'));
const rounds = Number(arg('rounds', '3'));
const VARIANTS: Record<string, Record<string, string>> = {
  off: { VELLUM_AUTH: 'off', VELLUM_AUDIT: 'off' },
  auth: { VELLUM_AUDIT: 'off' },
  audit: { VELLUM_AUTH: 'off' },
  both: {},
  // Without the chain: no anchor leaves, no batcher (what anchoring the AuditEvents costs).
  'off-nochain': { VELLUM_AUTH: 'off', VELLUM_AUDIT: 'off', VELLUM_CHAIN: 'off' },
  'audit-nochain': { VELLUM_AUTH: 'off', VELLUM_CHAIN: 'off' },
  // Responses wait for the audit record's WAL commit, not its fsync.
  'audit-wal': { VELLUM_AUTH: 'off', VELLUM_AUDIT_DURABILITY: 'wal' },
};
const names = arg('variants', 'off,auth,audit,both').split(',');
const results: Record<string, { rate: number; cpu: number; main: number; threads?: Record<string, number> }[]> = {};
for (let round = 0; round < rounds; round++) {
  const order = names.map((_, i) => names[(i + round) % names.length]!);
  for (const name of order) {
    const profDir = arg('prof-dir', '');
    const server = await startServer({ ...VARIANTS[name]!, ...(profDir ? { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${profDir}/${name}-${round}` } : {}) });
    try {
      const headers: Record<string, string> = { 'content-type': 'application/fhir+json', ...(server.token ? { authorization: `Bearer ${server.token}` } : {}) };
      const base = `${server.origin}/fhir`;
      const ids: string[] = [];
      for (let i = 0; i < 50; i++) {
        const res = await fetch(`${base}/Patient`, { method: 'POST', headers, body: JSON.stringify({ resourceType: 'Patient', name: [{ family: `Cost${i}` }] }) });
        ids.push(((await res.json()) as { id: string }).id);
      }
      const pid = server.child.pid!;
      const load = async (ms: number) => {
        let ops = 0;
        const end = performance.now() + ms;
        await Promise.all(
          Array.from({ length: 8 }, async (_, w) => {
            for (let i = w; performance.now() < end; i += 8) {
              const res = await fetch(`${base}/Patient/${ids[i % ids.length]}`, { headers });
              await res.arrayBuffer();
              if (res.status !== 200) throw new Error(`read answered ${res.status}`);
              ops++;
            }
          }),
        );
        return ops;
      };
      await load(1000); // warm up
      const settle = async () => {
        if (['both', 'audit', 'audit-nochain', 'audit-wal'].includes(name)) await (await fetch(`${base}/AuditEvent?_count=1&_summary=count`, { headers })).arrayBuffer();
      };
      await settle();
      const threads = () => new Map(fs.readdirSync(`/proc/${pid}/task`).map((tid) => [tid, `${fs.readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim()}`] as const));
      const perThread0 = new Map([...threads()].map(([tid]) => [tid, cpuMs(pid, Number(tid))]));
      const cpu0 = cpuMs(pid);
      const main0 = cpuMs(pid, pid);
      const t0 = performance.now();
      const ops = await load(seconds * 1000);
      const elapsed = (performance.now() - t0) / 1000;
      await settle();
      // CPU per read by kind of thread: MainThread (requests), WorkerThread (the audit converter),
      // V8Worker (garbage collection, compilation), libuv-worker (fsyncs, file system).
      let byKind: Record<string, number> | undefined;
      if (process.argv.includes('--threads')) {
        byKind = {};
        for (const [tid, comm] of threads()) {
          const us = ((cpuMs(pid, Number(tid)) - (perThread0.get(tid) ?? 0)) * 1000) / ops;
          byKind[comm] = (byKind[comm] ?? 0) + us;
        }
        console.log(Object.entries(byKind).filter(([, us]) => us >= 1).map(([kind, us]) => `${kind}: ${us.toFixed(0)} µs`).join(', '));
      }
      const cpu = ((cpuMs(pid) - cpu0) * 1000) / ops;
      const main = ((cpuMs(pid, pid) - main0) * 1000) / ops;
      (results[name] ??= []).push({ rate: ops / elapsed, cpu, main, ...(byKind ? { threads: byKind } : {}) });
      console.log(`round ${round + 1} ${name}: ${(ops / elapsed).toFixed(0)} reads/s, ${cpu.toFixed(0)} µs CPU per read (request thread ${main.toFixed(0)} µs)`);
    } finally {
      await server.stop();
    }
  }
}
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const KINDS = ['WorkerThread', 'V8Worker', 'libuv-worker'];
const withThreads = process.argv.includes('--threads');
const lines = [
  `Median of ${rounds} alternating rounds of ${seconds} s, 8 clients reading Patient/{id} (${new Date().toISOString()}).`,
  '',
  `| variant | reads/s | CPU µs per read (all threads) | request thread µs |${withThreads ? ' audit converter µs | V8 GC/compiler µs | libuv (fsync) µs |' : ''}`,
  `|---|---:|---:|---:|${withThreads ? '---:|---:|---:|' : ''}`,
];
for (const name of names) {
  const r = results[name]!;
  const kinds = withThreads ? KINDS.map((kind) => median(r.map((x) => x.threads?.[kind] ?? 0)).toFixed(0)) : [];
  lines.push(
    `| ${name} | ${median(r.map((x) => x.rate)).toFixed(0)} | ${median(r.map((x) => x.cpu)).toFixed(0)} | ${median(r.map((x) => x.main)).toFixed(0)} |${kinds.map((k) => ` ${k} |`).join('')}`,
  );
}
console.log(`\n${lines.join('\n')}`);
const out = new URL('./results/', import.meta.url);
fs.mkdirSync(out, { recursive: true });
fs.writeFileSync(new URL('read-cost.md', out), `${lines.join('\n')}\n`);
fs.writeFileSync(new URL('read-cost.json', out), `${JSON.stringify({ seconds, rounds, variants: names, results }, null, 2)}\n`);
console.log('written to bench/results/read-cost.{json,md}');
