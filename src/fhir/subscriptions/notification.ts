/**
 * Notification bundles as the Subscriptions R5 Backport IG shapes them for R4
 * (http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-notification-r4):
 * a `history` Bundle whose first entry is the `SubscriptionStatus` Parameters (status, type,
 * events-since-subscription-start, one `notification-event` per event with its number, timestamp
 * and focus), followed by the focus resources (`full-resource`) or their references only
 * (`id-only`); `empty` carries the status alone.
 */
import { randomUUID } from 'node:crypto';
import type { VersionRecord } from '../../storage/index-store.ts';
import type { FhirResource } from '../request.ts';
import type { PayloadContent } from './validate.ts';

const BACKPORT = 'http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition';
const NOTIFICATION_PROFILE = `${BACKPORT}/backport-subscription-notification-r4`;
const STATUS_PROFILE = `${BACKPORT}/backport-subscription-status-r4`;

export type NotificationType = 'handshake' | 'heartbeat' | 'event-notification' | 'query-status' | 'query-event';

/** One event of a notification: its number as notified, the version it is about and (full-resource) the resource. */
export interface NotifiedEvent {
  number: number;
  at: number;
  record: VersionRecord;
  resource?: FhirResource;
  /** What made it an event, when not the version's own interaction (an approval): a plain read of its focus. */
  raised?: boolean;
}

export interface StatusInput {
  baseUrl: string;
  subscription: string;
  topic: string;
  status: string;
  type: NotificationType;
  /** Events notified since the subscription started (before this notification's, for query types). */
  eventsSinceStart: number;
  /** Why the subscription is in error, if it is. */
  error?: string;
}

/** The `SubscriptionStatus` Parameters. */
export function subscriptionStatus(input: StatusInput, events: readonly NotifiedEvent[], content: PayloadContent): Record<string, unknown> {
  return {
    resourceType: 'Parameters',
    id: randomUUID(),
    meta: { profile: [STATUS_PROFILE] },
    parameter: [
      { name: 'subscription', valueReference: { reference: `${input.baseUrl}/Subscription/${input.subscription}` } },
      { name: 'topic', valueCanonical: input.topic },
      { name: 'status', valueCode: input.status },
      { name: 'type', valueCode: input.type },
      { name: 'events-since-subscription-start', valueString: String(input.eventsSinceStart) },
      ...events.map((event) => ({
        name: 'notification-event',
        part: [
          { name: 'event-number', valueString: String(event.number) },
          { name: 'timestamp', valueInstant: new Date(event.at).toISOString() },
          ...(content !== 'empty' ? [{ name: 'focus', valueReference: { reference: `${input.baseUrl}/${event.record.type}/${event.record.id}` } }] : []),
        ],
      })),
      ...(input.error ? [{ name: 'error', valueCodeableConcept: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/subscription-error', code: 'no-response' }], text: input.error } }] : []),
    ],
  };
}

/** A notification bundle (`history`), or for `$status` a `searchset` of the status alone. */
export function notificationBundle(input: StatusInput, events: readonly NotifiedEvent[], content: PayloadContent): Record<string, unknown> {
  const status = subscriptionStatus(input, events, content);
  const statusEntry = {
    fullUrl: `urn:uuid:${status.id as string}`,
    resource: status,
    request: { method: 'GET', url: `${input.baseUrl}/Subscription/${input.subscription}/$status` },
    response: { status: '200' },
  };
  const focus = content === 'empty' ? [] : events.map((event) => focusEntry(input.baseUrl, event, content));
  return {
    resourceType: 'Bundle',
    id: randomUUID(),
    meta: { profile: [NOTIFICATION_PROFILE] },
    type: 'history',
    timestamp: new Date().toISOString(),
    entry: [statusEntry, ...focus],
  };
}

function focusEntry(baseUrl: string, event: NotifiedEvent, content: PayloadContent): Record<string, unknown> {
  const { record } = event;
  const request = event.raised
    ? { method: 'GET', url: `${record.type}/${record.id}` }
    : record.deleted
      ? { method: 'DELETE', url: `${record.type}/${record.id}` }
      : record.created
        ? { method: 'POST', url: record.type }
        : { method: 'PUT', url: `${record.type}/${record.id}` };
  const status = event.raised ? '200' : record.deleted ? '204' : record.created ? '201' : '200';
  return {
    fullUrl: `${baseUrl}/${record.type}/${record.id}`,
    ...(content === 'full-resource' && event.resource ? { resource: event.resource } : {}),
    request,
    response: {
      status,
      ...(record.deleted ? {} : { etag: `W/"${record.versionId}"`, location: `${record.type}/${record.id}/_history/${record.versionId}` }),
      lastModified: new Date(record.lastUpdated).toISOString(),
    },
  };
}
