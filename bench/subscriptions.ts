/**
 * `npm run bench:subscriptions`: what subscriptions cost the write path, how soon a notification
 * follows its commit, and what 1,000 open websockets take.
 *
 * Aims (issue 15): Observation creates/s with 100 active rest-hook subscriptions (10 matching each
 * write) ≥ 0.90× without any; commit → delivered p95 ≤ 250 ms; 1,000 websockets held open, every
 * one pinged for each event of its subscription.
 *
 * Vellum runs as `npm start` runs it (bench/lib.ts `startServer`), with the README defaults: SMART
 * auth, AuditEvents, anchoring on the embedded chain, encryption always on — and
 * `VELLUM_SUBSCRIPTION_ENDPOINTS_ALLOW=127.0.0.1:<receiver>` so that the rest-hooks may reach the
 * receiver this process runs. Every request carries the bootstrap administrator's token (it owns
 * the subscriptions, and may bind their websockets). Each server is fresh (new data dir).
 *
 * 1. Write throughput, `--rounds` rounds (default 3; the order alternates) of two servers:
 *    a. no subscriptions;
 *    b. `--subscriptions` (100) rest-hook subscriptions, `payload: application/fhir+json`, to
 *       `http://127.0.0.1:<port>/hook/<id>`, in groups of `--matching` (10): group g subscribes to
 *       `Observation?code=http://loinc.org|<code g>,http://loinc.org|bench-<id>&subject=Patient/p<g>`
 *       (the second code, never written, makes each criteria its own); all of them `active` (the
 *       handshake answered) before anything is measured.
 *    On both: Patients p0… are created, then `--warmup` (200) Observations that match no
 *    subscription, then `--writes` (3000) `POST Observation` from `--clients` (8) clients over
 *    HTTP, write i for group i mod groups — each matches exactly `--matching` subscriptions in b.
 *    Creates/s = writes / (first request sent → last response). Ratio b / a (medians over rounds).
 *    Deliveries (2.) are measured on round 1's server b; the later rounds stop at the last response.
 * 2. Commit → delivered: the receiver notes when each notification (the Observation, by id) has
 *    been read; latency = that − the create's response received (negative when the notification
 *    came first), and that − the request sent (the commit lies between the two). a. Over the
 *    writes of 1b (8 clients: deliveries queue behind the writes); then, once every delivery of
 *    1b arrived (or the deadline passed), b. `--latency-writes` (300) writes
 *    from one client, one after the other, on the same server, then c. `--paced-writes` (100) from
 *    one client at `--paced-rate` (10) writes/s (below what delivery keeps up with: the latency
 *    of one notification rather than of a queue). Every expected delivery
 *    (`--matching` per write) is waited for, up to `--deadline-s` (400 s) after the last write;
 *    missing, duplicate and misdirected deliveries are counted.
 * 3. Websockets, on another fresh server: `--ws-subscriptions` (100) websocket subscriptions in
 *    groups of `--matching` as above, `--sockets` (1000) sockets opened with `ws` to the URL the
 *    CapabilityStatement names (`capabilitystatement-websocket`), `--open-concurrency` (50)
 *    handshakes at a time, each bound to one subscription (`bind <id>` → `bound <id>`, socket j
 *    to subscription j mod subscriptions). Then `--ws-events` (50) matching Observations written
 *    by one client, `--ws-rate` (10) a second (0: one after the other); each socket must get
 *    `ping <id>` once per event of its subscription (the k-th ping is the k-th event: R4 delivers
 *    in order, one event a ping). Per
 *    event: response received → the last of its pings (every socket of every matching
 *    subscription). The server's RSS (median over 1 s) before the sockets open, once they are
 *    bound, and `--hold-s` (35) after the events — past the server's 30 s ping round, which closes
 *    sockets that do not answer — when the sockets still open are counted. All are closed at the end.
 *
 * Writes bench/results/subscriptions.json and bench/results/subscriptions.md and prints them.
 * Options: --writes N, --clients N, --subscriptions N, --matching N, --warmup N,
 * --latency-writes N, --paced-writes N, --paced-rate N, --rounds N, --deadline-s S, --sockets N,
 * --ws-subscriptions N, --ws-events N, --ws-rate N, --open-concurrency N, --hold-s S,
 * --skip-writes, --skip-ws, --auth off, --audit off, --chain off (override the README defaults:
 * VELLUM_AUTH, VELLUM_AUDIT, VELLUM_CHAIN).
 * `npm run bench:subscriptions -- --writes 600 --sockets 200`
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import WebSocket from 'ws';
import { cpuMs, request, root, rssKiB, startServer, type BenchServer } from './lib.ts';

const { values: opts } = parseArgs({
  options: {
    writes: { type: 'string', default: '3000' },
    clients: { type: 'string', default: '8' },
    subscriptions: { type: 'string', default: '100' },
    matching: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '200' },
    'latency-writes': { type: 'string', default: '300' },
    'paced-writes': { type: 'string', default: '100' },
    'paced-rate': { type: 'string', default: '10' },
    rounds: { type: 'string', default: '3' },
    'deadline-s': { type: 'string', default: '400' },
    sockets: { type: 'string', default: '1000' },
    'ws-subscriptions': { type: 'string', default: '100' },
    'ws-events': { type: 'string', default: '50' },
    'ws-rate': { type: 'string', default: '10' },
    'open-concurrency': { type: 'string', default: '50' },
    'hold-s': { type: 'string', default: '35' },
    'skip-writes': { type: 'boolean', default: false },
    'skip-ws': { type: 'boolean', default: false },
    auth: { type: 'string', default: 'on' },
    audit: { type: 'string', default: 'on' },
    chain: { type: 'string', default: 'on' },
  },
});
/** The README defaults, but for what a flag turns off. */
const onOff = (flag: string | undefined, name: string): Record<string, string> => (flag === 'off' ? { [name]: 'off' } : {});
const SERVER_ENV: Record<string, string> = { ...onOff(opts.auth, 'VELLUM_AUTH'), ...onOff(opts.audit, 'VELLUM_AUDIT'), ...onOff(opts.chain, 'VELLUM_CHAIN') };

function count(name: keyof typeof opts, min = 1): number {
  const value = Number(opts[name]);
  if (!Number.isSafeInteger(value) || value < min) throw new Error(`--${name} must be an integer ≥ ${min}`);
  return value;
}
const WRITES = count('writes');
const CLIENTS = count('clients');
const SUBSCRIPTIONS = count('subscriptions');
const MATCHING = count('matching');
const WARMUP = count('warmup', 0);
const LATENCY_WRITES = count('latency-writes', 0);
const PACED_WRITES = count('paced-writes', 0);
const PACED_RATE = count('paced-rate');
const ROUNDS = count('rounds');
const DEADLINE_MS = count('deadline-s') * 1000;
const SOCKETS = count('sockets');
const WS_SUBSCRIPTIONS = count('ws-subscriptions');
const WS_EVENTS = count('ws-events');
/** Events written per second (0: one after the other, as fast as they are answered). */
const WS_RATE = count('ws-rate', 0);
const OPEN_CONCURRENCY = count('open-concurrency');
/** Seconds the sockets stay open after the events: past the server's 30 s ping round, which closes sockets that do not answer. */
const HOLD_S = count('hold-s', 0);
if (SUBSCRIPTIONS % MATCHING || WS_SUBSCRIPTIONS % MATCHING) throw new Error('--subscriptions and --ws-subscriptions must be multiples of --matching');
const AIMS = { throughput_ratio: 0.9, delivered_p95_ms: 250 };
/** The server's limit of subscriptions per owner (default 100): raised only when a run asks for more. */
const PER_OWNER_DEFAULT = 100;

const LOINC = 'http://loinc.org';
/** Vital signs and common labs: the code of each group (groups beyond ten get made-up codes). */
const CODES = ['8867-4', '8310-5', '8480-6', '8462-4', '9279-1', '2708-6', '29463-7', '8302-2', '39156-5', '2339-0'];
const codeOf = (group: number) => CODES[group] ?? `bench-code-${group}`;
const FHIR_JSON = 'application/fhir+json';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, Math.max(0, ms)));
const round1 = (n: number) => Math.round(n * 10) / 10;
const round2 = (n: number) => Math.round(n * 100) / 100;
const mib = (kib: number) => Math.round(kib / 1024);

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

interface Spread {
  n: number;
  p50_ms: number;
  p95_ms: number;
  p99_ms: number;
  min_ms: number;
  max_ms: number;
}

function spread(xs: readonly number[]): Spread {
  const s = [...xs].sort((a, b) => a - b);
  return { n: s.length, p50_ms: round1(percentile(s, 50)), p95_ms: round1(percentile(s, 95)), p99_ms: round1(percentile(s, 99)), min_ms: round1(s[0] ?? Number.NaN), max_ms: round1(s.at(-1) ?? Number.NaN) };
}

const median = (xs: readonly number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/** Run `worker(i)` for i in [0, n), `concurrency` at a time. */
async function pool(n: number, concurrency: number, worker: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(n, concurrency) }, async () => {
    while (next < n) await worker(next++);
  }));
}

// ---- the rest-hook receiver ----

/**
 * The endpoint of every rest-hook subscription: `POST /hook/<subscription id>`. An empty body is a
 * handshake; otherwise the body is the Observation, noted with the time it was read. Answers 200.
 */
class Receiver {
  readonly server: http.Server;
  port = 0;
  /** Subscriptions whose handshake came. */
  handshakes = new Set<string>();
  /** Observation id → subscription id → when the notification was read (the first, if several). */
  deliveries = new Map<string, Map<string, number>>();
  received = 0;
  duplicates = 0;
  unreadable = 0;
  /** Called at each notification (waiters). */
  #listeners = new Set<() => void>();

  constructor() {
    this.server = http.createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const at = performance.now();
        const sub = decodeURIComponent((req.url ?? '').split('/')[2] ?? '');
        const body = Buffer.concat(chunks).toString('utf8');
        if (body.length === 0) this.handshakes.add(sub);
        else {
          let id: string | undefined;
          try {
            id = (JSON.parse(body) as { id?: string }).id;
          } catch {
            id = undefined;
          }
          if (!id) this.unreadable++;
          else {
            this.received++;
            let bySub = this.deliveries.get(id);
            if (!bySub) this.deliveries.set(id, (bySub = new Map()));
            if (bySub.has(sub)) this.duplicates++;
            else bySub.set(sub, at);
          }
        }
        res.writeHead(200, { 'content-length': '0' });
        res.end();
        for (const listener of this.#listeners) listener();
      });
    });
  }

  async listen(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
  }

  reset(): void {
    this.handshakes.clear();
    this.deliveries.clear();
    this.received = 0;
    this.duplicates = 0;
    this.unreadable = 0;
  }

  /** Resolve once `done()` holds (checked at each notification and every 500 ms) or at `deadline`; whether it held. */
  async until(done: () => boolean, deadline: number): Promise<boolean> {
    if (done()) return true;
    return new Promise<boolean>((resolve) => {
      const check = () => {
        if (done() || performance.now() >= deadline) {
          this.#listeners.delete(check);
          clearInterval(timer);
          resolve(done());
        }
      };
      const timer = setInterval(check, 500);
      this.#listeners.add(check);
    });
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

// ---- requests ----

function auth(server: BenchServer): Record<string, string> {
  return server.token ? { authorization: `Bearer ${server.token}` } : {};
}

async function put(server: BenchServer, ref: string, resource: Record<string, unknown>): Promise<void> {
  const res = await request(`${server.origin}/fhir/${ref}`, { method: 'PUT', body: JSON.stringify(resource), headers: auth(server) });
  if (res.status !== 200 && res.status !== 201) throw new Error(`PUT ${ref} answered ${res.status}: ${JSON.stringify(res.json?.issue?.[0] ?? res.json)}`);
}

function observation(code: string, patient: string, i: number): string {
  return JSON.stringify({
    resourceType: 'Observation',
    status: 'final',
    category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'vital-signs' }] }],
    code: { coding: [{ system: LOINC, code }] },
    subject: { reference: `Patient/${patient}` },
    effectiveDateTime: new Date(Date.UTC(2024, 0, 1) + i * 60_000).toISOString(),
    valueQuantity: { value: 60 + (i % 40), unit: '/min', system: 'http://unitsofmeasure.org', code: '/min' },
  });
}

interface Write {
  i: number;
  group: number;
  id: string;
  sent: number;
  answered: number;
}

interface WriteRun {
  writes: Write[];
  errors: number;
  seconds: number;
  creates_per_s: number;
  request: Spread;
  /** Server CPU (all threads), in cores, while the writes ran. */
  server_cpu_cores: number;
  /** The server's main thread (requests, and the subscription dispatcher), in cores. */
  server_main_cores: number;
  /** This process's CPU (the clients and the receiver: same machine), in cores. */
  bench_cpu_cores: number;
}

/**
 * `n` `POST Observation` from `clients` clients; write i is for group `groupOf(i)` (its code,
 * Patient/p<group>), or the warm-up code and Patient/pw when `groupOf` gives -1.
 */
async function writeObservations(server: BenchServer, n: number, clients: number, groupOf: (i: number) => number, perSecond?: number): Promise<WriteRun> {
  const writes: Write[] = [];
  const headers = { accept: FHIR_JSON, 'content-type': FHIR_JSON, ...auth(server) };
  let errors = 0;
  const cpu0 = cpuMs(server.child.pid!);
  const main0 = cpuMs(server.child.pid!, server.child.pid!);
  const own0 = process.cpuUsage();
  const started = performance.now();
  await pool(n, clients, async (i) => {
    const group = groupOf(i);
    const body = group < 0 ? observation('bench-warmup', 'pw', i) : observation(codeOf(group), `p${group}`, i);
    // Paced: write i is not sent before its time.
    if (perSecond) await sleep(started + (i * 1000) / perSecond - performance.now());
    const sent = performance.now();
    try {
      const res = await fetch(`${server.origin}/fhir/Observation`, { method: 'POST', headers, body });
      const text = await res.text();
      const answered = performance.now();
      if (res.status !== 201) {
        errors++;
        if (errors <= 3) console.error(`  POST Observation answered ${res.status}: ${text.slice(0, 300)}`);
        return;
      }
      const id = /\/Observation\/([^/]+)/.exec(res.headers.get('location') ?? '')?.[1] ?? (JSON.parse(text) as { id: string }).id;
      writes.push({ i, group, id, sent, answered });
    } catch (err) {
      errors++;
      if (errors <= 3) console.error(`  POST Observation failed: ${(err as Error).message}`);
    }
  });
  const ended = performance.now();
  const cpu1 = cpuMs(server.child.pid!);
  const main1 = cpuMs(server.child.pid!, server.child.pid!);
  const own = process.cpuUsage(own0);
  const seconds = (ended - started) / 1000;
  return {
    writes,
    errors,
    seconds: round2(seconds),
    creates_per_s: Math.round(writes.length / seconds),
    request: spread(writes.map((w) => w.answered - w.sent)),
    server_cpu_cores: round2((cpu1 - cpu0) / (ended - started)),
    server_main_cores: round2((main1 - main0) / (ended - started)),
    bench_cpu_cores: round2((own.user + own.system) / 1000 / (ended - started)),
  };
}

// ---- a server with its patients and subscriptions ----

async function startVellum(receiverPort: number, subscriptions: number): Promise<BenchServer> {
  const env: Record<string, string> = { ...SERVER_ENV, VELLUM_SUBSCRIPTION_ENDPOINTS_ALLOW: `127.0.0.1:${receiverPort}` };
  if (subscriptions > PER_OWNER_DEFAULT) env.VELLUM_SUBSCRIPTION_MAX_PER_OWNER = String(subscriptions);
  const server = await startServer(env);
  const groups = Math.max(SUBSCRIPTIONS, WS_SUBSCRIPTIONS) / MATCHING;
  await pool(groups + 1, 4, (g) => put(server, `Patient/${g < groups ? `p${g}` : 'pw'}`, { resourceType: 'Patient', id: g < groups ? `p${g}` : 'pw', name: [{ family: `Bench${g}` }] }));
  return server;
}

function criteria(group: number, id: string): string {
  return `Observation?code=${LOINC}|${codeOf(group)},${LOINC}|bench-${id}&subject=Patient/p${group}`;
}

/** Create `n` subscriptions (`prefix-<s>`, subscription s in group floor(s / MATCHING)) and wait until all are active; seconds taken. */
async function subscribe(server: BenchServer, n: number, prefix: string, channel: (id: string) => Record<string, unknown>): Promise<{ ids: string[]; seconds: number }> {
  const started = performance.now();
  const ids = Array.from({ length: n }, (_, s) => `${prefix}-${s}`);
  await pool(n, 4, (s) =>
    put(server, `Subscription/${ids[s]}`, {
      resourceType: 'Subscription',
      id: ids[s],
      status: 'requested',
      reason: 'bench',
      criteria: criteria(Math.floor(s / MATCHING), ids[s]!),
      channel: channel(ids[s]!),
    }),
  );
  const waiting = new Set(ids);
  const deadline = performance.now() + 120_000;
  while (waiting.size) {
    if (performance.now() > deadline) throw new Error(`${waiting.size} subscriptions not active after 120 s (e.g. ${[...waiting][0]})`);
    await pool(waiting.size, 8, async (k) => {
      const id = [...waiting][k];
      if (!id) return;
      const res = await request(`${server.origin}/fhir/Subscription/${id}`, { headers: auth(server) });
      if (res.json?.status === 'active') waiting.delete(id);
      else if (res.json?.status === 'error' || res.json?.status === 'off') throw new Error(`Subscription/${id} is ${res.json.status}: ${res.json.error ?? ''}`);
    });
    if (waiting.size) await sleep(200);
  }
  return { ids, seconds: round1((performance.now() - started) / 1000) };
}

/** Median RSS of the server over `ms` (sampled every 100 ms), KiB. */
async function rssMedian(pid: number, ms = 1000): Promise<number> {
  const samples: number[] = [];
  for (let t = 0; t < ms; t += 100) {
    samples.push(rssKiB(pid));
    await sleep(100);
  }
  return median(samples);
}

// ---- 1 and 2: writes with and without rest-hook subscriptions ----

interface Delivery {
  /** What was measured. */
  name: string;
  writes: number;
  clients: number;
  expected: number;
  received: number;
  missing: number;
  duplicates: number;
  /** Notifications of an Observation its subscription does not match, or of an unknown one. */
  misdirected: number;
  /** Notification read − create response received, every delivery. */
  latency: Spread;
  /** Notification read − create request sent (the commit lies between the two). */
  from_sent: Spread;
  /** Per write: the last of its notifications − its response. */
  last_of_write: Spread;
  /** Last response → last notification (s). */
  drain_s: number;
  /** Notifications / (first request → last notification). */
  deliveries_per_s: number;
}

interface ThroughputRun {
  round: number;
  mode: 'none' | 'rest-hook';
  startup_ms: number;
  subscriptions: number;
  subscribe_s?: number;
  warmup: number;
  run: Omit<WriteRun, 'writes'>;
  deliveries?: Delivery[];
  rss_after_mib: number;
  loadavg_1m: number;
}

/** Wait for and measure the notifications of `writes` (each expected at the MATCHING subscriptions of its group). */
async function deliveries(name: string, receiver: Receiver, run: WriteRun, subIds: string[], clients: number): Promise<Delivery> {
  const expectedSubs = (group: number) => subIds.slice(group * MATCHING, (group + 1) * MATCHING);
  const expected = run.writes.length * MATCHING;
  const got = () => run.writes.reduce((n, w) => n + Math.min(MATCHING, receiver.deliveries.get(w.id)?.size ?? 0), 0);
  const lastAnswer = Math.max(...run.writes.map((w) => w.answered));
  const complete = await receiver.until(() => got() >= expected, lastAnswer + DEADLINE_MS);
  const latencies: number[] = [];
  const fromSent: number[] = [];
  const lasts: number[] = [];
  let received = 0;
  let misdirected = 0;
  let lastAt = lastAnswer;
  for (const w of run.writes) {
    const bySub = receiver.deliveries.get(w.id);
    if (!bySub) continue;
    const wanted = new Set(expectedSubs(w.group));
    let last = Number.NEGATIVE_INFINITY;
    for (const [sub, at] of bySub) {
      if (!wanted.has(sub)) {
        misdirected++;
        continue;
      }
      received++;
      latencies.push(at - w.answered);
      fromSent.push(at - w.sent);
      last = Math.max(last, at);
      lastAt = Math.max(lastAt, at);
    }
    if (bySub.size >= MATCHING) lasts.push(last - w.answered);
  }
  const firstSent = Math.min(...run.writes.map((w) => w.sent));
  const d: Delivery = {
    name,
    writes: run.writes.length,
    clients,
    expected,
    received,
    missing: expected - received,
    duplicates: receiver.duplicates,
    misdirected,
    latency: spread(latencies),
    from_sent: spread(fromSent),
    last_of_write: spread(lasts),
    drain_s: round1((lastAt - lastAnswer) / 1000),
    deliveries_per_s: Math.round(received / ((lastAt - firstSent) / 1000)),
  };
  console.log(
    `  ${name}: ${received}/${expected} delivered${complete ? '' : ` — ${d.missing} MISSING after the ${DEADLINE_MS / 1000} s deadline`}` +
      `${d.duplicates ? `, ${d.duplicates} duplicates` : ''}${misdirected ? `, ${misdirected} misdirected` : ''}; ` +
      `response → delivered p50 ${d.latency.p50_ms} ms, p95 ${d.latency.p95_ms} ms, p99 ${d.latency.p99_ms} ms, max ${d.latency.max_ms} ms (sent → delivered p95 ${d.from_sent.p95_ms} ms); ` +
      `drained ${d.drain_s} s after the last response (${d.deliveries_per_s} deliveries/s)`,
  );
  return d;
}

async function throughputRun(round: number, mode: 'none' | 'rest-hook', receiver: Receiver): Promise<ThroughputRun> {
  receiver.reset();
  const subs = mode === 'rest-hook' ? SUBSCRIPTIONS : 0;
  const server = await startVellum(receiver.port, subs);
  try {
    const pid = server.child.pid!;
    let subscribed: { ids: string[]; seconds: number } = { ids: [], seconds: 0 };
    if (subs) {
      subscribed = await subscribe(server, subs, 'hook', (id) => ({ type: 'rest-hook', endpoint: `http://127.0.0.1:${receiver.port}/hook/${id}`, payload: FHIR_JSON }));
      console.log(`  ${subs} rest-hook subscriptions active after ${subscribed.seconds} s (${receiver.handshakes.size} handshakes)`);
    }
    if (WARMUP) await writeObservations(server, WARMUP, CLIENTS, () => -1);
    const groups = SUBSCRIPTIONS / MATCHING;
    const run = await writeObservations(server, WRITES, CLIENTS, (i) => i % groups);
    const { writes: _w, ...figures } = run;
    console.log(
      `round ${round + 1}, ${subs ? `${subs} rest-hook subscriptions (${MATCHING} match each write)` : 'no subscriptions'}: ` +
        `${run.writes.length} creates in ${run.seconds} s = ${run.creates_per_s}/s (request p50 ${run.request.p50_ms} ms, p95 ${run.request.p95_ms} ms; ${run.errors} errors; CPU: server ${run.server_cpu_cores} cores (main thread ${run.server_main_cores}), bench ${run.bench_cpu_cores})`,
    );
    const result: ThroughputRun = {
      round: round + 1,
      mode,
      startup_ms: server.startupMs,
      subscriptions: subs,
      ...(subs ? { subscribe_s: subscribed.seconds } : {}),
      warmup: WARMUP,
      run: figures,
      rss_after_mib: 0,
      loadavg_1m: round1(os.loadavg()[0]!),
    };
    if (subs && round === 0) {
      result.deliveries = [await deliveries(`${CLIENTS} clients (the throughput run)`, receiver, run, subscribed.ids, CLIENTS)];
      if (LATENCY_WRITES) {
        receiver.reset();
        const quiet = await writeObservations(server, LATENCY_WRITES, 1, (i) => i % groups);
        console.log(`  ${quiet.writes.length} creates from 1 client: ${quiet.creates_per_s}/s (request p50 ${quiet.request.p50_ms} ms)`);
        result.deliveries.push(await deliveries('1 client, one write after the other', receiver, quiet, subscribed.ids, 1));
      }
      if (PACED_WRITES) {
        receiver.reset();
        const paced = await writeObservations(server, PACED_WRITES, 1, (i) => i % groups, PACED_RATE);
        console.log(`  ${paced.writes.length} creates from 1 client at ${PACED_RATE}/s (request p50 ${paced.request.p50_ms} ms)`);
        result.deliveries.push(await deliveries(`1 client, ${PACED_RATE} writes/s (${PACED_RATE * MATCHING} notifications/s)`, receiver, paced, subscribed.ids, 1));
      }
    }
    result.rss_after_mib = mib(rssKiB(pid));
    return result;
  } finally {
    await server.stop();
  }
}

// ---- 3: websockets ----

interface Socket {
  ws: WebSocket;
  sub: string;
  group: number;
  bound: boolean;
  pings: number[];
  /** Messages other than `bound <sub>` and `ping <sub>`. */
  other: string[];
  closed: boolean;
}

interface WebsocketRun {
  url: string;
  subscriptions: number;
  subscribe_s: number;
  sockets_requested: number;
  sockets_open: number;
  sockets_bound: number;
  open_errors: number;
  open_s: number;
  /** Sockets still open `--hold-s` after the events were counted. */
  sockets_held: number;
  events: number;
  /** Events of a subscription some socket is bound to. */
  events_watched: number;
  /** Pings per watched event (sockets of its matching subscriptions). */
  pings_per_event: number;
  pings_expected: number;
  pings_received: number;
  pings_missing: number;
  pings_extra: number;
  other_messages: number;
  /** Per event: response received → its last ping (all sockets of all matching subscriptions). */
  event_all_pinged: Spread;
  /** Every ping: response received → ping read. */
  ping: Spread;
  /** Per event: request sent → its last ping. */
  event_all_pinged_from_sent: Spread;
  rss_before_mib: number;
  rss_bound_mib: number;
  rss_after_events_mib: number;
  loadavg_1m: number;
}

async function openSocket(url: string, token: string | undefined, sub: string, group: number): Promise<Socket> {
  const ws = new WebSocket(url, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  const socket: Socket = { ws, sub, group, bound: false, pings: [], other: [], closed: false };
  ws.on('close', () => (socket.closed = true));
  const bound = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no answer to bind in 30 s')), 30_000);
    ws.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    ws.on('open', () => ws.send(`bind ${sub}`));
    ws.on('message', (data) => {
      const at = performance.now();
      const text = data.toString();
      if (text === `ping ${sub}`) socket.pings.push(at);
      else if (text === `bound ${sub}`) {
        socket.bound = true;
        clearTimeout(timer);
        resolve();
      } else {
        socket.other.push(text.slice(0, 200));
        if (!socket.bound) {
          clearTimeout(timer);
          reject(new Error(`bind answered: ${text.slice(0, 200)}`));
        }
      }
    });
  });
  try {
    await bound;
  } catch (err) {
    ws.terminate();
    throw err;
  }
  return socket;
}

async function websocketRun(receiver: Receiver): Promise<WebsocketRun> {
  const server = await startVellum(receiver.port, WS_SUBSCRIPTIONS);
  const sockets: Socket[] = [];
  try {
    const pid = server.child.pid!;
    const subscribed = await subscribe(server, WS_SUBSCRIPTIONS, 'ws', () => ({ type: 'websocket' }));
    const metadata = await request(`${server.origin}/fhir/metadata`, { headers: auth(server) });
    const url = (metadata.json?.rest?.[0]?.extension as { url: string; valueUri?: string }[] | undefined)?.find(
      (e) => e.url === 'http://hl7.org/fhir/StructureDefinition/capabilitystatement-websocket',
    )?.valueUri;
    if (!url) throw new Error('the CapabilityStatement names no websocket (rest[0].extension capabilitystatement-websocket)');
    console.log(`websockets: ${WS_SUBSCRIPTIONS} websocket subscriptions active after ${subscribed.seconds} s; ${url}`);
    const rssBefore = await rssMedian(pid);
    let openErrors = 0;
    const openStarted = performance.now();
    await pool(SOCKETS, OPEN_CONCURRENCY, async (j) => {
      const s = j % WS_SUBSCRIPTIONS;
      try {
        sockets.push(await openSocket(url, server.token, subscribed.ids[s]!, Math.floor(s / MATCHING)));
      } catch (err) {
        openErrors++;
        if (openErrors <= 3) console.error(`  socket ${j}: ${(err as Error).message}`);
      }
    });
    const openS = round1((performance.now() - openStarted) / 1000);
    const boundCount = sockets.filter((s) => s.bound).length;
    const rssBound = await rssMedian(pid);
    console.log(`  ${sockets.length} sockets open and ${boundCount} bound in ${openS} s (${openErrors} failed); server RSS ${mib(rssBefore)} → ${mib(rssBound)} MiB`);

    // Events: one client, one after the other (at WS_RATE a second); event i for group i mod groups.
    const groups = WS_SUBSCRIPTIONS / MATCHING;
    const run = await writeObservations(server, WS_EVENTS, 1, (i) => i % groups, WS_RATE || undefined);
    const byGroup: Write[][] = Array.from({ length: groups }, () => []);
    for (const w of [...run.writes].sort((a, b) => a.i - b.i)) byGroup[w.group]!.push(w);
    const expectedOf = (s: Socket) => byGroup[s.group]!.length;
    const pingsExpected = sockets.reduce((n, s) => n + expectedOf(s), 0);
    const pingsIn = () => sockets.reduce((n, s) => n + Math.min(s.pings.length, expectedOf(s)), 0);
    const lastAnswer = Math.max(...run.writes.map((w) => w.answered));
    const deadline = lastAnswer + DEADLINE_MS;
    while (pingsIn() < pingsExpected && performance.now() < deadline) await sleep(50);
    await sleep(500); // extra pings, if any, would come now
    const perEvent = new Map<Write, number>();
    const pings: number[] = [];
    let extra = 0;
    for (const s of sockets) {
      const events = byGroup[s.group]!;
      extra += Math.max(0, s.pings.length - events.length);
      s.pings.slice(0, events.length).forEach((at, k) => {
        const w = events[k]!;
        pings.push(at - w.answered);
        perEvent.set(w, Math.max(perEvent.get(w) ?? Number.NEGATIVE_INFINITY, at));
      });
    }
    // An event counts once every socket of its group has its ping (events of a group no socket is bound to, with fewer sockets than subscriptions, do not count).
    const socketsOf = (group: number) => sockets.filter((s) => s.group === group);
    const watched = run.writes.filter((w) => socketsOf(w.group).length > 0);
    const allPinged = watched
      .filter((w) => socketsOf(w.group).every((s) => s.pings.length > byGroup[w.group]!.indexOf(w)))
      .map((w) => perEvent.get(w)! - w.answered);
    const allPingedFromSent = watched
      .filter((w) => socketsOf(w.group).every((s) => s.pings.length > byGroup[w.group]!.indexOf(w)))
      .map((w) => perEvent.get(w)! - w.sent);
    const received = pings.length;
    if (HOLD_S) await sleep(HOLD_S * 1000);
    const rssAfter = await rssMedian(pid);
    const held = sockets.filter((s) => !s.closed && s.ws.readyState === WebSocket.OPEN).length;
    const result: WebsocketRun = {
      url,
      subscriptions: WS_SUBSCRIPTIONS,
      subscribe_s: subscribed.seconds,
      sockets_requested: SOCKETS,
      sockets_open: sockets.length,
      sockets_bound: boundCount,
      open_errors: openErrors,
      open_s: openS,
      sockets_held: held,
      events: run.writes.length,
      events_watched: watched.length,
      pings_per_event: round1(pingsExpected / Math.max(1, watched.length)),
      pings_expected: pingsExpected,
      pings_received: received,
      pings_missing: pingsExpected - received,
      pings_extra: extra,
      other_messages: sockets.reduce((n, s) => n + s.other.length, 0),
      event_all_pinged: spread(allPinged),
      ping: spread(pings),
      event_all_pinged_from_sent: spread(allPingedFromSent),
      rss_before_mib: mib(rssBefore),
      rss_bound_mib: mib(rssBound),
      rss_after_events_mib: mib(rssAfter),
      loadavg_1m: round1(os.loadavg()[0]!),
    };
    console.log(
      `  ${result.events} events (${run.errors} write errors): ${received}/${pingsExpected} pings${result.pings_missing ? ` — ${result.pings_missing} MISSING` : ''}${extra ? `, ${extra} extra` : ''}` +
        `${result.other_messages ? `, ${result.other_messages} other messages (e.g. ${sockets.find((s) => s.other.length)?.other[0]})` : ''}; ` +
        `per event, all its ${result.pings_per_event} sockets pinged: p50 ${result.event_all_pinged.p50_ms} ms, p95 ${result.event_all_pinged.p95_ms} ms, max ${result.event_all_pinged.max_ms} ms (${result.event_all_pinged.n} of ${result.events_watched} events complete; from the request sent p95 ${result.event_all_pinged_from_sent.p95_ms} ms); ` +
        `per ping p50 ${result.ping.p50_ms} ms, p95 ${result.ping.p95_ms} ms; ${held} sockets held; RSS after ${result.rss_after_events_mib} MiB`,
    );
    return result;
  } finally {
    await Promise.all(
      sockets.map(
        (s) =>
          new Promise<void>((resolve) => {
            if (s.closed || s.ws.readyState === WebSocket.CLOSED) return resolve();
            const timer = setTimeout(() => {
              s.ws.terminate();
              resolve();
            }, 5000);
            s.ws.once('close', () => {
              clearTimeout(timer);
              resolve();
            });
            s.ws.close(1000);
          }),
      ),
    );
    await server.stop();
  }
}

// ---- report ----

function codeVersion(): { commit: string; src_changes: string[] } {
  const git = (...args: string[]) => spawnSync('git', args, { cwd: root, encoding: 'utf8' }).stdout?.trim() ?? '';
  return { commit: git('rev-parse', 'HEAD'), src_changes: git('status', '--porcelain', '--', 'src').split('\n').filter(Boolean) };
}

const mark = (ok: boolean) => (ok ? '✓' : '✗');

function markdown(result: {
  started_at: string;
  machine: { cpus: number; cpu?: string; node: string; loadavg_start: number[]; loadavg_end: number[] };
  code: { commit: string; src_changes: string[] };
  throughput?: { runs: ThroughputRun[]; none_creates_per_s: number; rest_hook_creates_per_s: number; ratio: number };
  websockets?: WebsocketRun;
}): string {
  const { machine, code } = result;
  const md = [
    `Run ${result.started_at} on ${machine.cpus} cores (${machine.cpu}), Node ${machine.node}; machine load average ${machine.loadavg_start.join(' ')} at the start, ${machine.loadavg_end.join(' ')} at the end (shared machine: above ~2, something else was running). Code ${code.commit.slice(0, 10)}${code.src_changes.length ? ` with ${code.src_changes.length} uncommitted change(s) under src/` : ''}.`,
    `Vellum as \`npm start\` runs it with ${Object.keys(SERVER_ENV).length ? `the README defaults but ${Object.entries(SERVER_ENV).map(([k, v]) => `${k}=${v}`).join(', ')} (encryption on)` : 'the README defaults (SMART auth, AuditEvents, anchoring on the embedded chain, encryption on)'}, a fresh data dir per server, \`VELLUM_SUBSCRIPTION_ENDPOINTS_ALLOW\` = the bench's receiver; requests over loopback HTTP with the administrator's token.`,
    '',
  ];
  const t = result.throughput;
  if (t) {
    const first = t.runs.find((r) => r.mode === 'rest-hook');
    md.push(
      '### Write throughput with subscriptions',
      '',
      `\`POST Observation\`, ${WRITES} per server from ${CLIENTS} clients after ${WARMUP} warm-up writes that match nothing; creates/s = writes / (first sent → last response). ` +
        `With subscriptions: ${SUBSCRIPTIONS} active rest-hook subscriptions (payload \`application/fhir+json\`) to a receiver in the bench process, ${MATCHING} matching each write. ${ROUNDS} round(s), the order alternating; the ratio is of the medians. Deliveries are measured in round 1 only (below): later rounds stop the server once the writes are answered. ` +
        `Bench CPU: this process — the ${CLIENTS} clients and the rest-hook receiver — on the same ${os.cpus().length} cores as the server. Main thread: the server's request thread, where the subscription dispatcher also runs.`,
      '',
      '| round | subscriptions | creates/s | request p50 ms | p95 ms | p99 ms | errors | server CPU (cores) | its main thread | bench CPU (cores) | load avg |',
      '|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
      ...t.runs.map(
        (r) =>
          `| ${r.round} | ${r.subscriptions ? `${r.subscriptions} rest-hook, ${MATCHING} match each write` : 'none'} | ${r.run.creates_per_s} | ${r.run.request.p50_ms} | ${r.run.request.p95_ms} | ${r.run.request.p99_ms} | ${r.run.errors} | ${r.run.server_cpu_cores} | ${r.run.server_main_cores} | ${r.run.bench_cpu_cores} | ${r.loadavg_1m} |`,
      ),
      '',
      `**Ratio with / without: ${t.rest_hook_creates_per_s} / ${t.none_creates_per_s} = ${t.ratio}×** ${mark(t.ratio >= AIMS.throughput_ratio)} (aim ≥ ${AIMS.throughput_ratio}×).`,
      '',
      '### Commit → delivered (rest-hook)',
      '',
      `On the round-1 server with subscriptions: the throughput run's writes, then writes from one client as fast as answered, then from one client at a fixed rate. ` +
        `Latency = notification read by the receiver − create response received (negative: the notification came first); "from sent" = − create request sent instead (the commit lies between the two). ` +
        `Every expected delivery waited for, up to ${DEADLINE_MS / 1000} s after the last write. Drain: last response → last notification; deliveries/s: notifications / (first request → last notification).`,
      '',
      `| writes from | writes | expected | received | missing | dup. | misdirected | p50 ms | p95 ms | p99 ms | max ms | from sent p95 ms | per write, last of its ${MATCHING}: p95 ms | drain s | deliveries/s | aim p95 ≤ 250 ms |`,
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|',
      ...t.runs
        .filter((r) => r.deliveries)
        .flatMap((r) =>
          r.deliveries!.map(
            (d) =>
              `| ${d.name} | ${d.writes} | ${d.expected} | ${d.received} | ${d.missing} | ${d.duplicates} | ${d.misdirected} | ${d.latency.p50_ms} | ${d.latency.p95_ms} | ${d.latency.p99_ms} | ${d.latency.max_ms} | ${d.from_sent.p95_ms} | ${d.last_of_write.p95_ms} | ${d.drain_s} | ${d.deliveries_per_s} | ${mark(d.missing === 0 && d.latency.p95_ms <= AIMS.delivered_p95_ms)} |`,
          ),
        ),
      '',
    );
    if (first?.subscribe_s !== undefined) md.push(`${SUBSCRIPTIONS} subscriptions created and active (handshakes answered) in ${first.subscribe_s} s.`, '');
  }
  const w = result.websockets;
  if (w) {
    md.push(
      '### Websockets',
      '',
      `${w.subscriptions} R4 websocket subscriptions (${MATCHING} matching each event), ${w.sockets_requested} sockets (\`ws\`, ${OPEN_CONCURRENCY} handshakes at a time) to ${w.url.replace(/:\d+\//, ':PORT/')} (from the CapabilityStatement), each \`bind <id>\` with the owner's token; ` +
        `${w.events} matching Observations written by one client, ${WS_RATE ? `${WS_RATE} a second` : 'one after the other'}. Ping latency: ping read − create response received (negative: the ping came first); per event: the last of its ${w.pings_per_event} pings (${w.event_all_pinged.n} of ${w.events_watched} events with every ping); "from sent": − create request sent instead. RSS: server, median over 1 s (after events: ${HOLD_S} s after them).`,
      '',
      `| sockets open / bound / held ${HOLD_S} s after the events | opened in s | pings received / expected | missing | extra | other messages | per event, all pinged p50 / p95 / max ms | same from sent p50 / p95 ms | per ping p50 / p95 ms | server RSS before → bound → after events (MiB) |`,
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|---|',
      `| ${w.sockets_open} / ${w.sockets_bound} / ${w.sockets_held} (of ${w.sockets_requested}) ${mark(w.sockets_held === w.sockets_requested)} | ${w.open_s} | ${w.pings_received} / ${w.pings_expected} | ${w.pings_missing} ${mark(w.pings_missing === 0)} | ${w.pings_extra} | ${w.other_messages} | ${w.event_all_pinged.p50_ms} / ${w.event_all_pinged.p95_ms} / ${w.event_all_pinged.max_ms} | ${w.event_all_pinged_from_sent.p50_ms} / ${w.event_all_pinged_from_sent.p95_ms} | ${w.ping.p50_ms} / ${w.ping.p95_ms} | ${w.rss_before_mib} → ${w.rss_bound_mib} → ${w.rss_after_events_mib} |`,
      '',
    );
  }
  return md.join('\n');
}

async function main(): Promise<void> {
  const loadavg = () => os.loadavg().map((n) => round1(n));
  const started_at = new Date().toISOString();
  const machine = { cpus: os.cpus().length, cpu: os.cpus()[0]?.model, node: process.version, loadavg_start: loadavg(), loadavg_end: [] as number[] };
  const receiver = new Receiver();
  await receiver.listen();
  const result: Parameters<typeof markdown>[0] & { server_env: Record<string, string>; settings: Record<string, number>; aims: typeof AIMS; finished_at?: string } = {
    started_at,
    machine,
    code: codeVersion(),
    server_env: SERVER_ENV,
    settings: {
      writes: WRITES,
      clients: CLIENTS,
      subscriptions: SUBSCRIPTIONS,
      matching: MATCHING,
      warmup: WARMUP,
      latency_writes: LATENCY_WRITES,
      paced_writes: PACED_WRITES,
      paced_rate: PACED_RATE,
      rounds: ROUNDS,
      deadline_s: DEADLINE_MS / 1000,
      sockets: SOCKETS,
      ws_subscriptions: WS_SUBSCRIPTIONS,
      ws_events: WS_EVENTS,
      ws_rate: WS_RATE,
      open_concurrency: OPEN_CONCURRENCY,
      hold_s: HOLD_S,
    },
    aims: AIMS,
  };
  try {
    if (!opts['skip-writes']) {
      const runs: ThroughputRun[] = [];
      for (let round = 0; round < ROUNDS; round++) {
        // Alternate which goes first, so a slow spell does not always hit the same one.
        const order: ('none' | 'rest-hook')[] = round % 2 ? ['rest-hook', 'none'] : ['none', 'rest-hook'];
        for (const mode of order) runs.push(await throughputRun(round, mode, receiver));
      }
      const none = median(runs.filter((r) => r.mode === 'none').map((r) => r.run.creates_per_s));
      const hooks = median(runs.filter((r) => r.mode === 'rest-hook').map((r) => r.run.creates_per_s));
      result.throughput = { runs, none_creates_per_s: Math.round(none), rest_hook_creates_per_s: Math.round(hooks), ratio: round2(hooks / none) };
      console.log(`ratio with / without subscriptions: ${result.throughput.ratio}× (aim ≥ ${AIMS.throughput_ratio}×)`);
    }
    if (!opts['skip-ws']) result.websockets = await websocketRun(receiver);
  } finally {
    await receiver.close();
  }
  machine.loadavg_end = loadavg();
  result.finished_at = new Date().toISOString();
  const md = markdown(result);
  fs.mkdirSync(path.join(root, 'bench/results'), { recursive: true });
  fs.writeFileSync(path.join(root, 'bench/results/subscriptions.json'), `${JSON.stringify(result, null, 2)}\n`);
  fs.writeFileSync(path.join(root, 'bench/results/subscriptions.md'), `${md}\n`);
  console.log(`\n${md}\nwritten to bench/results/subscriptions.{json,md}`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
