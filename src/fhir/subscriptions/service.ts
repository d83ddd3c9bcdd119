/**
 * R4 Subscriptions (http://hl7.org/fhir/R4/subscription.html), delivered at least once, in order,
 * and only as their owner may see.
 *
 * - **Writes** (`writeStep`): a client's Subscription is checked (validate.ts) and may only say
 *   `requested` or `off` — `active` and `error` are the server's to set. It belongs to the client
 *   (and user) whose token created it: others, administrators excepted, find no such resource
 *   (access.ts asks `hidden`), and a client has at most `maxPerOwner` of them.
 * - **Events**: every active or requested Subscription is a filter the index evaluates inside the
 *   commit of each version of its type (storage `EventFilter`): the version and its event are
 *   committed together — a restart continues where delivery stopped, and nothing is sent for a
 *   write that did not commit. Events are numbered 1, 2, … per subscription.
 * - **Delivery** (rest-hook): a handshake first (an empty POST); a 2xx makes the subscription
 *   `active` (a version the server writes). Then each event in order: decided for the owner at
 *   delivery time exactly as a search match is (scopes, compartment, consent — a consent revoked
 *   between the write and the delivery stops it: the event is passed over, nothing is sent), and
 *   POSTed with the resource (`channel.payload`) or empty, with the channel's headers. A failure is
 *   retried with exponential backoff; after `maxFailures` in a row the subscription is set to
 *   `error` with the reason. `end` is honoured: the subscription is set to `off`. Every delivery
 *   attempt is an AuditEvent (destination, event number, outcome — never the payload).
 */
import dns from 'node:dns/promises';
import type { SubscriptionState } from '../../storage/index-store.ts';
import { SHARED_SCOPE } from '../../storage/keys.ts';
import { matchingRequest, screenRecords, visible } from '../access.ts';
import type { AuditInput } from '../audit.ts';
import { decide, type Principal } from '../auth/verify.ts';
import { fhirError } from '../errors.ts';
import type { FhirRequest, FhirResource } from '../request.ts';
import type { FhirServices } from '../services.ts';
import type { WriteContext, WriteStep, Writer } from '../writer.ts';
import { Rounds } from '../rounds.ts';
import { principalOf, storePrincipal, type StoredPrincipal } from '../bulk/job.ts';
import { hostPort, isInternalAddress, parseSubscription, type ParsedSubscription, type SubscriptionPolicy } from './validate.ts';

export interface SubscriptionOptions {
  services: () => FhirServices;
  writer: () => Writer;
  policy: SubscriptionPolicy;
  /** Failures in a row before a subscription goes to `error` (VELLUM_SUBSCRIPTION_MAX_FAILURES). */
  maxFailures: number;
  /** First retry delay; doubled at each failure, up to five minutes (VELLUM_SUBSCRIPTION_RETRY_MS). */
  retryMs: number;
  /** Most subscriptions per owner (VELLUM_SUBSCRIPTION_MAX_PER_OWNER). */
  maxPerOwner: number;
  audit?: (input: AuditInput) => Promise<void>;
  onError?: (err: unknown) => void;
  now?: () => number;
}

/** The agent of the versions the server writes itself (status changes). */
export const SUBSCRIPTION_AGENT = 'Vellum subscriptions';
const MAX_BACKOFF_MS = 5 * 60_000;
const DELIVERY_TIMEOUT_MS = 10_000;
const EVENT_BATCH = 50;

/** The owner key of a caller: its client, and its user when one stands behind the token. */
export function ownerKey(principal: Principal | StoredPrincipal | undefined): string {
  if (!principal) return 'anonymous';
  return principal.subject === principal.clientId ? principal.clientId : `${principal.clientId} ${principal.subject}`;
}

export class SubscriptionService {
  readonly #o: SubscriptionOptions;
  /** Subscriptions being delivered (status requested or active), by id. */
  readonly #live = new Map<string, ParsedSubscription>();
  /** Owner key of every subscription, by id (deleted ones too: their history stays their owner's). */
  readonly #owners = new Map<string, string>();
  /** Subscriptions deleted since the start (not counted against their owner's limit). */
  readonly #deleted = new Set<string>();
  #timer: NodeJS.Timeout | undefined;
  readonly #rounds: Rounds;
  #closed = false;

  constructor(options: SubscriptionOptions) {
    this.#o = options;
    this.#rounds = new Rounds(() => this.#round(), (err) => this.#o.onError?.(err));
  }

  #now(): number {
    return (this.#o.now ?? Date.now)();
  }

  /** Load the stored subscriptions and start delivering. */
  async start(): Promise<void> {
    const services = this.#o.services();
    const index = services.repository.index;
    for (let afterRid = 0; ; ) {
      const page = await index.currentResources({ afterRid, limit: 500, types: ['Subscription'] });
      for (const { record } of page) {
        const resource = await services.loadResource(record).catch(() => undefined);
        const state = await index.subscriptions.state(record.id);
        if (state?.owner) this.#owners.set(record.id, ownerKey(state.owner as StoredPrincipal));
        // A start retries at once what was waiting for a retry.
        if (state && state.retryAt > 0) await index.subscriptions.putState({ ...state, retryAt: 0 });
        if (resource) this.#track(resource);
      }
      if (page.length < 500) break;
      afterRid = page[page.length - 1]!.rid;
    }
    this.#filters();
    this.kick();
  }

  /** Whether any subscription is hidden from `principal` (another owner's exists): its searches' totals are not the index's. */
  othersExist(principal: Principal | undefined): boolean {
    if (!principal || principal.admin) return false;
    const mine = ownerKey(principal);
    for (const owner of this.#owners.values()) if (owner !== mine) return true;
    return false;
  }

  /** Whether subscription `id` is hidden from `principal` (another owner's; administrators see all). */
  hidden(principal: Principal | undefined, id: string): boolean {
    if (!principal || principal.admin) return false;
    const owner = this.#owners.get(id);
    return owner !== undefined && owner !== ownerKey(principal);
  }

  #track(resource: FhirResource): void {
    const id = String(resource.id);
    let parsed: ParsedSubscription | undefined;
    try {
      parsed = parseSubscription(this.#o.services(), resource, this.#o.policy);
    } catch {
      parsed = undefined;
    }
    if (parsed && (parsed.status === 'requested' || parsed.status === 'active')) this.#live.set(id, parsed);
    else this.#live.delete(id);
  }

  #filters(): void {
    this.#o.services().repository.index.subscriptions.setFilters([...this.#live.values()].map((s) => ({ subscription: s.id, type: s.type, where: s.where })));
  }

  /** The write step of Subscriptions: checks before, tracking after. */
  writeStep(): WriteStep {
    return {
      name: 'subscriptions',
      beforeCommit: async (versions, context) => {
        for (const version of versions) {
          if (version.write.type !== 'Subscription' || isSystem(context)) continue;
          const principal = context.principal;
          const existing = this.#owners.get(version.write.id);
          if (existing !== undefined && version.write.expectedVersion > 0 && !principal?.admin && existing !== ownerKey(principal)) {
            throw fhirError(404, 'not-found', 'VLM_FHIR_NOT_FOUND', `Subscription/${version.write.id} is not known`);
          }
          if (version.write.deleted) continue;
          const resource = version.resource!;
          parseSubscription(this.#o.services(), resource, this.#o.policy, this.#now());
          if (resource.status !== 'requested' && resource.status !== 'off') {
            throw fhirError(422, 'processing', 'VLM_SUB_STATUS', 'A client sets status requested (or off); active and error are set by the server', ['Subscription.status']);
          }
          if (existing === undefined) {
            const mine = [...this.#owners].filter(([id, o]) => o === ownerKey(principal) && !this.#deleted.has(id)).length;
            if (mine >= this.#o.maxPerOwner) throw fhirError(422, 'processing', 'VLM_SUB_LIMIT', `At most ${this.#o.maxPerOwner} subscriptions per client`);
          }
        }
      },
      afterCommit: async (written, context) => {
        let changed = false;
        const index = this.#o.services().repository.index;
        for (const { record, resource } of written) {
          if (record.type !== 'Subscription') continue;
          changed = true;
          if (record.deleted) {
            this.#live.delete(record.id);
            // Its owner is kept: its history (the deletion included) stays its owner's.
            this.#deleted.add(record.id);
            await index.subscriptions.remove(record.id);
            continue;
          }
          this.#deleted.delete(record.id);
          if (!isSystem(context)) {
            // A client's (re)request: a new handshake; the owner stays the one who created it.
            const state = await index.subscriptions.state(record.id);
            const owner = state?.owner ?? (context.principal ? storePrincipal(context.principal) : undefined);
            await index.subscriptions.putState({
              id: record.id,
              owner,
              delivered: state?.delivered ?? (await index.subscriptions.eventCount(record.id)),
              failures: 0,
              retryAt: 0,
              handshake: false,
            });
            if (!this.#owners.has(record.id)) this.#owners.set(record.id, ownerKey(owner as StoredPrincipal | undefined));
          }
          if (resource) this.#track(resource);
        }
        if (changed) this.#filters();
        this.kick();
      },
    };
  }

  /** Deliver what is pending (coalesced). */
  kick(): void {
    if (this.#live.size === 0 && !this.#rounds.running) return;
    this.#rounds.kick();
  }

  /** Resolve once a delivery round that started after this call has ended (tests). */
  async settle(): Promise<void> {
    this.kick();
    await this.#rounds.idle();
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    await this.#rounds.close();
  }

  /** One pass over the live subscriptions; schedules the next for retries and ends. */
  async #round(): Promise<void> {
    const now = this.#now();
    let next = Number.POSITIVE_INFINITY;
    for (const sub of [...this.#live.values()]) {
      if (this.#closed) return;
      if (sub.end !== undefined && sub.end <= now) {
        await this.#setStatus(sub.id, 'off');
        continue;
      }
      if (sub.end !== undefined) next = Math.min(next, sub.end);
      let wait: number | undefined;
      try {
        wait = await this.#deliver(sub);
      } catch (err) {
        // Deciding an event failed (the consent registry does not answer: 503 VLM_CONSENT_UNAVAILABLE,
        // the index or the block store failed): nothing was sent or passed over. The event is
        // tried again later — not sent undecided, not lost — and the other subscriptions go on.
        this.#o.onError?.(err);
        wait = this.#now() + this.#o.retryMs;
      }
      if (wait !== undefined) next = Math.min(next, wait);
    }
    if (this.#timer) clearTimeout(this.#timer);
    if (Number.isFinite(next)) {
      this.#timer = setTimeout(() => this.kick(), Math.max(10, Math.min(next - this.#now(), 2_147_483_000)));
      this.#timer.unref();
    }
  }

  /** Handshake or deliver pending events of one subscription; returns when to try again (a retry). */
  async #deliver(sub: ParsedSubscription): Promise<number | undefined> {
    const services = this.#o.services();
    const store = services.repository.index.subscriptions;
    const state: SubscriptionState = (await store.state(sub.id)) ?? { id: sub.id, owner: undefined, delivered: 0, failures: 0, retryAt: 0, handshake: false };
    if (state.retryAt > this.#now()) return state.retryAt;
    const owner = state.owner as StoredPrincipal | undefined;
    if (!state.handshake) {
      const outcome = await this.#post(sub, undefined, owner, 0);
      if (!outcome.ok) return this.#failed(sub, state, outcome.reason);
      await store.putState({ ...state, handshake: true, failures: 0, retryAt: 0 });
      await this.#setStatus(sub.id, 'active');
      state.handshake = true;
      state.failures = 0;
    }
    for (;;) {
      const events = await store.events(sub.id, state.delivered, EVENT_BATCH);
      if (events.length === 0) return undefined;
      for (const event of events) {
        if (this.#closed || !this.#live.has(sub.id)) return undefined;
        const payload = await this.#payload(sub, owner, event.seq);
        if (payload !== null) {
          const outcome = await this.#post(sub, payload, owner, event.number);
          if (!outcome.ok) return this.#failed(sub, state, outcome.reason);
        }
        state.delivered = event.number;
        state.failures = 0;
        state.retryAt = 0;
        await store.putState(state);
      }
    }
  }

  /**
   * What to send for an event: the resource (payload on), '' (an empty notification), or null when
   * the owner may not see it now — decided as a search match is.
   */
  async #payload(sub: ParsedSubscription, owner: StoredPrincipal | undefined, seq: number): Promise<string | null> {
    const services = this.#o.services();
    const record = await services.repository.index.versionBySeq(seq);
    if (!record) return null;
    const principal = owner ? principalOf(owner) : undefined;
    // The owner's scopes first, as the guard decides a search (a token without Observation read
    // learns of no Observation through its subscription): an event of a type it may not search is
    // passed over. A subscription is a standing search: its matches are decided as search matches.
    if (principal && services.access && !decide(principal, 'search', record.type).allowed) return null;
    const base: FhirRequest = { method: 'GET', query: [], headers: {}, baseUrl: services.baseUrl, consentLog: [], ...(principal ? { principal } : {}) };
    const request = principal && services.access ? await matchingRequest(services, base, record.type, 'search') : base;
    if (record.deleted) {
      // A deletion carries no data: decided on the key scope of the version it deleted.
      const before = await services.repository.index.version(record.type, record.id, record.versionId - 1);
      return before && visible(services, request, { ...record, keyScope: before.keyScope ?? SHARED_SCOPE }) ? '' : null;
    }
    const [shown] = await screenRecords(services, request, [record]);
    if (!shown) return null;
    if (!sub.payload) return '';
    const resource = shown.resource ?? (await services.loadResource(record));
    return resource ? JSON.stringify(resource) : null;
  }

  /** POST to the endpoint; an AuditEvent records the attempt. */
  async #post(sub: ParsedSubscription, body: string | undefined, owner: StoredPrincipal | undefined, event: number): Promise<{ ok: true } | { ok: false; reason: string }> {
    const url = new URL(sub.endpoint);
    let status = 0;
    let reason = '';
    try {
      if (!this.#o.policy.allow.has(hostPort(url))) {
        const addresses = await dns.lookup(url.hostname, { all: true });
        if (addresses.some((a) => isInternalAddress(a.address))) throw Object.assign(new Error('internal'), { code: 'VLM_SUB_ENDPOINT_REFUSED' });
      }
      const response = await fetch(url, {
        method: 'POST',
        redirect: 'manual',
        headers: { ...Object.fromEntries(sub.headers), ...(body ? { 'content-type': 'application/fhir+json' } : {}) },
        ...(body ? { body } : {}),
        signal: AbortSignal.timeout(DELIVERY_TIMEOUT_MS),
      });
      await response.arrayBuffer().catch(() => undefined);
      status = response.status;
      if (status < 200 || status > 299) reason = `the endpoint answered HTTP ${status}`;
    } catch (err) {
      const code = (err as { code?: string; cause?: { code?: string } }).code ?? (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).name;
      reason = code === 'VLM_SUB_ENDPOINT_REFUSED' ? 'the endpoint resolves to an internal address' : `the endpoint could not be reached (${code})`;
    }
    await this.#o
      .audit?.({
        interaction: 'operation',
        method: 'POST',
        status: status || 502,
        operation: '$notify',
        resourceType: 'Subscription',
        id: sub.id,
        query: `destination=${encodeURIComponent(hostPort(url))}&event=${event}${event === 0 ? '&type=handshake' : ''}&outcome=${reason ? 'failed' : 'delivered'}`,
        ...(owner ? { principal: principalOf(owner) } : {}),
      })
      .catch((err) => this.#o.onError?.(err));
    return reason ? { ok: false, reason } : { ok: true };
  }

  /** A failed attempt: back off, or give up into `error` after `maxFailures` in a row. */
  async #failed(sub: ParsedSubscription, state: SubscriptionState, reason: string): Promise<number | undefined> {
    const store = this.#o.services().repository.index.subscriptions;
    state.failures += 1;
    if (state.failures >= this.#o.maxFailures) {
      await store.putState({ ...state, retryAt: 0 });
      await this.#setStatus(sub.id, 'error', `${reason}; ${state.failures} attempts failed in a row`);
      return undefined;
    }
    state.retryAt = this.#now() + Math.min(this.#o.retryMs * 2 ** (state.failures - 1), MAX_BACKOFF_MS);
    await store.putState(state);
    return state.retryAt;
  }

  /** Write the subscription's new status (and error) as a version of its own. */
  async #setStatus(id: string, status: 'active' | 'error' | 'off', error?: string): Promise<void> {
    const services = this.#o.services();
    const writer = this.#o.writer();
    await writer.exclusive(async () => {
      const current = await services.repository.index.current('Subscription', id);
      if (!current || current.deleted) return;
      const resource = await services.loadResource(current);
      if (!resource || (resource.status === status && resource.error === error)) return;
      const { error: _old, ...rest } = resource as FhirResource & { error?: string };
      await writer.commit(
        [{ method: 'update', type: 'Subscription', id, resource: { ...rest, status, ...(error ? { error } : {}) }, expectedVersion: current.versionId }],
        { agent: { display: SUBSCRIPTION_AGENT }, system: true },
      );
    });
  }
}

function isSystem(context: WriteContext): boolean {
  return context.system === true;
}
