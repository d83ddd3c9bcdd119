/**
 * The consent flow end to end on the real server and embedded chain: approve a practitioner, grant
 * with a FHIR Consent, read, revoke, and the next read is denied.
 */
import t from 'tap';
import { actor, consent, startConsentServer } from './harness.ts';

t.test('grant, read, revoke, denied', async (t) => {
  const c = await startConsentServer(t);
  await c.put({ resourceType: 'Patient', id: 'p1', name: [{ family: 'One' }] });
  await c.put({ resourceType: 'Practitioner', id: 'dr1', name: [{ family: 'Doc' }] });
  await c.put({
    resourceType: 'Observation',
    id: 'o1',
    status: 'final',
    code: { text: 'x' },
    subject: { reference: 'Patient/p1' },
  });
  const dr = await c.tokenFor('Practitioner/dr1');

  let res = await c.as(dr, 'GET', '/Observation/o1');
  t.equal(res.status, 403);
  t.same(res.body.issue.map((i: any) => i.details?.coding?.[0]?.code), ['VLM_CONSENT_ACTOR_NOT_APPROVED']);

  await c.approve('Practitioner/dr1');
  res = await c.as(dr, 'GET', '/Observation/o1');
  t.equal(res.status, 403);
  t.same(res.body.issue.map((i: any) => i.details?.coding?.[0]?.code), ['VLM_CONSENT_NONE']);

  const granted = await c.as(c.admin, 'PUT', '/Consent/c1', consent('c1', 'p1', { type: 'permit', actor: [actor('Practitioner/dr1')] }));
  t.equal(granted.status, 201, JSON.stringify(granted.body));
  res = await c.as(dr, 'GET', '/Observation/o1');
  t.equal(res.status, 200);

  const search = await c.as(dr, 'GET', '/Observation?subject=Patient/p1');
  t.equal(search.status, 200);
  t.equal(search.body.entry?.length, 1);

  const revoked = await c.as(c.admin, 'PUT', '/Consent/c1', consent('c1', 'p1', { type: 'permit', actor: [actor('Practitioner/dr1')] }, 'inactive'));
  t.equal(revoked.status, 200);
  res = await c.as(dr, 'GET', '/Observation/o1');
  t.equal(res.status, 403);
  const after = await c.as(dr, 'GET', '/Observation?subject=Patient/p1');
  t.equal(after.status, 200);
  t.equal(after.body.entry, undefined);
});
