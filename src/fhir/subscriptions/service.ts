/**
 * Subscriptions — R4 (http://hl7.org/fhir/R4/subscription.html) and topic-based (Subscriptions R5
 * Backport IG) — delivered at least once, in order, and only as their owner may see.
 *
 * - **Writes** (`writeStep`): a client's Subscription is checked (validate.ts) and may only say
 *   `requested` or `off` — `active` and `error` are the server's to set. It belongs to the client
 *   (and user) whose token created it: others, administrators excepted, find no such resource
 *   (access.ts asks `hidden`), and a client has at most `maxPerOwner` of them.
 * - **Events**: every active or requested Subscription of a resource trigger is a filter the index
 *   evaluates inside the commit of each version of its type (storage `EventFilter`): the version
 *   and its event are committed together — a restart continues where delivery stopped, and nothing
 *   is sent for a write that did not commit. Event triggers (a practitioner approved on chain) are
 *   emitted once the chain has answered (`emitApproval`).
 * - **Delivery**: a rest-hook first gets a handshake (an empty POST, or the Backport handshake
 *   bundle); a 2xx makes the subscription `active` (a version the server writes). A websocket
 *   subscription is active at once and delivers while a socket is bound (websocket.ts). Then each
 *   event in order: decided for the owner at delivery time exactly as a search match is (scopes,
 *   compartment, consent — a consent revoked between the write and the delivery stops it: the
 *   event is passed over, nothing is sent and it gets no number), and sent — R4: the resource or
 *   an empty POST, `ping {id}` on a websocket; topic-based: a notification bundle of up to
 *   `max-count` events numbered 1, 2, … (notification.ts), heartbeats between. A failure is retried
 *   with exponential backoff; after `maxFailures` in a row the subscription is set to `error` with
 *   the reason. `end` is honoured: the subscription is set to `off`. Every attempt is an
 *   AuditEvent (destination, event numbers, outcome — never the payload).
 */
import dns from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import type { SubscriptionState } from '../../storage/index-store.ts';
import type { BatcherLease } from '../../chain/batcher.ts';
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
import { hostPort, isInternalAddress, parseSubscription, type ParsedSubscription, type PayloadContent, type SubscriptionPolicy } from './validate.ts';
import { decideByRows } from '../../storage/event-match.ts';
import type { SubscriptionEvent, VersionRecord } from '../../storage/index-store.ts';
import { notificationBundle, subscriptionStatus, type NotificationType, type NotifiedEvent } from './notification.ts';

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
  /** Largest notification body (VELLUM_SUBSCRIPTION_PAYLOAD_MAX): above it, resources are left out (id-only). */
  payloadMax: number;
  /** Whether requests are being answered: delivery then yields to them (`#pace`). */
  busy?: () => boolean;
  audit?: (input: AuditInput) => Promise<void>;
  onError?: (err: unknown) => void;
  now?: () => number;
  /**
   * Several nodes on one database: only the holder of this lease delivers rest-hook subscriptions
   * (websocket ones are delivered by the node their sockets are bound to).
   */
  lease?: BatcherLease;
}

/** How often a node without the delivery lease asks for it while rest-hook subscriptions exist. */
const LEASE_RETRY_MS = 1_000;

/** The agent of the versions the server writes itself (status changes). */
export const SUBSCRIPTION_AGENT = 'Vellum subscriptions';
const MAX_BACKOFF_MS = 5 * 60_000;
const EVENT_BATCH = 50;
const VERSION_CACHE = 256;
/**
 * While requests are in flight, delivery works in slices of SLICE_MS and rests REST_MS between
 * them: notifications take about a tenth of the time from requests (a write burst is not slowed by
 * the notifications it causes; they catch up when it ends), and never stop.
 */
const SLICE_MS = 5;
const REST_MS = 95;
/** Subscriptions delivered at once. */
const DELIVERY_CONCURRENCY = 16;

/** A bound websocket as the dispatcher uses it (websocket.ts): send text, resolve whether it went out. */
export interface BoundSocket {
  send(text: string): Promise<boolean>;
}

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
  readonly #versions = new Map<number, { record: VersionRecord; resource: FhirResource }>();
  /** Bumped by every client write and deletion of a subscription: a delivery that began before it is stale. */
  readonly #generations = new Map<string, number>();
  /** Websockets bound to each subscription (websocket.ts). */
  readonly #sockets = new Map<string, Set<BoundSocket>>();
  /** When something was last sent to each subscription (heartbeats are due a period after). */
  readonly #lastSent = new Map<string, number>();
  #timer: NodeJS.Timeout | undefined;
  #timerAt = 0;
  /** When the current delivery slice began (while requests are in flight). */
  #sliceStart: number | undefined;
  /** Whether the next round visits every live subscription (else: those with new events). */
  #full = true;
  /** The version of each subscription this node last tracked (a version read again is no change). */
  readonly #tracked = new Map<string, number>();
  /** Whether this node held the delivery lease at its last round. */
  #leader = false;
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
    // Every subscription's owner, deleted ones too (their history stays their owner's).
    for (const [id, owner] of await index.subscriptions.owners()) {
      this.#owners.set(id, ownerKey(owner as StoredPrincipal));
      this.#deleted.add(id);
    }
    for (let afterRid = 0; ; ) {
      const page = await index.currentResources({ afterRid, limit: 500, types: ['Subscription'] });
      for (const { record } of page) {
        const resource = await services.loadResource(record).catch(() => undefined);
        const state = await index.subscriptions.state(record.id);
        this.#tracked.set(record.id, record.versionId);
        this.#deleted.delete(record.id);
        // A start retries at once what was waiting for a retry.
        if (state && state.retryAt > 0) await index.subscriptions.putState({ ...state, retryAt: 0 });
        if (resource) this.#track(resource);
      }
      if (page.length < 500) break;
      afterRid = page[page.length - 1]!.rid;
    }
    this.#filters();
    // Other nodes' events and Subscription writes (several nodes on one database).
    await index.subscriptions.watch?.({
      events: () => this.kick(false),
      subscriptions: (ids) => this.#reload(ids),
      resync: () => void this.#reload(undefined).catch((err: unknown) => this.#o.onError?.(err)),
    });
    this.kick();
  }

  /**
   * Subscriptions another node wrote (`ids`), or all of them (`undefined`: the watch was down):
   * read again, tracked as they are now, and their filters set. A client's change made elsewhere
   * makes a delivery in progress here stale, as one made here does.
   */
  async #reload(ids: readonly string[] | undefined): Promise<void> {
    const services = this.#o.services();
    const index = services.repository.index;
    const all: string[] = ids === undefined ? [...this.#live.keys(), ...(await index.subscriptions.owners()).keys()] : [...ids];
    for (let afterRid = 0; ids === undefined; ) {
      const page = await index.currentResources({ afterRid, limit: 500, types: ['Subscription'] });
      all.push(...page.map((p) => p.record.id));
      if (page.length < 500) break;
      afterRid = page[page.length - 1]!.rid;
    }
    for (const id of new Set(all)) {
      const record = await index.current('Subscription', id);
      // Heard of twice (a notification and a commit's check) or written here: nothing new.
      if ((record?.versionId ?? 0) === (this.#tracked.get(id) ?? 0)) continue;
      this.#tracked.set(id, record?.versionId ?? 0);
      this.#generations.set(id, this.#generation(id) + 1);
      const state = await index.subscriptions.state(id);
      if (state?.owner !== undefined && !this.#owners.has(id)) this.#owners.set(id, ownerKey(state.owner as StoredPrincipal));
      if (!record || record.deleted) {
        this.#live.delete(id);
        this.#deleted.add(id);
        continue;
      }
      this.#deleted.delete(id);
      const resource = await services.loadResource(record).catch(() => undefined);
      if (resource) this.#track(resource);
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
    this.#o.services().repository.index.subscriptions.setFilters(
      [...this.#live.values()]
        .filter((s) => !s.topic?.event)
        .map((s) => ({ subscription: s.id, type: s.type, where: s.where, ...(s.interactions ? { interactions: s.interactions } : {}) })),
    );
  }

  /** Yield to requests in flight: a rest of REST_MS after every SLICE_MS of delivery. */
  async #pace(): Promise<void> {
    if (!this.#o.busy?.()) {
      this.#sliceStart = undefined;
      return;
    }
    const now = performance.now();
    if (this.#sliceStart === undefined) {
      this.#sliceStart = now;
      return;
    }
    if (now - this.#sliceStart < SLICE_MS) return;
    await new Promise((resolve) => setTimeout(resolve, REST_MS));
    this.#sliceStart = performance.now();
  }

  #generation(id: string): number {
    return this.#generations.get(id) ?? 0;
  }

  /** A live subscription as parsed (websocket.ts binds to it). */
  live(id: string): ParsedSubscription | undefined {
    return this.#live.get(id);
  }

  /** The owner key of subscription `id` (undefined when unknown). */
  ownerOf(id: string): string | undefined {
    return this.#owners.get(id);
  }

  /**
   * Bind a websocket to a live websocket subscription: the dispatcher sends to it from now on
   * (the Backport handshake first). Returns the function that unbinds it.
   */
  bind(id: string, socket: BoundSocket): () => void {
    let set = this.#sockets.get(id);
    if (!set) this.#sockets.set(id, (set = new Set()));
    set.add(socket);
    const sub = this.#live.get(id);
    if (sub?.topic) void this.#handshakeSocket(sub, socket);
    this.kick();
    return () => {
      set.delete(socket);
      if (set.size === 0 && this.#sockets.get(id) === set) this.#sockets.delete(id);
    };
  }

  /** Open websockets bound to subscriptions (bench and /metrics). */
  boundSockets(): number {
    let n = 0;
    for (const set of this.#sockets.values()) n += set.size;
    return n;
  }

  /** What a stored Subscription is, for `$status` and `$events` (live or not: off and error ones too). */
  parsed(resource: FhirResource): ParsedSubscription {
    return this.#live.get(String(resource.id)) ?? parseSubscription(this.#o.services(), resource, this.#o.policy);
  }

  /** `$status`: the SubscriptionStatus of a stored Subscription (type query-status). */
  async status(resource: FhirResource): Promise<Record<string, unknown>> {
    const sub = this.parsed(resource);
    const state = await this.#o.services().repository.index.subscriptions.state(sub.id);
    const error = typeof resource.error === 'string' ? resource.error : undefined;
    return subscriptionStatus(
      {
        baseUrl: this.#o.services().baseUrl,
        subscription: sub.id,
        topic: sub.topic?.url ?? sub.criteria,
        status: String(resource.status),
        type: 'query-status',
        eventsSinceStart: state?.notified ?? 0,
        ...(error ? { error } : {}),
      },
      [],
      sub.content,
    );
  }

  /**
   * `$events`: the notified events numbered `from`..`to` (at most `limit`), decided again for the
   * owner now — an event the owner may no longer see is left out.
   */
  async events(resource: FhirResource, from: number, to: number, limit: number, content: PayloadContent): Promise<Record<string, unknown>> {
    const sub = this.parsed(resource);
    const store = this.#o.services().repository.index.subscriptions;
    const state = await store.state(sub.id);
    const owner = state?.owner as StoredPrincipal | undefined;
    const shown: NotifiedEvent[] = [];
    for (const event of await store.notifiedEvents(sub.id, from, to, limit)) {
      const decided = await this.#decide({ ...sub, content, payload: content === 'full-resource' }, owner, event);
      if (decided) shown.push({ ...decided, number: event.notified! });
    }
    return this.#bundle(sub, 'query-event', shown, state?.notified ?? 0, content, String(resource.status));
  }

  async #handshakeSocket(sub: ParsedSubscription, socket: BoundSocket): Promise<void> {
    const state = await this.#o.services().repository.index.subscriptions.state(sub.id);
    const text = JSON.stringify(this.#bundle(sub, 'handshake', [], state?.notified ?? 0));
    await socket.send(text);
  }

  /**
   * An approval or its revocation on the consent registry (operations/consent.ts): an event for
   * every live subscription to the matching topic, about the actor's current version.
   */
  async emitApproval(reference: string, approved: boolean): Promise<void> {
    const [type, id] = reference.split('/') as [string, string];
    const event = approved ? 'approved' : 'approval-revoked';
    const ids = [...this.#live.values()]
      .filter((s) => s.topic?.event === event && (s.where.length ? s.type === type && decideByRows(s.where, id, []) !== false : s.topic.resources.includes(type)))
      .map((s) => s.id);
    if (ids.length === 0) return;
    const index = this.#o.services().repository.index;
    const record = await index.current(type, id);
    if (!record || record.deleted) return;
    await index.subscriptions.emit(ids, record.seq, this.#now());
    this.kick();
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
          this.#tracked.set(record.id, record.versionId);
          if (record.deleted || !isSystem(context)) this.#generations.set(record.id, this.#generation(record.id) + 1);
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
              notified: state?.notified ?? 0,
            });
            if (!this.#owners.has(record.id)) this.#owners.set(record.id, ownerKey(owner as StoredPrincipal | undefined));
          }
          if (resource) this.#track(resource);
        }
        if (changed) this.#filters();
        // Other writes: only the subscriptions that got events need a visit.
        this.kick(changed);
      },
    };
  }

  /**
   * Deliver what is pending (coalesced): `full` visits every live subscription (timers, starts,
   * subscription changes, binds); otherwise only those that got events since the last round.
   */
  kick(full = true): void {
    if (this.#live.size === 0 && !this.#rounds.running) return;
    if (full) this.#full = true;
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
    await this.#o.lease?.release();
  }

  /** One pass over the live subscriptions (or those with new events); schedules the next for retries, heartbeats and ends. */
  async #round(): Promise<void> {
    // Several nodes: rest-hooks are this node's to deliver only while it holds the lease; the round
    // that takes the lease over visits them all (their events may be another node's).
    const leader = this.#o.lease ? await this.#o.lease.hold().catch(() => false) : true;
    const full = this.#full || (leader && !this.#leader);
    this.#leader = leader;
    this.#full = false;
    const dirty = this.#o.services().repository.index.subscriptions.takeDirty();
    const now = this.#now();
    let next = Number.POSITIVE_INFINITY;
    if (full && this.#timer) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    const visit = async (sub: ParsedSubscription): Promise<void> => {
      if (this.#closed) return;
      if (sub.end !== undefined && sub.end <= now) {
        await this.#setStatus(sub.id, 'off');
        return;
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
    };
    // Subscriptions are delivered side by side (each one's events in order). A round ends when its
    // slowest subscription is done: an endpoint that answers just inside its timeout delays the
    // next round's notifications of the others (docs/subscriptions.md, "Not yet").
    const mine = (sub: ParsedSubscription) => leader || sub.channel !== 'rest-hook';
    const queue = [...this.#live.values()].filter((sub) => mine(sub) && (full || dirty.has(sub.id)));
    // Without the lease, ask for it again soon while there are rest-hooks to deliver.
    if (!leader && [...this.#live.values()].some((sub) => sub.channel === 'rest-hook')) next = Math.min(next, now + LEASE_RETRY_MS);
    const worker = async () => {
      for (let sub = queue.shift(); sub; sub = queue.shift()) {
        await this.#pace();
        await visit(sub);
      }
    };
    await Promise.all(Array.from({ length: Math.min(DELIVERY_CONCURRENCY, queue.length) }, worker));
    if (Number.isFinite(next)) this.#schedule(next);
  }

  /** A full round at `at` (ms), unless one is already due sooner. */
  #schedule(at: number): void {
    if (this.#timer && this.#timerAt <= at) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timerAt = at;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.kick();
    }, Math.max(10, Math.min(at - this.#now(), 2_147_483_000)));
    this.#timer.unref();
  }

  /** Handshake, deliver pending events or a heartbeat, for one subscription; returns when to come back (a retry, a heartbeat). */
  async #deliver(sub: ParsedSubscription): Promise<number | undefined> {
    const services = this.#o.services();
    const store = services.repository.index.subscriptions;
    // A client's write or deletion of the subscription while this runs makes this delivery stale:
    // it stops, and saves nothing over what the write set (a new handshake, or no state at all).
    const generation = this.#generation(sub.id);
    const current = () => !this.#closed && this.#live.has(sub.id) && this.#generation(sub.id) === generation;
    const state: SubscriptionState = (await store.state(sub.id)) ?? { id: sub.id, owner: undefined, delivered: 0, failures: 0, retryAt: 0, handshake: false, notified: 0 };
    if (state.retryAt > this.#now()) return state.retryAt;
    const owner = state.owner as StoredPrincipal | undefined;
    if (!state.handshake) {
      // A websocket has no endpoint to ask: it is active at once, and the handshake goes to each socket as it binds.
      if (sub.channel === 'rest-hook') {
        const body = sub.topic ? JSON.stringify(this.#bundle(sub, 'handshake', [], state.notified)) : undefined;
        const outcome = await this.#send(sub, body, owner, 'event=0&type=handshake');
        if (!current()) return undefined;
        if (!outcome.ok) return this.#failed(sub, state, outcome.reason, generation);
      }
      state.handshake = true;
      state.failures = 0;
      state.retryAt = 0;
      await store.putState(state);
      await this.#setStatus(sub.id, 'active', undefined, generation);
    }
    if (sub.channel === 'websocket' && !this.#sockets.has(sub.id)) return undefined;
    for (;;) {
      const events = await store.events(sub.id, state.delivered, EVENT_BATCH);
      if (events.length === 0) return this.#heartbeat(sub, state, owner, current);
      // What was sent (or passed over) is saved once per batch of events, and before a failure is
      // counted: a stop in between sends those events again (at least once), with the same numbers.
      const marks: { number: number; notified: number }[] = [];
      const delivered: [number, number][] = [];
      let saved = state.delivered;
      const save = async () => {
        this.#auditDelivered(sub, owner, delivered);
        const sent = marks.splice(0);
        if (current()) await store.putState(state, sent);
        saved = state.delivered;
      };
      let batch: { event: SubscriptionEvent; shown: NotifiedEvent }[] = [];
      let through = state.delivered;
      const flush = async (): Promise<boolean> => {
        if (batch.length === 0) {
          if (through !== state.delivered) {
            // Passed over: what failed before is no longer to be sent.
            state.delivered = through;
            state.failures = 0;
            state.retryAt = 0;
          }
          return true;
        }
        const numbered = batch.map(({ shown }, i) => ({ ...shown, number: state.notified + i + 1 }));
        const first = numbered[0]!.number;
        const last = numbered[numbered.length - 1]!.number;
        const outcome = await this.#send(sub, this.#eventBody(sub, numbered, state.notified + numbered.length), owner, `event=${first === last ? first : `${first}-${last}`}`, {
          into: delivered,
          range: [first, last],
        });
        if (!current()) return false;
        if (!outcome.ok) {
          await save();
          // No socket took it: it waits for the next bind, not counted as a failure.
          if (!outcome.unbound) await this.#failed(sub, state, outcome.reason, generation);
          return false;
        }
        marks.push(...batch.map(({ event }, i) => ({ number: event.number, notified: numbered[i]!.number })));
        state.delivered = through;
        state.notified += batch.length;
        state.failures = 0;
        state.retryAt = 0;
        batch = [];
        return true;
      };
      try {
        for (const event of events) {
          await this.#pace();
          if (!current()) return undefined;
          const shown = await this.#decide(sub, owner, event);
          through = event.number;
          if (shown) batch.push({ event, shown });
          if (batch.length >= sub.maxCount && !(await flush())) return state.retryAt || undefined;
        }
        if (!(await flush())) return state.retryAt || undefined;
      } finally {
        // Also when deciding an event failed (the consent registry does not answer): what went out stays out.
        if (current() && (marks.length || state.delivered !== saved)) await save();
        else this.#auditDelivered(sub, owner, delivered);
      }
    }
  }

  /** A heartbeat when one is due (topic-based subscriptions that asked for them); returns when the next is. */
  async #heartbeat(sub: ParsedSubscription, state: SubscriptionState, owner: StoredPrincipal | undefined, current: () => boolean): Promise<number | undefined> {
    if (!sub.heartbeatMs || !sub.topic) return undefined;
    const now = this.#now();
    const last = this.#lastSent.get(sub.id);
    if (last === undefined) {
      // Counted from the start (or the subscription's arrival): a period of quiet before the first.
      this.#lastSent.set(sub.id, now);
      return now + sub.heartbeatMs;
    }
    if (now < last + sub.heartbeatMs) return last + sub.heartbeatMs;
    if (sub.channel === 'websocket' && !this.#sockets.has(sub.id)) return undefined;
    const outcome = await this.#send(sub, JSON.stringify(this.#bundle(sub, 'heartbeat', [], state.notified)), owner, 'event=0&type=heartbeat');
    if (!current()) return undefined;
    if (!outcome.ok) return outcome.unbound ? undefined : this.#failed(sub, state, outcome.reason);
    return this.#now() + sub.heartbeatMs;
  }

  #bundle(
    sub: ParsedSubscription,
    type: NotificationType,
    events: readonly NotifiedEvent[],
    eventsSinceStart: number,
    content = sub.content,
    status = 'active',
  ): Record<string, unknown> {
    const services = this.#o.services();
    return notificationBundle(
      { baseUrl: services.baseUrl, subscription: sub.id, topic: sub.topic?.url ?? sub.criteria, status, type, eventsSinceStart },
      events,
      content,
    );
  }

  /** The body of a notification of `events`: a bundle (topic-based), the resource or nothing (R4), `ping {id}` (R4 websocket). */
  #eventBody(sub: ParsedSubscription, events: readonly NotifiedEvent[], eventsSinceStart: number): string | undefined {
    if (sub.topic) {
      const body = JSON.stringify(this.#bundle(sub, 'event-notification', events, eventsSinceStart));
      // Too large for the limit: the resources are left out, their references stay (the receiver reads them).
      if (body.length <= this.#o.payloadMax || sub.content !== 'full-resource') return body;
      return JSON.stringify(this.#bundle(sub, 'event-notification', events, eventsSinceStart, 'id-only'));
    }
    if (sub.channel === 'websocket') return `ping ${sub.id}`;
    const resource = events[0]?.resource;
    if (!sub.payload || !resource) return undefined;
    const body = JSON.stringify(resource);
    return body.length <= this.#o.payloadMax ? body : undefined;
  }

  /**
   * Whether the owner may see an event now — decided as a search match is — and what it shows:
   * null when it is passed over.
   */
  async #decide(sub: ParsedSubscription, owner: StoredPrincipal | undefined, event: SubscriptionEvent): Promise<NotifiedEvent | null> {
    const services = this.#o.services();
    const cached = this.#versions.get(event.seq);
    const record = cached?.record ?? (await services.repository.index.versionBySeq(event.seq));
    if (!record) return null;
    const principal = owner ? principalOf(owner) : undefined;
    // The owner's scopes first, as the guard decides a search (a token without Observation read
    // learns of no Observation through its subscription): an event of a type it may not search is
    // passed over. A subscription is a standing search: its matches are decided as search matches.
    if (principal && services.access && !decide(principal, 'search', record.type).allowed) return null;
    const base: FhirRequest = { method: 'GET', query: [], headers: {}, baseUrl: services.baseUrl, consentLog: [], ...(principal ? { principal } : {}) };
    const request = principal && services.access ? await matchingRequest(services, base, record.type, 'search') : base;
    const raised = sub.topic?.event !== undefined;
    const shown: NotifiedEvent = { number: event.number, at: event.at, record, ...(raised ? { raised } : {}) };
    if (record.deleted) {
      // A deletion carries no data: decided on the key scope of the version it deleted.
      const before = await services.repository.index.version(record.type, record.id, record.versionId - 1);
      return before && visible(services, request, { ...record, keyScope: before.keyScope ?? SHARED_SCOPE }) ? shown : null;
    }
    const [screened] = await screenRecords(services, request, [record]);
    if (!screened) return null;
    const wanted = sub.topic ? sub.content === 'full-resource' : sub.payload;
    if (!wanted) return shown;
    const resource = (screened.resource as FhirResource | undefined) ?? cached?.resource ?? (await services.loadResource(record));
    if (resource) this.#remember(event.seq, record, resource);
    return resource ? { ...shown, resource } : null;
  }

  /** Versions (and resources) just notified: the subscriptions matching one write each need it (a version never changes). */
  #remember(seq: number, record: VersionRecord, resource: FhirResource): void {
    this.#versions.delete(seq);
    this.#versions.set(seq, { record, resource });
    if (this.#versions.size > VERSION_CACHE) this.#versions.delete(this.#versions.keys().next().value!);
  }

  /** Send a notification (POST to the endpoint, or to every bound websocket); an AuditEvent records the attempt. */
  async #send(
    sub: ParsedSubscription,
    body: string | undefined,
    owner: StoredPrincipal | undefined,
    what: string,
    collect?: { into: [number, number][]; range: [number, number] },
  ): Promise<{ ok: true } | { ok: false; reason: string; unbound?: boolean }> {
    let status = 0;
    let reason = '';
    let destination = 'websocket';
    if (sub.channel === 'websocket') {
      const sockets = [...(this.#sockets.get(sub.id) ?? [])];
      const sent = await Promise.all(sockets.map((socket) => socket.send(body ?? '')));
      // Nobody listening (any more): nothing was sent and nothing is lost — the event waits for a bind.
      if (!sent.some(Boolean)) return { ok: false, reason: 'no websocket is bound', unbound: true };
      status = 200;
    } else {
      const url = new URL(sub.endpoint);
      destination = hostPort(url);
      try {
        status = await post(url, sub.headers, body, sub.timeoutMs, this.#o.policy.allow.has(destination));
        if (status < 200 || status > 299) reason = `the endpoint answered HTTP ${status}`;
      } catch (err) {
        const code = (err as { code?: string; cause?: { code?: string } }).code ?? (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).name;
        reason = code === 'VLM_SUB_ENDPOINT_REFUSED' ? 'the endpoint resolves to an internal address' : `the endpoint could not be reached (${code})`;
      }
    }
    if (!reason) this.#lastSent.set(sub.id, this.#now());
    // Events delivered in a run are audited together (#auditDelivered); failures at once.
    if (!reason && collect) collect.into.push(collect.range);
    else this.#audit(sub, owner, status || 502, `destination=${encodeURIComponent(destination)}&${what}&outcome=${reason ? 'failed' : 'delivered'}`);
    return reason ? { ok: false, reason } : { ok: true };
  }

  /** The AuditEvent of a notification (queued, not waited for: its fsync is shared with the next ones). */
  #audit(sub: ParsedSubscription, owner: StoredPrincipal | undefined, status: number, query: string): void {
    void this.#o
      .audit?.({
        interaction: 'operation',
        method: 'POST',
        status,
        operation: '$notify',
        resourceType: 'Subscription',
        id: sub.id,
        query,
        ...(owner ? { principal: principalOf(owner) } : {}),
      })
      .catch((err) => this.#o.onError?.(err));
  }

  /**
   * One AuditEvent for the events a run delivered to one destination (`event=1-12,14`): under load
   * a subscription's notifications come in runs, and an AuditEvent each would cost the server more
   * than the notifications themselves.
   */
  #auditDelivered(sub: ParsedSubscription, owner: StoredPrincipal | undefined, ranges: [number, number][]): void {
    if (ranges.length === 0) return;
    const merged: [number, number][] = [];
    for (const [first, last] of ranges.splice(0)) {
      const previous = merged[merged.length - 1];
      if (previous && previous[1] + 1 === first) previous[1] = last;
      else merged.push([first, last]);
    }
    const events = merged.map(([first, last]) => (first === last ? `${first}` : `${first}-${last}`)).join(',');
    const destination = sub.channel === 'websocket' ? 'websocket' : hostPort(new URL(sub.endpoint));
    this.#audit(sub, owner, 200, `destination=${encodeURIComponent(destination)}&event=${events}&outcome=delivered`);
  }

  /** A failed attempt: back off, or give up into `error` after `maxFailures` in a row. */
  async #failed(sub: ParsedSubscription, state: SubscriptionState, reason: string, generation = this.#generation(sub.id)): Promise<number | undefined> {
    const store = this.#o.services().repository.index.subscriptions;
    state.failures += 1;
    if (state.failures >= this.#o.maxFailures) {
      await store.putState({ ...state, retryAt: 0 });
      await this.#setStatus(sub.id, 'error', `${reason}; ${state.failures} attempts failed in a row`, generation);
      return undefined;
    }
    state.retryAt = this.#now() + Math.min(this.#o.retryMs * 2 ** (state.failures - 1), MAX_BACKOFF_MS);
    await store.putState(state);
    return state.retryAt;
  }

  /** Write the subscription's new status (and error) as a version of its own. */
  async #setStatus(id: string, status: 'active' | 'error' | 'off', error?: string, generation?: number): Promise<void> {
    const services = this.#o.services();
    const writer = this.#o.writer();
    await writer.exclusive(async () => {
      // A client's write since the delivery began (its afterCommit ran inside an earlier exclusive
      // section) wins: the server does not write over it (turning an `off` back on, an `error` over a fix).
      if (generation !== undefined && this.#generation(id) !== generation) return;
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

/** Keep-alive connections to endpoints (notifications come in runs). */
const AGENTS = { http: new http.Agent({ keepAlive: true, maxSockets: 4 }), https: new https.Agent({ keepAlive: true, maxSockets: 4 }) };

/**
 * The name's addresses, refused when one is internal (unless the endpoint is allowed): checked on
 * the addresses the connection is made to, so a name cannot resolve one way for the check and
 * another for the request.
 */
function publicLookup(hostname: string, options: dns.LookupOptions, callback: (err: NodeJS.ErrnoException | null, address: string | dns.LookupAddress[], family?: number) => void): void {
  dns.lookup(hostname, { ...options, all: true }, (err, addresses) => {
    if (err) return callback(err, []);
    if (addresses.some((a) => isInternalAddress(a.address))) return callback(Object.assign(new Error('internal address'), { code: 'VLM_SUB_ENDPOINT_REFUSED' }), []);
    if (options.all) return callback(null, addresses);
    callback(null, addresses[0]!.address, addresses[0]!.family);
  });
}

/** POST a notification; resolves with the HTTP status (redirects are not followed). */
function post(url: URL, headers: readonly [string, string][], body: string | undefined, timeoutMs: number, allowed: boolean): Promise<number> {
  return new Promise((resolve, reject) => {
    // An address written as such is never looked up: checked here instead.
    const literal = url.hostname.replace(/^\[|\]$/g, '');
    if (!allowed && net.isIP(literal) && isInternalAddress(literal)) {
      return reject(Object.assign(new Error('internal address'), { code: 'VLM_SUB_ENDPOINT_REFUSED' }));
    }
    const secure = url.protocol === 'https:';
    const request = (secure ? https : http).request(
      url,
      {
        method: 'POST',
        agent: secure ? AGENTS.https : AGENTS.http,
        headers: {
          ...Object.fromEntries(headers),
          ...(body ? { 'content-type': 'application/fhir+json' } : {}),
          'content-length': String(body ? Buffer.byteLength(body) : 0),
        },
        signal: AbortSignal.timeout(timeoutMs),
        ...(allowed ? {} : { lookup: publicLookup }),
      },
      (response) => {
        response.resume();
        response.on('end', () => resolve(response.statusCode ?? 0));
        response.on('error', reject);
      },
    );
    request.on('error', reject);
    request.end(body);
  });
}

function isSystem(context: WriteContext): boolean {
  return context.system === true;
}
