/**
 * R4 rest-hook Subscriptions with authorization on: a Subscription belongs to the client (and user)
 * that created it — others find no such resource, the administrator sees every one; notifications
 * are decided for the owner at delivery time exactly as a search match is: its scopes (events of a
 * type it may not read are passed over), and the patient's consent (a consent revoked between the
 * write and the delivery stops that patient's notifications at once, before and after the
 * revocation alike); and every delivery attempt is an AuditEvent (`$notify`, destination and event
 * number, never the payload).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import { vellumCodes, type TestServer } from '../../helpers/server.ts';
import { authServer, backendToken, deliveredUpTo, receiver, statusOf, subscriptionsOf, within, type Attempt } from './harness.ts';
import { authorizeThroughPages } from '../auth/harness.ts';
import { actor, consent, patientToken, startConsentServer } from '../consent/harness.ts';

const as = (s: TestServer, token: string, method: string, url: string, body?: unknown, headers: Record<string, string> = {}) =>
  s.fhir(method, url, body, { authorization: `Bearer ${token}`, ...headers });

const subscription = (id: string, endpoint: string, criteria: string, extra: Record<string, unknown> = {}) => ({
  resourceType: 'Subscription',
  id,
  status: 'requested',
  reason: 'tests',
  criteria,
  channel: { type: 'rest-hook', endpoint, payload: 'application/fhir+json' },
  ...extra,
});

const observation = (id: string, patient: string, code = '8867-4', value = 60) => ({
  resourceType: 'Observation',
  id,
  status: 'final',
  code: { coding: [{ system: 'http://loinc.org', code }] },
  subject: { reference: `Patient/${patient}` },
  valueQuantity: { value, unit: '/min' },
});

const HEART_RATE = 'Observation?code=http://loinc.org|8867-4';
/** `Type/id` of every entry of a Bundle (matches, includes and history versions; outcomes left out). */
const entriesOf = (bundle: any): string[] =>
  (bundle?.entry ?? []).filter((e: any) => e.search?.mode !== 'outcome').map((e: any) => (e.fullUrl ?? '').split('/').slice(-2).join('/'));
/**
 * Known gaps outside the subscription code (history.ts): a non-consent-gated caller's history is
 * filtered with `visible` after the index counted it (instance history of another owner's
 * Subscription is 200 with a total, type and system history totals count it), and a
 * patient-confined caller's history is not filtered at all.
 */
const idsIn = (bundle: any): string[] => (bundle?.entry ?? []).filter((e: any) => e.resource?.resourceType === 'Subscription').map((e: any) => e.resource.id).sort();
const notified = (attempts: Attempt[]) => attempts.map((a) => (a.body ? JSON.parse(a.body).id : ''));

t.test('a Subscription is its owner’s: others find no such resource, the administrator sees it', async (t) => {
  const hook = await receiver(t);
  // The audit trail is not what this test is about (the next one reads it).
  const { s, h, admin } = await authServer(t, { VELLUM_AUDIT: 'off', VELLUM_SUBSCRIPTION_ENDPOINTS_ALLOW: `127.0.0.1:${hook.port}`, VELLUM_SUBSCRIPTION_RETRY_MS: '10' });
  const scope = 'system/Subscription.cruds system/*.rs';
  const a = await backendToken(h, scope);
  const b = await backendToken(h, scope);

  t.equal((await as(s, a.token, 'PUT', 'Subscription/a-sub', subscription('a-sub', hook.url('a'), HEART_RATE))).status, 201, 'A creates its subscription');
  await hook.until('a', 1);
  await statusOf(s, admin, 'a-sub', 'active');
  t.equal((await as(s, b.token, 'POST', 'Subscription', subscription('ignored', hook.url('b'), HEART_RATE))).status, 201, 'B creates its own');
  const bSub = (await as(s, b.token, 'GET', 'Subscription')).json.entry?.[0]?.resource?.id as string;
  t.ok(bSub, 'B finds its own');

  t.test('another client finds nothing of it', async (t) => {
    const read = await as(s, b.token, 'GET', 'Subscription/a-sub');
    t.equal(read.status, 404, 'read: 404');
    t.same(vellumCodes(read.json), ['VLM_FHIR_NOT_FOUND']);
    const vread = await as(s, b.token, 'GET', 'Subscription/a-sub/_history/1');
    t.equal(vread.status, 404, 'vread: 404');
    t.same(vellumCodes(vread.json), ['VLM_FHIR_NOT_FOUND']);
    const history = await as(s, b.token, 'GET', 'Subscription/a-sub/_history');
    t.same(entriesOf(history.json), [], 'instance history: no version of it');
    t.equal(history.status, 404, 'instance history: 404, as for an unknown id');

    for (const query of ['Subscription', 'Subscription?_id=a-sub', 'Subscription?status=active', '?_type=Subscription,Observation', '?_id=a-sub']) {
      const res = await as(s, b.token, 'GET', query);
      t.equal(res.status, 200, `${query}: 200`);
      t.notOk(entriesOf(res.json).includes('Subscription/a-sub'), `${query}: A's subscription is not among the matches`);
      if (res.json.total !== undefined) t.equal(res.json.total, entriesOf(res.json).length, `${query}: a total counts only what B may see`);
    }
    t.same(idsIn((await as(s, b.token, 'GET', 'Subscription')).json), [bSub], 'B lists its own only');
    for (const query of ['Subscription?_summary=count', 'Subscription?_id=a-sub&_summary=count', '?_type=Subscription&_summary=count', 'Subscription?_total=accurate']) {
      const res = await as(s, b.token, 'GET', query);
      t.equal(res.status, 200, `${query}: 200`);
      const own = query.includes('_id=a-sub') ? 0 : 1;
      // A total, when given, counts B's own only (`_total=accurate` may be left unanswered, as for consent-gated callers).
      if (query.includes('_summary=count')) t.equal(res.json.total, own, `${query}: counts B’s own only`);
      else t.ok(res.json.total === undefined || res.json.total === own, `${query}: no total that counts A’s`);
    }
    for (const query of ['Subscription/_history', '_history']) {
      const res = await as(s, b.token, 'GET', query);
      t.equal(res.status, 200, `${query}: 200`);
      t.notOk(entriesOf(res.json).includes('Subscription/a-sub'), `${query}: no version of A's subscription`);
      t.ok(res.json.total === undefined || res.json.total === entriesOf(res.json).length, `${query}: no total that counts A's`);
    }
  });

  t.test('another client can neither change nor delete it', async (t) => {
    const update = await as(s, b.token, 'PUT', 'Subscription/a-sub', subscription('a-sub', hook.url('b'), HEART_RATE));
    t.equal(update.status, 404, 'update: 404');
    t.same(vellumCodes(update.json), ['VLM_FHIR_NOT_FOUND']);
    const patch = await as(s, b.token, 'PATCH', 'Subscription/a-sub', [{ op: 'replace', path: '/channel/endpoint', value: hook.url('b') }], {
      'content-type': 'application/json-patch+json',
    });
    t.equal(patch.status, 404, 'patch: 404');
    t.same(vellumCodes(patch.json), ['VLM_FHIR_NOT_FOUND']);
    const del = await as(s, b.token, 'DELETE', 'Subscription/a-sub');
    t.equal(del.status, 404, 'delete: 404');
    t.same(vellumCodes(del.json), ['VLM_FHIR_NOT_FOUND']);
    const conditional = await as(s, b.token, 'DELETE', 'Subscription?_id=a-sub');
    t.equal(conditional.status, 204, 'a conditional delete matches nothing of A’s (and deletes nothing: below)');
    const bundle = await as(s, b.token, 'POST', '', {
      resourceType: 'Bundle',
      type: 'batch',
      entry: [
        { request: { method: 'GET', url: 'Subscription/a-sub' } },
        { request: { method: 'PUT', url: 'Subscription/a-sub' }, resource: subscription('a-sub', hook.url('b'), HEART_RATE) },
        { request: { method: 'DELETE', url: 'Subscription/a-sub' } },
      ],
    });
    t.equal(bundle.status, 200);
    t.same(bundle.json.entry.map((e: any) => e.response.status.split(' ')[0]), ['404', '404', '404'], 'batch entries: 404 each');

    const seen = await as(s, admin, 'GET', 'Subscription/a-sub');
    t.equal(seen.status, 200, 'the administrator reads it');
    t.equal(seen.json.channel.endpoint, hook.url('a'), 'the endpoint is still A’s');
    t.equal(seen.json.meta.versionId, '2', 'no version was added (1: A’s, 2: active)');
  });

  t.test('the administrator sees every subscription; the owner changes its own', async (t) => {
    t.same(idsIn((await as(s, admin, 'GET', 'Subscription')).json), ['a-sub', bSub].sort(), 'the administrator lists both');
    t.same(idsIn((await as(s, a.token, 'GET', 'Subscription')).json), ['a-sub'], 'A lists its own only');
    const foreign = await as(s, a.token, 'GET', `Subscription/${bSub}`);
    t.equal(foreign.status, 404, 'A does not find B’s');

    const current = (await as(s, a.token, 'GET', 'Subscription/a-sub')).json;
    t.equal(current.status, 'active');
    const changed = await as(s, a.token, 'PUT', 'Subscription/a-sub', { ...current, status: 'requested', reason: 'changed by A' });
    t.equal(changed.status, 200, 'the owner’s update works');
    await statusOf(s, admin, 'a-sub', 'active');
    t.equal((await as(s, a.token, 'GET', 'Subscription/a-sub')).json.reason, 'changed by A');
    t.equal((await as(s, admin, 'PUT', 'Observation/o1', observation('o1', 'p1'))).status, 201);
    await hook.until('a', 3); // handshake, the re-request's handshake, o1
    t.same(notified(hook.at('a')), ['', '', 'o1'], 'A’s endpoint is notified');
    await hook.until('b', 2);
    t.same(notified(hook.at('b')), ['', 'o1'], 'B’s own subscription works too');

    t.equal((await as(s, a.token, 'DELETE', 'Subscription/a-sub')).status, 204, 'the owner deletes it');
    t.equal((await as(s, admin, 'GET', 'Subscription/a-sub')).status, 410);
  });

  t.test('users of one app: each has its own; a patient user finds none', async (t) => {
    const redirectUri = 'https://app.example.org/callback';
    const appScope = 'openid fhirUser launch/patient user/Subscription.cruds user/Observation.rs patient/*.rs';
    const reg = await h.register(
      { client_name: 'Practice app', token_endpoint_auth_method: 'none', grant_types: ['authorization_code'], redirect_uris: [redirectUri], scope: appScope },
      admin,
    );
    t.equal(reg.status, 201, reg.text);
    const userToken = async (username: string, fhirUser: string, scope: string) => {
      const password = `a long password for ${username}`;
      t.equal((await h.createUser({ username, password, fhir_user: fhirUser })).status, 201);
      const flow = await authorizeThroughPages(h, { clientId: reg.json.client_id, redirectUri, scope, username, password });
      const res = await h.token({ grant_type: 'authorization_code', code: flow.code, redirect_uri: redirectUri, code_verifier: flow.verifier, client_id: reg.json.client_id });
      t.equal(res.status, 200, res.text);
      return res.json.access_token as string;
    };
    const userScope = 'openid fhirUser user/Subscription.cruds user/Observation.rs';
    const one = await userToken('dr-one', 'Practitioner/u1', userScope);
    const two = await userToken('dr-two', 'Practitioner/u2', userScope);
    t.equal((await as(s, one, 'PUT', 'Subscription/u1-sub', subscription('u1-sub', hook.url('u1'), HEART_RATE))).status, 201);
    const other = await as(s, two, 'GET', 'Subscription/u1-sub');
    t.equal(other.status, 404, 'the other user of the same app: 404');
    t.same(vellumCodes(other.json), ['VLM_FHIR_NOT_FOUND']);
    const update = await as(s, two, 'PUT', 'Subscription/u1-sub', subscription('u1-sub', hook.url('u2'), HEART_RATE));
    t.equal(update.status, 404, 'nor update it');
    t.same(vellumCodes(update.json), ['VLM_FHIR_NOT_FOUND']);
    t.equal((await as(s, two, 'DELETE', 'Subscription/u1-sub')).status, 404, 'nor delete it');
    t.same(idsIn((await as(s, two, 'GET', 'Subscription')).json), [], 'nor find it');
    t.equal((await as(s, one, 'GET', 'Subscription/u1-sub')).status, 200, 'its user reads it');

    // A patient user (patient/*.rs: Subscription is outside its compartment, governed by scopes).
    const patient = await userToken('pat-one', 'Patient/p1', 'openid fhirUser launch/patient patient/*.rs');
    const read = await as(s, patient, 'GET', 'Subscription/u1-sub');
    t.equal(read.status, 404, 'a patient user: 404');
    t.same(vellumCodes(read.json), ['VLM_FHIR_NOT_FOUND']);
    const found = await as(s, patient, 'GET', 'Subscription');
    t.equal(found.status, 200);
    t.same(idsIn(found.json), [], 'a patient user’s search finds none');
    const history = await as(s, patient, 'GET', 'Subscription/_history');
    t.same(entriesOf(history.json).filter((e) => e.startsWith('Subscription/')), [], 'a patient user’s type history shows none');
    t.notOk(JSON.stringify(history.json).includes(hook.url('u1')), 'nor their endpoints');
  });
});

t.test('scopes at delivery, and the AuditEvent of every attempt', async (t) => {
  const hook = await receiver(t);
  const { s, h, admin } = await authServer(t, { VELLUM_SUBSCRIPTION_ENDPOINTS_ALLOW: `127.0.0.1:${hook.port}`, VELLUM_SUBSCRIPTION_RETRY_MS: '10' });
  const narrow = await backendToken(h, 'system/Patient.read system/Subscription.*');
  const wide = await backendToken(h, 'system/Observation.rs system/Subscription.cruds');
  t.equal((await as(s, narrow.token, 'PUT', 'Subscription/narrow', subscription('narrow', hook.url('narrow'), HEART_RATE))).status, 201);
  t.equal((await as(s, narrow.token, 'PUT', 'Subscription/narrow-pt', subscription('narrow-pt', hook.url('narrow-pt'), 'Patient?family=Watched'))).status, 201);
  t.equal((await as(s, wide.token, 'PUT', 'Subscription/wide', subscription('wide', hook.url('wide'), HEART_RATE))).status, 201);
  for (const id of ['narrow', 'narrow-pt', 'wide']) await statusOf(s, admin, id, 'active');

  hook.fail('wide', 500); // the wide subscription's first event fails once
  t.equal((await as(s, admin, 'PUT', 'Observation/o1', observation('o1', 'p1', '8867-4', 61))).status, 201);
  t.equal((await as(s, admin, 'PUT', 'Observation/o2', observation('o2', 'p1', '8867-4', 62))).status, 201);
  t.equal((await as(s, admin, 'PUT', 'Patient/p1', { resourceType: 'Patient', id: 'p1', name: [{ family: 'Watched' }] })).status, 201);
  t.equal((await as(s, admin, 'DELETE', 'Observation/o2')).status, 204);
  await hook.until('wide', 4);
  await hook.until('narrow-pt', 2);
  await deliveredUpTo(s, 'narrow', 3);
  await subscriptionsOf(s).settle();

  t.same(notified(hook.at('wide')), ['', 'o1', 'o2', ''], 'Observation read: the Observations are delivered, in order (the deletion empty)');
  t.same(JSON.parse(hook.at('wide')[1]!.body).valueQuantity.value, 61, 'with the resource');
  t.same(notified(hook.at('narrow')), [''], 'Patient read only: the handshake, and no Observation');
  t.same(notified(hook.at('narrow-pt')), ['', 'p1'], 'Patient read only: Patients are delivered');
  t.equal(hook.tried('narrow').length, 1, 'not even an attempt for the Observations');
  const state = await s.services.repository.index.subscriptions.state('narrow');
  t.match(state, { delivered: 3, failures: 0 }, 'the Observation events (creations and the deletion) passed over');
  t.equal((await as(s, admin, 'GET', 'Subscription/narrow')).json.status, 'active', 'the subscription stays active');

  t.test('every delivery attempt is an AuditEvent: $notify, destination, event; no payload', async (t) => {
    const res = await as(s, admin, 'GET', 'AuditEvent?entity=Subscription/wide&_count=100');
    t.equal(res.status, 200);
    const notifies = (res.json.entry ?? [])
      .map((e: any) => e.resource)
      .filter((ae: any) => ae.extension?.[0]?.extension?.some((x: any) => x.url === 'operation' && x.valueString === '$notify'));
    // A run's delivered events share one AuditEvent (`event=1-3`); every failed attempt has its own.
    const queries = notifies.map((ae: any) => new URLSearchParams(Buffer.from(ae.entity.find((e: any) => e.query)?.query, 'base64').toString('utf8')));
    const numbers = (outcome: string) =>
      queries
        .filter((q: URLSearchParams) => q.get('outcome') === outcome)
        .flatMap((q: URLSearchParams) =>
          q.get('event')!.split(',').flatMap((part) => {
            const [first, last = first] = part.split('-').map(Number) as [number, number?];
            return Array.from({ length: last! - first + 1 }, (_, i) => first + i);
          }),
        )
        .sort((a: number, b: number) => a - b);
    t.same(new Set(queries.map((q: URLSearchParams) => q.get('destination'))), new Set([`127.0.0.1:${hook.port}`]), 'the destination');
    t.same(numbers('delivered'), [0, 1, 2, 3], 'the handshake (0) and every event delivered, each once');
    t.same(numbers('failed'), [1], 'the failed attempt');
    t.ok(queries.some((q: URLSearchParams) => q.get('event') === '0' && q.get('type') === 'handshake'), 'the handshake is named');
    for (const ae of notifies) {
      t.equal(ae.subtype[0].code, 'operation');
      t.equal(ae.action, 'E');
      t.ok(ae.entity.some((e: any) => e.what?.reference === 'Subscription/wide'), 'the entity is the Subscription');
      t.ok(ae.agent.some((a: any) => a.who?.identifier?.value === wide.clientId), 'the agent is the owner');
      const text = JSON.stringify(ae);
      t.notOk(/valueQuantity|"o1"|"o2"|Observation\/o|\/min/.test(text), 'no payload in the AuditEvent');
    }
    const failed = notifies.find((ae: any) => ae.extension[0].extension.some((x: any) => x.url === 'status' && x.valueInteger === 500));
    t.equal(failed?.outcome, '8', 'the failed attempt: outcome 8, status 500');

    const narrowAudit = await as(s, admin, 'GET', 'AuditEvent?entity=Subscription/narrow&_count=100');
    const narrowNotifies = (narrowAudit.json.entry ?? []).filter((e: any) =>
      e.resource.extension?.[0]?.extension?.some((x: any) => x.url === 'operation' && x.valueString === '$notify'),
    );
    t.equal(narrowNotifies.length, 1, 'the narrow subscription: its handshake only (nothing was sent for the passed-over events)');
  });
});

t.test('consent at delivery: a revoked consent stops the patient’s notifications, pending or new', async (t) => {
  const hook = await receiver(t);
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-sub-consent-'));
  const env = { VELLUM_DATA_DIR: dataDir, VELLUM_SUBSCRIPTION_ENDPOINTS_ALLOW: `127.0.0.1:${hook.port}`, VELLUM_SUBSCRIPTION_RETRY_MS: '60000' };
  const c = await startConsentServer(t, env);
  t.teardown(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  await c.put({ resourceType: 'Patient', id: 'p1', name: [{ family: 'One' }] });
  await c.put({ resourceType: 'Patient', id: 'p2', name: [{ family: 'Two' }] });
  await c.put({ resourceType: 'Practitioner', id: 'dr1', name: [{ family: 'Doc' }] });
  await c.approve('Practitioner/dr1');
  const patient = await patientToken(c, 'p1', 'openid fhirUser launch/patient patient/*.cruds');
  const grant = consent('c1', 'p1', { type: 'permit', actor: [actor('Practitioner/dr1')] });
  const granted = await c.as(patient, 'PUT', '/Consent/c1', grant);
  t.equal(granted.status, 201, `the patient grants: ${JSON.stringify(granted.body)}`);
  await c.put(consent('c2', 'p2', { type: 'permit', actor: [actor('Practitioner/dr1')] }));
  const dr = await c.tokenFor('Practitioner/dr1');

  t.equal((await c.as(dr, 'PUT', '/Subscription/dr-hr', subscription('dr-hr', hook.url('dr'), HEART_RATE))).status, 201, 'the practitioner subscribes');
  await statusOf(c.s, c.admin, 'dr-hr', 'active');
  await c.put(observation('o1', 'p1', '8867-4', 61));
  await hook.until('dr', 2);
  t.same(notified(hook.at('dr')), ['', 'o1'], 'while the consent permits, the Observation is delivered');

  // The receiver fails the next attempt: the event waits for a retry a minute away.
  hook.fail('dr', 500);
  await c.put(observation('o2', 'p1', '8867-4', 62));
  await hook.attempted('dr', 3);
  await subscriptionsOf(c.s).settle();
  const waiting = await c.s.services.repository.index.subscriptions.state('dr-hr');
  t.match(waiting, { delivered: 1, failures: 1 }, 'o2 waits for its retry');
  t.ok(waiting!.retryAt > Date.now() + 30_000, 'a retry a minute away');

  // The patient revokes; one more Observation is written after the revocation.
  const revoked = await c.as(patient, 'PUT', '/Consent/c1', { ...grant, status: 'inactive' });
  t.equal(revoked.status, 200, `the patient revokes: ${JSON.stringify(revoked.body)}`);
  const denied = await c.as(dr, 'GET', '/Observation/o1');
  t.equal(denied.status, 403, 'the practitioner’s reads are denied at once');
  await c.put(observation('o3', 'p1', '8867-4', 63));
  t.equal((await c.as(c.admin, 'DELETE', '/Observation/o1')).status, 204);
  await subscriptionsOf(c.s).settle();
  t.equal(hook.tried('dr').length, 3, 'nothing sent before the retry is due');
  await c.s.close();

  // A start retries at once what waited for a retry: o2 (written before the revocation), o3 and
  // the deletion of o1 (after).
  const again = await startConsentServer(t, { ...env, VELLUM_SUBSCRIPTION_RETRY_MS: '20' });
  const state = await deliveredUpTo(again.s, 'dr-hr', 4);
  t.match(state, { delivered: 4, failures: 0, retryAt: 0 }, 'the three events passed over');
  t.equal(hook.tried('dr').length, 3, 'nothing was sent for them: no payload, no empty notification');

  // While the consent registry cannot answer, an event is neither sent nor passed over: it waits,
  // and is retried (by the delivery timer alone: nothing below starts a round) until it can be decided.
  const consentService = again.s.services.consent!.service;
  let asked = 0;
  let askedTwice!: () => void;
  const retried = new Promise<void>((resolve) => (askedTwice = resolve));
  consentService.ensureFresh = async () => {
    if (++asked === 2) askedTwice();
    throw Object.assign(new Error('the consent registry does not answer'), { code: 'VLM_CONSENT_UNAVAILABLE' });
  };
  await again.put(observation('o4', 'p2', '8867-4', 64));
  await within(retried, 'the retry of the undecided event');
  t.equal(hook.tried('dr').length, 3, 'nothing sent while consent cannot be checked');
  t.match(await again.s.services.repository.index.subscriptions.state('dr-hr'), { delivered: 4 }, 'o4 is not passed over either');
  delete (consentService as { ensureFresh?: unknown }).ensureFresh; // the prototype's again

  // Another patient's consent permits: o4 is delivered once consent can be checked, in order.
  await hook.until('dr', 3);
  await subscriptionsOf(again.s).settle();
  t.same(notified(hook.at('dr')), ['', 'o1', 'o4'], 'only what the consents permit was ever delivered');
  t.equal((await again.as(again.admin, 'GET', '/Subscription/dr-hr')).body.status, 'active', 'still active');

  // Ownership survives the restart: another client still finds nothing.
  const stranger = await again.tokenFor('Practitioner/dr2');
  const read = await again.as(stranger, 'GET', '/Subscription/dr-hr');
  t.equal(read.status, 404, 'another client: 404 after the restart');
  t.same(vellumCodes(read.body), ['VLM_FHIR_NOT_FOUND']);
});

t.test('a deleted Subscription stays its owner’s, across a restart', async (t) => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-sub-owner-'));
  t.teardown(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  const env = { VELLUM_DATA_DIR: dataDir, VELLUM_AUDIT: 'off' };
  const first = await authServer(t, env);
  const scope = 'system/Subscription.cruds system/*.rs';
  const a = await backendToken(first.h, scope);
  const b = await backendToken(first.h, scope);
  const gone = subscription('gone', 'https://example.org/hook', HEART_RATE, { channel: { type: 'rest-hook', endpoint: 'https://example.org/hook', header: ['Authorization: Bearer a-secret'] } });
  t.equal((await as(first.s, a.token, 'PUT', 'Subscription/gone', gone)).status, 201);
  t.equal((await as(first.s, a.token, 'DELETE', 'Subscription/gone')).status, 204);
  await first.s.close();

  const again = await authServer(t, env);
  const history = await as(again.s, b.token, 'GET', 'Subscription/gone/_history');
  t.equal(history.status, 404, "another client finds no history of it after the restart");
  t.notOk(history.text.includes('a-secret'), 'nothing of it');
  t.equal((await as(again.s, b.token, 'GET', 'Subscription/gone/_history/1')).status, 404, 'nor a version');
  t.equal((await as(again.s, b.token, 'PUT', 'Subscription/gone', gone)).status, 404, 'nor may it take the id over');
  t.equal((await as(again.s, a.token, 'GET', 'Subscription/gone/_history')).status, 200, 'its owner still reads its history');
  t.equal((await as(again.s, a.token, 'PUT', 'Subscription/gone', gone)).status, 201, 'and may create it again');
});
