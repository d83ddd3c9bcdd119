/**
 * The SubscriptionTopics Vellum publishes (Subscriptions R5 Backport IG): what a topic-based
 * Subscription (`criteria` = a topic's canonical URL) can be notified of. They are built in, served
 * read-only at `[base]/SubscriptionTopic` (searchable by `url`, `resource`, `title`, `status`,
 * `_id`) and listed in the CapabilityStatement.
 *
 * A topic is either a resource trigger — versions of one resource type, created, updated and/or
 * deleted, that match the topic's query (`queryCriteria.current`, a search evaluated by the index
 * inside the commit) — or an event trigger the server raises itself (a practitioner approved or
 * revoked on chain). A Subscription narrows it with filters (`backport-filter-criteria`) on the
 * parameters the topic's `canFilterBy` lists.
 */
import type { EventInteraction } from '../../storage/index-store.ts';
import { fhirError } from '../errors.ts';
import type { FhirRequest, FhirResponse } from '../request.ts';
import type { FhirServices } from '../services.ts';

export const TOPIC_BASE = 'https://vellum.dev/fhir/SubscriptionTopic';

/** The v3 ObservationInterpretation codes that are critical (alert) results. */
export const CRITICAL_INTERPRETATIONS = ['AA', 'HH', 'LL'];
const INTERPRETATION_SYSTEM = 'http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation';

/** The resource types an approval is about (operations/consent.ts ACTOR_TYPES). */
const APPROVED_TYPES = ['Practitioner', 'PractitionerRole', 'Organization', 'RelatedPerson', 'Device'];

export interface Topic {
  id: string;
  url: string;
  title: string;
  description: string;
  /** The resource type(s) of its events. */
  resources: readonly string[];
  /** Resource trigger: the interactions that are events, and the query versions must match. */
  interactions?: readonly EventInteraction[];
  query?: string;
  /** Event trigger raised by the server (`approval`: `$approve`, `revocation`: `$revoke-approval`). */
  event?: 'approved' | 'approval-revoked';
  /** Search parameters a subscription may filter on. */
  filters: readonly string[];
}

const ALL: readonly EventInteraction[] = ['create', 'update', 'delete'];

function changes(id: string, type: string, title: string, filters: readonly string[], extra: Partial<Topic> = {}): Topic {
  return {
    id,
    url: `${TOPIC_BASE}/${id}`,
    title,
    description: `${type} resources created, updated or deleted.`,
    resources: [type],
    interactions: ALL,
    filters,
    ...extra,
  };
}

/** Every topic, in the order they are listed. */
export const TOPICS: readonly Topic[] = [
  changes('appointment', 'Appointment', 'Appointment changed', ['patient', 'actor', 'practitioner', 'status', 'date', '_id']),
  changes('medication-request', 'MedicationRequest', 'Prescription changed', ['patient', 'requester', 'status', 'intent', 'code', '_id']),
  changes('encounter', 'Encounter', 'Encounter changed', ['patient', 'practitioner', 'status', 'class', 'type', '_id']),
  changes('observation', 'Observation', 'Observation changed', ['patient', 'subject', 'code', 'category', 'status', 'performer', '_id']),
  changes('consent', 'Consent', 'Consent changed (access requests included)', ['patient', 'status', 'actor', 'scope', 'category', '_id']),
  changes('access-request', 'Consent', 'Access requested', ['patient', 'actor', '_id'], {
    description: 'A practitioner asked a patient for access: a Consent written with status proposed.',
    interactions: ['create', 'update'],
    query: 'status=proposed',
  }),
  changes('critical-result', 'Observation', 'Critical result', ['patient', 'subject', 'code', 'category', 'performer', '_id'], {
    description: `An Observation whose interpretation is critical (${CRITICAL_INTERPRETATIONS.join(', ')} of ${INTERPRETATION_SYSTEM}), created or updated.`,
    interactions: ['create', 'update'],
    query: `interpretation=${CRITICAL_INTERPRETATIONS.map((code) => `${INTERPRETATION_SYSTEM}|${code}`).join(',')}`,
  }),
  {
    id: 'practitioner-approved',
    url: `${TOPIC_BASE}/practitioner-approved`,
    title: 'Practitioner approved',
    description: 'An administrator approved an actor on the consent registry ($approve): it may now be granted consent.',
    resources: APPROVED_TYPES,
    event: 'approved',
    filters: ['_id'],
  },
  {
    id: 'practitioner-approval-revoked',
    url: `${TOPIC_BASE}/practitioner-approval-revoked`,
    title: 'Practitioner approval revoked',
    description: "An administrator revoked an actor's approval on the consent registry ($revoke-approval).",
    resources: APPROVED_TYPES,
    event: 'approval-revoked',
    filters: ['_id'],
  },
];

const BY_URL = new Map(TOPICS.map((t) => [t.url, t]));

export function topicByUrl(url: string): Topic | undefined {
  return BY_URL.get(url.split('|')[0]!);
}

/** The topic as an R5 `SubscriptionTopic` (as the Backport IG's R4B servers publish it). */
export function topicResource(topic: Topic): Record<string, unknown> {
  return {
    resourceType: 'SubscriptionTopic',
    id: topic.id,
    url: topic.url,
    version: '1',
    title: topic.title,
    status: 'active',
    description: topic.description,
    ...(topic.event
      ? {
          eventTrigger: topic.resources.map((resource) => ({
            description: topic.description,
            event: { coding: [{ system: 'https://vellum.dev/fhir/CodeSystem/topic-event', code: topic.event }] },
            resource,
          })),
        }
      : {
          resourceTrigger: topic.resources.map((resource) => ({
            description: topic.description,
            resource,
            supportedInteraction: topic.interactions,
            ...(topic.query ? { queryCriteria: { current: `${resource}?${topic.query}`, requireBoth: false } } : {}),
          })),
        }),
    canFilterBy: topic.resources.flatMap((resource) => topic.filters.map((filterParameter) => ({ resource, filterParameter }))),
    notificationShape: topic.resources.map((resource) => ({ resource })),
  };
}

/** `GET [base]/SubscriptionTopic/{id}`. */
export async function readTopic(_services: FhirServices, request: FhirRequest): Promise<FhirResponse> {
  const topic = TOPICS.find((t) => t.id === request.id);
  if (!topic) throw fhirError(404, 'not-found', 'VLM_FHIR_NOT_FOUND', `SubscriptionTopic/${String(request.id).slice(0, 64)} is not known`);
  return { status: 200, resource: topicResource(topic) };
}

const TOPIC_SEARCH = new Set(['url', 'resource', 'title', 'status', '_id', '_count', '_format']);

/** `GET [base]/SubscriptionTopic?url=&resource=&title=&status=&_id=`: the topics matching every parameter given. */
export async function searchTopics(services: FhirServices, request: FhirRequest): Promise<FhirResponse> {
  const unknown = request.query.filter(([name]) => !TOPIC_SEARCH.has(name.split(':')[0]!)).map(([name]) => name);
  if (unknown.length) throw fhirError(400, 'not-supported', 'VLM_FHIR_UNKNOWN_SEARCH_PARAMETER', `Unknown search parameters: ${unknown.join(', ').slice(0, 200)}`);
  const matches = TOPICS.filter((topic) =>
    request.query.every(([name, value]) => {
      const values = value.split(',');
      switch (name.split(':')[0]) {
        case 'url':
          return values.some((v) => topic.url === v.split('|')[0]);
        case 'resource':
          return values.some((v) => topic.resources.some((r) => r === v || `http://hl7.org/fhir/StructureDefinition/${r}` === v));
        case 'title':
          return values.some((v) => topic.title.toLowerCase().startsWith(v.toLowerCase()));
        case 'status':
          return values.includes('active');
        case '_id':
          return values.includes(topic.id);
        default:
          return true;
      }
    }),
  );
  const self = `${services.baseUrl}/SubscriptionTopic${request.query.length ? `?${new URLSearchParams(request.query).toString()}` : ''}`;
  return {
    status: 200,
    resource: {
      resourceType: 'Bundle',
      type: 'searchset',
      total: matches.length,
      link: [{ relation: 'self', url: self }],
      entry: matches.map((topic) => ({ fullUrl: `${services.baseUrl}/SubscriptionTopic/${topic.id}`, resource: topicResource(topic), search: { mode: 'match' } })),
    },
  };
}
