/**
 * A consent-gated caller's export (a practitioner's Backend Services client, consent enforced by
 * the embedded chain's registry): it holds exactly what the same caller's searches find — each
 * patient's consent decides, data conditions included — deletions too, and a revocation made while
 * the export runs bites at the runner's next chunk.
 */
import t from 'tap';
import { actor, classes, consent, startConsentServer } from '../consent/harness.ts';
import { holdAfterPart, jobOf, ASYNC, auth, deletions, finish, refs, runExport, show } from './helpers.ts';

t.test('a practitioner’s export is what its consents let it search', async (t) => {
  const c = await startConsentServer(t);
  const s = c.s;
  for (const p of ['ca', 'cb', 'cc']) {
    await c.put({ resourceType: 'Patient', id: p, name: [{ family: `Fam${p}` }] });
    await c.put({ resourceType: 'Observation', id: `${p}-obs`, status: 'final', code: { text: 'x' }, subject: { reference: `Patient/${p}` } });
    await c.put({ resourceType: 'Condition', id: `${p}-cond`, subject: { reference: `Patient/${p}` } });
  }
  await c.put({ resourceType: 'Organization', id: 'org1', name: 'Clinic' });
  await c.put({ resourceType: 'Practitioner', id: 'dr', name: [{ family: 'Doc' }] });
  await c.approve('Practitioner/dr');
  // ca consents to everything for dr; cc to its Observations only; cb to nothing.
  const permit = (more: Record<string, unknown> = {}) => ({ type: 'permit', actor: [actor('Practitioner/dr')], ...more });
  for (const [id, patient, provision] of [
    ['consent-ca', 'ca', permit()],
    ['consent-cc', 'cc', permit({ class: classes('Observation') })],
  ] as const) {
    const res = await c.as(c.admin, 'PUT', `/Consent/${id}`, consent(id, patient, provision));
    t.ok(res.status === 201, `Consent ${id}: ${res.status}`);
  }
  const token = await c.tokenFor('Practitioner/dr');
  const searched = async (type: string) => {
    const res = await s.fhir('GET', `${type}?_count=100`, undefined, auth(token));
    t.equal(res.status, 200, `search ${type}: ${show(res as any)}`);
    return refs((res.json.entry ?? []).map((e: any) => e.resource));
  };

  const e = await runExport(t, s, '$export?_type=Patient,Observation,Condition,Organization', { token });
  for (const type of ['Patient', 'Observation', 'Condition', 'Organization']) {
    t.same(refs(e.byType[type]), await searched(type), `${type}: the export holds what a search finds`);
  }
  t.same(refs(e.byType.Observation), ['Observation/ca-obs', 'Observation/cc-obs'], 'Observations of ca and cc');
  t.same(refs(e.byType.Condition), ['Condition/ca-cond'], 'Conditions of ca only (cc consented to Observations)');
  t.same(refs(e.byType.Organization), ['Organization/org1'], 'shared data is not gated');
  t.notOk(JSON.stringify([...e.texts.values()]).includes('Patient/cb'), 'nothing of cb');

  // Deletions are decided like the resources: only those of patients whose consent allows.
  await c.as(c.admin, 'DELETE', '/Observation/ca-obs');
  await c.as(c.admin, 'DELETE', '/Observation/cb-obs');
  const since = await runExport(t, s, `$export?_type=Observation&_since=${encodeURIComponent(e.manifest.transactionTime)}`, { token });
  t.same(deletions(since), ['DELETE Observation/ca-obs'], 'the deletion of ca’s Observation, not cb’s');
  const admin = await runExport(t, s, `$export?_type=Observation&_since=${encodeURIComponent(e.manifest.transactionTime)}`, { token: c.admin });
  t.same(deletions(admin), ['DELETE Observation/ca-obs', 'DELETE Observation/cb-obs'], 'the administrator sees both');

  // A revocation while the export runs: the next type's chunk is decided under it.
  const hold = holdAfterPart(s);
  const kick = await s.fhir('GET', '$export?_type=Observation,Condition', undefined, { ...ASYNC, ...auth(token) });
  t.equal(kick.status, 202, show(kick as any));
  const { progress } = await hold.reached;
  t.same(progress.parts.filter((p) => p.kind === 'output').map((p) => p.type), ['Observation'], 'held after the Observation part');
  const revoke = await c.as(c.admin, 'PUT', '/Consent/consent-ca', consent('consent-ca', 'ca', permit(), 'inactive'));
  t.equal(revoke.status, 200);
  hold.release();
  const during = await finish(t, s, jobOf(kick), token);
  t.same(refs(during.byType.Observation), ['Observation/cc-obs'], 'Observations: exported before the revocation');
  t.notOk(during.byType.Condition, 'Conditions: ca’s withheld once revoked');
  t.same(await searched('Condition'), [], 'as a search now finds');
});
