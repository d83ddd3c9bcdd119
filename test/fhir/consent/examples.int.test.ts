/**
 * The 12 official R4 Consent examples on the real server with consent enforced: each is stored
 * (201), reads back unchanged, and is in force on chain with the rules the mapping gives; and a
 * few of them decide real reads as docs/consent.md §7 says (notOrg withholds from its organisation,
 * Out withholds the custodian's data, a permit applies only to the actor it names).
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { CORPORA } from '../../helpers/corpora.ts';
import { mapConsent } from '../../../src/fhir/consent/mapping.ts';
import { startConsentServer } from './harness.ts';

const DIR = path.join(CORPORA, 'r4-examples', 'Consent');
const strip = (r: Record<string, unknown>) => {
  const { meta: _meta, ...rest } = r;
  return rest;
};

t.test('every official R4 Consent example is stored, round-trips unchanged, and is in force on chain', async (t) => {
  const c = await startConsentServer(t);
  const service = c.s.services.consent!.service;
  const files = readdirSync(DIR).filter((f) => f.endsWith('.json')).sort();
  t.equal(files.length, 12);
  for (const file of files) {
    const example = JSON.parse(readFileSync(path.join(DIR, file), 'utf8'));
    const put = await c.as(c.admin, 'PUT', `/Consent/${example.id}`, example);
    t.equal(put.status, 201, `${example.id}: ${JSON.stringify(put.body?.issue ?? '')}`);
    const read = await c.as(c.admin, 'GET', `/Consent/${example.id}`);
    t.equal(read.status, 200);
    t.same(strip(read.body), strip(example), `${example.id} reads back unchanged`);
    const onChain = service.state.consent(service.keyOf(`Consent/${example.id}`));
    t.equal(onChain?.status, 'active', `${example.id} is in force on chain`);
    const mapped = mapConsent(example, await c.s.services.consent!.mappingContext(example), example.id);
    t.same(onChain?.rules, mapped.action === 'put' ? mapped.rules : undefined, `${example.id}: the rules on chain are the mapping's`);
    const chain = await service.chain.consentOf(service.keyOf(`Consent/${example.id}`));
    t.same(chain?.rules, onChain?.rules, `${example.id}: the contract holds what the mirror holds`);
  }
});

t.test('the examples decide real reads', async (t) => {
  const c = await startConsentServer(t);
  const load = (id: string) => JSON.parse(readFileSync(path.join(DIR, `Consent-${id}.json`), 'utf8'));
  await c.put({ resourceType: 'Patient', id: 'f001', name: [{ family: 'van de Heuvel' }] });
  await c.put({ resourceType: 'Organization', id: 'f001', name: 'Good Health' });
  await c.put({ resourceType: 'Organization', id: 'other', name: 'Elsewhere' });
  await c.put({ resourceType: 'Practitioner', id: 'f204', name: [{ family: 'Nurse' }] });
  await c.put({ resourceType: 'Observation', id: 'at-f001', status: 'final', code: { text: 'x' }, subject: { reference: 'Patient/f001' }, meta: { source: 'Organization/f001' } });
  await c.put({ resourceType: 'Observation', id: 'elsewhere', status: 'final', code: { text: 'y' }, subject: { reference: 'Patient/f001' } });
  await c.approve('Organization/f001');
  await c.approve('Organization/other');
  await c.approve('Practitioner/f204');
  const org = await c.tokenFor('Organization/f001');
  const other = await c.tokenFor('Organization/other');
  const nurse = await c.tokenFor('Practitioner/f204');

  // notThem (OPTIN, root actor PRCP Practitioner/f204, access + correct): a permit for f204 only.
  t.equal((await c.as(c.admin, 'PUT', '/Consent/consent-example-notThem', load('consent-example-notThem'))).status, 201);
  t.equal((await c.as(nurse, 'GET', '/Observation/elsewhere')).status, 200, 'notThem permits the actor it names');
  t.equal((await c.as(other, 'GET', '/Observation/elsewhere')).status, 403, 'and nobody else');

  // notOrg (OPTIN, root type deny, PRCP Organization/f001): f001 is withheld everything; others are not helped.
  t.equal((await c.as(c.admin, 'PUT', '/Consent/consent-example-notOrg', load('consent-example-notOrg'))).status, 201);
  const denied = await c.as(org, 'GET', '/Observation/elsewhere');
  t.equal(denied.status, 403);
  t.equal(denied.body.issue[0].details.coding[0].code, 'VLM_CONSENT_DENIED');

  // Out (OPTOUT, root actor CST Organization/f001): the data f001 holds is withheld from everyone,
  // the nurse's permit (notThem) still covers data held elsewhere.
  t.equal((await c.as(c.admin, 'PUT', '/Consent/consent-example-Out', load('consent-example-Out'))).status, 201);
  const custodian = await c.as(nurse, 'GET', '/Observation/at-f001');
  t.equal(custodian.status, 403, "Out withholds the custodian's data");
  t.equal(custodian.body.issue[0].details.coding[0].code, 'VLM_CONSENT_DENIED');
  t.equal((await c.as(nurse, 'GET', '/Observation/elsewhere')).status, 200, 'data held elsewhere is not covered by Out');
  const search = await c.as(nurse, 'GET', '/Observation?subject=Patient/f001');
  t.same((search.body.entry ?? []).map((e: any) => e.resource.id), ['elsewhere'], 'a search leaves the withheld record out');
});
