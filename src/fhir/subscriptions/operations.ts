/**
 * Subscription operations of the Subscriptions R5 Backport IG, for the subscription's owner (and
 * administrators; to anyone else the subscription does not exist):
 *
 * - `GET [base]/Subscription/{id}/$status` and `GET [base]/Subscription/$status?id=…`: a
 *   `searchset` Bundle of SubscriptionStatus Parameters (type `query-status`).
 * - `GET [base]/Subscription/{id}/$events?eventsSinceNumber=&eventsUntilNumber=&content=`: the
 *   notified events in that range (at most 100) as a notification bundle (type `query-event`),
 *   decided again for the owner now.
 * - `GET|POST [base]/Subscription/{id}/$get-ws-binding-token`: a token to bind websocket
 *   subscriptions with `bind-with-token` (Parameters: token, expiration, subscription, websocket-url).
 */
import { fhirError } from '../errors.ts';
import { requireCurrent } from '../interactions/common.ts';
import type { FhirRequest, FhirResource, FhirResponse } from '../request.ts';
import type { FhirServices } from '../services.ts';
import type { PayloadContent } from './validate.ts';

const MAX_EVENTS = 100;

function subscriptionsOf(services: FhirServices, request: FhirRequest) {
  if (request.resourceType !== 'Subscription') throw fhirError(404, 'not-supported', 'VLM_FHIR_NO_ROUTE', 'This operation is defined on Subscription');
  if (!services.subscriptions) throw fhirError(501, 'not-supported', 'VLM_SUB_OFF', 'Subscriptions are not delivered by this server');
  return services.subscriptions;
}

/** The caller's current Subscription `id` (404 when it is another owner's). */
async function ownSubscription(services: FhirServices, request: FhirRequest, id: string): Promise<FhirResource> {
  const subscriptions = subscriptionsOf(services, request);
  if (subscriptions.hidden(request.principal, id)) throw fhirError(404, 'not-found', 'VLM_FHIR_NOT_FOUND', `Subscription/${id} is not known`);
  const record = await requireCurrent(services, 'Subscription', id);
  const resource = await services.loadResource(record);
  if (!resource) throw fhirError(404, 'not-found', 'VLM_FHIR_NOT_FOUND', `Subscription/${id} is not known`);
  return resource;
}

function query(request: FhirRequest, name: string): string[] {
  const body = request.body as { resourceType?: string; parameter?: { name?: string; valueString?: string; valueId?: string; valueInteger?: number; valueCode?: string }[] } | undefined;
  const fromBody = body?.resourceType === 'Parameters' ? (body.parameter ?? []).filter((p) => p.name === name).map((p) => String(p.valueString ?? p.valueId ?? p.valueInteger ?? p.valueCode ?? '')) : [];
  return [...request.query.filter(([n]) => n === name).flatMap(([, v]) => v.split(',')), ...fromBody];
}

/** `$status`, on one subscription or on several (`id` parameters). */
export async function subscriptionStatus(services: FhirServices, request: FhirRequest): Promise<FhirResponse> {
  const subscriptions = subscriptionsOf(services, request);
  const ids = request.id ? [request.id] : query(request, 'id');
  if (ids.length === 0 || ids.length > 100) throw fhirError(400, 'invalid', 'VLM_FHIR_BAD_PARAMETER', 'Name 1 to 100 subscriptions (id)', ['id']);
  const entries: Record<string, unknown>[] = [];
  for (const id of ids) {
    const resource = request.id ? await ownSubscription(services, request, id) : await ownSubscription(services, request, id).catch(() => undefined);
    if (!resource) continue; // type level: unknown and others' subscriptions are simply not listed
    const status = await subscriptions.status(resource);
    entries.push({ fullUrl: `urn:uuid:${status.id as string}`, resource: status, search: { mode: 'match' } });
  }
  return { status: 200, resource: { resourceType: 'Bundle', type: 'searchset', total: entries.length, entry: entries } };
}

function wholeNumber(request: FhirRequest, name: string): number | undefined {
  const [raw, ...more] = query(request, name);
  if (raw === undefined) return undefined;
  if (more.length || !/^\d{1,15}$/.test(raw)) throw fhirError(400, 'invalid', 'VLM_FHIR_BAD_PARAMETER', `${name} is a whole number`, [name]);
  return Number(raw);
}

/** `$events`: the notified events in a range. */
export async function subscriptionEvents(services: FhirServices, request: FhirRequest): Promise<FhirResponse> {
  const subscriptions = subscriptionsOf(services, request);
  const resource = await ownSubscription(services, request, request.id!);
  const since = wholeNumber(request, 'eventsSinceNumber');
  const until = wholeNumber(request, 'eventsUntilNumber');
  const [content, ...more] = query(request, 'content');
  if (more.length || (content !== undefined && content !== 'empty' && content !== 'id-only' && content !== 'full-resource')) {
    throw fhirError(400, 'invalid', 'VLM_FHIR_BAD_PARAMETER', 'content is empty, id-only or full-resource', ['content']);
  }
  const sub = subscriptions.parsed(resource);
  const to = until ?? Number.MAX_SAFE_INTEGER;
  // Without a start, the last events up to `until` — found from the count the status keeps.
  const status = await subscriptions.status(resource);
  const notified = Number(((status.parameter as { name: string; valueString?: string }[]).find((p) => p.name === 'events-since-subscription-start')?.valueString) ?? 0);
  const from = since ?? Math.max(1, Math.min(to, notified) - MAX_EVENTS + 1);
  const bundle = await subscriptions.events(resource, from, to, MAX_EVENTS, (content as PayloadContent | undefined) ?? sub.content);
  return { status: 200, resource: bundle };
}

/** `$get-ws-binding-token`: a token for `bind-with-token` on the subscription websocket. */
export async function bindingToken(services: FhirServices, request: FhirRequest): Promise<FhirResponse> {
  const subscriptions = subscriptionsOf(services, request);
  const sockets = services.subscriptionSockets;
  if (!sockets) throw fhirError(501, 'not-supported', 'VLM_SUB_OFF', 'The subscription websocket is off');
  const resource = await ownSubscription(services, request, request.id!);
  if (subscriptions.parsed(resource).channel !== 'websocket') {
    throw fhirError(422, 'processing', 'VLM_SUB_NOT_WEBSOCKET', 'Binding tokens are for websocket subscriptions', ['Subscription.channel.type']);
  }
  const { token, expires } = sockets.bindingToken([request.id!]);
  return {
    status: 200,
    resource: {
      resourceType: 'Parameters',
      parameter: [
        { name: 'token', valueString: token },
        { name: 'expiration', valueDateTime: new Date(expires).toISOString() },
        { name: 'subscription', valueString: `${services.baseUrl}/Subscription/${request.id}` },
        { name: 'websocket-url', valueUrl: sockets.url },
      ],
    },
  };
}
