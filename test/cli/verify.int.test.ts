/**
 * The offline verifier end to end, with the server STOPPED: `hardhat node` runs as a separate
 * process (the external chain), Vellum runs as a real process anchoring to it over JSON-RPC
 * (VELLUM_CHAIN=rpc), writes are made with `Prefer: anchor=wait`, proof documents are exported
 * with `$verify?export=true`, the server is stopped, and `vellum verify` runs as a child process
 * (`node src/cli/bin.mjs`, what the package's `bin` runs; once through `npm run vellum`).
 *
 * Exit codes asserted: 0 verified; 1 not verified with its reason (content-mismatch,
 * proof-invalid, root-not-anchored, chain-mismatch, envelope-mismatch); 2 usage/I-O errors.
 * A node on ANOTHER chain id is "not verified: chain-mismatch" (exit 1), not an I/O error: the
 * node answered, and the answer is that this proof is not on its chain. An unreachable node is
 * exit 2 (nothing could be decided).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import t from 'tap';
import { openRpcLedger } from '../../src/chain/rpc-chain.ts';
import { HARDHAT_KEYS, jsonRpc, startHardhatNode } from '../chain/chain-helpers.ts';
import { REPO_ROOT, freePort, startProcessServer } from '../helpers/process-server.ts';

// ---------------------------------------------------------------- helpers

/** `hardhat node` as a child process on 127.0.0.1 (optionally with another chain id), stopped at teardown. */
async function startNode(chainId?: number): Promise<{ url: string; stop(): Promise<void> }> {
  const node = await startHardhatNode(await freePort(), chainId);
  t.teardown(node.stop);
  return node;
}

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
  /** stdout parsed, with --json. */
  json: any;
}

/** Runs `vellum <args>` as a child process: `node src/cli/bin.mjs`, or through `npm run vellum`. */
function vellum(args: string[], options: { npm?: boolean; stdin?: string } = {}): Promise<CliResult> {
  const env = { ...process.env };
  delete env.NODE_OPTIONS;
  const [command, argv] = options.npm
    ? ['npm', ['run', '--silent', 'vellum', '--', ...args]]
    : [process.execPath, [path.join(REPO_ROOT, 'src/cli/bin.mjs'), ...args]];
  const child = spawn(command, argv, { cwd: REPO_ROOT, env, stdio: [options.stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
  if (options.stdin !== undefined) child.stdin!.end(options.stdin);
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
  return new Promise((resolve) => {
    child.once('close', (code) => {
      clearTimeout(timer);
      let json: any;
      try {
        json = JSON.parse(stdout);
      } catch {
        json = undefined;
      }
      resolve({ code, stdout, stderr, json });
    });
  });
}

const param = (doc: any, name: string) => parametersOf(doc).parameter.find((p: any) => p.name === name);
const parametersOf = (doc: any) => doc.entry.find((e: any) => e.resource.resourceType === 'Parameters').resource;
const resourceOf = (doc: any) => doc.entry.find((e: any) => e.resource.resourceType !== 'Parameters')?.resource;
const clone = <T>(value: T): T => JSON.parse(JSON.stringify(value)) as T;

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-cli-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
let files = 0;
/** Writes `content` (a value, or raw text) to a fresh file and returns its path. */
function save(content: unknown, name = 'proof'): string {
  const file = path.join(dir, `${name}-${++files}.json`);
  fs.writeFileSync(file, typeof content === 'string' ? content : JSON.stringify(content, null, 2));
  return file;
}

// ---------------------------------------------------------------- the chain and the server

const node = await startNode();
const WAIT = { prefer: 'anchor=wait' };

t.test('proof documents exported by a live server verify with the server stopped', async (t) => {
  const server = await startProcessServer(t, {
    env: {
      VELLUM_CHAIN: 'rpc',
      VELLUM_CHAIN_RPC_URL: node.url,
      VELLUM_CHAIN_PRIVATE_KEY: HARDHAT_KEYS[0],
      VELLUM_CHAIN_ID: '31337',
      VELLUM_ANCHOR_INTERVAL_MS: '100',
    },
  });

  // Several creates at once, so that they share batches and proofs have nodes.
  const created = await Promise.all(
    ['Ada', 'Grace', 'Hedy', 'Katherine'].map((given) =>
      server.fhir('POST', 'Patient', { resourceType: 'Patient', name: [{ family: 'Example', given: [given] }], birthDate: '1970-01-01' }, WAIT),
    ),
  );
  for (const c of created) t.equal(c.status, 201, 'created and anchored');
  const id = created[0]!.json.id as string;
  const updated = await server.fhir('PUT', `Patient/${id}`, { ...created[0]!.json, name: [{ family: 'Lovelace', given: ['Ada'] }] }, WAIT);
  t.equal(updated.status, 200);
  // Exact decimals are stored as written (70.50); the leaf commits to the plain form.
  const observation = await server.fhir(
    'POST',
    'Observation',
    `{"resourceType":"Observation","status":"final","code":{"text":"weight"},"subject":{"reference":"Patient/${id}"},"valueQuantity":{"value":70.50,"unit":"kg"}}`,
    WAIT,
  );
  t.equal(observation.status, 201);
  const doomed = created[3]!.json.id as string;
  t.equal((await server.fhir('DELETE', `Patient/${doomed}`, undefined, WAIT)).status, 204);

  const exported = async (p: string) => {
    const res = await server.fhir('GET', p);
    t.equal(res.status, 200, `GET ${p}`);
    return res;
  };
  const v1 = (await exported(`Patient/${id}/_history/1/$verify?export=true`)).json;
  const v2 = (await exported(`Patient/${id}/_history/2/$verify?export=true`)).json;
  const current = (await exported(`Patient/${id}/$verify?export=true`)).json;
  const obsRes = await exported(`Observation/${observation.json.id}/$verify?export=true`);
  const deletion = (await exported(`Patient/${doomed}/_history/2/$verify?export=true`)).json;
  const others = await Promise.all(created.slice(1, 3).map(async (c) => (await exported(`Patient/${c.json.id}/_history/1/$verify?export=true`)).json));

  await t.test('the document format', async (t) => {
    t.equal(v1.resourceType, 'Bundle');
    t.equal(v1.type, 'collection');
    t.same(v1.meta.tag, [{ system: 'https://vellum.dev/fhir/CodeSystem/document-kind', code: 'proof-document-v1' }]);
    t.equal(v1.entry.length, 2, 'the resource version and the Parameters');
    const vread = await server.fhir('GET', `Patient/${id}/_history/1`);
    t.same(v1.entry[0].resource, vread.json, 'entry 1 is the version exactly as stored, meta included');
    t.equal(v1.entry[0].fullUrl, `${server.baseUrl}/Patient/${id}`);
    t.equal(v1.entry[1].resource.resourceType, 'Parameters');
    const plain = await server.fhir('GET', `Patient/${id}/_history/1/$verify`);
    const names = (p: any) => p.parameter.map((x: any) => x.name);
    t.same(names(v1.entry[1].resource), names(plain.json), 'entry 2 is the $verify Parameters');
    for (const name of ['status', 'resource', 'salt', 'pseudonym', 'digest', 'cid', 'cidDigest', 'leaf', 'root', 'leafIndex', 'batchId', 'transaction', 'blockNumber', 'chainId', 'contract', 'verified']) {
      t.ok(param(v1, name), `has ${name}`);
    }
    t.equal(param(v1, 'status').valueCode, 'anchored');
    t.equal(param(v1, 'verified').valueBoolean, true);
    t.equal(param(v1, 'chainId').valueInteger, 31337);
    t.equal(param(current, 'resource').valueString, `Patient/${id}/_history/2`, 'instance level exports the current version');
    t.match(obsRes.text, /"value":70\.50/, 'exact decimals as stored');
    t.equal(deletion.entry.length, 1, 'a deletion version has no resource entry');
    t.equal(param(deletion, 'resource').valueString, `Patient/${doomed}/_history/2`);
    const bad = await server.fhir('GET', `Patient/${id}/$verify?export=yes`);
    t.equal(bad.status, 400, 'export must be true or false');
  });

  const withNodes = [v1, v2, ...others].find((doc) => parametersOf(doc).parameter.some((p: any) => p.name === 'proof'));
  t.ok(withNodes, 'concurrent writes shared a batch: some proof has nodes');

  t.equal(await server.stop(), 0, 'the server stopped cleanly');
  await t.rejects(fetch(`${server.origin}/ready`), 'and no longer answers');

  await t.test('verified (exit 0), with the server stopped', async (t) => {
    const [a, b, c, d, e] = await Promise.all([
      vellum(['verify', save(v1), '--rpc', node.url]),
      vellum(['verify', save(v2), '--rpc', node.url, '--json']),
      vellum(['verify', save(obsRes.text), '--rpc', node.url, '--json']),
      vellum(['verify', save(deletion), '--rpc', node.url, '--json']),
      vellum(['verify', save(withNodes), '--rpc', node.url, '--json']),
    ]);
    t.equal(a.code, 0, `human-readable verdict: ${a.stderr}`);
    t.match(a.stdout, /^VERIFIED: this exact version of Patient\/.+\/_history\/1 was anchored on chain 31337/m);
    t.match(a.stdout, /PASS\s+contract/);
    for (const [r, what] of [[b, 'version 2'], [c, 'exact decimals'], [d, 'deletion'], [e, 'proof with nodes']] as const) {
      t.equal(r.code, 0, `${what}: ${r.stderr}`);
      t.equal(r.json?.verified, true, `${what}: --json says verified`);
      t.equal(r.json?.anchored?.blockNumber, param(r === c ? JSON.parse(obsRes.text) : r === b ? v2 : r === d ? deletion : withNodes, 'blockNumber').valueInteger, `${what}: block from the contract`);
    }
    t.equal(d.json.deleted, true);
    t.same(b.json.checks.map((x: any) => [x.name, x.result]), [
      ['resource', 'pass'], ['content', 'pass'], ['cid', 'pass'], ['leaf', 'pass'], ['merkle-proof', 'pass'],
      ['chain', 'pass'], ['anchored', 'pass'], ['contract', 'pass'], ['envelope', 'skip'],
    ]);
    const piped = await vellum(['verify', '-', '--rpc', node.url, '--json'], { stdin: JSON.stringify(v1) });
    t.equal(piped.code, 0, `"-" reads the document from standard input: ${piped.stderr}`);
    const viaNpm = await vellum(['verify', save(v1), '--rpc', node.url], { npm: true });
    t.equal(viaNpm.code, 0, `npm run vellum -- verify: ${viaNpm.stderr}`);
    t.match(viaNpm.stdout, /VERIFIED/);
  });

  await t.test('not verified (exit 1), with the reason', async (t) => {
    const tamperedName = clone(v2);
    resourceOf(tamperedName).name[0].family = 'Byron';
    const renamed = clone(v2);
    resourceOf(renamed).id = created[1]!.json.id;
    const tamperedDecimal = JSON.parse(obsRes.text);
    resourceOf(tamperedDecimal).valueQuantity.value = 70.51;
    const droppedResource = clone(v1);
    droppedResource.entry.splice(0, 1);
    const tamperedNode = clone(withNodes);
    const nodeParam = parametersOf(tamperedNode).parameter.find((p: any) => p.name === 'proof');
    nodeParam.valueString = nodeParam.valueString.slice(0, -1) + (nodeParam.valueString.endsWith('0') ? '1' : '0');
    // Consistent forgery: the content changed AND the digest and leaf parameters recomputed
    // would still need a proof to an anchored root; here, the leaf of another version.
    const swappedProof = clone(v2);
    const v1Proof = parametersOf(v1).parameter.filter((p: any) => ['root', 'proof'].includes(p.name));
    parametersOf(swappedProof).parameter = [...parametersOf(swappedProof).parameter.filter((p: any) => !['root', 'proof'].includes(p.name)), ...v1Proof];
    const noContract = clone(v1);
    param(noContract, 'contract').valueString = '0x000000000000000000000000000000000000dEaD';
    const wrongChain = clone(v1);
    param(wrongChain, 'chainId').valueInteger = 1;
    const pending = clone(v1);
    parametersOf(pending).parameter = parametersOf(pending).parameter.filter(
      (p: any) => !['root', 'proof', 'leafIndex', 'manifestCid', 'batchId', 'transaction', 'blockNumber', 'anchoredAt', 'chainId', 'contract'].includes(p.name),
    );
    param(pending, 'status').valueCode = 'pending';

    // Another, genuine AnchorRegistry on the same chain, which never anchored this root.
    const other = await openRpcLedger({ rpcUrl: node.url, privateKey: HARDHAT_KEYS[1], deploy: true, chainId: 31337, confirmations: 1, pollIntervalMs: 20 });
    await other.close();
    const otherRegistry = clone(v1);
    param(otherRegistry, 'contract').valueString = other.contract;
    // A node on another chain.
    const elsewhere = await startNode(1337);

    const cases: [string, unknown, string, string[]?][] = [
      ['tampered resource (a name changed)', tamperedName, 'content-mismatch'],
      ['resource of another id', renamed, 'content-mismatch'],
      ['tampered decimal', tamperedDecimal, 'content-mismatch'],
      ['resource removed (claims a deletion)', droppedResource, 'content-mismatch'],
      ['tampered proof node', tamperedNode, 'proof-invalid'],
      ["another version's proof", swappedProof, 'proof-invalid'],
      ['contract address with no code', noContract, 'root-not-anchored'],
      ['another registry', otherRegistry, 'root-not-anchored'],
      ['document chain id differs from the node', wrongChain, 'chain-mismatch'],
      ['node on another chain', v1, 'chain-mismatch', ['--rpc', elsewhere.url]],
      ['pending document (no root)', pending, 'root-not-anchored'],
    ];
    const results = await Promise.all(
      cases.map(([, doc, , extra]) => vellum(['verify', save(doc), '--json', ...(extra ?? ['--rpc', node.url])])),
    );
    cases.forEach(([what, , reason], i) => {
      const r = results[i]!;
      t.equal(r.code, 1, `${what}: exit 1 (${r.stderr})`);
      t.equal(r.json?.verified, false, `${what}: not verified`);
      t.equal(r.json?.reason, reason, `${what}: ${reason}`);
    });
    const human = await vellum(['verify', save(tamperedName), '--rpc', node.url]);
    t.equal(human.code, 1);
    t.match(human.stdout, /NOT VERIFIED \(content-mismatch\)/);
    t.match(human.stdout, /FAIL\s+content/);
  });

  await t.test('usage and I/O errors (exit 2)', async (t) => {
    const notProof = { resourceType: 'Patient', id: 'x' };
    const badHex = clone(v1);
    param(badHex, 'salt').valueString = '0x1234';
    const unreachable = `http://127.0.0.1:${await freePort()}`;
    const cases: [string, string[]][] = [
      ['missing file', ['verify', path.join(dir, 'nope.json'), '--rpc', node.url]],
      ['not JSON', ['verify', save('{"resourceType": "Bundle", '), '--rpc', node.url]],
      ['not a proof document', ['verify', save(notProof), '--rpc', node.url]],
      ['malformed salt', ['verify', save(badHex), '--rpc', node.url]],
      ['no --rpc', ['verify', save(v1)]],
      ['--rpc not a URL', ['verify', save(v1), '--rpc', 'localhost:8545']],
      ['unknown option', ['verify', save(v1), '--rpc', node.url, '--frobnicate']],
      ['RPC node unreachable', ['verify', save(v1), '--rpc', unreachable]],
      ['unknown command', ['frobnicate']],
      ['no command', []],
    ];
    const results = await Promise.all(cases.map(([, args]) => vellum(args)));
    cases.forEach(([what], i) => {
      t.equal(results[i]!.code, 2, `${what}: exit 2`);
      t.ok(results[i]!.stderr.length > 0, `${what}: says why on stderr`);
    });
    const json = await vellum(['verify', path.join(dir, 'nope.json'), '--rpc', node.url, '--json']);
    t.equal(json.code, 2);
    t.equal(json.json?.verified, null, '--json reports errors as JSON too');
    t.equal(json.json?.error?.kind, 'io');
  });

  await t.test('--ipfs: the envelope fetched from a Kubo RPC API is checked against its CID', async (t) => {
    // A stand-in for Kubo's RPC API (POST /api/v0/block/get?arg=<cid>), serving the stopped
    // server's blocks from its database; `corrupt` flips a byte of everything it serves.
    const db = new DatabaseSync(path.join(server.dataDir, 'vellum.db'), { readOnly: true });
    t.teardown(() => db.close());
    let corrupt = false;
    const kubo = http.createServer((req, res) => {
      const url = new URL(req.url!, 'http://x');
      const row = db.prepare('SELECT bytes FROM blocks WHERE cid = ?').get(url.searchParams.get('arg')) as { bytes: Uint8Array } | undefined;
      if (req.method !== 'POST' || url.pathname !== '/api/v0/block/get' || !row) {
        res.writeHead(500, { 'content-type': 'application/json' }).end('{"Message":"block was not found locally (offline): ipld: could not find node","Code":0,"Type":"error"}');
        return;
      }
      const bytes = Buffer.from(row.bytes);
      if (corrupt) bytes[bytes.length >> 1] = bytes[bytes.length >> 1]! ^ 1;
      res.writeHead(200, { 'content-type': 'text/plain' }).end(bytes);
    });
    await new Promise<void>((resolve) => kubo.listen(0, '127.0.0.1', resolve));
    t.teardown(() => kubo.close());
    const ipfs = `http://127.0.0.1:${(kubo.address() as { port: number }).port}`;

    const good = await vellum(['verify', save(v1), '--rpc', node.url, '--ipfs', ipfs, '--json']);
    t.equal(good.code, 0, good.stderr);
    t.match(good.json.checks.find((c: any) => c.name === 'envelope'), { result: 'pass' });
    corrupt = true;
    const bad = await vellum(['verify', save(v1), '--rpc', node.url, '--ipfs', ipfs, '--json']);
    t.equal(bad.code, 1, bad.stderr);
    t.equal(bad.json.reason, 'envelope-mismatch');
    const missing = clone(v1);
    param(missing, 'cid').valueString = 'bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy';
    // A cid that is not the leaf's: content-mismatch before IPFS is even asked.
    const other = await vellum(['verify', save(missing), '--rpc', node.url, '--ipfs', ipfs, '--json']);
    t.equal(other.code, 1);
    t.equal(other.json.reason, 'content-mismatch');
    const down = await vellum(['verify', save(v1), '--rpc', node.url, '--ipfs', `http://127.0.0.1:${await freePort()}`]);
    t.equal(down.code, 2, 'IPFS unreachable: exit 2');
  });
});
