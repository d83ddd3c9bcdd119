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
import type { IndexClause } from '../../storage/search-types.ts';
import { fhirError } from '../errors.ts';
import { planQuery } from '../interactions/search.ts';
import type { FhirResource } from '../request.ts';
import type { FhirServices } from '../services.ts';

/** A Subscription as the dispatcher uses it. */
export interface ParsedSubscription {
  id: string;
  status: string;
  type: string;
  criteria: string;
  where: readonly IndexClause[];
  channel: 'rest-hook';
  endpoint: string;
  headers: [string, string][];
  /** The resource in the notification (`application/fhir+json`), or an empty ping. */
  payload: boolean;
  /** When it stops (ms), if it does. */
  end?: number;
}

export interface SubscriptionPolicy {
  /** `host:port` of endpoints allowed whatever their scheme and address (VELLUM_SUBSCRIPTION_ENDPOINTS_ALLOW). */
  allow: ReadonlySet<string>;
}

/** Channel types of R4 that Vellum does not deliver. */
const UNDELIVERED = new Set(['email', 'sms', 'message', 'websocket']);
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
    const h = host.toLowerCase();
    if (h === '::1' || h === '::') return true;
    if (h.startsWith('::ffff:')) return isInternalAddress(h.slice(7));
    return /^f[cd]/.test(h) || /^fe[89ab]/.test(h);
  }
  return host.toLowerCase() === 'localhost' || host.toLowerCase().endsWith('.localhost');
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

/** Check a Subscription written by a client; returns what the dispatcher needs. */
export function parseSubscription(services: FhirServices, resource: FhirResource, policy: SubscriptionPolicy, now?: number): ParsedSubscription {
  const criteria = resource.criteria;
  if (typeof criteria !== 'string' || criteria.trim() === '') throw refuse('VLM_SUB_BAD_CRITERIA', 'criteria is a search, Type?parameters', 'Subscription.criteria');
  const at = criteria.indexOf('?');
  const type = (at < 0 ? criteria : criteria.slice(0, at)).replace(/^\/+/, '');
  if (!services.resourceTypes.has(type)) throw refuse('VLM_SUB_BAD_CRITERIA', `criteria: ${type.slice(0, 64)} is not a resource type`, 'Subscription.criteria');
  if (type === 'AuditEvent') throw refuse('VLM_SUB_BAD_CRITERIA', 'AuditEvents cannot be subscribed to', 'Subscription.criteria');
  const params = at < 0 ? [] : [...new URLSearchParams(criteria.slice(at + 1))];
  // Malformed values are 400 naming the parameter, as the same search would be.
  const planned = planQuery(services, type, params, services.baseUrl);
  if (planned.unknown.length) throw refuse('VLM_SUB_BAD_CRITERIA', `criteria: unknown search parameters ${planned.unknown.join(', ')}`, 'Subscription.criteria');
  if (planned.includes.length) throw refuse('VLM_SUB_BAD_CRITERIA', 'criteria cannot include other resources', 'Subscription.criteria');
  if (linked(planned.query.where)) throw refuse('VLM_SUB_BAD_CRITERIA', 'criteria cannot use chained parameters or _has', 'Subscription.criteria');
  const channel = (resource.channel ?? {}) as { type?: unknown; endpoint?: unknown; header?: unknown; payload?: unknown };
  if (channel.type !== 'rest-hook') {
    const named = typeof channel.type === 'string' ? channel.type : '(none)';
    throw refuse('VLM_SUB_CHANNEL_UNSUPPORTED', `Vellum delivers rest-hook channels, not ${UNDELIVERED.has(named) ? named : named.slice(0, 32)}`, 'Subscription.channel.type');
  }
  const endpoint = checkEndpoint(channel.endpoint, policy);
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
    where: planned.query.where,
    channel: 'rest-hook',
    endpoint: endpoint.toString(),
    headers,
    payload: channel.payload !== undefined,
    ...(end !== undefined ? { end } : {}),
  };
}
