/** Shared pieces of the benchmarks: launching Vellum as `npm start` does, and running the workload. */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });
}

export function rssKiB(pid: number): number {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  } catch {
    return 0;
  }
}

/** CPU time (ms) used so far by every process of a user (PostgreSQL's server processes run as `postgres`). */
export function userCpuMs(user: string): number {
  let uid: number | undefined;
  try {
    uid = Number(/^[^:]+:[^:]*:(\d+):/m.exec(fs.readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.startsWith(`${user}:`)) ?? '')?.[1]);
  } catch {
    return 0;
  }
  let total = 0;
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (fs.statSync(`/proc/${entry}`).uid === uid) total += cpuMs(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return total;
}

export async function waitReady(base: string, deadline: number): Promise<void> {
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

export interface BenchServer {
  origin: string;
  child: ChildProcess;
  dataDir: string;
  startupMs: number;
  /** The administrator's access token (undefined when VELLUM_AUTH=off). */
  token: string | undefined;
  stop(): Promise<void>;
}

/** An administrator token from `<dataDir>/admin-client.json` (client_credentials, client_secret_basic). */
export async function adminToken(dataDir: string): Promise<string> {
  const admin = JSON.parse(fs.readFileSync(path.join(dataDir, 'admin-client.json'), 'utf8')) as { client_id: string; client_secret: string; token_url: string };
  const res = await fetch(admin.token_url, {
    method: 'POST',
    headers: {
      authorization: `Basic ${Buffer.from(`${encodeURIComponent(admin.client_id)}:${encodeURIComponent(admin.client_secret)}`).toString('base64')}`,
      'content-type': 'application/x-www-form-urlencoded',
    },
    body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'system/*.*' }).toString(),
  });
  const json = (await res.json()) as { access_token?: string };
  if (!json.access_token) throw new Error(`no admin token (${res.status})`);
  return json.access_token;
}

/**
 * The arguments `npm start` gives node (package.json `scripts.start`: V8 settings included), so a
 * benchmark runs the server exactly as users start it.
 */
export function startArgs(): string[] {
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { scripts: { start: string } };
  const [command, ...args] = pkg.scripts.start.split(/\s+/);
  if (command !== 'node') throw new Error(`scripts.start does not run node: ${pkg.scripts.start}`);
  return args;
}

/** Start `src/main.ts` as `npm start` does, on a fresh data dir (removed by `stop`), with extra environment. */
export async function startServer(env: Record<string, string> = {}): Promise<BenchServer> {
  const port = await freePort();
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-bench-'));
  const origin = `http://127.0.0.1:${port}`;
  const started = Date.now();
  const child = spawn(process.execPath, startArgs(), {
    cwd: root,
    env: { ...process.env, PORT: String(port), HOST: '127.0.0.1', VELLUM_DATA_DIR: dataDir, VELLUM_LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const closed = new Promise((r) => child.on('close', r));
  const stop = async () => {
    child.kill('SIGTERM');
    await closed;
    fs.rmSync(dataDir, { recursive: true, force: true });
  };
  try {
    await waitReady(origin, Date.now() + 60_000);
  } catch (err) {
    await stop();
    throw err;
  }
  const startupMs = Date.now() - started;
  const token = env.VELLUM_AUTH === 'off' ? undefined : await adminToken(dataDir);
  return { origin, child, dataDir, startupMs, token, stop };
}

export interface LoadSummary {
  phases: { phase: string; ops: number; ops_per_s: number; p50_ms: number; p95_ms: number; p99_ms: number; errors: number }[];
  [key: string]: unknown;
}

/** Run `bench/fhir-load.mjs` against `base` (the FHIR base URL); its last stdout line is the JSON summary. */
export async function runLoad(base: string, args: string[], echo = true, token?: string): Promise<{ code: number; summary: LoadSummary }> {
  const load = spawn(process.execPath, [path.join(root, 'bench/fhir-load.mjs'), `--base-url=${base}`, '--concurrency=8', ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
    // The token goes through the environment, not the command line.
    env: { ...process.env, ...(token ? { TOKEN: token } : {}) },
  });
  let out = '';
  load.stdout.on('data', (chunk: Buffer) => {
    out += chunk.toString();
    if (echo) process.stdout.write(chunk);
  });
  const code: number = await new Promise((resolve) => load.on('close', (c) => resolve(c ?? 1)));
  return { code, summary: JSON.parse(out.trim().split('\n').at(-1)!) as LoadSummary };
}

/** The Medplum figures Vellum's are compared with (bench/baseline/medplum.json: how and when they were measured). */
export interface Baseline {
  server: string;
  measured: string;
  first_round: { phases: Record<string, { ops_per_s: number }>; total_ops_per_s: number; rss_mib: number; p99_ms: Record<string, number> | null };
  soak: { rounds: { after: string; minutes: number; total_ops_per_s: number; search_obs_code_date_ops_per_s: number }[] };
  aims: { total_ratio: number; read_patient_ratio: number; phase_ratio: number; rss_under_load_mib: number; rss_idle_mib: number; soak_last_vs_first: number };
}

export function loadBaseline(): Baseline {
  return JSON.parse(fs.readFileSync(path.join(root, 'bench/baseline/medplum.json'), 'utf8')) as Baseline;
}

const ratio = (a: number, b: number) => Math.round((a / b) * 100) / 100;

/**
 * The workload's phases beside the baseline's: ops/s, ratio, the aim each phase is held to and
 * whether it is met (reads by id: `read_patient_ratio`; every phase: `phase_ratio`; the total:
 * `total_ratio`). Markdown rows, and whether every aim was met.
 */
export function comparisonTable(summary: LoadSummary, baseline: Baseline): { rows: string[]; met: boolean } {
  const { aims, first_round } = baseline;
  let met = true;
  const rows = ['| phase | Vellum ops/s | Medplum ops/s | ratio | aim | p99 ms |', '|---|---:|---:|---:|---:|---:|'];
  for (const p of summary.phases) {
    const theirs = first_round.phases[p.phase]?.ops_per_s;
    if (theirs === undefined) continue;
    const aim = p.phase === 'read_patient' ? aims.read_patient_ratio : aims.phase_ratio;
    const r = ratio(p.ops_per_s, theirs);
    met &&= r >= aim;
    rows.push(`| ${p.phase} | ${Math.round(p.ops_per_s).toLocaleString('en')} | ${theirs.toLocaleString('en')} | ${r}× | ${r >= aim ? '✓' : '✗'} ≥ ${aim}× | ${p.p99_ms} |`);
  }
  const total = (summary as { total?: { ops_per_s: number } }).total?.ops_per_s ?? 0;
  const r = ratio(total, first_round.total_ops_per_s);
  met &&= r >= aims.total_ratio;
  rows.push(`| **total** | **${Math.round(total).toLocaleString('en')}** | **${first_round.total_ops_per_s}** | **${r}×** | ${r >= aims.total_ratio ? '✓' : '✗'} ≥ ${aims.total_ratio}× | |`);
  return { rows, met };
}

/** USER_HZ on Linux: /proc times are in 1/100 s. */
const TICK = 100;

/** CPU time (user + system, ms) of a process — all its threads — or of one thread (`tid`). */
export function cpuMs(pid: number, tid?: number): number {
  const stat = fs.readFileSync(tid ? `/proc/${pid}/task/${tid}/stat` : `/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / TICK;
}

// ---- FHIR requests and the Blaze corpus (bench:search, bench:export) ----

/** Blaze's Synthea set: CORPORA/search/blaze-synthea (92,114 resources in 122 bundles). */
export const BLAZE_DIR = path.join(process.env.VELLUM_CORPORA ?? path.join(root, '..', 'shared', 'corpora'), 'search', 'blaze-synthea');
const FHIR_JSON = 'application/fhir+json';

export interface Answer {
  status: number;
  json: any;
}

/** A FHIR request; the body read and parsed (undefined when empty or not JSON). */
export async function request(url: string, init: { method?: string; body?: string; headers?: Record<string, string> } = {}): Promise<Answer> {
  const res = await fetch(url, {
    method: init.method ?? 'GET',
    headers: { accept: FHIR_JSON, ...(init.body !== undefined ? { 'content-type': FHIR_JSON } : {}), ...init.headers },
    body: init.body,
  });
  const text = await res.text();
  let json: any;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  return { status: res.status, json };
}

/** POST a batch/transaction Bundle (`Prefer: return=minimal`); anything but 200 throws. `token`: a bearer token, when auth is on. */
export async function postBundle(base: string, body: string, token?: string): Promise<Answer> {
  const res = await request(base, { method: 'POST', body, headers: { prefer: 'return=minimal', ...(token ? { authorization: `Bearer ${token}` } : {}) } });
  if (res.status !== 200) {
    const issue = res.json?.issue?.[0];
    throw new Error(`POST bundle answered ${res.status}: ${issue?.diagnostics ?? JSON.stringify(issue)}`);
  }
  return res;
}

/** A .bz2 file's text (a reader of our own: bench code does not import test code). */
export function bunzip(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('bzip2', ['-dc', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    const chunks: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (c: Buffer) => chunks.push(c));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(Buffer.concat(chunks).toString('utf8')) : reject(new Error(`bzip2 ${file}: ${code} ${err}`))));
  });
}

/** The corpus files: the two `0-*` batch bundles (hospitals, practitioners) and the patients' transactions. */
export function blazeFiles(): { infos: string[]; patients: string[] } {
  if (!fs.existsSync(BLAZE_DIR)) throw new Error(`no Blaze corpus at ${BLAZE_DIR} (set VELLUM_CORPORA)`);
  const files = fs.readdirSync(BLAZE_DIR).filter((f) => f.endsWith('.json.bz2')).sort();
  return { infos: files.filter((f) => f.startsWith('0-')), patients: files.filter((f) => !f.startsWith('0-')) };
}

export interface LoadReport {
  resources: number;
  bundles: number;
  seconds: number;
  resources_per_s: number;
  concurrency: number;
  /** fullUrl of the files → Type/id on the server. */
  refs: Map<string, string>;
}

/**
 * Load the corpus in the documented order: the two `0-*` batch bundles one after the other (the
 * patients' conditional references need them), then the patients' transactions `concurrency` at a time.
 */
export async function loadBlaze(base: string, concurrency: number, token?: string): Promise<LoadReport> {
  const { infos, patients } = blazeFiles();
  const refs = new Map<string, string>();
  let resources = 0;
  const started = performance.now();
  const post = async (file: string) => {
    const text = await bunzip(path.join(BLAZE_DIR, file));
    const bundle = JSON.parse(text) as { entry: { fullUrl?: string }[] };
    const res = await postBundle(base, text, token);
    bundle.entry.forEach((entry, i) => {
      const location = res.json?.entry?.[i]?.response?.location as string | undefined;
      if (entry.fullUrl && location) refs.set(entry.fullUrl, location.split('/_history')[0]!.replace(`${base}/`, ''));
    });
    resources += bundle.entry.length;
  };
  for (const file of infos) await post(file);
  let next = 0;
  const worker = async () => {
    while (next < patients.length) await post(patients[next++]!);
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const seconds = (performance.now() - started) / 1000;
  return {
    resources,
    bundles: infos.length + patients.length,
    seconds: Math.round(seconds * 10) / 10,
    resources_per_s: Math.round(resources / seconds),
    concurrency,
    refs,
  };
}
