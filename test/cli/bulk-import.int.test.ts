/**
 * `vellum import` and `vellum export` against real servers listening on HTTP (in-process, with
 * authorization on): the official R4 Patient and Observation examples imported as ndjson through
 * the write path, keeping ids; a second run writes nothing; a run resumes where the last stopped;
 * invalid lines are refused and listed; proofs files are checked first (an altered line is refused).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import { main } from '../../src/cli/vellum.ts';
import { CORPORA } from '../helpers/corpora.ts';
import { freePort } from '../helpers/process-server.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

async function vellum(argv: string[]): Promise<{ code: number; stdout: string; stderr: string; events: any[] }> {
  let stdout = '';
  let stderr = '';
  const code = await main(argv, { stdout: { write: (s: string) => (stdout += s) }, stderr: { write: (s: string) => (stderr += s) } });
  const events = stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l));
  return { code, stdout, stderr, events };
}

/** A Vellum with authorization on, listening on 127.0.0.1 (its token URL and base match its port). */
async function listening(t: Test, env: Record<string, string> = {}): Promise<TestServer & { base: string; credentials: string }> {
  const port = await freePort();
  const server = await startTestServer(t, { PORT: String(port), VELLUM_AUTH: 'embedded', ...env });
  await server.app.listen({ port, host: '127.0.0.1' });
  return { ...server, base: `http://127.0.0.1:${port}/fhir`, credentials: path.join(server.dataDir, 'admin-client.json') };
}

/** An administrator token of a listening server. */
async function adminToken(credentials: string): Promise<string> {
  const admin = JSON.parse(fs.readFileSync(credentials, 'utf8'));
  const res = await fetch(admin.token_url, {
    method: 'POST',
    headers: { authorization: `Basic ${Buffer.from(`${admin.client_id}:${admin.client_secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'system/*.*' }),
  });
  return ((await res.json()) as { access_token: string }).access_token;
}

const examples = (type: string) =>
  fs
    .readdirSync(path.join(CORPORA, 'r4-examples', type))
    .sort()
    .map((f) => fs.readFileSync(path.join(CORPORA, 'r4-examples', type, f), 'utf8'));

/** One line of ndjson per example (compact JSON; decimals as the file wrote them are kept by JSON.parse only as numbers). */
const ndjson = (texts: string[]) => texts.map((text) => JSON.stringify(JSON.parse(text))).join('\n') + '\n';

t.test('import: examples through the write path, idempotent, resumable, refusals listed', async (t) => {
  const target = await listening(t);
  const token = await adminToken(target.credentials);
  const get = async (ref: string) => (await fetch(`${target.base}/${ref}`, { headers: { authorization: `Bearer ${token}`, accept: 'application/fhir+json' } }));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-import-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const patients = examples('Patient');
  const observations = examples('Observation');
  fs.writeFileSync(path.join(dir, '1-Patient.ndjson'), ndjson(patients));
  // One line that is not a valid resource (gender outside its value set), one that is not JSON.
  fs.writeFileSync(
    path.join(dir, '2-Observation.ndjson'),
    ndjson(observations) + '{"resourceType":"Observation","id":"bad-one","status":"not-a-status","code":{"text":"x"}}\n{not json\n',
  );
  const args = ['import', dir, '--to', target.base, '--credentials', target.credentials, '--chunk', '25', '--json'];

  const first = await vellum(args);
  const summary = first.events.at(-1);
  t.equal(summary.event, 'done');
  t.equal(summary.lines, patients.length + observations.length + 2);
  t.equal(summary.imported + summary.unchanged + summary.refused.length, summary.lines, 'every line is accounted for');
  t.ok(summary.imported >= patients.length + observations.length - 5, 'nearly all official examples are imported');
  t.equal(first.code, 1, 'refusals make the exit code 1');
  const refusedIds = summary.refused.map((r: any) => r.resource);
  t.ok(refusedIds.includes('Observation/bad-one'), 'the invalid resource is refused and named');
  t.ok(summary.refused.some((r: any) => r.reason === 'malformed' && r.line === observations.length + 2), 'the non-JSON line is named by its line');
  t.ok(first.events.some((e) => e.event === 'progress' && e.total === summary.lines), 'progress lines carry counts');
  // Ids are kept and content is the example's.
  const example = JSON.parse(patients.find((p) => JSON.parse(p).id === 'example')!);
  const stored = await (await get('Patient/example')).json();
  t.same(stored.name, example.name, 'Patient/example kept its id and content');
  t.equal(stored.meta.versionId, '1');

  // Again: nothing new is written (the resume state says all is done, and unchanged content is skipped anyway).
  fs.rmSync(path.join(dir, '.vellum-import.json'));
  const second = await vellum(args);
  const again = second.events.at(-1);
  t.equal(again.imported, 0, 'a second run imports nothing');
  t.equal(again.unchanged, summary.imported, 'every imported resource is found unchanged');
  t.equal((await (await get('Patient/example')).json()).meta.versionId, '1', 'no version was added');

  // Resume: a state that says the first 10 patients were done skips them.
  const fresh = await listening(t);
  fs.writeFileSync(path.join(dir, '.vellum-import.json'), JSON.stringify({ done: { '1-Patient.ndjson': 10 } }));
  const resumed = await vellum(['import', dir, '--to', fresh.base, '--credentials', fresh.credentials, '--json']);
  const third = resumed.events.at(-1);
  t.equal(third.lines, summary.lines - 10, 'the run resumed after the first 10 lines');
  const freshToken = await adminToken(fresh.credentials);
  const skipped = JSON.parse(patients[0]!).id;
  const absent = await fetch(`${fresh.base}/Patient/${skipped}`, { headers: { authorization: `Bearer ${freshToken}` } });
  t.equal(absent.status, 404, 'a line before the resume point was not written');
});

t.test('export then import: proofs are checked first, an altered line is refused', async (t) => {
  const source = await listening(t, { VELLUM_CHAIN: 'embedded', VELLUM_ANCHOR_INTERVAL_MS: '50', VELLUM_CONSENT: 'off' });
  const sourceToken = await adminToken(source.credentials);
  for (const id of ['imp-1', 'imp-2', 'imp-3']) {
    const res = await fetch(`${source.base}/Patient/${id}`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${sourceToken}`, 'content-type': 'application/fhir+json', prefer: 'anchor=wait' },
      body: JSON.stringify({ resourceType: 'Patient', id, name: [{ family: `Family-${id}` }] }),
    });
    t.equal(res.status, 201);
  }
  // `vellum export` with the administrator's client secret is not a Backend Services client: use the token URL's client.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-export-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const registered = await fetch(`${source.base.replace('/fhir', '')}/auth/register`, {
    method: 'POST',
    headers: { authorization: `Bearer ${sourceToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ token_endpoint_auth_method: 'private_key_jwt', grant_types: ['client_credentials'], scope: 'system/Patient.read', jwks: { keys: [await publicJwk()] } }),
  });
  t.equal(registered.status, 201);
  const clientId = ((await registered.json()) as { client_id: string }).client_id;
  const keyFile = path.join(dir, '..', `${path.basename(dir)}-key.json`);
  fs.writeFileSync(keyFile, JSON.stringify(await privateJwk()));
  t.teardown(() => fs.rmSync(keyFile, { force: true }));
  const exported = await vellum(['export', '--from', source.base, '--out', dir, '--client-id', clientId, '--key', keyFile, '--token-url', JSON.parse(fs.readFileSync(source.credentials, 'utf8')).token_url, '--scope', 'system/Patient.read', '--json']);
  t.equal(exported.code, 0, exported.stderr);
  t.equal(exported.events.at(-1).resources, 3);

  const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
  const file = path.join(dir, new URL(manifest.output[0].url).pathname.split('/').pop()!);
  const lines = fs.readFileSync(file, 'utf8').trim().split('\n');
  const altered = lines.findIndex((l) => l.includes('imp-2'));
  lines[altered] = lines[altered]!.replace('Family-imp-2', 'Family-imp-X');
  fs.writeFileSync(file, lines.join('\n') + '\n');

  const target = await listening(t);
  const run = await vellum(['import', dir, '--to', target.base, '--credentials', target.credentials, '--json']);
  const summary = run.events.at(-1);
  t.equal(run.code, 1);
  t.equal(summary.imported, 2, 'the lines whose proofs hold are imported');
  t.same(summary.refused.map((r: any) => [r.resource, r.reason, r.line]), [['Patient/imp-2', 'content-mismatch', altered + 1]], 'the altered line is refused and named');
});

// A P-384 signing key pair for the Backend Services client (generated once per run).
let pair: { publicKey: CryptoKey; privateKey: CryptoKey } | undefined;
async function keyPair() {
  const { generateKeyPair } = await import('jose');
  pair ??= (await generateKeyPair('ES384', { extractable: true })) as { publicKey: CryptoKey; privateKey: CryptoKey };
  return pair;
}
async function publicJwk() {
  const { exportJWK } = await import('jose');
  return { ...(await exportJWK((await keyPair()).publicKey)), kid: 'k1', alg: 'ES384' };
}
async function privateJwk() {
  const { exportJWK } = await import('jose');
  return { ...(await exportJWK((await keyPair()).privateKey)), kid: 'k1', alg: 'ES384' };
}
