/**
 * `npm run stack` as a new user runs it (without IPFS, which its own test covers): PostgreSQL,
 * `hardhat node`, two Vellum nodes and the load balancer come up; a token from the balancer works on
 * both nodes; a node is killed and writes through the balancer go on, nothing acknowledged is lost
 * and anchoring continues; `--stop` ends every process and removes the state.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { REPO_ROOT } from '../helpers/process-server.ts';

const param = (p: any, name: string) => p?.parameter?.find((x: any) => x.name === name);

function stack(args: string[]) {
  return spawnSync(process.execPath, ['--import', 'tsx', 'scripts/stack.ts', ...args], { cwd: REPO_ROOT, encoding: 'utf8' });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

t.test('npm run stack: two nodes behind a balancer, one killed, nothing lost; --stop ends it', async (t) => {
  const parent = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-stack-'));
  fs.chmodSync(parent, 0o755); // PostgreSQL runs as its own user (when the tests run as root): it must reach the state dir
  const dir = path.join(parent, 'stack');
  // Six consecutive ports from a random base; another base if one is taken.
  let started: ReturnType<typeof stack> | undefined;
  let base = 0;
  for (let attempt = 0; attempt < 5; attempt++) {
    base = 20_000 + Math.floor(Math.random() * 30_000);
    started = stack(['--no-ipfs', '--dir', dir, '--port', String(base)]);
    if (started.status === 0 || !/is taken/.test(started.stdout)) break;
  }
  t.teardown(() => {
    stack(['--stop', '--dir', dir]);
    fs.rmSync(parent, { recursive: true, force: true });
  });
  t.equal(started!.status, 0, `started:\n${started!.stdout}${started!.stderr}`);
  const state = JSON.parse(fs.readFileSync(path.join(dir, 'stack.json'), 'utf8')) as { pids: Record<string, number>; urls: Record<string, string> };
  const fhir = state.urls.fhir!;
  t.equal(fhir, `http://127.0.0.1:${base}/fhir`);

  // A token from the balancer's authorization server, as a new user gets one.
  const admin = JSON.parse(fs.readFileSync(path.join(dir, 'admin-client.json'), 'utf8')) as { client_id: string; client_secret: string; token_url: string };
  const basic = Buffer.from(`${encodeURIComponent(admin.client_id)}:${encodeURIComponent(admin.client_secret)}`).toString('base64');
  const tokenRes = await fetch(admin.token_url, {
    method: 'POST',
    headers: { authorization: `Basic ${basic}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: 'grant_type=client_credentials&scope=system%2F*.*',
  });
  t.equal(tokenRes.status, 200);
  const token = ((await tokenRes.json()) as { access_token: string }).access_token;
  const call = async (base: string, method: string, url: string, body?: unknown, headers: Record<string, string> = {}) => {
    const res = await fetch(`${base}/${url}`, {
      method,
      headers: { authorization: `Bearer ${token}`, accept: 'application/fhir+json', ...(body ? { 'content-type': 'application/fhir+json' } : {}), ...headers },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : undefined };
  };

  const created = await call(fhir, 'POST', 'Patient', { resourceType: 'Patient', name: [{ family: 'Stack' }] });
  t.equal(created.status, 201, 'a write through the balancer');
  for (const node of ['node1', 'node2']) {
    const read = await call(`${state.urls[node]}/fhir`, 'GET', `Patient/${created.json.id}`);
    t.equal(read.status, 200, `read on ${node} with the same token`);
  }

  // Node 1 killed; the balancer sends the writes to node 2.
  process.kill(state.pids.node1!, 'SIGKILL');
  const acknowledged = [created.json.id as string];
  for (let i = 0; i < 20; i++) {
    const res = await call(fhir, 'POST', 'Patient', { resourceType: 'Patient', name: [{ family: `After${i}` }] });
    t.equal(res.status, 201, `write ${i} after the kill`);
    if (res.status === 201) acknowledged.push(res.json.id);
  }
  const last = await call(fhir, 'POST', 'Patient', { resourceType: 'Patient', name: [{ family: 'Anchored' }] }, { prefer: 'anchor=wait' });
  t.equal(last.status, 201, 'anchoring goes on (the write waited for its anchor)');
  acknowledged.push(last.json.id);
  let verified = 0;
  for (const id of acknowledged) {
    const res = await call(fhir, 'GET', `Patient/${id}/$verify`);
    if (res.status === 200 && param(res.json, 'verified')?.valueBoolean === true) verified++;
  }
  t.equal(verified, acknowledged.length, 'every acknowledged write is there and anchored');

  const stopped = stack(['--stop', '--dir', dir]);
  t.equal(stopped.status, 0, stopped.stdout + stopped.stderr);
  for (const [name, pid] of Object.entries(state.pids)) t.notOk(alive(pid), `${name} has ended`);
  t.notOk(fs.existsSync(dir), 'the state is removed');
});
