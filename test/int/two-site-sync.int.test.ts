/**
 * Two sites kept in step by `vellum sync`: site A (anchoring on a `hardhat node`) and site B (its
 * own embedded chain) run as separate processes with their own data dirs. An HIE's Backend
 * Services client of A, registered with a signing key and an encryption key, syncs A into B:
 * files arrive encrypted to its key, every line is verified against A's proofs and A's chain,
 * and B writes what it imports through its own write path (anchored on B's chain) with a
 * cross-site Provenance that B's `$verify` reports. Creates, updates and deletes on A appear on B
 * after the next sync; a sync with nothing new writes nothing. The export downloaded by
 * `vellum export` verifies offline (`vellum verify --export`), and an altered line is named.
 *
 * Consent is off on A: the sync client is a system client, which consent would gate per patient
 * (consent-gated exports are tested in test/fhir/bulk/); here the subject is the exchange.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { exportJWK, generateKeyPair } from 'jose';
import { main } from '../../src/cli/vellum.ts';
import { HARDHAT_KEYS, freePort, startHardhatNode } from '../chain/chain-helpers.ts';
import { startProcessServer, type ProcessServer } from '../helpers/process-server.ts';

const WAIT = { prefer: 'anchor=wait' };

/** Runs `vellum <argv>` in this process, capturing its output. */
async function vellum(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await main(argv, { stdout: { write: (s: string) => (stdout += s) }, stderr: { write: (s: string) => (stderr += s) } });
  return { code, stdout, stderr };
}

/** The last JSON line of a `--json` run. */
const done = (stdout: string) => JSON.parse(stdout.trim().split('\n').pop()!);

/** A resource without the server's version stamp (what must match across sites). */
function content(resource: any): any {
  const { meta, ...rest } = resource;
  const { versionId: _v, lastUpdated: _l, ...kept } = meta ?? {};
  return Object.keys(kept).length ? { ...rest, meta: kept } : rest;
}

const param = (parameters: any, name: string) => parameters.parameter.find((p: any) => p.name === name);

/** `$verify` of a version on `site` once it is anchored there (anchoring runs every 100 ms). */
async function verifiedOn(site: ProcessServer, reference: string): Promise<any> {
  for (;;) {
    const res = await site.fhir('GET', `${reference}/$verify`);
    if (res.status !== 200) throw new Error(`$verify ${reference} → ${res.status}`);
    if (param(res.json, 'status')?.valueCode === 'anchored') return res.json;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

t.test('site B follows site A through vellum sync', async (t) => {
  const node = await startHardhatNode(await freePort());
  t.teardown(node.stop);
  const [a, b] = await Promise.all([
    startProcessServer(t, {
      env: {
        VELLUM_CHAIN: 'rpc',
        VELLUM_CHAIN_RPC_URL: node.url,
        VELLUM_CHAIN_PRIVATE_KEY: HARDHAT_KEYS[0],
        VELLUM_CHAIN_ID: '31337',
        VELLUM_ANCHOR_INTERVAL_MS: '100',
        VELLUM_CONSENT: 'off',
      },
    }),
    startProcessServer(t, { env: { VELLUM_ANCHOR_INTERVAL_MS: '100' } }),
  ]);

  // The HIE's client of A: a signing key for its assertions and an encryption key for the files.
  const signing = await generateKeyPair('ES384', { extractable: true });
  const encryption = await generateKeyPair('ECDH-ES+A256KW', { crv: 'P-256', extractable: true });
  const sigPublic = { ...(await exportJWK(signing.publicKey)), kid: 'sig-1', alg: 'ES384' };
  const encPublic = { ...(await exportJWK(encryption.publicKey)), kid: 'enc-1', use: 'enc', alg: 'ECDH-ES+A256KW' };
  const registered = await a.http(
    'POST',
    '/auth/register',
    { token_endpoint_auth_method: 'private_key_jwt', grant_types: ['client_credentials'], scope: 'system/*.read', client_name: 'HIE sync', jwks: { keys: [sigPublic, encPublic] } },
    { authorization: `Bearer ${a.token}`, 'content-type': 'application/json' },
  );
  t.equal(registered.status, 201, 'the HIE client is registered with an encryption key');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-sync-test-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const keyFile = path.join(dir, 'hie-keys.json');
  fs.writeFileSync(
    keyFile,
    JSON.stringify({ keys: [{ ...(await exportJWK(signing.privateKey)), kid: 'sig-1', alg: 'ES384' }, { ...(await exportJWK(encryption.privateKey)), kid: 'enc-1', use: 'enc' }] }),
  );
  const tokenUrl = `${a.origin}/auth/token`;
  const source = ['--from', a.baseUrl, '--client-id', registered.json.client_id, '--key', keyFile, '--token-url', tokenUrl];
  const stateFile = path.join(dir, 'state.json');
  const sync = () =>
    vellum(['sync', ...source, '--to', b.baseUrl, '--credentials', path.join(b.dataDir, 'admin-client.json'), '--state', stateFile, '--once', '--rpc', node.url, '--json']);

  // Site A's record: two patients and their observations, anchored on A's chain.
  const p1 = await a.fhir('PUT', 'Patient/sync-p1', { resourceType: 'Patient', id: 'sync-p1', name: [{ family: 'Okafor', given: ['Ada'] }], birthDate: '1980-02-03' }, WAIT);
  const p2 = await a.fhir('PUT', 'Patient/sync-p2', { resourceType: 'Patient', id: 'sync-p2', name: [{ family: 'Lind' }] }, WAIT);
  const o1 = await a.fhir(
    'PUT',
    'Observation/sync-o1',
    '{"resourceType":"Observation","id":"sync-o1","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"29463-7"}]},"subject":{"reference":"Patient/sync-p1"},"valueQuantity":{"value":70.50,"unit":"kg"}}',
    WAIT,
  );
  for (const res of [p1, p2, o1]) t.equal(res.status, 201);

  // Round 1: everything.
  const first = await sync();
  t.equal(first.code, 0, first.stderr);
  const round1 = done(first.stdout);
  t.equal(round1.imported, 3, 'three resources imported');
  t.equal(round1.refused.length, 0);
  t.same(JSON.parse(fs.readFileSync(stateFile, 'utf8')).transactionTime, round1.transactionTime, 'the position is stored');
  for (const ref of ['Patient/sync-p1', 'Patient/sync-p2', 'Observation/sync-o1']) {
    const [onA, onB] = await Promise.all([a.fhir('GET', ref), b.fhir('GET', ref)]);
    t.equal(onB.status, 200, `${ref} is on B`);
    t.same(content(onB.json), content(onA.json), `${ref} has A's content on B`);
  }
  t.match((await b.fhir('GET', 'Observation/sync-o1')).text, '"value":70.50', 'decimals kept exactly');

  // B anchored the imported version on its own chain, and keeps A's anchoring as its origin.
  const onA = await verifiedOn(a, 'Patient/sync-p1');
  const onB = await verifiedOn(b, 'Patient/sync-p1');
  t.equal(param(onB, 'verified').valueBoolean, true, 'verified on B');
  t.not(param(onB, 'transaction').valueString, param(onA, 'transaction').valueString, 'B anchors in its own transaction');
  const origin = param(onB, 'origin');
  t.ok(origin, '$verify on B reports where the version came from');
  const part = (name: string) => origin.part.find((p: any) => p.name === name);
  t.equal(part('resource').valueString, 'Patient/sync-p1/_history/1');
  t.equal(part('transaction').valueString, param(onA, 'transaction').valueString, "A's anchoring transaction");
  t.equal(part('chainId').valueInteger, 31337);
  t.equal(part('source').valueUri, a.baseUrl);

  // Changes on A: an update, a deletion, a new resource.
  t.equal((await a.fhir('PUT', 'Patient/sync-p1', { resourceType: 'Patient', id: 'sync-p1', name: [{ family: 'Okafor-Lind', given: ['Ada'] }], birthDate: '1980-02-03' }, WAIT)).status, 200);
  t.equal((await a.fhir('DELETE', 'Patient/sync-p2', undefined, WAIT)).status, 204);
  t.equal((await a.fhir('PUT', 'Observation/sync-o2', { resourceType: 'Observation', id: 'sync-o2', status: 'final', code: { text: 'pulse' }, subject: { reference: 'Patient/sync-p1' } }, WAIT)).status, 201);

  const second = await sync();
  t.equal(second.code, 0, second.stderr);
  const round2 = done(second.stdout);
  t.equal(round2.imported, 2, 'only the update and the new resource are imported');
  t.equal(round2.deleted, 1, 'the deletion is applied');
  t.equal((await b.fhir('GET', 'Patient/sync-p1')).json.name[0].family, 'Okafor-Lind');
  t.equal((await b.fhir('GET', 'Patient/sync-p2')).status, 410, 'deleted on B');
  t.equal((await b.fhir('GET', 'Observation/sync-o2')).status, 200);

  // Nothing new: nothing written.
  const versions = async () => Promise.all(['Patient/sync-p1', 'Observation/sync-o1', 'Observation/sync-o2'].map(async (ref) => (await b.fhir('GET', ref)).json.meta.versionId));
  const before = await versions();
  const third = await sync();
  t.equal(third.code, 0, third.stderr);
  const round3 = done(third.stdout);
  t.equal(round3.imported, 0, 'a sync with nothing new imports nothing');
  t.same(await versions(), before, 'no version was added on B');

  // The export, downloaded and verified offline against A's chain; an altered line is named.
  const out = path.join(dir, 'export');
  const exported = await vellum(['export', ...source, '--out', out, '--json']);
  t.equal(exported.code, 0, exported.stderr);
  const verified = await vellum(['verify', '--export', out, '--rpc', node.url, '--json']);
  t.equal(verified.code, 0, verified.stdout);
  t.equal(JSON.parse(verified.stdout).verified, JSON.parse(verified.stdout).lines);
  const manifest = JSON.parse(fs.readFileSync(path.join(out, 'manifest.json'), 'utf8'));
  const patients = path.join(out, new URL(manifest.output.find((o: any) => o.type === 'Patient').url).pathname.split('/').pop()!);
  fs.writeFileSync(patients, fs.readFileSync(patients, 'utf8').replace('Okafor-Lind', 'Okafor-Lynd'));
  const altered = await vellum(['verify', '--export', out, '--rpc', node.url]);
  t.equal(altered.code, 1, 'an altered line fails');
  t.match(altered.stdout, /NOT VERIFIED \S+:1 Patient\/sync-p1\/_history\/2: content-mismatch/);
});
