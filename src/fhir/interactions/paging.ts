/**
 * Paging of searchset and history Bundles (http://hl7.org/fhir/R4/http.html#paging): page size,
 * the `self`/`first`/`previous`/`next` links, and the opaque `_cursor` they carry.
 *
 * ## Design: keyset cursors, sealed with an HMAC
 *
 * A page link does not say "skip n matches" (`_offset`): it says "the matches after (or before)
 * this position", where the position is the sort key of the page's last (or first) match — the
 * values of its `_sort` keys, then its type and id, which name the tiebreak every order ends with —
 * creation order (see src/storage/sqlite/search-sql.ts `planSearch`). The query itself is re-run for every page from
 * the link's parameters, and every page request is authorised again (src/fhir/access.ts: scopes,
 * the patient compartment clause, the `_include` filter), so a link grants nothing by itself.
 *
 * What "consistent" guarantees while others write:
 * - A resource created or deleted between two page requests does not shift the later pages: each
 *   page starts strictly after the previous page's last key, so no match that existed throughout
 *   is repeated or skipped (with `_offset`, a deletion before the offset skipped one and a creation
 *   repeated one). A new resource appears if its key falls after the position, not otherwise.
 * - A resource UPDATED between page requests is found at its key at the time of the next request:
 *   when the update leaves its sort values alone (the default order — creation order — never
 *   changes), nothing moves. When the update changes a sort value (`_sort=date`, `_lastUpdated`),
 *   the resource moves in the order: it may be seen twice (moved from a served page to a later one)
 *   or not at all (moved from a later page to a served one), exactly like a resource deleted and
 *   re-created at its new place; every other match keeps its place. An update that makes it stop
 *   (or start) matching the query is a deletion (or creation) for paging purposes.
 * - `total` (with `_total=accurate`; see search.ts TOTAL_POLICY for when else it is given) is counted at each page request, so it follows the
 *   writes; the pages never depend on it.
 * History pages (`history.ts`) are cut from a snapshot instead: versions are immutable, so the
 * cursor carries the highest version sequence number of the first page (`s`) and the position
 * (the seq of the page's last or first version); totals are those of the snapshot.
 *
 * ## The cursor
 *
 * `_cursor=<payload>.<mac>`: `payload` is base64url JSON `{ d: 'a'|'b', k: key[, i: 1][, s: n] }`
 * (direction after/before, the key, inclusive, the history snapshot), `mac` is
 * HMAC-SHA256(server key, "vellum-cursor/1" ‖ binding ‖ payload), base64url. The binding is what
 * the cursor may be used with: the interaction (search, history, $everything), its path (type,
 * compartment or system level), the parameters that choose or order the matches (not `_count`,
 * `_format`, `_elements`…, which a client may change between pages) and the patient compartment
 * the requesting client is confined to. A cursor whose MAC does not verify — edited, made up, or
 * issued for another query, another path, another confinement or by another server key — is 400
 * `invalid`, VLM_FHIR_BAD_CURSOR. The cursor is opaque (base64url, to be echoed, not read) but
 * not secret: it holds the sort values and id of a match of the page it came with.
 * The key is derived from the master key (`CURSOR_KEY_PURPOSE`, src/server.ts); a server without
 * one (services built by hand) uses a random key for the life of the process.
 *
 * Links are deterministic (no timestamp or nonce), so POST `_search` and GET give identical
 * Bundles. A client that sends `_offset` itself gets that page (its `self` link repeats it), and
 * cursor links from there on; `_offset` and `_cursor` together are refused.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { SortValue } from '../../storage/search-types.ts';
import { fhirError } from '../errors.ts';
import { queryValue, type FhirRequest } from '../request.ts';
import type { FhirServices } from '../services.ts';

export const DEFAULT_COUNT = 50;
export const MAX_COUNT = 1000;

/** HKDF `info` of the cursor MAC key (src/server.ts derives it from the master key). */
export const CURSOR_KEY_PURPOSE = 'vellum/v1/search-cursor';

/** `_count` (default 50, at most 1,000; larger values are reduced to the maximum). */
export function pageCount(request: FhirRequest): number {
  const raw = queryValue(request, '_count');
  if (raw === undefined) return DEFAULT_COUNT;
  if (!/^\d{1,9}$/.test(raw)) throw fhirError(400, 'invalid', 'VLM_FHIR_BAD_PARAMETER', '_count must be a whole number', ['_count']);
  return Math.min(Number(raw), MAX_COUNT);
}

/** A position in a paged result: after (or before) the match with sort key `key`. */
export interface Position {
  direction: 'after' | 'before';
  key: SortValue[];
  /** The match at `key` belongs to the page too. */
  inclusive?: boolean;
  /** History: the snapshot (highest version seq) the pages are cut from. */
  snapshot?: number;
}

/** What a cursor is bound to (see the module comment). */
export interface CursorBinding {
  interaction: 'search' | 'history' | 'everything';
  /** The path below the base (`Patient`, `Patient/1/Observation`, '' for system level). */
  path: string;
  /** The parameters that select or order the matches. */
  params: readonly [string, string][];
}

/** Parameters a client may change between pages without changing which matches, or their order. */
const PRESENTATION = new Set(['_count', '_cursor', '_offset', '_format', '_pretty', '_summary', '_elements', '_total', '_include', '_revinclude', '_snapshot']);

/** The selecting and ordering parameters of `params` (for the binding). */
export function bindingParams(params: readonly [string, string][]): [string, string][] {
  return params.filter(([name]) => !PRESENTATION.has(name.split(':')[0]!));
}

const fallbackKeys = new WeakMap<object, Uint8Array>();

function cursorKey(services: FhirServices): Uint8Array {
  if (services.cursorKey) return services.cursorKey;
  let key = fallbackKeys.get(services);
  if (!key) {
    key = new Uint8Array(randomBytes(32));
    fallbackKeys.set(services, key);
  }
  return key;
}

function bindingText(binding: CursorBinding, request: FhirRequest): string {
  // Same parameters in another order are the same query: order by name, keeping the order of a
  // repeated name (repeated `_sort` values order the sort keys).
  const params = [...binding.params].map((p, i) => [p, i] as const);
  params.sort(([a, i], [b, j]) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : i - j));
  return JSON.stringify([binding.interaction, binding.path, params.map(([p]) => p), request.restriction?.patient ?? null]);
}

function mac(services: FhirServices, binding: CursorBinding, request: FhirRequest, payload: string): Buffer {
  return createHmac('sha256', cursorKey(services))
    .update('vellum-cursor/1\n')
    .update(bindingText(binding, request))
    .update('\n')
    .update(payload)
    .digest();
}

/** Seal a position into an opaque cursor bound to `binding` and the request's confinement. */
export function sealCursor(services: FhirServices, binding: CursorBinding, request: FhirRequest, position: Position): string {
  const body: Record<string, unknown> = { d: position.direction === 'after' ? 'a' : 'b', k: position.key };
  if (position.inclusive) body['i'] = 1;
  if (position.snapshot !== undefined) body['s'] = position.snapshot;
  const payload = Buffer.from(JSON.stringify(body)).toString('base64url');
  return `${payload}.${mac(services, binding, request, payload).toString('base64url')}`;
}

function badCursor(): never {
  throw fhirError(400, 'invalid', 'VLM_FHIR_BAD_CURSOR', 'The page cursor is not valid for this query: follow the links of the Bundle', ['_cursor']);
}

/**
 * The position of the request's `_cursor` (undefined without one). A cursor that does not verify
 * for this binding and confinement, or does not decode to a position of one of `keyLengths` values, is
 * 400 VLM_FHIR_BAD_CURSOR; `_cursor` with `_offset` is 400 VLM_FHIR_BAD_PARAMETER.
 */
export function openCursor(
  services: FhirServices,
  binding: CursorBinding,
  request: FhirRequest,
  keyLengths: readonly number[],
): Position | undefined {
  const all = request.query.filter(([name]) => name === '_cursor');
  if (all.length === 0) return undefined;
  if (all.length > 1) badCursor();
  if (queryValue(request, '_offset') !== undefined) {
    throw fhirError(400, 'invalid', 'VLM_FHIR_BAD_PARAMETER', '_cursor and _offset cannot be combined', ['_offset']);
  }
  const token = all[0]![1];
  const match = /^([A-Za-z0-9_-]{1,8192})\.([A-Za-z0-9_-]{43})$/.exec(token);
  if (!match) badCursor();
  // Compared as text, not as decoded bytes: the last of 43 base64url characters carries two padding
  // bits, so four spellings decode to one MAC. Only the canonical one is accepted.
  const given = Buffer.from(match[2]!, 'latin1');
  const expected = Buffer.from(mac(services, binding, request, match[1]!).toString('base64url'), 'latin1');
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) badCursor();
  let body: unknown;
  try {
    body = JSON.parse(Buffer.from(match[1]!, 'base64url').toString('utf8'));
  } catch {
    badCursor();
  }
  // Only this server makes verified cursors, but a key of another shape (an older format) is refused too.
  const b = body as { d?: unknown; k?: unknown; i?: unknown; s?: unknown };
  if (typeof b !== 'object' || b === null || (b.d !== 'a' && b.d !== 'b') || !Array.isArray(b.k) || !keyLengths.includes(b.k.length)) badCursor();
  if (!b.k.every((v) => v === null || typeof v === 'string' || (typeof v === 'number' && Number.isFinite(v)))) badCursor();
  if (b.s !== undefined && !(typeof b.s === 'number' && Number.isSafeInteger(b.s) && b.s >= 0)) badCursor();
  return {
    direction: b.d === 'a' ? 'after' : 'before',
    key: b.k as SortValue[],
    ...(b.i === 1 ? { inclusive: true } : {}),
    ...(b.s !== undefined ? { snapshot: b.s as number } : {}),
  };
}

/** Where the served page stands, for its links. */
export interface PageState {
  count: number;
  /** Sort keys of the page's first and last match (undefined: the page is empty). */
  firstKey: SortValue[] | undefined;
  lastKey: SortValue[] | undefined;
  /** The request's own position (`_cursor`), if any; `offset` the request's `_offset`. */
  position: Position | undefined;
  offset: number;
  /** Matches exist before the page / after the page. */
  hasPrevious: boolean;
  hasNext: boolean;
  /** History: the snapshot every link carries. */
  snapshot?: number;
}

/**
 * Bundle.link entries for a page. `keep` are the query parameters every link repeats (without
 * `_count`, `_cursor` and `_offset`); `self` repeats the request's own position.
 */
export function pageLinks(
  services: FhirServices,
  request: FhirRequest,
  url: string,
  keep: [string, string][],
  binding: CursorBinding,
  state: PageState,
): { relation: string; url: string }[] {
  const link = (position: Position | undefined, offset = 0) => {
    const params = new URLSearchParams(keep);
    params.set('_count', String(state.count));
    const snapshot = state.snapshot !== undefined ? { snapshot: state.snapshot } : {};
    if (position) params.set('_cursor', sealCursor(services, binding, request, { ...position, ...snapshot }));
    else if (offset > 0) {
      // The client's own `_offset` page, repeated as it asked for it.
      if (state.snapshot !== undefined) params.set('_snapshot', String(state.snapshot));
      params.set('_offset', String(offset));
    } else if (state.snapshot !== undefined) {
      // History from its start, within the snapshot: an empty key.
      params.set('_cursor', sealCursor(services, binding, request, { direction: 'after', key: [], ...snapshot }));
    }
    return `${url}?${params.toString()}`;
  };
  const links = [
    { relation: 'self', url: state.position ? link(state.position) : link(undefined, state.offset) },
    { relation: 'first', url: link(undefined) },
  ];
  if (state.hasPrevious) {
    // Before the page's first match; an empty page (its matches deleted meanwhile): up to its position.
    const before: Position | undefined = state.firstKey
      ? { direction: 'before', key: state.firstKey }
      : state.position
        ? { direction: 'before', key: state.position.key, inclusive: state.position.direction === 'after' }
        : undefined;
    if (before) links.push({ relation: 'previous', url: link(before) });
  }
  if (state.hasNext && state.count > 0) {
    const after: Position | undefined = state.lastKey
      ? { direction: 'after', key: state.lastKey }
      : state.position
        ? { direction: 'after', key: state.position.key, inclusive: state.position.direction === 'before' }
        : undefined;
    if (after) links.push({ relation: 'next', url: link(after) });
  }
  return links;
}
