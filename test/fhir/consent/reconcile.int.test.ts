/**
 * Consent writes cut short by a crash (src/fhir/consent/reconcile.ts), on the real server, chain and
 * tokens. A crash between a Consent's mined transaction and its FHIR commit is reproduced by doing
 * what the write step does before the commit — noting the Consent in the intent journal, then
 * changing the contract — without the commit, and starting the server again on the same data.
 *
 * - A create that never committed left a permit on chain: revoked at the next start.
 * - A revocation (update to inactive) that never committed left the consent revoked on chain while
 *   the store still holds it active: put back.
 * - A Consent the journal does not name is left as the chain has it (another site may share the
 *   contract), and the journal is emptied once done.
 */
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { ConsentIntentJournal } from '../../../src/fhir/consent/reconcile.ts';
import { mapConsent } from '../../../src/fhir/consent/mapping.ts';
import { consentKeys } from '../../../src/fhir/consent/write-step.ts';
import type { Rule } from '../../../src/fhir/consent/terms.ts';
import { actor, consent, startConsentServer } from './harness.ts';

const codes = (body: any): string[] => (body?.issue ?? []).map((i: any) => i.details?.coding?.[0]?.code);

t.test('consent writes interrupted between the contract and the FHIR commit are reconciled at start', async (t) => {
  const first = await startConsentServer(t);
  const dataDir = first.s.dataDir;
  const journalPath = path.join(dataDir, 'consent-intents.log');
  const service = first.s.services.consent!.service;
  const keyOf = consentKeys(service, (reference) => first.s.services.access!.patientScope(reference.slice('Patient/'.length)));

  for (const id of ['p-kept', 'p-ghost', 'p-other']) {
    await first.put({ resourceType: 'Patient', id, name: [{ family: id }] });
    await first.put({ resourceType: 'Observation', id: `${id}-obs`, status: 'final', code: { text: 'x' }, subject: { reference: `Patient/${id}` } });
  }
  await first.put({ resourceType: 'Practitioner', id: 'dr-r', name: [{ family: 'R' }] });
  await first.approve('Practitioner/dr-r');
  const permit = { type: 'permit', actor: [actor('Practitioner/dr-r')] };
  // Acknowledged: p-kept's consent, active in the store and on chain.
  t.equal((await first.as(first.admin, 'PUT', '/Consent/c-kept', consent('c-kept', 'p-kept', permit))).status, 201);
  const tok = await first.tokenFor('Practitioner/dr-r');
  t.equal((await first.as(tok, 'GET', '/Observation/p-kept-obs')).status, 200, 'permitted before the crash');
  t.equal(fs.existsSync(journalPath), true, 'a Consent write notes itself in the journal');

  // 1. A create whose FHIR commit never happened: noted, then put on chain — p-ghost's permit.
  const journal = new ConsentIntentJournal(journalPath);
  journal.note(['c-ghost']);
  const ghost = mapConsent(consent('c-ghost', 'p-ghost', permit), { keyOf, tokenOf: service.tokenOf }, 'c-ghost');
  if (ghost.action !== 'put') throw new Error('c-ghost maps to a put');
  await service.chain.put(ghost.consentId, ghost.patient, ghost.rules as Rule[]);
  // 2. A revocation of c-kept whose FHIR commit never happened: noted, then revoked on chain.
  journal.note(['c-kept']);
  await service.chain.revoke(service.keyOf('Consent/c-kept'));
  // 3. Not noted: a consent of p-other put on chain by someone else sharing the contract.
  const other = mapConsent(consent('c-other', 'p-other', permit), { keyOf, tokenOf: service.tokenOf }, 'c-other');
  if (other.action !== 'put') throw new Error('c-other maps to a put');
  await service.chain.put(other.consentId, other.patient, other.rules as Rule[]);
  await service.sync();
  t.equal((await first.as(tok, 'GET', '/Observation/p-ghost-obs')).status, 200, 'the unacknowledged permit is in force before the restart');
  const revokedBefore = await first.as(tok, 'GET', '/Observation/p-kept-obs');
  t.equal(revokedBefore.status, 403, 'and the unacknowledged revocation');
  await first.s.close();

  const second = await startConsentServer(t, { VELLUM_DATA_DIR: dataDir });
  const tok2 = await second.tokenFor('Practitioner/dr-r');
  const ghostRead = await second.as(tok2, 'GET', '/Observation/p-ghost-obs');
  t.equal(ghostRead.status, 403, 'the permit no FHIR Consent backs is revoked');
  t.same(codes(ghostRead.body), ['VLM_CONSENT_NONE']);
  t.equal(second.s.services.consent!.service.state.consent(ghost.consentId)?.active, false, 'on chain too');
  t.equal((await second.as(tok2, 'GET', '/Observation/p-kept-obs')).status, 200, 'the consent the store holds active is in force again');
  t.equal((await second.as(tok2, 'GET', '/Observation/p-other-obs')).status, 200, 'a consent the journal does not name is left alone');
  t.same(new ConsentIntentJournal(journalPath).pending(), [], 'the journal is emptied');
});

t.test('the journal ignores a torn last line and notes each id once', async (t) => {
  const dir = t.testdir();
  const journal = new ConsentIntentJournal(path.join(dir, 'consent-intents.log'));
  t.same(journal.pending(), [], 'no file: nothing pending');
  journal.note(['a', 'b']);
  journal.note(['a']);
  fs.appendFileSync(path.join(dir, 'consent-intents.log'), '"c');
  t.same(journal.pending(), ['a', 'b']);
  journal.clear();
  t.same(journal.pending(), []);
});
