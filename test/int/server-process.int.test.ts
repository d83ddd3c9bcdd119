/**
 * The real server, started as `npm start` starts it (a separate Node process configured by the
 * environment), driven over HTTP: first start on an empty data dir, health/readiness, graceful
 * SIGTERM with writes in flight, restart on the same data, configuration errors, master key from
 * the environment, a wrong master key, and what the JSON logs may (not) contain.
 */
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import {
  holdRequest,
  parseLogLines,
  runUntilExit,
  startProcessServer,
  tempDataDir,
  type ProcessServer,
} from '../helpers/process-server.ts';

function issueCodes(outcome: any): string[] {
  return (outcome?.issue ?? []).map((i: any) => i.code);
}

/** Distinctive patient values: none of them may ever reach a log line. */
function distinctivePatient() {
  const tag = randomBytes(4).toString('hex');
  return {
    family: `Quorvantis${tag}`,
    identifierSystem: 'urn:oid:2.16.840.1.113883.19.5',
    identifierValue: `MRN${randomBytes(5).toString('hex')}`,
    birthDate: '1931-07-19',
  };
}

function patientResource(p: ReturnType<typeof distinctivePatient>, given = 'Ysolde') {
  return {
    resourceType: 'Patient',
    identifier: [{ system: p.identifierSystem, value: p.identifierValue }],
    name: [{ family: p.family, given: [given] }],
    birthDate: p.birthDate,
    gender: 'female',
  };
}

/** A fresh 32-byte key, as 64 hex digits and as base64url. */
function newKey(): { hex: string; base64url: string } {
  const bytes = randomBytes(32);
  return { hex: bytes.toString('hex'), base64url: bytes.toString('base64url') };
}

/** The key file's key in every text form a leak could take. */
function keyForms(keyFileText: string): string[] {
  const b64url = keyFileText.trim();
  const bytes = Buffer.from(b64url, 'base64url');
  return [b64url, bytes.toString('base64'), bytes.toString('hex'), bytes.toString('hex').toUpperCase()];
}

/**
 * Every log line (stdout and stderr) is a JSON object; request lines carry reqId, method, route,
 * status and latency; no line contains any of `secrets`.
 */
function checkLogs(t: Test, server: { lines(): string[]; stderr(): string }, secrets: string[], label: string) {
  const lines = [...server.lines(), ...server.stderr().split('\n').filter(Boolean)];
  t.ok(lines.length > 0, `${label}: the server logged`);
  const parsed = parseLogLines(lines);
  const notJson = parsed.filter((l) => l.parsed === undefined).map((l) => l.line);
  t.same(notJson, [], `${label}: every log line is a JSON object`);
  const requests = parsed.filter((l) => l.parsed?.msg === 'request').map((l) => l.parsed);
  t.ok(requests.length > 0, `${label}: request lines are logged`);
  const bad = requests.filter(
    (r) =>
      typeof r.reqId !== 'string' ||
      r.reqId.length === 0 ||
      typeof r.method !== 'string' ||
      !('route' in r) ||
      typeof r.status !== 'number' ||
      typeof r.ms !== 'number',
  );
  t.same(bad, [], `${label}: every request line has reqId, method, route, status and latency (ms)`);
  t.ok(
    requests.every((r) => r.route === null || (typeof r.route === 'string' && !r.route.includes('?'))),
    `${label}: routes are patterns, never URLs with a query`,
  );
  for (const secret of secrets) {
    const leaking = lines.filter((line) => line.includes(secret));
    t.same(leaking, [], `${label}: no log line contains a protected value (${secret.length} chars)`);
  }
  return requests;
}


/** The data dir's files after a first start with the key-file default. */
const DATABASE = 'vellum.db';
const DATA_FILES = [DATABASE, 'master.key'];

t.test('npm start: first start, health, graceful SIGTERM with writes in flight, restart, logs', async (t) => {
  const dataDir = tempDataDir(t);
  t.same(fs.readdirSync(dataDir), [], 'the data dir starts empty');
  const p = distinctivePatient();

  const first = await startProcessServer(t, { dataDir });
  // One SQLite file holds blocks and index (one WAL, one group fsync: src/server.ts).
  for (const file of DATA_FILES) t.ok(fs.existsSync(path.join(dataDir, file)), `${file} created`);
  t.equal(fs.statSync(path.join(dataDir, 'master.key')).mode & 0o777, 0o600, 'master.key has mode 0600');
  const keyText = fs.readFileSync(path.join(dataDir, 'master.key'), 'utf8');
  t.match(keyText.trim(), /^[A-Za-z0-9_-]{43}$/, 'the key file holds a 32-byte base64url key');

  const health = await first.http('GET', '/health');
  t.equal(health.status, 200);
  t.same(health.json, { status: 'ok' });
  const ready = await first.http('GET', '/ready');
  t.equal(ready.status, 200);
  t.same(ready.json, { status: 'ready', chain: 'ok', anchorBacklog: 0 }, 'ready, with the embedded chain answering');
  const metadata = await first.fhir('GET', 'metadata');
  t.equal(metadata.status, 200);
  t.equal(metadata.json?.resourceType, 'CapabilityStatement');

  // A patient with distinctive values, searched so that the values travel in URLs.
  const created = await first.fhir('POST', 'Patient', patientResource(p));
  t.equal(created.status, 201);
  const patientId: string = created.json.id;
  t.equal(created.headers.get('location'), `${first.baseUrl}/Patient/${patientId}/_history/1`);
  for (const query of [
    `Patient?family=${p.family}`,
    `Patient?name=${p.family}&birthdate=${p.birthDate}`,
    `Patient?identifier=${encodeURIComponent(`${p.identifierSystem}|${p.identifierValue}`)}`,
  ]) {
    const found = await first.fhir('GET', query);
    t.equal(found.status, 200, `search ${query.split('?')[0]}`);
    t.same(
      found.json.entry.filter((e: any) => e.search.mode === 'match').map((e: any) => e.resource.id),
      [patientId],
      'the search finds exactly the patient',
    );
  }
  t.equal((await first.fhir('GET', `Patient/${p.identifierValue}`)).status, 404, 'an unknown id (distinctive) is 404');

  // 20 concurrent creates in flight at SIGTERM: the server has read their headers (100 Continue)
  // and their bodies follow the signal. Keep-alive connections, as real clients use.
  const agent = new http.Agent({ keepAlive: true });
  t.teardown(() => agent.destroy());
  const held = Array.from({ length: 20 }, (_, i) =>
    holdRequest(first.origin, 'POST', '/fhir/Patient', JSON.stringify(patientResource(p, `Inflight${i}`)), {
      agent,
      headers: { authorization: `Bearer ${first.token}` },
    }),
  );
  await Promise.all(held.map((h) => h.accepted));
  const stopping = first.stop();
  for (const h of held) h.release();
  const outcomes = await Promise.all(held.map((h) => h.result));
  const exitCode = await stopping;
  t.equal(exitCode, 0, 'SIGTERM: the process drains the in-flight requests and exits 0');
  const succeeded = outcomes.filter((o) => o.status !== undefined && o.status >= 200 && o.status < 300);
  t.ok(succeeded.every((o) => o.status === 201 && typeof o.json?.id === 'string'), 'every 2xx create is a 201 with an id');
  const failed = outcomes.filter((o) => !succeeded.includes(o));
  t.ok(failed.every((o) => o.error !== undefined || o.status! >= 500), 'the others failed visibly (5xx or connection error)');
  t.comment(
    `in-flight creates at SIGTERM: ${succeeded.length} × 2xx, ${failed.filter((o) => o.status).length} × 5xx, ` +
      `${failed.filter((o) => o.error).length} × connection error`,
  );
  t.ok(
    first.lines().some((l) => l.includes('"shutting down"') && l.includes('SIGTERM')),
    'the shutdown is logged',
  );

  // Restart on the same data dir: everything acknowledged is there.
  const second = await startProcessServer(t, { dataDir });
  t.equal(fs.readFileSync(path.join(dataDir, 'master.key'), 'utf8'), keyText, 'the key file is reused, not replaced');
  const readBack = await second.fhir('GET', `Patient/${patientId}`);
  t.equal(readBack.status, 200, 'the first patient reads back after restart');
  t.same(readBack.json.name, patientResource(p).name);
  t.equal(readBack.json.birthDate, p.birthDate);
  for (const o of succeeded) {
    const res = await second.fhir('GET', `Patient/${o.json.id}`);
    t.equal(res.status, 200, `acknowledged create ${o.json.id} is durable`);
  }
  const search = await second.fhir('GET', `Patient?family=${p.family}&_summary=count`);
  t.equal(search.status, 200);
  // A create may commit and then lose its connection: more rows than acknowledgements is allowed.
  t.ok(search.json.total >= 1 + succeeded.length, `search total ${search.json.total} covers every acknowledged create`);
  const history = await second.fhir('GET', 'Patient/_history?_count=100');
  t.equal(history.status, 200);
  t.equal(history.json.total, search.json.total, 'type history agrees with the search (no half-written versions)');
  t.equal(await second.stop(), 0);

  const secrets = [p.family, p.identifierValue, p.birthDate, ...keyForms(keyText)];
  const firstRequests = checkLogs(t, first, secrets, 'first run');
  t.ok(
    firstRequests.some((r) => r.route === '/fhir/:type' && r.method === 'GET' && r.status === 200),
    'the searches are logged by route pattern',
  );
  t.ok(firstRequests.some((r) => r.status === 404), 'the 404 is logged');
  checkLogs(t, second, secrets, 'second run');
});

t.test('a bad configuration value stops the server with a message naming the variable', async (t) => {
  const secretLooking = `not-a-key-${randomBytes(6).toString('hex')}`;
  const cases: { variable: string; value: string }[] = [
    { variable: 'PORT', value: 'abc' },
    { variable: 'VELLUM_BASE_URL', value: 'notaurl' },
    { variable: 'VELLUM_MASTER_KEY', value: '' },
    { variable: 'VELLUM_MASTER_KEY', value: secretLooking },
    { variable: 'VELLUM_AUDIT_BATCH_MS', value: '-1' },
    { variable: 'VELLUM_AUDIT_BATCH_MS', value: 'soon' },
  ];
  for (const { variable, value } of cases) {
    const dataDir = tempDataDir(t);
    const result = await runUntilExit(t, {
      HOST: '127.0.0.1',
      PORT: '0',
      VELLUM_DATA_DIR: dataDir,
      VELLUM_LOG_LEVEL: 'info',
      [variable]: value,
    });
    const label = `${variable}=${JSON.stringify(value)}`;
    t.not(result.code, 0, `${label}: exits non-zero`);
    t.equal(result.code !== null, true, `${label}: exits on its own (not killed)`);
    t.match(result.stderr, variable, `${label}: the message names ${variable}`);
    if (variable === 'VELLUM_MASTER_KEY') {
      t.notOk(fs.existsSync(path.join(dataDir, 'master.key')), `${label}: no key file is created`);
      if (value) t.notMatch(result.stderr + result.stdout, value, `${label}: the message does not echo the key`);
    }
  }
});

t.test('VELLUM_MASTER_KEY: no key file; a different key cannot read old data', async (t) => {
  const dataDir = tempDataDir(t);
  const key = newKey();
  const other = newKey();
  const p = distinctivePatient();

  const first = await startProcessServer(t, { dataDir, env: { VELLUM_MASTER_KEY: key.hex } });
  t.notOk(fs.existsSync(path.join(dataDir, 'master.key')), 'no key file when the key comes from the environment');
  t.ok(fs.existsSync(path.join(dataDir, DATABASE)));
  const created = await first.fhir('POST', 'Patient', patientResource(p));
  t.equal(created.status, 201);
  const id: string = created.json.id;
  const found = await first.fhir('GET', `Patient?family=${p.family}`);
  t.equal(found.json.total, 1);
  t.equal(await first.stop(), 0);

  // Same data, another key: the stored data keys do not unwrap.
  const wrong = await startProcessServer(t, { dataDir, env: { VELLUM_MASTER_KEY: other.base64url } });
  t.notOk(fs.existsSync(path.join(dataDir, 'master.key')));
  const read = await wrong.fhir('GET', `Patient/${id}`);
  t.ok(read.status >= 500 && read.status < 600, `a read under another master key is 5xx (${read.status})`);
  t.equal(read.json?.resourceType, 'OperationOutcome');
  t.same(issueCodes(read.json), ['exception']);
  t.notMatch(read.text, /\n\s+at |\bat [\w.<>]+ \(|node:internal|\.ts:\d+|file:\/\//, 'no stack trace in the body');
  t.notMatch(
    (read.json?.issue ?? []).map((i: any) => i.diagnostics ?? '').join('\n'),
    /unwrap|master|key|cipher|sqlite|Error/i,
    'the diagnostics are generic (no internals)',
  );
  t.equal(await wrong.stop(), 0);

  // The right key still reads everything: the failed reads changed nothing.
  const again = await startProcessServer(t, { dataDir, env: { VELLUM_MASTER_KEY: key.base64url } });
  const ok = await again.fhir('GET', `Patient/${id}`);
  t.equal(ok.status, 200, 'the original key (as base64url) reads the data back');
  t.equal(ok.json.birthDate, p.birthDate);
  t.equal(await again.stop(), 0);

  const secrets = [p.family, p.identifierValue, p.birthDate];
  for (const k of [key, other]) {
    secrets.push(k.hex, k.hex.toUpperCase(), k.base64url, Buffer.from(k.hex, 'hex').toString('base64'));
  }
  checkLogs(t, first, secrets, 'key from env');
  const wrongRequests = checkLogs(t, wrong, secrets, 'wrong key');
  t.ok(wrongRequests.some((r) => r.status >= 500), 'the failed read is logged');
  checkLogs(t, again, secrets, 'right key again');
});
