/**
 * `npm run stack`: the production topology on one machine — PostgreSQL (Debian's packages, a
 * cluster of its own), an external chain node (`hardhat node`), a Kubo-RPC IPFS daemon (the
 * js-ipfs daemon of test/kubo-daemon), two Vellum nodes sharing them, and a small load balancer
 * in front (scripts/balancer.ts). Everything runs in the background; the URLs are printed.
 * `npm run stack -- --stop` ends it and removes its state (the chain lives in memory, so the rest
 * cannot outlive it).
 *
 * Options: `--no-ipfs` (blocks in PostgreSQL), `--nodes <n>` (Vellum nodes, default 2),
 * `--dir <dir>` (state, default `.stack`), `--port <n>` (the balancer; the others follow: the nodes
 * from n+1, then PostgreSQL, the chain and IPFS — with two nodes n+3, n+4, n+5; default 8080).
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import pg from 'pg';

const ROOT = path.resolve(import.meta.dirname, '..');
/** Hardhat's first development account: funded on `hardhat node`, public knowledge — a local stack only. */
const CHAIN_KEY = '0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80';

const { values } = parseArgs({
  options: {
    stop: { type: 'boolean', default: false },
    'no-ipfs': { type: 'boolean', default: false },
    nodes: { type: 'string', default: '2' },
    dir: { type: 'string', default: path.join(ROOT, '.stack') },
    port: { type: 'string', default: '8080' },
  },
  strict: true,
});
const dir = path.resolve(values.dir);
const stateFile = path.join(dir, 'stack.json');

interface State {
  pids: Record<string, number>;
  pgBin: string;
  pgData: string;
  asPostgres: boolean;
  urls: Record<string, string>;
}

function log(message: string): void {
  process.stdout.write(`stack: ${message}\n`);
}

/** PostgreSQL's binaries (Debian: /usr/lib/postgresql/<version>/bin). */
function pgBinaries(): string {
  const root = '/usr/lib/postgresql';
  const versions = fs.existsSync(root) ? fs.readdirSync(root).filter((v) => fs.existsSync(path.join(root, v, 'bin', 'initdb'))) : [];
  if (versions.length === 0) throw new Error('PostgreSQL is not installed: apt-get install -y postgresql');
  return path.join(root, versions.sort((a, b) => Number(b) - Number(a))[0]!, 'bin');
}

/** Run a PostgreSQL tool (as user `postgres` when we are root: PostgreSQL refuses to run as root). */
function pgTool(state: Pick<State, 'pgBin' | 'asPostgres'>, tool: string, args: string[]): void {
  const command = state.asPostgres ? 'runuser' : path.join(state.pgBin, tool);
  const full = state.asPostgres ? ['-u', 'postgres', '--', path.join(state.pgBin, tool), ...args] : args;
  const result = spawnSync(command, full, { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`${tool} failed: ${result.stderr || result.stdout}`);
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/** Start a background process (its output to `<dir>/<name>.log`); its pid. */
function background(name: string, args: string[], env: NodeJS.ProcessEnv = {}): number {
  const out = fs.openSync(path.join(dir, `${name}.log`), 'a');
  const child = spawn(process.execPath, args, { cwd: ROOT, detached: true, stdio: ['ignore', out, out], env: { ...process.env, ...env } });
  child.unref();
  fs.closeSync(out);
  return child.pid!;
}

/** Wait until `check` holds (the services start in seconds; a minute is a failure). */
async function until(what: string, check: () => Promise<boolean> | boolean, pid?: number): Promise<void> {
  const deadline = Date.now() + 120_000;
  while (!(await check().catch(() => false))) {
    if (pid !== undefined && !alive(pid)) throw new Error(`${what} exited: see ${dir}`);
    if (Date.now() > deadline) throw new Error(`${what} did not start within 2 minutes: see ${dir}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function ok(url: string, init?: RequestInit): Promise<boolean> {
  const res = await fetch(url, init);
  await res.arrayBuffer();
  return res.ok;
}

async function start(): Promise<void> {
  if (fs.existsSync(stateFile)) throw new Error(`a stack is already running from ${dir} (npm run stack -- --stop)`);
  const base = Number(values.port);
  const count = Number(values.nodes);
  if (!Number.isInteger(count) || count < 1 || count > 8) throw new Error('--nodes is 1 to 8');
  const nodePorts = Array.from({ length: count }, (_, i) => base + 1 + i);
  const ports: Record<string, number> = { balancer: base, ...Object.fromEntries(nodePorts.map((p, i) => [`node${i + 1}`, p])), postgres: base + count + 1, chain: base + count + 2, ipfs: base + count + 3 };
  for (const [name, port] of Object.entries(ports)) {
    if (!(await portFree(port))) throw new Error(`port ${port} (${name}) is taken: choose another base with --port`);
  }
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const state: State = { pids: {}, pgBin: pgBinaries(), pgData: path.join(dir, 'postgres'), asPostgres: os.userInfo().uid === 0, urls: {} };
  const save = () => fs.writeFileSync(stateFile, JSON.stringify(state, null, 2) + '\n', { mode: 0o600 });
  save();
  try {
    // PostgreSQL: a cluster of its own, on 127.0.0.1 only.
    fs.mkdirSync(state.pgData, { mode: 0o700 });
    if (state.asPostgres) {
      fs.chmodSync(dir, 0o755);
      spawnSync('chown', ['-R', 'postgres', state.pgData]);
    }
    pgTool(state, 'initdb', ['-D', state.pgData, '-A', 'trust', '-U', 'postgres']);
    pgTool(state, 'pg_ctl', ['-D', state.pgData, '-w', '-l', path.join(state.pgData, 'server.log'), '-o', `-k ${state.pgData} -p ${ports.postgres} -c listen_addresses=127.0.0.1`, 'start']);
    state.urls.postgres = `postgres://postgres@127.0.0.1:${ports.postgres}/vellum`;
    save();
    const admin = new pg.Client({ connectionString: `postgres://postgres@127.0.0.1:${ports.postgres}/postgres` });
    await admin.connect();
    await admin.query('CREATE DATABASE vellum');
    await admin.end();
    log(`PostgreSQL   ${state.urls.postgres}`);

    // The chain: `hardhat node`, in memory.
    state.pids.chain = background('chain', [path.join(ROOT, 'node_modules/.bin/hardhat'), 'node', '--hostname', '127.0.0.1', '--port', String(ports.chain)], {
      CI: 'true',
      HARDHAT_DISABLE_TELEMETRY_PROMPT: 'true',
    });
    state.urls.chain = `http://127.0.0.1:${ports.chain}`;
    save();
    await until(
      'hardhat node',
      () => ok(state.urls.chain!, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}' }),
      state.pids.chain,
    );
    log(`chain        ${state.urls.chain} (hardhat node, chain id 31337)`);

    // IPFS: the js-ipfs daemon serving the Kubo RPC API (installed on first use: ~300 MB).
    if (!values['no-ipfs']) {
      const daemon = path.join(ROOT, 'test', 'kubo-daemon');
      if (!fs.existsSync(path.join(daemon, 'node_modules', 'ipfs-daemon', 'package.json'))) {
        log('installing the IPFS daemon (npm ci in test/kubo-daemon, once; a few minutes)…');
        const env = { ...process.env, PATH: `${path.dirname(process.execPath)}${path.delimiter}${process.env.PATH ?? ''}` };
        const result = spawnSync('npm', ['ci', '--ignore-scripts', '--no-audit', '--no-fund', '--prefix', daemon], { cwd: daemon, env, encoding: 'utf8' });
        if (result.status !== 0) throw new Error(`cannot install the IPFS daemon (or run with --no-ipfs): ${result.stderr.slice(-2000)}`);
      }
      state.pids.ipfs = background('ipfs', [path.join(daemon, 'start.mjs'), '--repo', path.join(dir, 'ipfs'), '--api-port', String(ports.ipfs)]);
      state.urls.ipfs = `http://127.0.0.1:${ports.ipfs}`;
      save();
      await until('the IPFS daemon', () => fs.readFileSync(path.join(dir, 'ipfs.log'), 'utf8').includes('"ready":true'), state.pids.ipfs);
      log(`IPFS         ${state.urls.ipfs} (Kubo RPC API)`);
    }

    // The Vellum nodes: one database, one chain, one master key, one token key ring, links through the balancer.
    const publicBase = `http://127.0.0.1:${ports.balancer}/fhir`;
    const shared: NodeJS.ProcessEnv = {
      HOST: '127.0.0.1',
      VELLUM_BASE_URL: publicBase,
      VELLUM_DATABASE_URL: state.urls.postgres,
      VELLUM_CHAIN: 'rpc',
      VELLUM_CHAIN_RPC_URL: state.urls.chain,
      VELLUM_CHAIN_PRIVATE_KEY: CHAIN_KEY,
      VELLUM_CHAIN_ID: '31337',
      VELLUM_MASTER_KEY: randomBytes(32).toString('hex'),
      VELLUM_AUTH_KEYS_FILE: path.join(dir, 'signing-keys.json'),
      VELLUM_ADMIN_CLIENT_FILE: path.join(dir, 'admin-client.json'),
      ...(state.urls.ipfs ? { VELLUM_IPFS_URL: state.urls.ipfs } : {}),
    };
    const startNode = async (n: number, env: NodeJS.ProcessEnv) => {
      const port = nodePorts[n - 1]!;
      state.pids[`node${n}`] = background(`node${n}`, ['--max-semi-space-size=8', '--import', 'tsx', 'src/main.ts'], {
        ...shared,
        ...env,
        PORT: String(port),
        VELLUM_DATA_DIR: path.join(dir, `node${n}`),
      });
      state.urls[`node${n}`] = `http://127.0.0.1:${port}`;
      save();
      await until(`Vellum node ${n}`, () => ok(`http://127.0.0.1:${port}/ready`), state.pids[`node${n}`]);
      log(`Vellum node ${n} http://127.0.0.1:${port}`);
    };
    // The first node deploys the registries; the others are given their addresses.
    await startNode(1, {});
    const contracts = JSON.parse(fs.readFileSync(path.join(dir, 'node1', 'chain-contract.json'), 'utf8')) as { contract: string; consentContract?: string };
    for (let n = 2; n <= count; n++) {
      await startNode(n, { VELLUM_CHAIN_CONTRACT: contracts.contract, ...(contracts.consentContract ? { VELLUM_CONSENT_CONTRACT: contracts.consentContract } : {}) });
    }

    state.pids.balancer = background('balancer', ['--import', 'tsx', 'scripts/balancer.ts', '--port', String(ports.balancer), ...nodePorts.flatMap((p) => ['--upstream', `127.0.0.1:${p}`])]);
    state.urls.fhir = publicBase;
    save();
    await until('the load balancer', () => ok(`http://127.0.0.1:${ports.balancer}/ready`), state.pids.balancer);
    log(`FHIR base    ${publicBase} (load balancer → ${count === 1 ? 'node 1' : `nodes 1 to ${count}`})`);
    log(`admin client ${path.join(dir, 'admin-client.json')}`);
    log(`logs         ${dir}/*.log; stop with: npm run stack -- --stop`);
  } catch (err) {
    log(`failed: ${(err as Error).message}`);
    await stop();
    process.exitCode = 1;
  }
}

async function stop(): Promise<void> {
  if (!fs.existsSync(stateFile)) {
    log(`no stack is running from ${dir}`);
    return;
  }
  const state = JSON.parse(fs.readFileSync(stateFile, 'utf8')) as State;
  // The balancer and the nodes first (they drain), then what they use.
  const nodes = Object.keys(state.pids).filter((name) => name.startsWith('node'));
  for (const name of ['balancer', ...nodes, 'ipfs', 'chain']) {
    const pid = state.pids[name];
    if (pid === undefined || !alive(pid)) continue;
    process.kill(pid, 'SIGTERM');
    const deadline = Date.now() + 30_000;
    while (alive(pid) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
    if (alive(pid)) process.kill(pid, 'SIGKILL');
  }
  if (fs.existsSync(path.join(state.pgData, 'postmaster.pid'))) {
    try {
      pgTool(state, 'pg_ctl', ['-D', state.pgData, '-w', '-m', 'fast', 'stop']);
    } catch (err) {
      log(`PostgreSQL did not stop cleanly: ${(err as Error).message}`);
    }
  }
  fs.rmSync(dir, { recursive: true, force: true });
  log('stopped');
}

await (values.stop ? stop() : start());
