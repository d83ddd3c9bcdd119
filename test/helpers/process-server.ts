/**
 * Test harness: the REAL server, started the way `npm start` does (`node --import tsx
 * src/main.ts` from the repository root, configured only through the environment), driven over
 * HTTP. Captures stdout/stderr (JSON log lines), stops with SIGTERM and reports the exit code.
 * Temporary data directories are removed when the test ends.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Test } from 'tap';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const FHIR_JSON = 'application/fhir+json';

/** How long a server may take to answer GET /ready (tsx compiles the sources on a cold start). */
const READY_TIMEOUT_MS = 60_000;
/** How long a stopping server may take to exit before it is killed. */
const EXIT_TIMEOUT_MS = 30_000;

/**
 * Variables a test run may carry that must not leak into the server: its own configuration
 * (set explicitly per start) and the test runner's loader/coverage hooks.
 */
const SCRUBBED_ENV = ['HOST', 'PORT', 'VELLUM_DATA_DIR', 'VELLUM_BASE_URL', 'VELLUM_MASTER_KEY', 'VELLUM_LOG_LEVEL', 'VELLUM_BODY_LIMIT', 'NODE_OPTIONS', 'NODE_V8_COVERAGE'];

export interface HttpResult {
  status: number;
  headers: Headers;
  text: string;
  /** The parsed body, or undefined when it is not JSON. */
  json: any;
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface ServerProcess {
  child: ChildProcess;
  /** Resolves when the process has exited. */
  exited: Promise<Exit>;
  /** Everything written to stdout / stderr so far. */
  stdout(): string;
  stderr(): string;
  /** stdout split into lines (JSON log lines when the server runs normally). */
  lines(): string[];
}

export interface ProcessServer extends ServerProcess {
  port: number;
  dataDir: string;
  /** http://127.0.0.1:<port> */
  origin: string;
  /** The FHIR base, http://127.0.0.1:<port>/fhir */
  baseUrl: string;
  /** The administrator's access token sent with every FHIR call (undefined when authorization is off). */
  token: string | undefined;
  /** Request against the origin (`path` starts with /) with a JSON body if given. */
  http(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<HttpResult>;
  /** Request against the FHIR base (`path` relative to /fhir). */
  fhir(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<HttpResult>;
  /** SIGTERM and wait for the exit; resolves to the exit code (null if killed by a signal). */
  stop(): Promise<number | null>;
}

export interface StartOptions {
  /** Data directory to (re)use; default: a fresh temporary one, removed at teardown. */
  dataDir?: string;
  /** Extra environment (overrides the defaults; a value of undefined removes the variable). */
  env?: Record<string, string | undefined>;
}

/** A free TCP port on 127.0.0.1 (the OS picks it; it is released before the server binds it). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** A fresh temporary data directory, removed (with everything in it) when the test ends. */
export function tempDataDir(t: Test): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-proc-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * Spawn `node --import tsx src/main.ts` with exactly `env` as its configuration (on top of the
 * parent's environment minus SCRUBBED_ENV). Killed at teardown if still running.
 */
export function spawnServer(t: Test, env: Record<string, string | undefined>): ServerProcess {
  const childEnv: NodeJS.ProcessEnv = { ...process.env };
  for (const name of SCRUBBED_ENV) delete childEnv[name];
  for (const [name, value] of Object.entries(env)) {
    if (value === undefined) delete childEnv[name];
    else childEnv[name] = value;
  }
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: REPO_ROOT,
    env: childEnv,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
  const exited = new Promise<Exit>((resolve) => {
    // 'close' (not 'exit'): stdio is fully drained, so stdout() holds every line.
    child.once('close', (code, signal) => resolve({ code, signal }));
  });
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  return {
    child,
    exited,
    stdout: () => out,
    stderr: () => err,
    lines: () => out.split('\n').filter((line) => line.length > 0),
  };
}

/** Run the server with `env` until it exits on its own (e.g. a configuration error). */
export async function runUntilExit(t: Test, env: Record<string, string | undefined>): Promise<Exit & { stdout: string; stderr: string }> {
  const proc = spawnServer(t, env);
  const timer = setTimeout(() => proc.child.kill('SIGKILL'), READY_TIMEOUT_MS);
  const exit = await proc.exited;
  clearTimeout(timer);
  return { ...exit, stdout: proc.stdout(), stderr: proc.stderr() };
}

async function request(url: string, method: string, body?: unknown, headers: Record<string, string> = {}): Promise<HttpResult> {
  const hasBody = body !== undefined;
  const res = await fetch(url, {
    method,
    headers: { accept: FHIR_JSON, ...(hasBody ? { 'content-type': FHIR_JSON } : {}), ...headers },
    body: !hasBody ? undefined : typeof body === 'string' ? body : body instanceof Uint8Array ? Buffer.from(body) : JSON.stringify(body),
  });
  const text = await res.text();
  let json: any;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, text, json };
}

/**
 * Start the real server as `npm start` does on a free port and wait until it has logged that it
 * listens on that port (so the process answering is ours, not another run's that raced for the
 * same port) and GET /ready answers 200. A start that loses the port race (EADDRINUSE) is retried
 * on another port; any other early exit fails with the server's stderr.
 */
export async function startProcessServer(t: Test, options: StartOptions = {}): Promise<ProcessServer> {
  const dataDir = options.dataDir ?? tempDataDir(t);
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const proc = spawnServer(t, {
      HOST: '127.0.0.1',
      PORT: String(port),
      VELLUM_DATA_DIR: dataDir,
      VELLUM_LOG_LEVEL: 'info',
      ...options.env,
    });
    const state = await waitReady(proc, port);
    if (state === 'ready') return await processServer(proc, port, dataDir);
    if (state === 'port-taken' && attempt < 5) continue;
    throw new Error(`server did not become ready (${state}):\n${proc.stderr()}`);
  }
}

async function waitReady(proc: ServerProcess, port: number): Promise<'ready' | 'port-taken' | 'exited' | 'timeout'> {
  const origin = `http://127.0.0.1:${port}`;
  let exit: Exit | undefined;
  void proc.exited.then((e) => (exit = e));
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (exit) return /EADDRINUSE/.test(proc.stderr()) ? 'port-taken' : 'exited';
    if (proc.stdout().includes(`Server listening at ${origin}`)) {
      try {
        const res = await fetch(`${origin}/ready`);
        await res.arrayBuffer();
        if (res.status === 200) return 'ready';
      } catch {
        // not answering yet
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  proc.child.kill('SIGKILL');
  return 'timeout';
}

/**
 * An administrator access token, as a new user gets one: `client_credentials` with the
 * `client_secret_basic` credentials of `<dataDir>/admin-client.json` (written on first start).
 */
export async function adminToken(dataDir: string, scope = 'system/*.*'): Promise<string> {
  const admin = JSON.parse(fs.readFileSync(path.join(dataDir, 'admin-client.json'), 'utf8')) as { client_id: string; client_secret: string; token_url: string };
  const basic = Buffer.from(`${encodeURIComponent(admin.client_id)}:${encodeURIComponent(admin.client_secret)}`).toString('base64');
  const res = await fetch(admin.token_url, {
    method: 'POST',
    headers: { authorization: `Basic ${basic}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials', scope }).toString(),
  });
  const json = (await res.json()) as { access_token?: string };
  if (res.status !== 200 || !json.access_token) throw new Error(`admin token: ${res.status} ${JSON.stringify(json)}`);
  return json.access_token;
}

async function processServer(proc: ServerProcess, port: number, dataDir: string): Promise<ProcessServer> {
  const origin = `http://127.0.0.1:${port}`;
  // Authorization is on by default (as `npm start` runs): FHIR calls carry the administrator's token
  // unless the test sends its own Authorization header (an empty one sends none).
  const token = fs.existsSync(path.join(dataDir, 'admin-client.json')) ? await adminToken(dataDir).catch(() => undefined) : undefined;
  const withToken = (headers: Record<string, string> = {}) => {
    const given = Object.keys(headers).find((h) => h.toLowerCase() === 'authorization');
    if (given !== undefined) {
      if (headers[given] !== '') return headers;
      const { [given]: _dropped, ...rest } = headers;
      return rest;
    }
    return token ? { ...headers, authorization: `Bearer ${token}` } : headers;
  };
  return {
    ...proc,
    port,
    dataDir,
    origin,
    token,
    baseUrl: `${origin}/fhir`,
    http: (method, p, body, headers) => request(`${origin}${p}`, method, body, p.startsWith('/fhir') ? withToken(headers) : headers),
    fhir: (method, p, body, headers) => request(`${origin}/fhir/${p}`.replace(/\/+$/, ''), method, body, withToken(headers)),
    async stop() {
      if (proc.child.exitCode === null && proc.child.signalCode === null) proc.child.kill('SIGTERM');
      const timer = setTimeout(() => proc.child.kill('SIGKILL'), EXIT_TIMEOUT_MS);
      const { code } = await proc.exited;
      clearTimeout(timer);
      return code;
    },
  };
}

/** Every stdout line parsed as JSON; a line that is not JSON is returned as { line } with parsed undefined. */
export function parseLogLines(lines: string[]): { line: string; parsed: any }[] {
  return lines.map((line) => {
    try {
      const parsed: unknown = JSON.parse(line);
      return { line, parsed: parsed !== null && typeof parsed === 'object' ? parsed : undefined };
    } catch {
      return { line, parsed: undefined };
    }
  });
}

export interface HeldRequest {
  /** Resolves once the server has read the headers and answered 100 Continue (or the request failed). */
  accepted: Promise<void>;
  /** Send the body; the request then completes. */
  release(): void;
  /** The response, or the connection error's code. */
  result: Promise<{ status?: number; text?: string; json?: any; error?: string }>;
}

/**
 * A request that is provably in flight: sent with `Expect: 100-continue`, so the server has
 * parsed its headers once `accepted` resolves, while its body waits for `release()`. Pass a
 * keep-alive `agent` to behave like real clients (fetch, fhir-kit-client), which reuse connections.
 */
export function holdRequest(
  origin: string,
  method: string,
  path: string,
  body: string,
  options: { agent?: http.Agent; headers?: Record<string, string> } = {},
): HeldRequest {
  const url = new URL(path, origin);
  let accept!: () => void;
  const accepted = new Promise<void>((resolve) => (accept = resolve));
  const req = http.request(url, {
    method,
    agent: options.agent ?? false,
    headers: {
      accept: FHIR_JSON,
      'content-type': FHIR_JSON,
      'content-length': String(Buffer.byteLength(body)),
      expect: '100-continue',
      ...options.headers,
    },
  });
  const result = new Promise<{ status?: number; text?: string; json?: any; error?: string }>((resolve) => {
    req.on('response', (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('error', (err: NodeJS.ErrnoException) => resolve({ error: err.code ?? err.message }));
      res.on('end', () => {
        let json: any;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode, text, json });
      });
    });
    req.on('error', (err: NodeJS.ErrnoException) => {
      accept();
      resolve({ error: err.code ?? err.message });
    });
  });
  req.on('continue', () => accept());
  req.flushHeaders();
  return { accepted, release: () => req.end(body), result };
}
