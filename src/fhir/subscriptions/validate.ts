/**
 * What an R4 Subscription must say for Vellum to deliver it (http://hl7.org/fhir/R4/subscription.html),
 * checked on every write of one (subscriptions/service.ts): a `criteria` that is a search on one
 * type, a channel Vellum delivers, an endpoint it may call. Refusals are 422 (400 for a malformed
 * criteria value, as a search would answer) and change nothing.
 *
 * Endpoints (no server-side request forgery): `https`, unless `host:port` is listed in
 * `VELLUM_SUBSCRIPTION_ENDPOINTS_ALLOW`; loopback, link-local, private and unspecified addresses are
 * refused unless listed — as literals here, and as what the name resolves to at delivery
 * (dispatcher.ts `assertPublic`). Headers may not set Host or the framing headers.
 */
import net from 'node:net';
import type { EventInteraction } from '../../storage/index-store.ts';
import type { IndexClause } from '../../storage/search-types.ts';
import { fhirError } from '../errors.ts';
import { planQuery } from '../interactions/search.ts';
import type { FhirResource } from '../request.ts';
import type { FhirServices } from '../services.ts';
import { topicByUrl, type Topic } from './topics.ts';

/** What a topic-based notification carries (Backport `backport-payload-content`). */
export type PayloadContent = 'empty' | 'id-only' | 'full-resource';

/** A Subscription as the dispatcher uses it. */
export interface ParsedSubscription {
  id: string;
  status: string;
  /** The resource type its events are about (resource triggers and R4 criteria). */
  type: string;
  criteria: string;
  where: readonly IndexClause[];
  channel: 'rest-hook' | 'websocket';
  /** The rest-hook endpoint. */
  endpoint: string;
  headers: [string, string][];
  /** R4: the resource in the notification (`application/fhir+json`), or an empty ping. */
  payload: boolean;
  /** Topic-based (Backport IG): the topic, what a notification carries, and the channel's limits. */
  topic?: Topic;
  content: PayloadContent;
  /** The interactions that are events (a topic's); all when absent. */
  interactions?: readonly EventInteraction[];
  /** Heartbeat period (ms), when asked for. */
  heartbeatMs?: number;
  /** How long a rest-hook endpoint has to answer (ms). */
  timeoutMs: number;
  /** Most events in one notification. */
  maxCount: number;
  /** When it stops (ms), if it does. */
  end?: number;
}

export interface SubscriptionPolicy {
  /** `host:port` of endpoints allowed whatever their scheme and address (VELLUM_SUBSCRIPTION_ENDPOINTS_ALLOW). */
  allow: ReadonlySet<string>;
}

/** Channel types of R4 that Vellum does not deliver. */
const UNDELIVERED = new Set(['email', 'sms', 'message']);
const BACKPORT = 'http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition';
export const BACKPORT_SUBSCRIPTION_PROFILE = `${BACKPORT}/backport-subscription`;
const FILTER_CRITERIA = `${BACKPORT}/backport-filter-criteria`;
const HEARTBEAT = `${BACKPORT}/backport-heartbeat-period`;
const TIMEOUT = `${BACKPORT}/backport-timeout`;
const MAX_COUNT = `${BACKPORT}/backport-max-count`;
const PAYLOAD_CONTENT = `${BACKPORT}/backport-payload-content`;
/** Default and longest time a rest-hook endpoint has to answer. */
const DEFAULT_TIMEOUT_S = 10;
const MAX_TIMEOUT_S = 60;
const MAX_EVENTS_PER_NOTIFICATION = 100;
const FORBIDDEN_HEADERS = new Set(['host', 'content-length', 'transfer-encoding', 'connection', 'content-type', 'upgrade', 'te', 'trailer']);
const PAYLOADS = new Set(['application/fhir+json', 'application/json', 'application/json+fhir']);

const refuse = (code: string, diagnostics: string, expression: string) => fhirError(422, 'processing', code, diagnostics, [expression]);

/** `host:port` of a URL, with the scheme's default port. */
export function hostPort(url: URL): string {
  const port = url.port || (url.protocol === 'https:' ? '443' : '80');
  return `${url.hostname.toLowerCase()}:${port}`;
}

/** Whether an address is one a subscription may not reach unless allowed: loopback, private, link-local, unspecified. */
export function isInternalAddress(address: string): boolean {
  const host = address.replace(/^\[|\]$/g, '');
  if (net.isIPv4(host)) {
    const [a, b] = host.split('.').map(Number) as [number, number];
    return a === 127 || a === 10 || a === 0 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168) || (a === 169 && b === 254) || (a === 100 && b >= 64 && b <= 127);
  }
  if (net.isIPv6(host)) {
    const words = ipv6Words(host);
    // IPv4 inside IPv6 — mapped (::ffff:a.b.c.d, as URL parsing writes it: ::ffff:7f00:1), compatible
    // (::a.b.c.d) or NAT64 (64:ff9b::/96): decided as that IPv4 address.
    const embedded =
      (words.slice(0, 5).every((w) => w === 0) && (words[5] === 0xffff || words[5] === 0)) ||
      (words[0] === 0x64 && words[1] === 0xff9b && words.slice(2, 6).every((w) => w === 0));
    if (embedded && (words[6] !== 0 || words[7]! > 1)) {
      return isInternalAddress(`${words[6]! >> 8}.${words[6]! & 0xff}.${words[7]! >> 8}.${words[7]! & 0xff}`);
    }
    if (words.slice(0, 7).every((w) => w === 0) && words[7]! <= 1) return true; // :: and ::1
    return (words[0]! & 0xfe00) === 0xfc00 || (words[0]! & 0xffc0) === 0xfe80; // unique local, link-local
  }
  return host.toLowerCase() === 'localhost' || host.toLowerCase().endsWith('.localhost');
}

/** The eight 16-bit words of an IPv6 address (`::` expanded, a dotted IPv4 tail converted). */
function ipv6Words(address: string): number[] {
  let h = address.toLowerCase().split('%')[0]!;
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(h);
  if (dotted) {
    const [a, b, c, d] = dotted.slice(1).map(Number) as [number, number, number, number];
    h = `${h.slice(0, dotted.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = h.includes('::') ? h.split('::') : [h, undefined];
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const fill = tail === undefined ? [] : Array.from({ length: 8 - left.length - right.length }, () => '0');
  return [...left, ...fill, ...right].map((w) => parseInt(w || '0', 16));
}

/** Check a rest-hook endpoint against the policy; returns the URL. */
export function checkEndpoint(raw: unknown, policy: SubscriptionPolicy): URL {
  if (typeof raw !== 'string' || raw.length > 2048) throw refuse('VLM_SUB_ENDPOINT_REFUSED', 'A rest-hook channel needs an endpoint URL', 'Subscription.channel.endpoint');
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw refuse('VLM_SUB_ENDPOINT_REFUSED', 'The endpoint is not an absolute URL', 'Subscription.channel.endpoint');
  }
  const allowed = policy.allow.has(hostPort(url));
  if (url.username || url.password) throw refuse('VLM_SUB_ENDPOINT_REFUSED', 'The endpoint may not carry credentials', 'Subscription.channel.endpoint');
  if (!allowed && url.protocol !== 'https:') throw refuse('VLM_SUB_ENDPOINT_REFUSED', 'Endpoints must be https (or allowed by VELLUM_SUBSCRIPTION_ENDPOINTS_ALLOW)', 'Subscription.channel.endpoint');
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw refuse('VLM_SUB_ENDPOINT_REFUSED', 'Endpoints are http(s) URLs', 'Subscription.channel.endpoint');
  if (!allowed && isInternalAddress(url.hostname)) {
    throw refuse('VLM_SUB_ENDPOINT_REFUSED', 'Loopback, private and link-local endpoints are refused (unless allowed by VELLUM_SUBSCRIPTION_ENDPOINTS_ALLOW)', 'Subscription.channel.endpoint');
  }
  return url;
}

/** The IndexClauses a criteria may use: no chains or `_has` (they would reach data the owner may not see). */
function linked(where: readonly IndexClause[]): boolean {
  return where.some((clause) => clause.anyOf.some((c) => c.kind === 'chain' || c.kind === 'has'));
}

interface Extension {
  url?: unknown;
  [value: string]: unknown;
}

function extensionsOf(element: unknown, url: string): Extension[] {
  const list = (element as { extension?: unknown } | undefined)?.extension;
  return Array.isArray(list) ? (list as Extension[]).filter((e) => e && typeof e === 'object' && e.url === url) : [];
}

/** A search on one type, checked like that search: `Type?parameters` → its type and clauses. */
function parseSearch(services: FhirServices, criteria: string, code: string, expression: string): { type: string; params: [string, string][]; where: readonly IndexClause[] } {
  const at = criteria.indexOf('?');
  const type = (at < 0 ? criteria : criteria.slice(0, at)).replace(/^\/+/, '');
  if (!services.resourceTypes.has(type)) throw refuse(code, `${type.slice(0, 64)} is not a resource type`, expression);
  if (type === 'AuditEvent') throw refuse(code, 'AuditEvents cannot be subscribed to', expression);
  const params = at < 0 ? [] : [...new URLSearchParams(criteria.slice(at + 1))];
  // Malformed values are 400 naming the parameter, as the same search would be.
  const planned = planQuery(services, type, params, services.baseUrl);
  if (planned.unknown.length) throw refuse(code, `unknown search parameters ${planned.unknown.join(', ').slice(0, 200)}`, expression);
  if (planned.includes.length) throw refuse(code, 'a subscription cannot include other resources', expression);
  if (linked(planned.query.where)) throw refuse(code, 'a subscription cannot use chained parameters or _has', expression);
  const control = params.filter(([name]) => name.startsWith('_') && !['_id', '_lastUpdated', '_tag', '_profile', '_security', '_source'].includes(name.split(':')[0]!));
  if (control.length) throw refuse(code, `${control[0]![0].slice(0, 32)} is not a filter`, expression);
  return { type, params, where: planned.query.where };
}

/** A non-negative integer extension value (`valueUnsignedInt` / `valuePositiveInt`) within [min, max]. */
function integerExtension(channel: unknown, url: string, min: number, max: number, name: string): number | undefined {
  const [ext, ...more] = extensionsOf(channel, url);
  if (!ext) return undefined;
  const value = ext.valueUnsignedInt ?? ext.valuePositiveInt ?? ext.valueInteger;
  if (more.length || typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw refuse('VLM_SUB_BAD_CHANNEL', `${name} is one whole number from ${min} to ${max}`, 'Subscription.channel.extension');
  }
  return value;
}

/** Check a Subscription written by a client; returns what the dispatcher needs. */
export function parseSubscription(services: FhirServices, resource: FhirResource, policy: SubscriptionPolicy, now?: number): ParsedSubscription {
  const criteria = resource.criteria;
  if (typeof criteria !== 'string' || criteria.trim() === '') throw refuse('VLM_SUB_BAD_CRITERIA', 'criteria is a search, Type?parameters, or a topic URL', 'Subscription.criteria');
  // Topic-based (Backport IG): criteria is a topic's canonical URL, narrowed by filter criteria.
  const topicBased = /^https?:\/\//.test(criteria);
  let type: string;
  let where: readonly IndexClause[];
  let topic: Topic | undefined;
  if (topicBased) {
    topic = topicByUrl(criteria);
    if (!topic) throw refuse('VLM_SUB_UNKNOWN_TOPIC', `${criteria.slice(0, 128)} is not a topic of this server (see [base]/SubscriptionTopic)`, 'Subscription.criteria');
    type = topic.resources[0]!;
    const clauses: IndexClause[] = [];
    if (topic.query) clauses.push(...parseSearch(services, `${type}?${topic.query}`, 'VLM_SUB_UNKNOWN_TOPIC', 'Subscription.criteria').where);
    const filters = extensionsOf((resource as { _criteria?: unknown })._criteria, FILTER_CRITERIA);
    const filterTypes = new Set<string>();
    for (const filter of filters) {
      const value = filter.valueString;
      if (typeof value !== 'string' || value.length > 2048) throw refuse('VLM_SUB_BAD_FILTER', 'filter criteria are Type?parameters', 'Subscription._criteria');
      const parsed = parseSearch(services, value, 'VLM_SUB_BAD_FILTER', 'Subscription._criteria');
      if (!topic.resources.includes(parsed.type)) throw refuse('VLM_SUB_BAD_FILTER', `${topic.title} is about ${topic.resources.join(', ')}, not ${parsed.type}`, 'Subscription._criteria');
      const refused = parsed.params.map(([name]) => name.split(':')[0]!).filter((name) => !topic!.filters.includes(name));
      if (refused.length) throw refuse('VLM_SUB_BAD_FILTER', `${topic.title} can be filtered by ${topic.filters.join(', ')}, not ${refused[0]!.slice(0, 32)}`, 'Subscription._criteria');
      filterTypes.add(parsed.type);
      type = parsed.type;
      clauses.push(...parsed.where);
    }
    if (filterTypes.size > 1) throw refuse('VLM_SUB_BAD_FILTER', 'filter criteria name one resource type', 'Subscription._criteria');
    where = clauses;
  } else {
    const parsed = parseSearch(services, criteria, 'VLM_SUB_BAD_CRITERIA', 'Subscription.criteria');
    type = parsed.type;
    where = parsed.where;
  }
  const channel = (resource.channel ?? {}) as { type?: unknown; endpoint?: unknown; header?: unknown; payload?: unknown; _payload?: unknown };
  if (channel.type !== 'rest-hook' && channel.type !== 'websocket') {
    const named = typeof channel.type === 'string' ? channel.type : '(none)';
    throw refuse('VLM_SUB_CHANNEL_UNSUPPORTED', `Vellum delivers rest-hook and websocket channels, not ${UNDELIVERED.has(named) ? named : named.slice(0, 32)}`, 'Subscription.channel.type');
  }
  const endpoint = channel.type === 'rest-hook' ? checkEndpoint(channel.endpoint, policy).toString() : '';
  const headers: [string, string][] = [];
  if (channel.header !== undefined) {
    if (!Array.isArray(channel.header) || channel.header.length > 10) throw refuse('VLM_SUB_BAD_HEADER', 'channel.header holds at most 10 "Name: value" strings', 'Subscription.channel.header');
    for (const h of channel.header as unknown[]) {
      const m = typeof h === 'string' && h.length <= 1024 ? /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):\s*([^\r\n]*)$/.exec(h) : null;
      if (!m) throw refuse('VLM_SUB_BAD_HEADER', 'channel.header values are "Name: value"', 'Subscription.channel.header');
      if (FORBIDDEN_HEADERS.has(m[1]!.toLowerCase())) throw refuse('VLM_SUB_BAD_HEADER', `channel.header may not set ${m[1]}`, 'Subscription.channel.header');
      headers.push([m[1]!, m[2]!]);
    }
  }
  if (channel.payload !== undefined && (typeof channel.payload !== 'string' || !PAYLOADS.has(channel.payload.split(';')[0]!.trim()))) {
    throw refuse('VLM_SUB_BAD_PAYLOAD', 'channel.payload is application/fhir+json, or absent for an empty notification', 'Subscription.channel.payload');
  }
  let content: PayloadContent = channel.payload !== undefined ? 'full-resource' : 'empty';
  if (topicBased) {
    const [ext, ...more] = extensionsOf(channel._payload, PAYLOAD_CONTENT);
    const code = ext?.valueCode;
    if (more.length || (ext && code !== 'empty' && code !== 'id-only' && code !== 'full-resource')) {
      throw refuse('VLM_SUB_BAD_PAYLOAD', 'payload content is empty, id-only or full-resource', 'Subscription.channel._payload');
    }
    content = (code as PayloadContent | undefined) ?? 'empty';
  }
  const heartbeat = integerExtension(channel, HEARTBEAT, 1, 86_400, 'heartbeat period (seconds)');
  const timeout = integerExtension(channel, TIMEOUT, 1, MAX_TIMEOUT_S, 'timeout (seconds)');
  const maxCount = integerExtension(channel, MAX_COUNT, 1, MAX_EVENTS_PER_NOTIFICATION, 'max count');
  if (!topicBased && (heartbeat !== undefined || maxCount !== undefined)) {
    throw refuse('VLM_SUB_BAD_CHANNEL', 'heartbeats and max count are for topic-based subscriptions', 'Subscription.channel.extension');
  }
  let end: number | undefined;
  if (resource.end !== undefined) {
    end = typeof resource.end === 'string' ? Date.parse(resource.end) : Number.NaN;
    if (!Number.isFinite(end)) throw refuse('VLM_SUB_BAD_END', 'end is an instant', 'Subscription.end');
    // A client asking for a subscription that has already ended is told so (the server sets `off` at `end`).
    if (now !== undefined && end! <= now && resource.status !== 'off') throw refuse('VLM_SUB_BAD_END', 'end has already passed', 'Subscription.end');
  }
  return {
    id: String(resource.id),
    status: String(resource.status),
    type,
    criteria,
    where,
    channel: channel.type,
    endpoint,
    headers,
    payload: channel.payload !== undefined,
    content,
    timeoutMs: (timeout ?? DEFAULT_TIMEOUT_S) * 1000,
    maxCount: maxCount ?? 1,
    ...(topic ? { topic } : {}),
    ...(topic?.interactions ? { interactions: topic.interactions } : {}),
    ...(heartbeat !== undefined ? { heartbeatMs: heartbeat * 1000 } : {}),
    ...(end !== undefined ? { end } : {}),
  };
}
