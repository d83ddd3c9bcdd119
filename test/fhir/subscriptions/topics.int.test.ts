/**
 * Topic-based Subscriptions (Subscriptions R5 Backport IG, R4 profile) over rest-hook, against a
 * local HTTP receiver: the topics served and searchable, refusals, the handshake bundle, event
 * notification bundles (full-resource, id-only, empty; several events per bundle with max-count),
 * event numbers counted without gaps, `$status` and `$events`, heartbeats; and with consent on,
 * seed 001's critical results reaching a practitioner until the patient revokes, and practitioner
 * approvals as events.
 */
import t from 'tap';
import { vellumCodes, startTestServer, type TestServer } from '../../helpers/server.ts';
import { actor, consent, patientToken, startConsentServer } from '../consent/harness.ts';
import { eventually, receiver, subscriptionsOf, type Attempt } from './harness.ts';

const BACKPORT = 'http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition';
const TOPIC = 'https://vellum.dev/fhir/SubscriptionTopic';
const INTERPRETATION = 'http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation';

/** A topic-based Subscription (the Backport IG's R4 profile). */
function topicSubscription(
  id: string,
  topic: string,
  endpoint: string,
  options: { filters?: string[]; content?: string; channel?: Record<string, unknown>; extensions?: Record<string, unknown>[] } = {},
) {
  return {
    resourceType: 'Subscription',
    id,
    meta: { profile: [`${BACKPORT}/backport-subscription`] },
    status: 'requested',
    reason: 'tests',
    criteria: `${TOPIC}/${topic}`,
    ...(options.filters ? { _criteria: { extension: options.filters.map((valueString) => ({ url: `${BACKPORT}/backport-filter-criteria`, valueString })) } } : {}),
    channel: {
      type: 'rest-hook',
      endpoint,
      payload: 'application/fhir+json',
      _payload: { extension: [{ url: `${BACKPORT}/backport-payload-content`, valueCode: options.content ?? 'full-resource' }] },
      ...(options.extensions ? { extension: options.extensions } : {}),
      ...options.channel,
    },
  };
}

const observation = (id: string, patient: string, interpretation?: string, code = '8867-4') => ({
  resourceType: 'Observation',
  id,
  status: 'final',
  code: { coding: [{ system: 'http://loinc.org', code }] },
  subject: { reference: `Patient/${patient}` },
  valueQuantity: { value: interpretation === 'HH' ? 190 : interpretation === 'LL' ? 30 : 70, unit: '/min' },
  ...(interpretation ? { interpretation: [{ coding: [{ system: INTERPRETATION, code: interpretation }] }] } : {}),
});

/** The SubscriptionStatus parameters of a notification bundle, by name (notification-event: every one). */
function statusOf(bundle: any) {
  const params = bundle.entry[0].resource.parameter as any[];
  const one = (name: string) => params.find((p) => p.name === name);
  return {
    type: one('type')?.valueCode as string,
    status: one('status')?.valueCode as string,
    topic: one('topic')?.valueCanonical as string,
    since: one('events-since-subscription-start')?.valueString as string,
    events: params
      .filter((p) => p.name === 'notification-event')
      .map((p) => ({
        number: p.part.find((x: any) => x.name === 'event-number').valueString as string,
        focus: p.part.find((x: any) => x.name === 'focus')?.valueReference?.reference as string | undefined,
      })),
  };
}

const bundles = (attempts: Attempt[]) => attempts.map((a) => JSON.parse(a.body));

async function server(t: Parameters<typeof startTestServer>[0], port: number, env: Record<string, string> = {}): Promise<TestServer> {
  return startTestServer(t, { VELLUM_SUBSCRIPTION_ENDPOINTS_ALLOW: `127.0.0.1:${port}`, VELLUM_SUBSCRIPTION_RETRY_MS: '10', ...env });
}

t.test('the topics are served, searchable and listed in the CapabilityStatement', async (t) => {
  const s = await startTestServer(t);
  const all = await s.fhir('GET', 'SubscriptionTopic');
  t.equal(all.status, 200);
  const urls = all.json.entry.map((e: any) => e.resource.url);
  for (const id of ['appointment', 'medication-request', 'encounter', 'observation', 'consent', 'access-request', 'critical-result', 'practitioner-approved', 'practitioner-approval-revoked']) {
    t.ok(urls.includes(`${TOPIC}/${id}`), `topic ${id}`);
  }
  const critical = await s.fhir('GET', 'SubscriptionTopic/critical-result');
  t.equal(critical.json.resourceType, 'SubscriptionTopic');
  t.equal(critical.json.resourceTrigger[0].resource, 'Observation');
  t.match(critical.json.resourceTrigger[0].queryCriteria.current, /interpretation=.*HH/);
  t.ok(critical.json.canFilterBy.some((f: any) => f.filterParameter === 'patient'), 'filterable by patient');
  const byUrl = await s.fhir('GET', `SubscriptionTopic?url=${encodeURIComponent(`${TOPIC}/encounter`)}`);
  t.same(byUrl.json.entry.map((e: any) => e.resource.id), ['encounter'], 'search by url');
  const byResource = await s.fhir('GET', 'SubscriptionTopic?resource=Observation');
  t.same(byResource.json.entry.map((e: any) => e.resource.id).sort(), ['critical-result', 'observation'], 'search by resource');
  const unknown = await s.fhir('GET', 'SubscriptionTopic/nope');
  t.equal(unknown.status, 404);
  t.equal((await s.fhir('GET', 'SubscriptionTopic?nope=1')).status, 400, 'an unknown search parameter: 400');

  const metadata = (await s.fhir('GET', 'metadata')).json;
  const sub = metadata.rest[0].resource.find((r: any) => r.type === 'Subscription');
  const advertised = sub.extension.filter((e: any) => e.url === `${BACKPORT}/capabilitystatement-subscriptiontopic-canonical`).map((e: any) => e.valueCanonical);
  t.same(advertised.sort(), [...urls].sort(), 'every topic is advertised on Subscription');
  t.same(sub.operation.map((o: any) => o.name).filter((n: string) => ['status', 'events', 'get-ws-binding-token'].includes(n)).sort(), ['events', 'get-ws-binding-token', 'status']);
  const ws = metadata.rest[0].extension.find((e: any) => e.url === 'http://hl7.org/fhir/StructureDefinition/capabilitystatement-websocket');
  t.match(ws.valueUri, /^ws:\/\/.*\/fhir\/websocket$/, 'the websocket URL');
});

t.test('topic-based subscriptions that cannot be delivered are refused, and nothing is stored', async (t) => {
  const s = await startTestServer(t);
  const hook = 'https://example.org/hook';
  const cases: [string, Record<string, unknown>, string][] = [
    ['unknown topic', { ...topicSubscription('x', 'nope', hook) }, 'VLM_SUB_UNKNOWN_TOPIC'],
    ['filter on a parameter the topic does not offer', topicSubscription('x', 'critical-result', hook, { filters: ['Observation?value-quantity=100'] }), 'VLM_SUB_BAD_FILTER'],
    ['filter on another type', topicSubscription('x', 'critical-result', hook, { filters: ['Encounter?patient=Patient/p1'] }), 'VLM_SUB_BAD_FILTER'],
    ['filter with an unknown parameter', topicSubscription('x', 'observation', hook, { filters: ['Observation?nope=1'] }), 'VLM_SUB_BAD_FILTER'],
    ['unknown payload content', topicSubscription('x', 'observation', hook, { content: 'everything' }), 'VLM_SUB_BAD_PAYLOAD'],
    ['heartbeat of 0 s', topicSubscription('x', 'observation', hook, { extensions: [{ url: `${BACKPORT}/backport-heartbeat-period`, valueUnsignedInt: 0 }] }), 'VLM_SUB_BAD_CHANNEL'],
    ['max count of 1000', topicSubscription('x', 'observation', hook, { extensions: [{ url: `${BACKPORT}/backport-max-count`, valuePositiveInt: 1000 }] }), 'VLM_SUB_BAD_CHANNEL'],
    ['email channel', topicSubscription('x', 'observation', hook, { channel: { type: 'email', endpoint: 'mailto:a@example.org' } }), 'VLM_SUB_CHANNEL_UNSUPPORTED'],
  ];
  for (const [name, body, code] of cases) {
    const res = await s.fhir('POST', 'Subscription', body);
    t.equal(res.status, 422, `${name}: 422`);
    t.ok(vellumCodes(res.json).includes(code), `${name}: ${code}`);
  }
  t.equal((await s.fhir('GET', 'Subscription?_summary=count')).json.total, 0, 'no Subscription was stored');
});

t.test('critical results for one patient: handshake, notification bundles numbered without gaps, $status, $events', async (t) => {
  const hook = await receiver(t);
  const s = await server(t, hook.port);
  const sub = topicSubscription('crit', 'critical-result', hook.url('crit'), { filters: ['Observation?patient=Patient/p1'] });
  t.equal((await s.fhir('PUT', 'Subscription/crit', sub)).status, 201);
  await hook.until('crit', 1);
  const handshake = JSON.parse(hook.at('crit')[0]!.body);
  t.equal(handshake.type, 'history', 'a history bundle');
  t.same(handshake.meta.profile, [`${BACKPORT}/backport-subscription-notification-r4`]);
  t.match(statusOf(handshake), { type: 'handshake', topic: `${TOPIC}/critical-result`, since: '0', events: [] }, 'the handshake');
  t.equal(handshake.entry[0].resource.resourceType, 'Parameters');
  t.same(handshake.entry[0].resource.meta.profile, [`${BACKPORT}/backport-subscription-status-r4`]);
  await eventually(s, 'crit active', async () => ((await s.fhir('GET', 'Subscription/crit')).json.status === 'active' ? true : undefined));

  await s.fhir('PUT', 'Observation/normal', observation('normal', 'p1'));
  await s.fhir('PUT', 'Observation/high', observation('high', 'p1', 'HH'));
  await s.fhir('PUT', 'Observation/other-patient', observation('other-patient', 'p2', 'HH'));
  await s.fhir('PUT', 'Observation/low', observation('low', 'p1', 'LL'));
  await s.fhir('PUT', 'Observation/normal', observation('normal', 'p1', 'AA')); // updated to critical
  await hook.until('crit', 4);
  await subscriptionsOf(s).settle();
  const sent = bundles(hook.at('crit')).slice(1);
  t.equal(sent.length, 3, 'only the critical results of Patient/p1');
  t.same(
    sent.map((b) => statusOf(b).events),
    [[{ number: '1', focus: 'http://127.0.0.1:8080/fhir/Observation/high' }], [{ number: '2', focus: 'http://127.0.0.1:8080/fhir/Observation/low' }], [{ number: '3', focus: 'http://127.0.0.1:8080/fhir/Observation/normal' }]],
    'event numbers 1, 2, 3 with their focus',
  );
  t.same(sent.map((b) => statusOf(b).since), ['1', '2', '3'], 'events since the start');
  t.same(sent.map((b) => statusOf(b).type), ['event-notification', 'event-notification', 'event-notification']);
  const [high, , updated] = sent;
  t.equal(high.entry[1].resource.id, 'high', 'full-resource: the resource');
  t.same(high.entry[1].request, { method: 'POST', url: 'Observation' }, 'a creation');
  t.equal(updated.entry[1].request.method, 'PUT', 'an update');
  t.equal(updated.entry[1].resource.meta.versionId, '2', 'the version that made it critical');

  const status = await s.fhir('GET', 'Subscription/crit/$status');
  t.equal(status.status, 200);
  t.equal(status.json.type, 'searchset');
  t.match(statusOf({ entry: [{ resource: status.json.entry[0].resource }] }), { type: 'query-status', status: 'active', since: '3' }, '$status');
  const typeLevel = await s.fhir('GET', 'Subscription/$status?id=crit,unknown');
  t.equal(typeLevel.json.entry.length, 1, 'type-level $status lists the known ones');

  const events = await s.fhir('GET', 'Subscription/crit/$events?eventsSinceNumber=2&eventsUntilNumber=3&content=id-only');
  t.equal(events.status, 200);
  t.match(statusOf(events.json), { type: 'query-event', since: '3' });
  t.same(statusOf(events.json).events.map((e) => e.number), ['2', '3'], '$events: the range asked for');
  t.notOk(events.json.entry.slice(1).some((e: any) => e.resource), 'id-only: no resources');
  t.same(events.json.entry.slice(1).map((e: any) => e.fullUrl), ['http://127.0.0.1:8080/fhir/Observation/low', 'http://127.0.0.1:8080/fhir/Observation/normal']);
  const latest = await s.fhir('GET', 'Subscription/crit/$events');
  t.same(statusOf(latest.json).events.map((e) => e.number), ['1', '2', '3'], '$events without a range: the latest');
  t.equal((await s.fhir('GET', 'Subscription/crit/$events?eventsSinceNumber=x')).status, 400, 'a bad number: 400');
  t.equal((await s.fhir('GET', 'Observation/high/$status')).status, 404, '$status is for Subscriptions');
});

t.test('id-only and empty payloads, the payload limit, several events per bundle, deletions, heartbeats', async (t) => {
  const hook = await receiver(t);
  const s = await server(t, hook.port, { VELLUM_SUBSCRIPTION_PAYLOAD_MAX: '4096' });
  await s.fhir('PUT', 'Subscription/ids', topicSubscription('ids', 'observation', hook.url('ids'), { content: 'id-only' }));
  await s.fhir('PUT', 'Subscription/empty', topicSubscription('empty', 'encounter', hook.url('empty'), { content: 'empty' }));
  await hook.until('ids', 1);
  await hook.until('empty', 1);

  await s.fhir('PUT', 'Observation/o1', observation('o1', 'p1'));
  await s.fhir('DELETE', 'Observation/o1');
  await s.fhir('PUT', 'Encounter/e1', { resourceType: 'Encounter', id: 'e1', status: 'planned', class: { code: 'AMB' }, subject: { reference: 'Patient/p1' } });
  await hook.until('ids', 3);
  await hook.until('empty', 2);
  const [created, deleted] = bundles(hook.at('ids')).slice(1);
  t.notOk(created.entry[1].resource, 'id-only: no resource');
  t.equal(created.entry[1].fullUrl, 'http://127.0.0.1:8080/fhir/Observation/o1', 'id-only: its reference');
  t.same(deleted.entry[1].request, { method: 'DELETE', url: 'Observation/o1' }, 'a deletion');
  t.equal(statusOf(deleted).events[0]!.focus, 'http://127.0.0.1:8080/fhir/Observation/o1');
  const empty = JSON.parse(hook.at('empty')[1]!.body);
  t.equal(empty.entry.length, 1, 'empty: the status alone');
  t.same(statusOf(empty).events, [{ number: '1', focus: undefined }], 'empty: the event number, no focus');

  // Above VELLUM_SUBSCRIPTION_PAYLOAD_MAX, a full-resource notification goes without its resource.
  await s.fhir('PUT', 'Subscription/full', topicSubscription('full', 'medication-request', hook.url('full')));
  await hook.until('full', 1);
  const prescription = (id: string, note: string) => ({
    resourceType: 'MedicationRequest',
    id,
    status: 'active',
    intent: 'order',
    medicationCodeableConcept: { text: 'amoxicillin' },
    subject: { reference: 'Patient/p1' },
    note: [{ text: note }],
  });
  await s.fhir('PUT', 'MedicationRequest/small', prescription('small', 'short'));
  await s.fhir('PUT', 'MedicationRequest/large', prescription('large', 'x'.repeat(5000)));
  await hook.until('full', 3);
  const [small, large] = bundles(hook.at('full')).slice(1);
  t.equal(small.entry[1].resource.id, 'small', 'within the limit: the resource');
  t.notOk(large.entry[1].resource, 'above the limit: no resource');
  t.equal(large.entry[1].fullUrl, 'http://127.0.0.1:8080/fhir/MedicationRequest/large', 'above the limit: its reference, to read');
  t.ok(hook.at('full')[2]!.body.length <= 4096, 'the notification is within the limit');

  // max-count 3: events written while the receiver fails arrive together, in order.
  const batched = topicSubscription('batched', 'observation', hook.url('batched'), {
    content: 'id-only',
    extensions: [{ url: `${BACKPORT}/backport-max-count`, valuePositiveInt: 3 }],
  });
  await s.fhir('PUT', 'Subscription/batched', batched);
  await hook.until('batched', 1);
  hook.fail('batched', 503);
  for (const id of ['b1', 'b2', 'b3', 'b4']) await s.fhir('PUT', `Observation/${id}`, observation(id, 'p1'));
  await hook.until('batched', 3);
  await subscriptionsOf(s).settle();
  const received = bundles(hook.at('batched')).slice(1).flatMap((b) => statusOf(b).events.map((e) => `${e.number}:${e.focus!.split('/').pop()}`));
  t.same(received, ['1:b1', '2:b2', '3:b3', '4:b4'], 'every event once, in order');
  t.ok(bundles(hook.at('batched')).slice(1).some((b) => statusOf(b).events.length > 1), 'several events in one bundle');
  t.ok(bundles(hook.at('batched')).every((b) => statusOf(b).events.length <= 3), 'never more than max-count');

  // Heartbeats: a quiet subscription hears from the server every period.
  const beating = topicSubscription('beat', 'appointment', hook.url('beat'), { extensions: [{ url: `${BACKPORT}/backport-heartbeat-period`, valueUnsignedInt: 1 }] });
  await s.fhir('PUT', 'Subscription/beat', beating);
  await hook.until('beat', 3);
  t.same(bundles(hook.at('beat')).map((b) => statusOf(b).type).slice(0, 3), ['handshake', 'heartbeat', 'heartbeat'], 'handshake, then heartbeats');
});

t.test('with consent: critical results reach the practitioner until the patient revokes; approvals are events', async (t) => {
  const hook = await receiver(t);
  const c = await startConsentServer(t, { VELLUM_SUBSCRIPTION_ENDPOINTS_ALLOW: `127.0.0.1:${hook.port}`, VELLUM_SUBSCRIPTION_RETRY_MS: '10' });
  await c.put({ resourceType: 'Patient', id: 'p1', name: [{ family: 'One' }] });
  await c.put({ resourceType: 'Practitioner', id: 'dr1', name: [{ family: 'Doc' }] });
  await c.put({ resourceType: 'Practitioner', id: 'dr2', name: [{ family: 'Other' }] });

  // The administrator hears of approvals.
  const approvals = topicSubscription('approvals', 'practitioner-approved', hook.url('approvals'), { content: 'id-only' });
  t.equal((await c.as(c.admin, 'PUT', '/Subscription/approvals', approvals)).status, 201);
  const revocations = topicSubscription('revocations', 'practitioner-approval-revoked', hook.url('revocations'), { content: 'id-only', filters: ['Practitioner?_id=dr2'] });
  t.equal((await c.as(c.admin, 'PUT', '/Subscription/revocations', revocations)).status, 201);
  await hook.until('approvals', 1);
  await hook.until('revocations', 1);
  await c.approve('Practitioner/dr1');
  await c.approve('Practitioner/dr2');
  await hook.until('approvals', 3);
  t.same(
    bundles(hook.at('approvals')).slice(1).map((b) => statusOf(b).events[0]!.focus!.split('/').slice(-2).join('/')),
    ['Practitioner/dr1', 'Practitioner/dr2'],
    'each approval is an event about the practitioner',
  );
  const revoked = await c.as(c.admin, 'POST', '/Practitioner/dr1/$revoke-approval', { resourceType: 'Parameters', parameter: [] });
  t.equal(revoked.status, 200);
  const revokedDr2 = await c.as(c.admin, 'POST', '/Practitioner/dr2/$revoke-approval', { resourceType: 'Parameters', parameter: [] });
  t.equal(revokedDr2.status, 200);
  await hook.until('revocations', 2);
  await subscriptionsOf(c.s).settle();
  t.same(
    bundles(hook.at('revocations')).slice(1).map((b) => statusOf(b).events[0]!.focus!.split('/').pop()),
    ['dr2'],
    'the filtered subscription hears of dr2 only',
  );
  await c.approve('Practitioner/dr1');

  // The patient grants dr1; dr1 subscribes to p1's critical results.
  const patient = await patientToken(c, 'p1', 'openid fhirUser launch/patient patient/*.cruds');
  const grant = consent('c1', 'p1', { type: 'permit', actor: [actor('Practitioner/dr1')] });
  t.equal((await c.as(patient, 'PUT', '/Consent/c1', grant)).status, 201, 'the patient grants');
  const dr = await c.tokenFor('Practitioner/dr1');
  const critical = topicSubscription('dr-critical', 'critical-result', hook.url('dr'), { filters: ['Observation?patient=Patient/p1'] });
  t.equal((await c.as(dr, 'PUT', '/Subscription/dr-critical', critical)).status, 201, 'the practitioner subscribes');
  await hook.until('dr', 1);
  await c.put(observation('o-high', 'p1', 'HH'));
  await hook.until('dr', 2);
  const alert = JSON.parse(hook.at('dr')[1]!.body);
  t.equal(alert.entry[1].resource.id, 'o-high', 'the critical result, with the Observation');

  // The patient revokes: the next critical result is not sent, payload or not, and gets no number.
  t.equal((await c.as(patient, 'PUT', '/Consent/c1', { ...grant, status: 'inactive' })).status, 200, 'the patient revokes');
  await c.put(observation('o-low', 'p1', 'LL'));
  await eventually(c.s, 'the event passed over', async () => {
    const state = await c.s.services.repository.index.subscriptions.state('dr-critical');
    return state && state.delivered >= 2 ? state : undefined;
  });
  t.equal(hook.at('dr').length, 2, 'nothing sent after the revocation');
  const status = await c.as(dr, 'GET', '/Subscription/dr-critical/$status');
  t.equal(statusOf({ entry: [{ resource: status.body.entry[0].resource }] }).since, '1', 'the passed-over event has no number');
  const events = await c.as(dr, 'GET', '/Subscription/dr-critical/$events?content=full-resource');
  t.same(statusOf(events.body).events.map((e) => e.number), [], '$events: what the practitioner may no longer see is left out');
  const other = await c.tokenFor('Practitioner/dr2');
  t.equal((await c.as(other, 'GET', '/Subscription/dr-critical/$status')).status, 404, "another's subscription: 404");
});
