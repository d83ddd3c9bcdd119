/**
 * Bulk Data export (Bulk Data Access IG 2.0, src/fhir/bulk/) on the real server, through its HTTP
 * API: kick-off validation, the whole cycle on a Synthea patient, the snapshot and `_since`,
 * `_type` / `_typeFilter` / `_elements`, Patient- and Group-level exports, `patient`, Provenance,
 * error lines for unreadable versions, cancellation (also racing the last part), the per-client
 * limit (also under concurrent kick-offs) and expiry. Authorization and encryption to the client's
 * key (export-auth), consent (export-consent), proofs (export-proofs) and resuming after a restart
 * and file limits (export-resume) are in the sibling files.
 *
 * Jobs are awaited with `runner.idle()`, and held at a known point with the runner's `afterPart`
 * seam: no fixed sleeps.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { CORPORA } from '../../helpers/corpora.ts';
import { startTestServer, vellumCodes, type TestServer } from '../../helpers/server.ts';
import { ASYNC, deletions, finish, holdAfterPart, jobOf, refs, rel, runExport, show, versions } from './helpers.ts';

const ALL_STATUSES = ['queued', 'running', 'done', 'failed', 'cancelled'] as const;
const jobCount = async (s: TestServer) => (await s.services.repository.index.exportJobs.list([...ALL_STATUSES])).length;

const obs = (id: string, patient: string, code: string) => ({
  resourceType: 'Observation',
  id,
  status: 'final',
  code: { coding: [{ system: 'http://loinc.org', code }] },
  subject: { reference: `Patient/${patient}` },
  valueQuantity: { value: 1.5, unit: 'mg' },
});

async function put(s: TestServer, resource: Record<string, any>): Promise<any> {
  const res = await s.fhir('PUT', `${resource.resourceType}/${resource.id}`, resource);
  if (res.status !== 200 && res.status !== 201) throw new Error(`PUT ${resource.resourceType}/${resource.id}: ${show(res)}`);
  return res.json;
}

t.test('kick-off validation: 400 with a Vellum code, and no job', async (t) => {
  const s = await startTestServer(t);
  await put(s, { resourceType: 'Patient', id: 'p1' });

  const cases: [string, string, Record<string, string>, string][] = [
    ['no Prefer: respond-async', '$export', {}, 'VLM_BULK_PREFER_ASYNC'],
    ['Prefer without respond-async', '$export', { prefer: 'return=minimal' }, 'VLM_BULK_PREFER_ASYNC'],
    ['an _outputFormat other than ndjson', '$export?_outputFormat=application/fhir+json', ASYNC, 'VLM_BULK_BAD_OUTPUT_FORMAT'],
    ['_outputFormat text/csv', '$export?_outputFormat=text/csv', ASYNC, 'VLM_BULK_BAD_OUTPUT_FORMAT'],
    ['_since not an instant', '$export?_since=yesterday', ASYNC, 'VLM_BULK_BAD_SINCE'],
    ['an unknown type in _type', '$export?_type=Patient,NoSuchType', ASYNC, 'VLM_BULK_BAD_TYPE'],
    ['an unknown parameter', '$export?_foo=bar', ASYNC, 'VLM_BULK_UNSUPPORTED_PARAMETER'],
    ['includeAssociatedData other than LatestProvenanceResources', '$export?includeAssociatedData=RelevantProvenanceResources', ASYNC, 'VLM_BULK_UNSUPPORTED_PARAMETER'],
    ['_typeFilter on no type', '$export?_typeFilter=NoSuchType%3Fx%3D1', ASYNC, 'VLM_BULK_BAD_TYPE_FILTER'],
    ['_typeFilter with an unknown search parameter', '$export?_typeFilter=Observation%3Fno-such-param%3D1', ASYNC, 'VLM_BULK_BAD_TYPE_FILTER'],
    // Refused by the checks every request's _elements passes, before the export's own.
    ['_elements not element names', '$export?_elements=name[0]', ASYNC, 'VLM_FHIR_BAD_PARAMETER'],
    ['_elements of an unknown type', '$export?_elements=NoSuchType.name', ASYNC, 'VLM_BULK_BAD_ELEMENTS'],
    ['patient not a Patient reference', 'Patient/$export?patient=Observation/o1', ASYNC, 'VLM_BULK_BAD_PATIENT'],
    ['a type outside the Patient compartment at Patient level', 'Patient/$export?_type=Organization', ASYNC, 'VLM_BULK_BAD_TYPE'],
  ];
  for (const [what, url, headers, code] of cases) {
    const res = await s.fhir('GET', url, undefined, headers);
    t.equal(res.status, 400, `${what}: ${show(res)}`);
    t.same(vellumCodes(res.json), [code], `${what}: ${code}`);
    t.equal(res.json?.resourceType, 'OperationOutcome', `${what}: an OperationOutcome`);
  }
  // POST: the body must be a Parameters resource, each parameter with a value.
  const posts: [string, unknown, string][] = [
    ['a body that is not Parameters', { resourceType: 'Patient' }, 'VLM_BULK_BAD_PARAMETERS'],
    ['a parameter without a value', { resourceType: 'Parameters', parameter: [{ name: '_type' }] }, 'VLM_BULK_BAD_PARAMETERS'],
    ['an unknown parameter in the body', { resourceType: 'Parameters', parameter: [{ name: 'color', valueString: 'red' }] }, 'VLM_BULK_UNSUPPORTED_PARAMETER'],
    ['a bad _since in the body', { resourceType: 'Parameters', parameter: [{ name: '_since', valueInstant: 'not-a-date' }] }, 'VLM_BULK_BAD_SINCE'],
  ];
  for (const [what, body, code] of posts) {
    const res = await s.fhir('POST', '$export', body, ASYNC);
    t.equal(res.status, 400, `${what}: ${show(res)}`);
    t.same(vellumCodes(res.json), [code], `${what}: ${code}`);
  }
  // $export is defined at system level, on Patient and on a Group instance only.
  const other = await s.fhir('GET', 'Observation/$export', undefined, ASYNC);
  t.equal(other.status, 404, `Observation/$export: ${show(other)}`);
  t.same(vellumCodes(other.json), ['VLM_FHIR_NO_ROUTE']);
  const noGroup = await s.fhir('GET', 'Group/nope/$export', undefined, ASYNC);
  t.equal(noGroup.status, 404, `an unknown Group: ${show(noGroup)}`);
  t.equal(await jobCount(s), 0, 'no bad kick-off made a job');

  // Prefer: handling=lenient: what is not understood is ignored.
  const lenient = await runExport(t, s, '$export?_foo=bar&_type=Patient,NoSuchType', { headers: { prefer: 'respond-async, handling=lenient' } });
  t.same(Object.keys(lenient.byType), ['Patient'], 'lenient: the unknown parameter and type are ignored');
  t.same(refs(lenient.byType.Patient), ['Patient/p1']);
  // The three ndjson spellings are accepted, and _format does not count as an export parameter.
  for (const format of ['application/fhir+ndjson', 'application/ndjson', 'ndjson']) {
    const e = await runExport(t, s, `$export?_type=Patient&_format=json&_outputFormat=${encodeURIComponent(format)}`);
    t.same(refs(e.byType.Patient), ['Patient/p1'], `_outputFormat=${format}`);
  }
});

t.test('the whole cycle at system level on a Synthea patient', async (t) => {
  const s = await startTestServer(t);
  const file = path.join(CORPORA, 'synthea', 'Antonio_Castellanos_6d2eba67-5b4a-403f-a29f-e6da3f1ea963.json');
  const bundle = JSON.parse(fs.readFileSync(file, 'utf8'));
  const tx = await s.fhir('POST', '', bundle);
  t.equal(tx.status, 200, `the Synthea transaction: ${tx.status}`);
  const written = (tx.json.entry as any[]).map((e) => String(e.response.location).replace(/\/_history\/.*$/, '')).sort();
  t.equal(written.length, bundle.entry.length);

  const before = Date.now();
  const e = await runExport(t, s, '$export');
  const m = e.manifest;
  t.equal(m.request, `${s.config.baseUrl}/$export`, 'request: the kick-off URL');
  t.equal(m.requiresAccessToken, false, 'no token needed with authorization off');
  t.ok(Date.parse(m.transactionTime) >= before - 1000 && Date.parse(m.transactionTime) <= Date.now(), 'transactionTime is the kick-off instant');
  t.equal(new Date(Date.parse(m.transactionTime)).toISOString(), m.transactionTime, 'transactionTime is an ISO instant');
  t.same(m.deleted, [], 'no deletions');
  t.same(m.error, [], 'no errors');
  t.notOk(m.extension, 'no extensions (no chain, no recipient key)');
  const types = m.output.map((o: any) => o.type);
  t.same(types, [...new Set(types)].sort(), 'one file per type (under the file limit), in type order');
  t.notOk(types.includes('AuditEvent'), 'AuditEvent only when _type names it');
  for (const o of m.output) {
    t.match(o.url, new RegExp(`^${s.config.baseUrl.replace(/[.$]/g, '\\$&')}/\\$export-file/${e.job}/`), `${o.type}: file URL`);
    const lines = e.texts.get(o.url)!.trimEnd().split('\n');
    t.equal(lines.length, o.count, `${o.type}: count equals the lines`);
    t.ok(lines.every((l) => JSON.parse(l).resourceType === o.type), `${o.type}: every line is a ${o.type}`);
  }
  const exported = Object.values(e.byType).flat();
  t.same(refs(exported), written, 'every resource written, exactly once');
  // Each line is the stored resource, as a read returns it.
  let same = 0;
  for (const resource of exported) {
    const read = await s.fhir('GET', `${resource.resourceType}/${resource.id}`);
    if (JSON.stringify(read.json) === JSON.stringify(resource)) same++;
    else t.fail(`${resource.resourceType}/${resource.id} differs from its read`);
  }
  t.equal(same, exported.length, 'every line equals the read of its resource');

  // Downloads: fhir+ndjson, and the same bytes whatever the Accept.
  const first = m.output[0];
  for (const accept of ['application/fhir+ndjson', 'application/ndjson', '*/*', 'application/fhir+json']) {
    const res = await s.fhir('GET', rel(first.url), undefined, { accept });
    t.equal(res.status, 200, `Accept: ${accept}`);
    t.match(String(res.headers['content-type']), /^application\/fhir\+ndjson/, `Accept: ${accept}: fhir+ndjson`);
    t.equal(res.text, e.texts.get(first.url), `Accept: ${accept}: same bytes`);
  }
  const missing = await s.fhir('GET', `$export-file/${e.job}/no-such-file.ndjson`);
  t.equal(missing.status, 404, 'a file the manifest does not list');
  t.same(vellumCodes(missing.json), ['VLM_BULK_FILE_NOT_FOUND']);
  const traversal = await s.fhir('GET', `$export-file/${e.job}/..%2F..%2Fvellum.db`);
  t.equal(traversal.status, 404, 'no path traversal');
  // Files rest encrypted: no resource text on disk.
  const dir = path.join(s.dataDir, 'exports', e.job);
  const patientFile = m.output.find((o: any) => o.type === 'Patient');
  const family = e.byType.Patient![0].name[0].family as string;
  const atRest = fs.readFileSync(path.join(dir, decodeURIComponent(new URL(patientFile.url).pathname.split('/').pop()!)));
  t.notOk(atRest.includes(Buffer.from(family)), 'the Patient file is not plaintext at rest');
  t.ok(String(e.texts.get(patientFile.url)).includes(family), 'but downloads as plaintext');
  t.ok((await s.fhir('GET', e.statusPath)).headers['expires'], 'the manifest says when the files expire');

  // POST with a Parameters body: the same export of one type; `request` is the URL without the body.
  const post = await runExport(t, s, '$export', {
    method: 'POST',
    body: { resourceType: 'Parameters', parameter: [{ name: '_type', valueString: 'Patient,Immunization' }, { name: '_outputFormat', valueString: 'application/fhir+ndjson' }] },
  });
  t.same(Object.keys(post.byType).sort(), ['Immunization', 'Patient'], 'POST: _type from the body');
  t.same(refs(post.byType.Immunization), refs(e.byType.Immunization));
  t.equal(post.manifest.request, `${s.config.baseUrl}/$export`);
  // GET with _type: the manifest's request carries the query.
  const typed = await runExport(t, s, '$export?_type=Patient');
  t.equal(decodeURIComponent(typed.manifest.request), `${s.config.baseUrl}/$export?_type=Patient`, 'request carries the query');
});

t.test('snapshot at kick-off, then _since=transactionTime: every change once', async (t) => {
  const s = await startTestServer(t);
  await put(s, { resourceType: 'Patient', id: 'a', name: [{ family: 'Before' }] });
  await put(s, { resourceType: 'Patient', id: 'c', name: [{ family: 'Gone' }] });
  await put(s, obs('o-old', 'a', '1111-1'));

  // While export 1 runs (held after its first part, the first type), the store changes.
  const hold = holdAfterPart(s);
  const kick = await s.fhir('GET', '$export', undefined, ASYNC);
  t.equal(kick.status, 202, show(kick));
  const job1 = jobOf(kick);
  await hold.reached;
  const running = await s.fhir('GET', `$export-status/${job1}`);
  t.equal(running.status, 202, 'in progress: 202');
  t.ok(running.headers['x-progress'], 'X-Progress');
  t.ok(Number(running.headers['retry-after']) > 0, 'Retry-After');
  await put(s, { resourceType: 'Patient', id: 'b', name: [{ family: 'New' }] });
  await put(s, { resourceType: 'Patient', id: 'a', name: [{ family: 'After' }] });
  t.equal((await s.fhir('DELETE', 'Patient/c')).status, 204);
  await put(s, obs('o-new', 'b', '2222-2'));
  hold.release();
  const e1 = await finish(t, s, job1);
  t.same(versions(e1.byType.Patient), ['Patient/a/_history/1', 'Patient/c/_history/1'], 'export 1: the Patients as they were at kick-off');
  t.equal(e1.byType.Patient!.find((p) => p.id === 'a').name[0].family, 'Before');
  t.same(refs(e1.byType.Observation), ['Observation/o-old'], 'export 1: nothing written after kick-off');
  t.same(e1.manifest.deleted, [], 'export 1: no deletions (no _since)');

  const since = encodeURIComponent(e1.manifest.transactionTime);
  const e2 = await runExport(t, s, `$export?_since=${since}`);
  t.same(versions(e2.byType.Patient), ['Patient/a/_history/2', 'Patient/b/_history/1'], 'export 2: the new Patient and the new version of a');
  t.equal(e2.byType.Patient!.find((p) => p.id === 'a').name[0].family, 'After');
  t.same(refs(e2.byType.Observation), ['Observation/o-new'], 'export 2: the new Observation only');
  t.same(deletions(e2), ['DELETE Patient/c'], 'export 2: c in the deleted files');
  t.equal(e2.manifest.deleted[0].type, 'Bundle');
  t.same(Object.keys(e2.byType).sort(), ['Observation', 'Patient'], 'export 2: nothing else');
  t.ok(Date.parse(e2.manifest.transactionTime) > Date.parse(e1.manifest.transactionTime));

  // Nothing changed since export 2: export 3 is empty.
  const e3 = await runExport(t, s, `$export?_since=${encodeURIComponent(e2.manifest.transactionTime)}`);
  t.same(e3.manifest.output, [], 'export 3: no output');
  t.same(e3.manifest.deleted, [], 'export 3: no deletions');

  // Written in the same millisecond as the snapshot or not, a version is in exactly one of the two.
  for (let round = 0; round < 5; round++) {
    const kickA = s.fhir('GET', '$export?_type=Patient', undefined, ASYNC);
    const write = put(s, { resourceType: 'Patient', id: `race${round}` });
    const [ka] = await Promise.all([kickA, write]);
    const ea = await finish(t, s, jobOf(ka));
    const eb = await runExport(t, s, `$export?_type=Patient&_since=${encodeURIComponent(ea.manifest.transactionTime)}`);
    const inA = refs(ea.byType.Patient).includes(`Patient/race${round}`);
    const inB = refs(eb.byType.Patient).includes(`Patient/race${round}`);
    t.ok(inA !== inB, `round ${round}: race${round} in exactly one export (${inA ? 'snapshot' : 'since'})`);
  }
});

t.test('_typeFilter is decided on the snapshot’s versions', async (t) => {
  const s = await startTestServer(t);
  await put(s, { resourceType: 'Patient', id: 'p1' });
  await put(s, obs('o1', 'p1', '1111-1'));
  await put(s, obs('o2', 'p1', '2222-2'));
  // The filtered type comes second: between kick-off and its turn, o1 stops matching and o2 starts to.
  const hold = holdAfterPart(s);
  const kick = await s.fhir('GET', `$export?_type=Patient,Observation&_typeFilter=${encodeURIComponent('Observation?code=1111-1')}`, undefined, ASYNC);
  t.equal(kick.status, 202);
  await hold.reached;
  await put(s, obs('o1', 'p1', '2222-2'));
  await put(s, obs('o2', 'p1', '1111-1'));
  hold.release();
  const e = await finish(t, s, jobOf(kick));
  const codes = (e.byType.Observation ?? []).map((o) => `${o.id}:${o.code.coding[0].code}`);
  t.ok(codes.every((c) => c.endsWith(':1111-1')), `every exported line matches the filter (${codes.join(', ')})`);
  t.same(codes, ['o1:1111-1'], 'the version that matched at transactionTime is exported', {
    todo: 'the runner filters on the index’s current search rows: a resource changed since the snapshot is left out',
  });
  // The incremental export after it has the change that matches now.
  const next = await runExport(t, s, `$export?_type=Observation&_typeFilter=${encodeURIComponent('Observation?code=1111-1')}&_since=${encodeURIComponent(e.manifest.transactionTime)}`);
  t.same((next.byType.Observation ?? []).map((o) => `${o.id}:${o.code.coding[0].code}`), ['o2:1111-1'], 'the next _since export: o2 as it matches now');
});

t.test('_type, _typeFilter, _elements; Patient and Group level; patient', async (t) => {
  const s = await startTestServer(t);
  for (const id of ['p1', 'p2', 'p3']) await put(s, { resourceType: 'Patient', id, name: [{ family: `Fam${id}` }], gender: 'female' });
  await put(s, obs('o1', 'p1', '1111-1'));
  await put(s, obs('o2', 'p2', '2222-2'));
  await put(s, obs('o3', 'p3', '3333-3'));
  await put(s, obs('o4', 'p1', '2222-2'));
  await put(s, { resourceType: 'Organization', id: 'org1', name: 'Clinic' });
  await put(s, { resourceType: 'Encounter', id: 'e1', status: 'finished', class: { code: 'AMB' }, subject: { reference: 'Patient/p1' } });
  await put(s, {
    resourceType: 'Group',
    id: 'g1',
    type: 'person',
    actual: true,
    member: [{ entity: { reference: 'Patient/p1' } }, { entity: { reference: 'Patient/p2' }, inactive: true }],
  });

  await t.test('_type', async (t) => {
    const e = await runExport(t, s, '$export?_type=Observation');
    t.same(Object.keys(e.byType), ['Observation']);
    t.same(refs(e.byType.Observation), ['Observation/o1', 'Observation/o2', 'Observation/o3', 'Observation/o4']);
    const two = await runExport(t, s, '$export?_type=Organization&_type=Encounter');
    t.same(two.manifest.output.map((o: any) => o.type), ['Organization', 'Encounter'], '_type repeated: types in the order named');
  });

  await t.test('_typeFilter: several OR-ed; types without a filter are whole', async (t) => {
    const q = (query: string) => encodeURIComponent(query);
    const e = await runExport(t, s, `$export?_type=Observation,Patient&_typeFilter=${q('Observation?code=1111-1')}&_typeFilter=${q('Observation?code=3333-3')}`);
    t.same(refs(e.byType.Observation), ['Observation/o1', 'Observation/o3'], 'the union of the two filters');
    t.same(refs(e.byType.Patient), ['Patient/p1', 'Patient/p2', 'Patient/p3'], 'Patient: no filter');
    const and = await runExport(t, s, `$export?_type=Observation&_typeFilter=${q('Observation?code=2222-2&subject=Patient/p1')}`);
    t.same(refs(and.byType.Observation), ['Observation/o4'], 'one filter: its parameters AND-ed');
    const none = await runExport(t, s, `$export?_type=Observation&_typeFilter=${q('Observation?code=9999-9')}`);
    t.same(none.manifest.output, [], 'no match: no file');
    const post = await runExport(t, s, 'Patient/$export', {
      method: 'POST',
      body: {
        resourceType: 'Parameters',
        parameter: [
          { name: '_type', valueString: 'Observation' },
          { name: '_typeFilter', valueString: 'Observation?code=2222-2' },
        ],
      },
    });
    t.same(refs(post.byType.Observation), ['Observation/o2', 'Observation/o4'], 'POST body: _typeFilter');
  });

  await t.test('_elements: the named and mandatory elements, tagged SUBSETTED', async (t) => {
    const e = await runExport(t, s, '$export?_type=Observation,Patient&_elements=Observation.subject,gender');
    for (const o of e.byType.Observation!) {
      t.same(Object.keys(o).sort(), ['code', 'id', 'meta', 'resourceType', 'status', 'subject'], `${o.id}: subject, and status and code (mandatory)`);
      t.ok(o.meta.tag.some((tag: any) => tag.code === 'SUBSETTED'), `${o.id}: SUBSETTED`);
      t.ok(o.meta.versionId && o.meta.lastUpdated, `${o.id}: meta kept`);
    }
    for (const p of e.byType.Patient!) t.same(Object.keys(p).sort(), ['gender', 'id', 'meta', 'resourceType'], `${p.id}: gender (an element for every type)`);
    const one = await runExport(t, s, '$export?_type=Observation,Patient&_elements=Observation.status');
    t.ok(one.byType.Patient!.every((p) => p.name && !p.meta.tag), 'Type.element subsets only that type');
    t.ok(one.byType.Observation!.every((o) => !o.valueQuantity && o.meta.tag.some((tag: any) => tag.code === 'SUBSETTED')));
  });

  await t.test('Patient level: compartment types and compartment resources only', async (t) => {
    const e = await runExport(t, s, 'Patient/$export');
    t.notOk(e.byType.Organization, 'no Organization (not in the Patient compartment)');
    t.same(refs(e.byType.Patient), ['Patient/p1', 'Patient/p2', 'Patient/p3']);
    t.same(refs(e.byType.Observation), ['Observation/o1', 'Observation/o2', 'Observation/o3', 'Observation/o4']);
    t.same(refs(e.byType.Encounter), ['Encounter/e1']);
    t.ok(e.manifest.output.every((o: any) => o.type !== 'AuditEvent'));
    t.match(e.manifest.request, /\/Patient\/\$export$/);
  });

  await t.test('Group level: the active members’ compartments only', async (t) => {
    const e = await runExport(t, s, 'Group/g1/$export');
    t.same(refs(e.byType.Patient), ['Patient/p1'], 'p2 is inactive, p3 not a member');
    t.same(refs(e.byType.Observation), ['Observation/o1', 'Observation/o4']);
    t.same(refs(e.byType.Encounter), ['Encounter/e1']);
    t.notOk(e.byType.Organization);
    // The Group itself (in p1's compartment) names p2 as an inactive member; nothing else may.
    t.same(refs(e.byType.Group), ['Group/g1']);
    const text = Object.entries(e.byType).filter(([type]) => type !== 'Group').map(([, lines]) => JSON.stringify(lines)).join('\n');
    t.notOk(/Patient\/p[23]\b/.test(text), 'nothing of p2 or p3');
    const filtered = await runExport(t, s, `Group/g1/$export?_type=Observation&_typeFilter=${encodeURIComponent('Observation?code=2222-2')}`);
    t.same(refs(filtered.byType.Observation), ['Observation/o4'], 'Group level with _typeFilter');
    t.match(e.manifest.request, /\/Group\/g1\/\$export$/);
  });

  await t.test('patient (POST Parameters): those patients’ compartments', async (t) => {
    const e = await runExport(t, s, 'Patient/$export', {
      method: 'POST',
      body: {
        resourceType: 'Parameters',
        parameter: [
          { name: 'patient', valueReference: { reference: 'Patient/p2' } },
          { name: 'patient', valueReference: { reference: 'Patient/p3' } },
        ],
      },
    });
    t.same(refs(e.byType.Patient), ['Patient/p2', 'Patient/p3']);
    t.same(refs(e.byType.Observation), ['Observation/o2', 'Observation/o3']);
    t.notOk(e.byType.Encounter, 'e1 is p1’s');
    const group = await runExport(t, s, 'Group/g1/$export', {
      method: 'POST',
      body: { resourceType: 'Parameters', parameter: [{ name: 'patient', valueReference: { reference: 'Patient/p2' } }] },
    });
    t.same(group.manifest.output, [], 'a patient outside the Group’s active members: nothing');
  });
});

t.test('includeAssociatedData=LatestProvenanceResources: the Provenance of each exported version', async (t) => {
  const s = await startTestServer(t);
  await put(s, { resourceType: 'Patient', id: 'p1', name: [{ family: 'One' }] });
  await put(s, { resourceType: 'Patient', id: 'p1', name: [{ family: 'Two' }] });
  t.equal((await s.fhir('POST', 'Patient', { resourceType: 'Patient', name: [{ family: 'Posted' }] })).status, 201);
  const e = await runExport(t, s, '$export?_type=Patient&includeAssociatedData=LatestProvenanceResources');
  const posted = e.byType.Patient!.find((p) => p.name[0].family === 'Posted');
  t.same(e.manifest.output.map((o: any) => o.type), ['Patient', 'Provenance']);
  const provenance = e.byType.Provenance!;
  t.equal(provenance.length, e.byType.Patient!.length, 'one Provenance per exported version');
  t.same(provenance.map((p) => p.target[0].reference).sort(), versions(e.byType.Patient), 'each targets an exported version');
  t.equal(new Set(provenance.map((p) => p.id)).size, provenance.length, 'distinct ids');
  for (const p of provenance) {
    t.equal(p.resourceType, 'Provenance');
    t.ok(p.recorded && p.agent?.length, `${p.id}: recorded and agent`);
    const target = p.target[0].reference;
    if (target === 'Patient/p1/_history/2') t.equal(p.activity.coding[0].code, 'UPDATE', `${target}: UPDATE`);
    if (target === `Patient/${posted.id}/_history/1`) t.equal(p.activity.coding[0].code, 'CREATE', `${target}: CREATE`);
    const valid = await s.fhir('POST', 'Provenance/$validate', p);
    t.equal(valid.status, 200, `${p.id} is a valid Provenance: ${show(valid)}`);
  }
  const without = await runExport(t, s, '$export?_type=Patient');
  t.notOk(without.byType.Provenance, 'none without includeAssociatedData');
});

t.test('a version that cannot be read (its patient crypto-shredded) is an error line, the rest exports', async (t) => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-export-shred-'));
  const servers: TestServer[] = [];
  t.teardown(async () => {
    for (const server of servers) await server.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });
  const first = await startTestServer(t, { VELLUM_DATA_DIR: dataDir });
  servers.push(first);
  for (const id of ['p1', 'p2']) {
    await put(first, { resourceType: 'Patient', id });
    await put(first, obs(`o-${id}`, id, '1111-1'));
  }
  await first.close();
  // Restarted (so no version is in the repository's memory), p2's data key deleted.
  const s = await startTestServer(t, { VELLUM_DATA_DIR: dataDir });
  servers.push(s);
  await s.services.repository.index.dataKeys.deleteWrappedKey(s.services.bulk!.patientScope('p2'));
  t.equal((await s.fhir('GET', 'Patient/p2')).status >= 400, true, 'p2 cannot be read any more');
  const e = await runExport(t, s, '$export?_type=Patient,Observation');
  t.same(refs(e.byType.Patient), ['Patient/p1']);
  t.same(refs(e.byType.Observation), ['Observation/o-p1']);
  t.same(e.manifest.error.map((x: any) => x.type), ['OperationOutcome', 'OperationOutcome'], 'one error file per type with an unreadable version');
  const outcomes = e.manifest.error.flatMap((x: any) => e.texts.get(x.url)!.trimEnd().split('\n').map((l) => JSON.parse(l)));
  t.equal(outcomes.length, 2);
  t.same(e.manifest.error.map((x: any) => x.count), [1, 1]);
  t.ok(outcomes.every((o: any) => vellumCodes(o).includes('VLM_BULK_UNREADABLE')), 'VLM_BULK_UNREADABLE');
});

t.test('cancel, unknown jobs, the per-client limit', async (t) => {
  const s = await startTestServer(t, { VELLUM_EXPORT_CONCURRENCY: '1' });
  for (let i = 0; i < 3; i++) await put(s, { resourceType: 'Patient', id: `p${i}` });
  const runner = s.services.bulk!.runner;

  await t.test('unknown job: 404', async (t) => {
    for (const [method, url] of [
      ['GET', '$export-status/00000000-0000-0000-0000-000000000000'],
      ['DELETE', '$export-status/00000000-0000-0000-0000-000000000000'],
      ['GET', '$export-file/00000000-0000-0000-0000-000000000000/1-Patient.ndjson'],
      ['GET', '$export-status/not..a..job'],
    ] as const) {
      const res = await s.fhir(method, url);
      t.equal(res.status, 404, `${method} ${url}`);
      t.same(vellumCodes(res.json), ['VLM_BULK_JOB_NOT_FOUND']);
    }
  });

  await t.test('cancel a finished job: 202, then its status and files are gone', async (t) => {
    const e = await runExport(t, s, '$export?_type=Patient');
    const file = rel(e.manifest.output[0].url);
    t.ok(fs.existsSync(path.join(s.dataDir, 'exports', e.job)));
    const del = await s.fhir('DELETE', e.statusPath);
    t.equal(del.status, 202, show(del));
    const status = await s.fhir('GET', e.statusPath);
    t.equal(status.status, 404);
    t.same(vellumCodes(status.json), ['VLM_BULK_JOB_NOT_FOUND']);
    t.equal((await s.fhir('GET', file)).status, 404, 'file: 404');
    t.equal((await s.fhir('DELETE', e.statusPath)).status, 404, 'cancel again: 404');
    t.notOk(fs.existsSync(path.join(s.dataDir, 'exports', e.job)), 'the files are removed');
    t.notOk(await s.services.repository.index.exportJobs.get(e.job), 'the job row is removed');
  });

  await t.test('a second kick-off while one runs: 429; a cancelled running job leaves nothing', async (t) => {
    const hold = holdAfterPart(s);
    const first = await s.fhir('GET', '$export', undefined, ASYNC);
    t.equal(first.status, 202);
    const job = jobOf(first);
    await hold.reached;
    const second = await s.fhir('GET', '$export?_type=Patient', undefined, ASYNC);
    t.equal(second.status, 429, show(second));
    t.same(vellumCodes(second.json), ['VLM_BULK_TOO_MANY_JOBS']);
    t.ok(Number(second.headers['retry-after']) > 0, 'Retry-After');
    t.equal(await jobCount(s), 1, 'the refused kick-off made no job');
    const del = await s.fhir('DELETE', `$export-status/${job}`);
    t.equal(del.status, 202);
    t.equal((await s.fhir('GET', `$export-status/${job}`)).status, 404, 'cancelled: 404 at once');
    // Its row expires at once: a sweep removes it even if the runner never came back to it.
    await runner.sweep();
    t.notOk(await s.services.repository.index.exportJobs.get(job), 'swept');
    hold.release();
    await runner.idle();
    t.equal((await s.fhir('GET', `$export-status/${job}`)).status, 404);
    t.notOk(fs.existsSync(path.join(s.dataDir, 'exports', job)), 'no file of the cancelled job is left');
    t.notOk(await s.services.repository.index.exportJobs.get(job), 'nor its row');
    const third = await runExport(t, s, '$export?_type=Patient');
    t.equal(third.byType.Patient!.length, 3, 'once the slot is free, a kick-off is accepted');
  });

  await t.test('concurrent kick-offs cannot pass the limit together', async (t) => {
    const hold = holdAfterPart(s);
    const kicks = await Promise.all([1, 2, 3, 4].map(() => s.fhir('GET', '$export?_type=Patient', undefined, ASYNC)));
    t.same(kicks.map((k) => k.status).sort(), [202, 429, 429, 429], 'one accepted, the others refused');
    t.equal((await s.services.repository.index.exportJobs.list(['queued', 'running'])).length, 1, 'one job');
    await hold.reached;
    hold.release();
    await runner.idle();
    const accepted = kicks.find((k) => k.status === 202)!;
    t.equal((await s.fhir('GET', `$export-status/${jobOf(accepted)}`)).status, 200);
  });

  await t.test('cancelled as its last part is written: the job does not come back as done', async (t) => {
    // One type: its only part is the job's last one. The cancel arrives while the runner is there.
    let cancelled = false;
    runner.afterPart = async (job) => {
      runner.afterPart = undefined;
      const del = await s.fhir('DELETE', `$export-status/${job}`);
      t.equal(del.status, 202, 'cancel accepted while the job runs');
      cancelled = true;
    };
    const kick = await s.fhir('GET', '$export?_type=Patient', undefined, ASYNC);
    const job = jobOf(kick);
    await runner.idle();
    t.ok(cancelled, 'the cancel came after the last part');
    const status = await s.fhir('GET', `$export-status/${job}`);
    t.equal(status.status, 404, `status after the cancel: ${show(status)}`);
    t.notOk(fs.existsSync(path.join(s.dataDir, 'exports', job)), 'no file is left');
    t.notOk(await s.services.repository.index.exportJobs.get(job), 'nor the row');
  });
});

t.test('expiry: VELLUM_EXPORT_TTL, then the sweep removes files and rows', async (t) => {
  const s = await startTestServer(t, { VELLUM_EXPORT_TTL: '1' });
  await put(s, { resourceType: 'Patient', id: 'p1' });
  const runner = s.services.bulk!.runner;
  const jobs = s.services.repository.index.exportJobs;

  const startedAt = Date.now();
  const kick = await s.fhir('GET', '$export?_type=Patient', undefined, ASYNC);
  const job = jobOf(kick);
  await runner.idle();
  const row = (await jobs.get(job))!;
  t.equal(row.status, 'done');
  t.ok(row.expiresAt! >= startedAt + 1000 && row.expiresAt! <= Date.now() + 1000, 'expires TTL seconds after it finished');
  const dir = path.join(s.dataDir, 'exports', job);
  t.ok(fs.existsSync(dir));

  await runner.sweep(row.expiresAt! - 1);
  t.ok(await jobs.get(job), 'a sweep before the expiry keeps the job');
  t.ok(fs.existsSync(dir));

  // Past the expiry (waited for on the clock, ~1 s), the job is gone even before a sweep…
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, row.expiresAt! - Date.now() + 5)));
  t.ok(Date.now() >= row.expiresAt!);
  const status = await s.fhir('GET', `$export-status/${job}`);
  t.equal(status.status, 404, 'expired: 404');
  t.same(vellumCodes(status.json), ['VLM_BULK_JOB_NOT_FOUND']);
  t.equal((await s.fhir('GET', `$export-file/${job}/${fs.readdirSync(dir)[0]}`)).status, 404, 'expired file: 404');
  // …and the sweep removes its files and row.
  await runner.sweep();
  t.notOk(await jobs.get(job), 'the row is removed');
  t.notOk(fs.existsSync(dir), 'the files are removed');
  t.equal((await jobs.list([...ALL_STATUSES])).length, 0);
});
