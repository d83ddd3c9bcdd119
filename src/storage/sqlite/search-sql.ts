/**
 * The SQLite search index: one narrow table per search parameter kind, keyed by the
 * `resources.rid` of the current, non-deleted version, and a planner that turns an
 * IndexQuery into one SELECT whose values are all bound parameters.
 *
 * Two plan shapes; `SearchSql.search` chooses per page.
 *
 * The filter plan (`planSearch`), for searches with few candidates:
 *   SELECT r.… FROM resources r
 *   WHERE r.deleted = 0 AND [+]r.type = ?
 *     AND r.rid IN (SELECT s.rid FROM search_<kind> s WHERE …)        -- the one "driving" clause
 *     AND EXISTS (SELECT 1 FROM search_<kind> s INDEXED BY search_<kind>_rid
 *                 WHERE s.rid = r.rid AND …)                          -- every other clause
 *   ORDER BY <sort keys>, r.rid
 *   LIMIT ? OFFSET ?
 * (wrapped as `SELECT … FROM (…) WHERE <keyset position>` so that the sort keys are columns: `planSearch`).
 * The driving clause is the most selective-looking one (reference, then token/uri equality,
 * then string prefix); it is read from the `(param, value…, rid)` index and its rids looked
 * up by primary key (`+r.type` stops SQLite from walking the whole type instead). The other
 * clauses probe the covering `(rid, param, value…)` index once per candidate, pinned with
 * INDEXED BY because without ANALYZE statistics SQLite otherwise picks the value index and
 * scans the whole parameter per resource. Every candidate is read and sorted: the cost grows
 * with the matches, so this plan serves only when the driver has fewer than PAGE_PLAN_LIMIT.
 *
 * The ordered walks (`planWalk`), for everything else: an index already in the page's order —
 * the equality driver's `(param, value…, rid)` index, the type's `(type)` index (rid
 * order), the first sort key's value index, `(type, id)` or `(type, last_updated)` — is walked,
 * every clause probed per row, and LIMIT ends the walk with the page: a page of 50 costs the same
 * at 500 or 5 million matches (`npm run bench:search`, the growth series' broad queries).
 *
 * OR lists: the values of one parameter are bound as one JSON array per value group (see
 * `groupsOf`) and read with `json_each`, e.g. `(s.code, s.system) IN (SELECT j.value->>0,
 * j.value->>1 FROM json_each(?) j)` for `code=s1|c1,s2|c2,…`, so a list of any length is one
 * bound parameter, one SQL text and one cached statement; every value stays bound. Range kinds
 * (date, number, quantity, `_lastUpdated`) keep one predicate per value, and long OR and AND
 * lists nest as balanced trees (`nest`), so no search reaches SQLite's expression depth (1,000)
 * or compound SELECT (500) limits; 1,000-value lists run in a few ms on 20k resources
 * (test/storage/sqlite/search-sql-lists.test.ts prints timings and checks the query plans).
 * A search that still exceeds one of SQLite's limits raises VLM_INDEX_QUERY_TOO_COMPLEX
 * ('invalid', see `queryLimitError`).
 *
 * Paging is by keyset (`IndexQuery.keyset`, see `planSearch`): each hit carries its sort key and the
 * next page starts strictly after the last one, so writes between pages do not shift them (the
 * FHIR layer seals the key into the `_cursor` of the page links: src/fhir/interactions/paging.ts).
 *
 * Bounded date ranges: AND-ed conditions on one date parameter (`date=ge2020-01-01&date=lt2020-02-01`,
 * `eq` on a precision range, `ap`) drive from one range of `search_date_low` bounded at both ends,
 * plus the few wide rows and multi-valued resources (see `dateRangeGroup`, `dateRangeDriver`).
 *
 * Default order: creation order (`r.rid`, kept by updates) — deterministic, index-backed, and
 * unaffected by updates (an update does not move a resource between pages). Sort keys always end
 * with that tiebreak. For a multi-valued parameter the lowest value sorts ascending and the highest
 * descending; resources without a value sort last in both directions.
 *
 * Visibility of nested searches (`IndexQuery.linkScopes`, consent: src/fhir/access.ts `linkScopes`):
 * a chain's targets and a `_has`'s sources of a listed type also need the key scope of their current
 * version (`versions.key_scope`, by the `(type, id, version)` unique index) in, or not in, one bound
 * JSON list (`nestedWhereSql`), so a visible match is never found through a withheld resource.
 *
 * Date semantics follow http://hl7.org/fhir/R4/search.html#date: stored values are
 * inclusive ranges [low, high], the search value is the range its precision implies.
 */

import type { DatabaseSync, SQLInputValue, StatementSync } from 'node:sqlite';
import { storageError, type StorageError } from '../errors.ts';
import {
  normalizeSearchText,
  type IndexClause,
  type IndexCondition,
  type BasicRow,
  type ChainCondition,
  type CompositeCondition,
  type DateCondition,
  type HasCondition,
  type IndexQuery,
  type IndexSort,
  type KeyScopeFilter,
  type Prefix,
  type ReferencedByCondition,
  type RowCondition,
  type SearchKind,
  type SearchRow,
  type SortValue,
  type SubQuery,
} from '../search-types.ts';

const KINDS: readonly SearchKind[] = ['string', 'token', 'date', 'reference', 'number', 'quantity', 'uri'];

const FK = 'rid INTEGER NOT NULL REFERENCES resources(rid) ON DELETE CASCADE';

/** Widest "short" date row (ms): a day at date precision is [00:00, 23:59:59.999]. */
const SHORT_DATE_MS = 86_400_000;

/** Parameter suffix of span rows (no search parameter code contains `#`). */
const SPAN_SUFFIX = '#span';

/** Tables and indexes of the search index; run after the `resources` table exists. Idempotent. */
export const SEARCH_DDL = `
CREATE TABLE IF NOT EXISTS search_string (
  ${FK}, param TEXT NOT NULL, norm TEXT NOT NULL, exact TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS search_string_rid ON search_string(rid, param, norm);
CREATE INDEX IF NOT EXISTS search_string_value ON search_string(param, norm, rid);

CREATE TABLE IF NOT EXISTS search_token (
  ${FK}, param TEXT NOT NULL, system TEXT, code TEXT, text TEXT);
CREATE INDEX IF NOT EXISTS search_token_rid ON search_token(rid, param, code, system);
CREATE INDEX IF NOT EXISTS search_token_value ON search_token(param, code, system, rid);

CREATE TABLE IF NOT EXISTS search_date (
  ${FK}, param TEXT NOT NULL, low INTEGER NOT NULL, high INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS search_date_rid ON search_date(rid, param, low, high);
CREATE INDEX IF NOT EXISTS search_date_low ON search_date(param, low, high, rid);
CREATE INDEX IF NOT EXISTS search_date_high ON search_date(param, high, low, rid);
-- Rows wider than a day (month or year precision, long or open periods): the bounded range scan of
-- the short rows cannot reach them by low, so they have an index of their own (see dateRangeDriver).
CREATE INDEX IF NOT EXISTS search_date_wide ON search_date(param, low, high, rid) WHERE high - low > ${SHORT_DATE_MS};
-- Span rows: a resource with several values of a date parameter also has one row
-- (param '<code>#span', [lowest low, highest high]) so that a bounded range scan finds it when
-- different values match different conditions (see dateRangeDriver). Never matched by a search.
CREATE TABLE IF NOT EXISTS search_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO search_date (rid, param, low, high)
  SELECT rid, param || '${SPAN_SUFFIX}', MIN(low), MAX(high) FROM search_date
  WHERE NOT EXISTS (SELECT 1 FROM search_state WHERE key = 'date_spans') AND instr(param, '#') = 0
  GROUP BY rid, param HAVING COUNT(*) > 1;
INSERT OR IGNORE INTO search_state (key, value) VALUES ('date_spans', '1');

CREATE TABLE IF NOT EXISTS search_reference (
  ${FK}, param TEXT NOT NULL, target_type TEXT, target_id TEXT, url TEXT);
CREATE INDEX IF NOT EXISTS search_reference_rid ON search_reference(rid, param, target_id, target_type);
CREATE INDEX IF NOT EXISTS search_reference_target ON search_reference(param, target_id, target_type, rid);
CREATE INDEX IF NOT EXISTS search_reference_url ON search_reference(param, url, rid) WHERE url IS NOT NULL;

CREATE TABLE IF NOT EXISTS search_number (
  ${FK}, param TEXT NOT NULL, value REAL NOT NULL);
CREATE INDEX IF NOT EXISTS search_number_rid ON search_number(rid, param, value);
CREATE INDEX IF NOT EXISTS search_number_value ON search_number(param, value, rid);

CREATE TABLE IF NOT EXISTS search_quantity (
  ${FK}, param TEXT NOT NULL, value REAL NOT NULL, system TEXT, code TEXT, unit TEXT);
CREATE INDEX IF NOT EXISTS search_quantity_rid ON search_quantity(rid, param, value);
CREATE INDEX IF NOT EXISTS search_quantity_value ON search_quantity(param, value, rid);

CREATE TABLE IF NOT EXISTS search_uri (
  ${FK}, param TEXT NOT NULL, value TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS search_uri_rid ON search_uri(rid, param, value);
CREATE INDEX IF NOT EXISTS search_uri_value ON search_uri(param, value, rid);

-- Composite components (and identifier :of-type): one row per component value, the components
-- of one element sharing grp. Its columns are the union of the kind tables' columns, so the
-- predicates on s.code, s.value, s.low… written for those tables apply here unchanged.
CREATE TABLE IF NOT EXISTS search_composite (
  ${FK}, param TEXT NOT NULL, grp INTEGER NOT NULL,
  norm TEXT, exact TEXT, system TEXT, code TEXT, text TEXT, low INTEGER, high INTEGER,
  target_type TEXT, target_id TEXT, url TEXT, value, unit TEXT);
CREATE INDEX IF NOT EXISTS search_composite_rid ON search_composite(rid, param, grp);
CREATE INDEX IF NOT EXISTS search_composite_code ON search_composite(param, code, system, rid, grp);
CREATE INDEX IF NOT EXISTS search_composite_value ON search_composite(param, value, rid, grp);

CREATE INDEX IF NOT EXISTS search_resources_updated ON resources(type, last_updated);
-- A type's resources in rid (creation) order: the default-order walk (see planWalk). Not (type, deleted):
-- without statistics SQLite would prefer it to the (type, id) index for type = ? AND id IN (…) AND deleted = 0.
CREATE INDEX IF NOT EXISTS search_resources_type ON resources(type);
`;

const TABLES: readonly string[] = [...KINDS, 'composite'];

const INSERT_SQL: Record<SearchRow['kind'], string> = {
  string: 'INSERT INTO search_string (rid, param, norm, exact) VALUES (?, ?, ?, ?)',
  token: 'INSERT INTO search_token (rid, param, system, code, text) VALUES (?, ?, ?, ?, ?)',
  date: 'INSERT INTO search_date (rid, param, low, high) VALUES (?, ?, ?, ?)',
  reference: 'INSERT INTO search_reference (rid, param, target_type, target_id, url) VALUES (?, ?, ?, ?, ?)',
  number: 'INSERT INTO search_number (rid, param, value) VALUES (?, ?, ?)',
  quantity: 'INSERT INTO search_quantity (rid, param, value, system, code, unit) VALUES (?, ?, ?, ?, ?, ?)',
  uri: 'INSERT INTO search_uri (rid, param, value) VALUES (?, ?, ?)',
  composite:
    'INSERT INTO search_composite (rid, param, grp, norm, exact, system, code, text, low, high, target_type, target_id, url, value, unit) ' +
    'VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
};

/** One search hit: the resources row of the current version. */
export interface SearchHit {
  readonly rid: number;
  readonly type: string;
  readonly id: string;
  readonly version: number;
  readonly cid: string | null;
  readonly lastUpdated: number;
  /** The hit's sort key: its sort values, then type and id (an `IndexKeyset.key`). */
  readonly key: SortValue[];
}

/**
 * Which plan serves a page: `auto` chooses (`SearchSql.search`); `filter` and `walk` force one
 * (tests compare them: both must give the same order).
 */
export type SearchPlan = 'auto' | 'filter' | 'walk';

/**
 * Most driver candidates the filter plan reads and sorts for one page; from this many on, an
 * ordered walk serves it. A filter-plan page then costs at most this many rows, and a walk's page
 * at least this many candidates to draw from.
 */
export const PAGE_PLAN_LIMIT = 2000;

/**
 * What differs between the SQL the planner writes for SQLite and for PostgreSQL
 * (src/storage/postgres/pg-index.ts runs the same plans there). SQLite has no statistics, so the
 * plans carry its access paths (`INDEXED BY`, unary `+` to keep a column off an index, `CROSS JOIN`
 * to fix the join order); PostgreSQL's planner chooses with statistics and gets none of them.
 */
export interface SqlDialect {
  /** The n-th (1-based) bound parameter. */
  placeholder(n: number): string;
  /** ` INDEXED BY <index>`, or nothing. */
  indexedBy(index: string): string;
  /** Prefix that keeps a column's index out of a predicate or an ORDER BY ('+'), or nothing. */
  readonly hint: '' | '+';
  /** A join whose left side is read first. */
  readonly orderedJoin: string;
  /** Null-safe equality. */
  readonly isNotDistinct: string;
  /** A physical row id, for ties between rows of one table. */
  readonly rowid: string;
  readonly true: string;
  readonly false: string;
  /** The highest code point as a one-character string (prefix ranges: `x < p || it`). */
  readonly maxCharacter: string;
  /**
   * Ends a per-candidate probe (`EXISTS (… <fence>)`) so that it stays a probe of each candidate
   * rather than being rewritten into a join: PostgreSQL's ` OFFSET 0`. The probes then cost what
   * they cost on SQLite (an index lookup per candidate of a page), a search of many AND-ed
   * parameters plans in linear time (joins are planned in far worse than linear), and a plan does
   * not depend on statistics that lag behind a fresh load.
   */
  readonly fence: string;
  /** A string as the engine can store and compare it (PostgreSQL's text cannot hold U+0000). */
  text(value: string): string;
  /** A bound JSON array as the table `j` with a column `value`: its strings (`text`), or its elements as JSON. */
  jsonRows(bound: string, text: boolean): string;
}

export const SQLITE: SqlDialect = {
  placeholder: () => '?',
  indexedBy: (index) => ` INDEXED BY ${index}`,
  hint: '+',
  orderedJoin: 'CROSS JOIN',
  isNotDistinct: 'IS',
  rowid: 'rowid',
  true: '1',
  false: '0',
  maxCharacter: `char(${0x10ffff})`,
  fence: '',
  text: (value) => value,
  jsonRows: (bound) => `json_each(${bound}) j`,
};

/** A planned statement: SQL text plus its bound values, in order. */
export interface PlannedSql {
  readonly sql: string;
  readonly params: SQLInputValue[];
}

const STATEMENT_CACHE_SIZE = 256;

/**
 * The search index over one open database, with prepared statements cached per SQL text.
 * Call `insertRows`/`deleteRows` inside the caller's write transaction.
 */
export class SearchSql {
  readonly #db: DatabaseSync;
  readonly #statements = new Map<string, StatementSync>();

  constructor(db: DatabaseSync) {
    this.#db = db;
  }

  /** Create the search tables and indexes (idempotent). */
  migrate(): void {
    this.#db.exec(SEARCH_DDL);
  }

  /** Insert the search rows of a resource's current version. */
  insertRows(rid: number, rows: readonly SearchRow[]): void {
    for (const row of rows) this.#statement(INSERT_SQL[row.kind]).run(...insertValues(rid, row));
    // A span row per date parameter with several values (see SEARCH_DDL and dateRangeDriver).
    const spans = new Map<string, { low: number; high: number; n: number }>();
    for (const row of rows) {
      if (row.kind !== 'date') continue;
      const span = spans.get(row.param);
      if (span) spans.set(row.param, { low: Math.min(span.low, row.low), high: Math.max(span.high, row.high), n: span.n + 1 });
      else spans.set(row.param, { low: row.low, high: row.high, n: 1 });
    }
    for (const [param, span] of spans) {
      if (span.n > 1) this.#statement(INSERT_SQL.date).run(rid, `${param}${SPAN_SUFFIX}`, span.low, span.high);
    }
  }

  /** Delete every search row of `rid` (before re-indexing an update, or on delete). */
  deleteRows(rid: number): void {
    for (const table of TABLES) this.#statement(`DELETE FROM search_${table} WHERE rid = ?`).run(rid);
  }

  /**
   * Run a search: one page of hits in the planned order. A search beyond SQLite's limits on one
   * statement raises VLM_INDEX_QUERY_TOO_COMPLEX ('invalid'); other errors propagate unchanged.
   */
  search(q: IndexQuery, plan: SearchPlan = 'auto'): SearchHit[] {
    try {
      if (q.count <= 0) return [];
      const page = planPage(q, plan);
      const walk = page.probe === undefined ? page.walk : this.#count(page.probe) >= PAGE_PLAN_LIMIT ? page.walk : undefined;
      const hits = walk !== undefined ? this.#walk(q, walk) : this.#rows(planSearch(q), q);
      return q.keyset?.direction === 'before' ? hits.reverse() : hits;
    } catch (err) {
      throw queryLimitError(err) ?? err;
    }
  }

  #count(planned: PlannedSql): number {
    return Number(this.#statement(planned.sql).get(...planned.params)?.['n'] ?? 0);
  }

  /** Read a walk's segments in turn (reversed for `before`) until the page is full. */
  #walk(q: IndexQuery, segments: PlannedSql[]): SearchHit[] {
    const hits: SearchHit[] = [];
    for (const segment of walkOrder(q, segments)) {
      const wanted = q.count - hits.length;
      if (wanted <= 0) break;
      hits.push(...this.#rows(withLimit(segment, wanted), q));
    }
    return hits;
  }

  #rows(planned: PlannedSql, q: IndexQuery): SearchHit[] {
    return this.#statement(planned.sql).all(...planned.params).map((row) => toHit(row, q.sort.length));
  }

  /**
   * Count all matches of a search, ignoring sort and paging (errors as `search`); with `limit`,
   * at most that many are read and more than `limit` matches give undefined.
   */
  count(q: IndexQuery): number;
  count(q: IndexQuery, limit: number | undefined): number | undefined;
  count(q: IndexQuery, limit?: number): number | undefined {
    try {
      const { sql, params } = planCount(q, limit === undefined ? undefined : limit + 1);
      const n = Number(this.#statement(sql).get(...params)?.['n'] ?? 0);
      return limit !== undefined && n > limit ? undefined : n;
    } catch (err) {
      throw queryLimitError(err) ?? err;
    }
  }

  #statement(sql: string): StatementSync {
    let stmt = this.#statements.get(sql);
    if (stmt !== undefined) {
      // Refresh recency: Map iteration order is insertion order, so re-insert.
      this.#statements.delete(sql);
      this.#statements.set(sql, stmt);
      return stmt;
    }
    stmt = this.#db.prepare(sql);
    this.#statements.set(sql, stmt);
    if (this.#statements.size > STATEMENT_CACHE_SIZE) {
      const oldest = this.#statements.keys().next().value;
      if (oldest !== undefined) this.#statements.delete(oldest);
    }
    return stmt;
  }
}

/**
 * How a page is read: an ordered walk (`planWalk`), the filter plan (`planSearch`, when `walk` is
 * absent), or — when `probe` is given — the walk if the probe counts PAGE_PLAN_LIMIT candidates or
 * more, else the filter plan. The default order from an equality driver's index never costs more
 * than filtering and sorting the same candidates; otherwise the driver's candidates are counted up
 * to PAGE_PLAN_LIMIT: fewer, and the filter plan sorts them (bounded work, and no walk over a sparse
 * order); as many, and the walk's page is cheaper.
 */
export function planPage(q: IndexQuery, plan: SearchPlan, d: SqlDialect = SQLITE): { walk?: PlannedSql[]; probe?: PlannedSql } {
  const walk = plan === 'filter' ? undefined : planWalk(q, d);
  if (walk === undefined) return {};
  if (plan === 'walk' || (q.sort.length === 0 && q.resourceType !== null && orderedDriver(q) !== undefined)) return { walk };
  // Few candidates by construction: ids (the `(type, id)` index seeks each), and linked searches
  // (chains, `_has`, reverse includes), which drive from their nested search's few results —
  // counting those would run the nested search twice.
  if (hasIdClause(q.where)) return {};
  const driver = chooseDriver(q.where);
  if (driver >= 0 && q.where[driver]!.anyOf.some(isLinkedCondition)) return {};
  const probe = planDriverCount(q, PAGE_PLAN_LIMIT, d);
  return probe === undefined ? { walk } : { walk, probe };
}

/** A walk's segments in reading order: reversed for a page `before` a position. */
export function walkOrder(q: IndexQuery, segments: readonly PlannedSql[]): readonly PlannedSql[] {
  return q.keyset?.direction === 'before' ? [...segments].reverse() : segments;
}

/** A walk segment with its LIMIT (its last bound value) set to `limit`. */
export function withLimit(segment: PlannedSql, limit: number): PlannedSql {
  return { sql: segment.sql, params: [...segment.params.slice(0, -1), limit] };
}

/** SQLITE_ERROR and SQLITE_TOOBIG (primary result codes; node:sqlite reports them as `errcode`). */
const SQLITE_ERROR = 1;
const SQLITE_TOOBIG = 18;

/**
 * SQLite's messages for a statement beyond its compile-time limits (https://sqlite.org/limits.html):
 * expression depth, compound SELECT terms, bound variables, parser stack, function arguments,
 * LIKE pattern length, joined tables, statement or value size. The same result code (SQLITE_ERROR)
 * also reports genuine faults ("no such table", "no such column"), so both must match.
 */
const LIMIT_MESSAGE =
  /^(?:Expression tree is too large|too many terms in compound SELECT|too many SQL variables|parser stack overflow|too many arguments on function|LIKE or GLOB pattern too complex|at most \d+ tables in a join|too many FROM clause terms|too many references to|string or blob too big)/;

/**
 * The storage error for a SQLite error raised because one search statement exceeds SQLite's limits:
 * VLM_INDEX_QUERY_TOO_COMPLEX, category 'invalid' (the request, not the server, is at fault).
 * Undefined for anything else (a closed, busy or corrupt database, a schema fault), which keeps
 * its own handling.
 */
export function queryLimitError(err: unknown): StorageError | undefined {
  if (!(err instanceof Error)) return undefined;
  const { code, errcode } = err as { code?: unknown; errcode?: unknown };
  if (code !== 'ERR_SQLITE_ERROR' || typeof errcode !== 'number') return undefined;
  const primary = errcode & 0xff;
  if (primary !== SQLITE_ERROR && primary !== SQLITE_TOOBIG) return undefined;
  if (!LIMIT_MESSAGE.test(err.message)) return undefined;
  return storageError(
    'VLM_INDEX_QUERY_TOO_COMPLEX',
    'invalid',
    'The search is too complex for the index: use fewer parameters or values',
    err,
  );
}

/** Insert the search rows of `rid` (prepares statements each call; prefer `SearchSql` on hot paths). */
export function insertSearchRows(db: DatabaseSync, rid: number, rows: readonly SearchRow[]): void {
  new SearchSql(db).insertRows(rid, rows);
}

/** Delete every search row of `rid` (prepares statements each call; prefer `SearchSql` on hot paths). */
export function deleteSearchRows(db: DatabaseSync, rid: number): void {
  new SearchSql(db).deleteRows(rid);
}

/** A search row's column values in its table's column order (INSERT_SQL). */
export function insertValues(rid: number, row: SearchRow): SQLInputValue[] {
  switch (row.kind) {
    case 'string':
      return [rid, row.param, row.norm, row.exact];
    case 'token':
      return [rid, row.param, row.system, row.code, row.text];
    case 'date':
      return [rid, row.param, row.low, row.high];
    case 'reference':
      return [rid, row.param, row.targetType, row.targetId, row.url];
    case 'number':
      return [rid, row.param, row.value];
    case 'quantity':
      return [rid, row.param, row.value, row.system, row.code, row.unit];
    case 'uri':
      return [rid, row.param, row.value];
    case 'composite':
      return [rid, row.part.param, row.group, ...compositeColumns(row.part)];
  }
}

/** A component's values in search_composite's columns (norm … unit). */
export function compositeColumns(p: BasicRow): SQLInputValue[] {
  const c: Record<string, SQLInputValue> = {};
  switch (p.kind) {
    case 'string':
      Object.assign(c, { norm: p.norm, exact: p.exact });
      break;
    case 'token':
      Object.assign(c, { system: p.system, code: p.code, text: p.text });
      break;
    case 'date':
      Object.assign(c, { low: p.low, high: p.high });
      break;
    case 'reference':
      Object.assign(c, { target_type: p.targetType, target_id: p.targetId, url: p.url });
      break;
    case 'number':
    case 'uri':
      c['value'] = p.value;
      break;
    case 'quantity':
      Object.assign(c, { value: p.value, system: p.system, code: p.code, unit: p.unit });
      break;
  }
  return COMPOSITE_COLUMNS.map((name) => c[name] ?? null);
}

const COMPOSITE_COLUMNS = ['norm', 'exact', 'system', 'code', 'text', 'low', 'high', 'target_type', 'target_id', 'url', 'value', 'unit'];

export function toHit(row: Record<string, unknown>, sortKeys: number): SearchHit {
  const key: SortValue[] = [];
  for (let i = 0; i < sortKeys; i++) {
    const v = row[`k${i}`];
    key.push(v === null || v === undefined ? null : typeof v === 'bigint' ? Number(v) : (v as string | number));
  }
  key.push(String(row['type']), String(row['id']));
  return {
    key,
    rid: Number(row['rid']),
    type: String(row['type']),
    id: String(row['id']),
    version: Number(row['version']),
    cid: row['cid'] === null || row['cid'] === undefined ? null : String(row['cid']),
    lastUpdated: Number(row['last_updated']),
  };
}

/**
 * Plan one page of a search from its filter ("filter plan"):
 *   SELECT rid, type, id, version, cid, last_updated, k0, k1, … FROM (
 *     SELECT r.…, <sort key 0> AS k0, … FROM resources r WHERE <filter>)
 *   WHERE <keyset position> ORDER BY k0, k1, …, rid LIMIT ? OFFSET ?
 * Every match is read and ordered before the page is cut, so this plan costs the matches: the
 * planner uses it when they are few (`SearchSql.search`, PAGE_PLAN_LIMIT) and the ordered walks of
 * `planWalk` otherwise.
 * The sort keys are columns so that each hit carries its key (`SearchHit.key`, the cursor of
 * keyset paging) and the keyset predicate compares plain values.
 *
 * Order: the sort keys, then `rid` — the resource's row, assigned at creation and kept by its
 * updates, so the default order is creation order, deterministic and unaffected by updates.
 *
 * Keyset (`q.keyset`): `after` keeps the rows strictly after the key in the order — for each key
 * `gt(k0) OR (k0 = c0 AND (gt(k1) OR (k1 = c1 AND … rid > rid(type, id))))`, where `gt` respects
 * the key's direction and NULLS LAST; `before` keeps the rows strictly before it and reads them in
 * the reversed order (so LIMIT takes the nearest ones), reversed back to the query's order by
 * `SearchSql.search`.
 */
export function planSearch(q: IndexQuery, d: SqlDialect = SQLITE): PlannedSql {
  const b = new Binder(q.linkScopes, d);
  const keys = q.sort.map((s) => sortKey(s, b));
  const where = whereSql(q, b);
  const columns = keys.map((k, i) => `${k.expr} AS k${i}`);
  const inner = `SELECT r.rid, r.type, r.id, r.version, r.cid, r.last_updated${columns.map((c) => `, ${c}`).join('')} FROM resources r WHERE ${where}`;
  const reverse = q.keyset?.direction === 'before';
  const names = keys.map((_, i) => `k${i}`);
  // With a driving clause, `+rid` keeps SQLite from walking the rowid in order (every resource,
  // probing the driver for each) instead of reading the driver's few rows and sorting them.
  const rid = chooseDriver(q.where) >= 0 || dateRangeGroup(q.where) !== undefined || hasIdClause(q.where) ? `${d.hint}rid` : 'rid';
  const position = q.keyset?.key ? keysetSql(keys, names, rid, q.keyset.key, q.keyset.direction, q.keyset.inclusive === true, b) : undefined;
  const order = orderSql(keys, names, rid, reverse);
  const outerColumns = ['rid', 'type', 'id', 'version', 'cid', 'last_updated', ...names].join(', ');
  const sql =
    `SELECT ${outerColumns} FROM (${inner}) AS q${position ? ` WHERE ${position}` : ''} ` +
    `ORDER BY ${order} LIMIT ${b.bind(q.count)} OFFSET ${b.bind(q.offset)}`;
  return { sql, params: b.params };
}

/** `ORDER BY` terms: each key in its direction with NULLS LAST, then the rid tiebreak (all reversed for `before`). */
function orderSql(keys: readonly SortKey[], names: readonly string[], rid: string, reverse: boolean): string {
  return [
    ...keys.map((k, i) => `${names[i]} ${(k.descending !== reverse) ? 'DESC' : 'ASC'} NULLS ${reverse ? 'FIRST' : 'LAST'}`),
    `${rid} ${reverse ? 'DESC' : 'ASC'}`,
  ].join(', ');
}

/**
 * Ordered walks: plans whose cost is the page, not the matches. Each reads an index already in
 * the search's order and probes every clause per candidate, so LIMIT stops the walk after the
 * page (and the rows it skips). Undefined when the order cannot be read from an index (a sort on
 * a reference, or `_offset`): the filter plan then serves.
 *
 * - Default order, one equality driver (`code=system|code`, `subject=Patient/1`, `url=…`): the
 *   driver's `(param, value…, rid)` index is already in rid order — walked, the resources looked
 *   up by rid, the other clauses probed.
 * - Default order otherwise: the type's live resources in rid order (`search_resources_type`).
 * - First sort key on an indexed value (string, token, date, number, quantity, uri): that
 *   parameter's value index walked in the key's direction, one row per resource (its lowest value
 *   ascending, highest descending, as the filter plan sorts), then — NULLS LAST — the resources
 *   without a value in rid order: two segments, read in turn (`SearchSql.search`).
 * - `_id` and `_lastUpdated` first: the `(type, id)` and `(type, last_updated)` indexes.
 * Further sort keys order the ties of the first (SQLite sorts each run of equal first keys).
 */
export function planWalk(q: IndexQuery, d: SqlDialect = SQLITE): PlannedSql[] | undefined {
  if (q.offset > 0) return undefined;
  const first = q.sort[0];
  if (first === undefined) return [q.resourceType !== null && orderedDriver(q) !== undefined ? walkDriver(q, d) : walkType(q, d)];
  if (first.of === 'reference') return undefined;
  if (first.of === 'id' || first.of === 'lastUpdated') {
    if (q.resourceType === null) return undefined;
    return [walkResources(q, first.of === 'id' ? 'r.id' : 'r.last_updated', d)];
  }
  return walkValues(q, first.of, first.param, d);
}

/** A clause of ids only (`_id=a,b`): the `(type, id)` index finds its few matches directly. */
function hasIdClause(where: readonly IndexClause[]): boolean {
  return where.some((c) => !c.negate && c.anyOf.length > 0 && c.anyOf.every((x) => x.kind === 'id'));
}

/** The clause a default-order walk can drive from in rid order: one equality on a whole index prefix. */
function orderedDriver(q: IndexQuery): { index: number; table: SearchKind; param: string; match: (b: Binder) => string } | undefined {
  const index = chooseDriver(q.where);
  if (index < 0) return undefined;
  const clause = q.where[index]!;
  if (clause.negate || clause.anyOf.length !== 1) return undefined;
  const c = clause.anyOf[0]!;
  switch (c.kind) {
    case 'token':
      if (c.text !== undefined || c.code === undefined || c.system === undefined) return undefined;
      return {
        index,
        table: 'token',
        param: c.param,
        match: (b) => `s.code = ${b.bind(c.code!)} AND ${c.system === null ? 's.system IS NULL' : `s.system = ${b.bind(c.system!)}`}`,
      };
    case 'reference':
      if ('url' in c) return { index, table: 'reference', param: c.param, match: (b) => `s.url = ${b.bind(c.url)}` };
      if (c.types.length !== 1) return undefined;
      return { index, table: 'reference', param: c.param, match: (b) => `s.target_id = ${b.bind(c.id)} AND s.target_type = ${b.bind(c.types[0]!)}` };
    case 'uri':
      return c.op === 'eq' ? { index, table: 'uri', param: c.param, match: (b) => `s.value = ${b.bind(c.value)}` } : undefined;
    default:
      return undefined;
  }
}

/** Value index each kind's equality driver reads (its rows for one value are in rid order). */
const VALUE_INDEX: Record<'token' | 'reference' | 'uri', string> = {
  token: 'search_token_value',
  reference: 'search_reference_target',
  uri: 'search_uri_value',
};

const HIT_COLUMNS = 'r.rid, r.type, r.id, r.version, r.cid, r.last_updated';

/** Default order from an equality driver's index; a resource with the value twice is read once (its first row). */
function walkDriver(q: IndexQuery, d: SqlDialect): PlannedSql {
  const b = new Binder(q.linkScopes, d);
  const driver = orderedDriver(q)!;
  const table = driver.table as 'token' | 'reference' | 'uri';
  const index = 'url' in (q.where[driver.index]!.anyOf[0] as object) ? 'search_reference_url' : VALUE_INDEX[table];
  const reverse = q.keyset?.direction === 'before';
  const parts = [`s.param = ${b.bind(driver.param)}`, driver.match(b)];
  parts.push(
    `NOT EXISTS (SELECT 1 FROM search_${table} x${d.indexedBy(`search_${table}_rid`)} WHERE x.rid = s.rid AND x.param = s.param AND ${sameRow(table, d)} AND x.${d.rowid} < s.${d.rowid})`,
  );
  parts.push('r.deleted = 0', `r.type = ${b.bind(q.resourceType!)}`);
  q.where.forEach((clause, i) => {
    if (i !== driver.index) parts.push(clauseSql(clause, false, b));
  });
  if (q.keyset?.key) parts.push(keysetSql([], [], 's.rid', q.keyset.key, q.keyset.direction, q.keyset.inclusive === true, b));
  const sql =
    `SELECT ${HIT_COLUMNS} FROM search_${table} s${d.indexedBy(index)} ${d.orderedJoin} resources r ON r.rid = s.rid ` +
    `WHERE ${nest(parts, 'AND')} ORDER BY s.rid ${reverse ? 'DESC' : 'ASC'} LIMIT ${b.bind(q.count)}`;
  return { sql, params: b.params };
}

/** Two rows of one resource carrying the same value of the driving parameter. */
function sameRow(table: 'token' | 'reference' | 'uri', d: SqlDialect): string {
  const is = d.isNotDistinct;
  switch (table) {
    case 'token':
      return `x.code ${is} s.code AND x.system ${is} s.system`;
    case 'reference':
      return `x.target_id ${is} s.target_id AND x.target_type ${is} s.target_type AND x.url ${is} s.url`;
    case 'uri':
      return `x.value ${is} s.value`;
  }
}

/** Default order over the type's live resources (or every resource at system level), in rid order. */
function walkType(q: IndexQuery, d: SqlDialect): PlannedSql {
  const b = new Binder(q.linkScopes, d);
  const reverse = q.keyset?.direction === 'before';
  const parts = ['r.deleted = 0'];
  if (q.resourceType !== null) parts.push(`r.type = ${b.bind(q.resourceType)}`);
  q.where.forEach((clause) => parts.push(clauseSql(clause, false, b)));
  if (q.keyset?.key) parts.push(keysetSql([], [], 'r.rid', q.keyset.key, q.keyset.direction, q.keyset.inclusive === true, b));
  const from = q.resourceType !== null ? `resources r${d.indexedBy('search_resources_type')}` : 'resources r';
  const sql = `SELECT ${HIT_COLUMNS} FROM ${from} WHERE ${nest(parts, 'AND')} ORDER BY r.rid ${reverse ? 'DESC' : 'ASC'} LIMIT ${b.bind(q.count)}`;
  return { sql, params: b.params };
}

/** First sort key `_id` or `_lastUpdated`: the `(type, id)` or `(type, last_updated)` index, in order. */
function walkResources(q: IndexQuery, column: 'r.id' | 'r.last_updated', d: SqlDialect): PlannedSql {
  const b = new Binder(q.linkScopes, d);
  const keys = q.sort.map((s, i) => (i === 0 ? { expr: column, descending: s.descending, nullable: false } : sortKey(s, b)));
  return walkSegment(q, keys, 'resources r', ['r.deleted = 0', `r.type = ${b.bind(q.resourceType!)}`], b);
}

/**
 * One segment of an ordered walk: `SELECT … FROM <from> WHERE <parts> AND <every clause> AND
 * <position> ORDER BY k0, …, rid LIMIT ?`, the keys as columns of the walk itself (so the first
 * key's index supplies the order) — written with their expressions where SQL needs them.
 */
function walkSegment(q: IndexQuery, keys: readonly SortKey[], from: string, parts: string[], b: Binder): PlannedSql {
  const reverse = q.keyset?.direction === 'before';
  // The first key is a plain column (its index gives the order); later ones are subqueries, named by alias.
  const names = keys.map((k, i) => (i === 0 ? k.expr : `k${i}`));
  q.where.forEach((clause) => parts.push(clauseSql(clause, false, b)));
  if (q.keyset?.key) parts.push(keysetSql(keys, names, 'r.rid', q.keyset.key, q.keyset.direction, q.keyset.inclusive === true, b));
  const columns = keys.map((k, i) => `, ${k.expr} AS k${i}`).join('');
  const sql =
    `SELECT ${HIT_COLUMNS}${columns} FROM ${from} WHERE ${nest(parts, 'AND')} ` +
    `ORDER BY ${orderSql(keys, keys.map((_, i) => `k${i}`), 'r.rid', reverse)} LIMIT ${b.bind(q.count)}`;
  return { sql, params: b.params };
}

/** Value index walked for a first sort key, and the value column of its direction. */
const SORT_INDEX: Record<Exclude<SearchKind, 'reference'>, (descending: boolean) => { index: string; column: string }> = {
  string: () => ({ index: 'search_string_value', column: 's.norm' }),
  token: () => ({ index: 'search_token_value', column: 's.code' }),
  date: (descending) => (descending ? { index: 'search_date_high', column: 's.high' } : { index: 'search_date_low', column: 's.low' }),
  number: () => ({ index: 'search_number_value', column: 's.value' }),
  quantity: () => ({ index: 'search_quantity_value', column: 's.value' }),
  uri: () => ({ index: 'search_uri_value', column: 's.value' }),
};

/**
 * First sort key on an indexed value: (1) resources with a value, one row each — the row holding
 * their lowest value ascending, highest descending (ties between equal rows by rowid) — in the
 * value index's order; (2) resources without one (NULLS LAST), in rid order.
 */
function walkValues(q: IndexQuery, kind: Exclude<SearchKind, 'reference'>, param: string, d: SqlDialect): PlannedSql[] {
  const first = q.sort[0]!;
  const { index, column } = SORT_INDEX[kind](first.descending);
  const x = column.replace('s.', 'x.');
  const better = first.descending ? '>' : '<';
  const withValue = (() => {
    const b = new Binder(q.linkScopes, d);
    const keys = q.sort.map((s, i) => (i === 0 ? { expr: column, descending: s.descending, nullable: false } : sortKey(s, b)));
    const parts = [
      `s.param = ${b.bind(param)}`,
      `NOT EXISTS (SELECT 1 FROM search_${kind} x${d.indexedBy(`search_${kind}_rid`)} WHERE x.rid = s.rid AND x.param = s.param ` +
        `AND (${x} ${better} ${column} OR (${x} = ${column} AND x.${d.rowid} < s.${d.rowid})))`,
      'r.deleted = 0',
    ];
    if (q.resourceType !== null) parts.push(`r.type = ${b.bind(q.resourceType)}`);
    return walkSegment(q, keys, `search_${kind} s${d.indexedBy(index)} ${d.orderedJoin} resources r ON r.rid = s.rid`, parts, b);
  })();
  const withoutValue = (() => {
    const b = new Binder(q.linkScopes, d);
    const keys = q.sort.map((s, i) => (i === 0 ? { expr: 'NULL', descending: s.descending, nullable: true } : sortKey(s, b)));
    const parts = ['r.deleted = 0'];
    if (q.resourceType !== null) parts.push(`r.type = ${b.bind(q.resourceType)}`);
    parts.push(`NOT EXISTS (SELECT 1 FROM ${perResource(kind, b)} WHERE s.rid = r.rid AND s.param = ${b.bind(param)})`);
    return walkSegment(q, keys, q.resourceType !== null ? `resources r${d.indexedBy('search_resources_type')}` : 'resources r', parts, b);
  })();
  return [withValue, withoutValue];
}

/**
 * The driving clause's candidates, counted up to `limit` (`SELECT COUNT(*) FROM (<driver> LIMIT ?)`):
 * how the planner tells few matches (filter plan) from many (ordered walk) without statistics.
 * Undefined when the search has no driving clause.
 */
export function planDriverCount(q: IndexQuery, limit: number, d: SqlDialect = SQLITE): PlannedSql | undefined {
  const b = new Binder(q.linkScopes, d);
  const driver = driverSql(q, b);
  if (driver === undefined) return undefined;
  // The driver's index rows alone (no lookup of each resource): a parameter shared by several types
  // may count a few of another type, which only tips a borderline search to the walk.
  return { sql: `SELECT COUNT(*) AS n FROM (${driver} LIMIT ${b.bind(limit)}) AS q`, params: b.params };
}

/** A sort key of the page query: its SQL value, its direction, and whether it can be NULL. */
interface SortKey {
  readonly expr: string;
  readonly descending: boolean;
  readonly nullable: boolean;
}

/**
 * The rows strictly after (or before) `key` in the order of `keys` then the rid tiebreak;
 * `inclusive` admits the row at `key` too. `key` holds one value per sort key, then type and id
 * (the rid tiebreak is read from them: resources rows are never removed). `columns` name each
 * key's value and `rid` the row's rid in the SQL the predicate joins. A key of the wrong shape is
 * refused (the cursor layer checks it first; this guards the SQL).
 */
function keysetSql(
  keys: readonly SortKey[],
  columns: readonly string[],
  rid: string,
  key: readonly unknown[],
  direction: 'after' | 'before',
  inclusive: boolean,
  b: Binder,
): string {
  if (key.length !== keys.length + 2 || typeof key[keys.length] !== 'string' || typeof key[keys.length + 1] !== 'string') {
    throw storageError('VLM_INDEX_BAD_KEYSET', 'invalid', 'The page position does not fit the search order');
  }
  const after = direction === 'after';
  // Values are bound in text order: each level's comparisons, then the levels inside it.
  const op = `${after ? '>' : '<'}${inclusive ? '=' : ''}`;
  const tail = () =>
    `${rid} ${op} (SELECT kr.rid FROM resources kr WHERE kr.type = ${b.bind(key[keys.length] as string)} AND kr.id = ${b.bind(key[keys.length + 1] as string)})`;
  const parts = keys.map((k, i) => {
    const value = key[i];
    if (value !== null && typeof value !== 'string' && typeof value !== 'number') {
      throw storageError('VLM_INDEX_BAD_KEYSET', 'invalid', 'The page position does not fit the search order');
    }
    return { column: columns[i]!, k, value };
  });
  const render = (i: number): string => {
    if (i === parts.length) return tail();
    const { column, k, value } = parts[i]!;
    if (value === null) {
      // NULLs sort last in both directions: after NULL only NULLs (ties) follow; before it, every value.
      const beyond = after ? b.dialect.false : `${column} IS NOT NULL`;
      return `(${beyond} OR (${column} IS NULL AND ${render(i + 1)}))`;
    }
    const op = (k.descending !== !after) ? '<' : '>';
    const beyondValue = `${column} ${op} ${b.bind(value)}`;
    const beyond = after && k.nullable ? `(${beyondValue} OR ${column} IS NULL)` : beyondValue;
    const tie = `${column} = ${b.bind(value)}`;
    return `(${beyond} OR (${tie} AND ${render(i + 1)}))`;
  };
  return render(0);
}

/** Plan the total of a search: `SELECT COUNT(*) AS n …` over the same filter (ignores sort and paging). */
export function planCount(q: IndexQuery, limit?: number, d: SqlDialect = SQLITE): PlannedSql {
  const b = new Binder(q.linkScopes, d);
  const sql =
    limit === undefined
      ? `SELECT COUNT(*) AS n FROM resources r WHERE ${whereSql(q, b)}`
      : `SELECT COUNT(*) AS n FROM (SELECT 1 FROM resources r WHERE ${whereSql(q, b)} LIMIT ${b.bind(limit)}) AS q`;
  return { sql, params: b.params };
}

/**
 * Collects bound values in the order their `?` placeholders appear; carries the query's
 * `linkScopes` down to every nested search.
 */
class Binder {
  readonly params: SQLInputValue[] = [];
  readonly linkScopes: Readonly<Record<string, KeyScopeFilter>> | undefined;
  readonly dialect: SqlDialect;
  constructor(linkScopes: Readonly<Record<string, KeyScopeFilter>> | undefined, dialect: SqlDialect) {
    this.linkScopes = linkScopes;
    this.dialect = dialect;
  }
  bind(value: SQLInputValue): string {
    return this.bindRaw(typeof value === 'string' ? this.dialect.text(value) : value);
  }
  /** Bind a value as it is (a JSON list whose strings `bindJson` already passed through `text`). */
  bindRaw(value: SQLInputValue): string {
    this.params.push(value);
    return this.dialect.placeholder(this.params.length);
  }
}

/**
 * The filter of a nested search (a chain's targets, a `_has`'s sources): its own clauses, and,
 * when the query constrains its type (`IndexQuery.linkScopes`), the key scope of the resource's
 * current version — read through the `versions (type, id, version)` unique index, the scopes
 * bound as one JSON list (any length is one parameter: no chunking needed).
 */
function nestedWhereSql(q: SubQuery, b: Binder): string {
  const where = whereSql(q, b);
  const filter = b.linkScopes !== undefined && Object.hasOwn(b.linkScopes, q.resourceType) ? b.linkScopes[q.resourceType] : undefined;
  if (filter === undefined) return where;
  const scope = '(SELECT kv.key_scope FROM versions kv WHERE kv.type = r.type AND kv.id = r.id AND kv.version = r.version)';
  const visible = 'only' in filter ? `${scope} IN ${jsonList(filter.only, b)}` : `${scope} NOT IN ${jsonList(filter.except, b)}`;
  return `(${where}) AND ${visible}`;
}

function whereSql(q: SubQuery | IndexQuery, b: Binder): string {
  const parts = ['r.deleted = 0'];
  let driver = chooseDriver(q.where);
  // A bounded date range drives unless a token, uri or reference lookup looks more selective.
  const range = dateRangeGroup(q.where);
  const byRange = range !== undefined && (driver < 0 || selectivity(q.where[driver]!) < RANGE_RANK);
  if (byRange) driver = -1;
  // With a driving clause, `+` keeps SQLite from walking the (type, id) index and probing the
  // IN list for every resource of the type: rows come from the driver by rowid instead.
  if (q.resourceType !== null) parts.push(`${driver >= 0 || byRange ? b.dialect.hint : ''}r.type = ${b.bind(q.resourceType)}`);
  // The range's clauses still probe each resource: the driver only narrows the candidates.
  if (byRange) parts.push(`r.rid IN (${dateRangeDriver(range, b)})`);
  q.where.forEach((clause, i) => parts.push(clauseSql(clause, i === driver, b)));
  return nest(parts, 'AND');
}

/** The driving clause's SELECT of candidate rids (as `whereSql` chooses it), or undefined without one. */
function driverSql(q: SubQuery | IndexQuery, b: Binder): string | undefined {
  const driver = chooseDriver(q.where);
  const range = dateRangeGroup(q.where);
  if (range !== undefined && (driver < 0 || selectivity(q.where[driver]!) < RANGE_RANK)) return dateRangeDriver(range, b);
  if (driver < 0) return undefined;
  const { anyOf } = q.where[driver]!;
  return unionAll([
    ...rowGroups(anyOf.filter(isRowCondition)).map((g) => g.drive(b)),
    ...anyOf.filter(isLinkedCondition).map((c) => linkedSql(c, b).drive()),
  ]);
}

/** Rank of a bounded date range: above a string prefix or an open date range, below token, uri and reference lookups. */
const RANGE_RANK = 1.5;

/** The conditions of one date parameter, ANDed, and the range of `low` a matching short row lies in. */
interface DateRangeGroup {
  readonly param: string;
  readonly conditions: readonly DateCondition[];
  /** Inclusive bounds of `low` for a row at most SHORT_DATE_MS wide that matches every condition. */
  readonly lower: number;
  readonly upper: number;
}

/**
 * Bounded date ranges (issue 4 B): the AND-ed single-value conditions on one date parameter —
 * `date=ge2020-01-01&date=lt2020-02-01`, an `eq` on a precision range (`date=2020-01`), `ap` —
 * combined into one range of the `(param, low, …)` index with both ends bound. Only a group with
 * a lower and an upper bound qualifies (the first such parameter); otherwise the planner keeps its
 * single-clause driver.
 *
 * Why `low` is bounded on both sides: every condition bounds `low` from above (`lt x`: low < x;
 * `le`/`eq`/`ap` up to the end of the value's range) or bounds `high` from below (`ge`, `gt`, `ap`)
 * or `low` from below (`eq`, `sa`). A row at most a day wide (SHORT_DATE_MS) with high ≥ x has
 * low ≥ x − a day, so the short rows lie in one bounded range of `low`.
 */
function dateRangeGroup(where: readonly IndexClause[]): DateRangeGroup | undefined {
  const byParam = new Map<string, DateCondition[]>();
  for (const clause of where) {
    if (clause.negate || clause.anyOf.length !== 1) continue;
    const c = clause.anyOf[0]!;
    if (c.kind !== 'date') continue;
    const list = byParam.get(c.param);
    if (list) list.push(c);
    else byParam.set(c.param, [c]);
  }
  for (const [param, conditions] of byParam) {
    let lower = -Infinity;
    let upper = Infinity;
    for (const c of conditions) {
      lower = Math.max(lower, lowBound(c));
      upper = Math.min(upper, highBound(c));
    }
    if (Number.isFinite(lower) && Number.isFinite(upper)) return { param, conditions, lower, upper };
  }
  return undefined;
}

/** Least `low` of a short row matching `c` (rangeSql's predicates; times are whole ms). */
function lowBound(c: DateCondition): number {
  switch (c.prefix) {
    case 'eq':
      return c.low;
    case 'sa':
      return c.high + 1;
    case 'ge':
    case 'ap':
      return c.low - SHORT_DATE_MS;
    case 'gt':
      return c.high + 1 - SHORT_DATE_MS;
    default:
      return -Infinity;
  }
}

/** Greatest `low` of any row matching `c`. */
function highBound(c: DateCondition): number {
  switch (c.prefix) {
    case 'eq':
    case 'le':
    case 'ap':
      return c.high;
    case 'lt':
    case 'eb':
      return c.low - 1;
    default:
      return Infinity;
  }
}

/**
 * The candidates of a bounded date range: a superset of the resources matching every condition of
 * the group (the clauses' probes then decide), read in three index ranges:
 * - short rows (at most a day wide) whose `low` is in [lower, upper] and that match every condition
 *   themselves: `search_date_low (param=? AND low>? AND low<?)`, both bounds used;
 * - wide rows (month or year precision, long or open periods) matching every condition, from the
 *   partial index `search_date_wide` (only wide rows), with `low <= upper`;
 * - resources with several values of the parameter, where different values may match different
 *   conditions (AND is per parameter, not per value): their span row `<param>#span` has
 *   low ≤ upper, since its low is the lowest of the values.
 */
function dateRangeDriver(g: DateRangeGroup, b: Binder): string {
  const match = () => g.conditions.map((c) => rangeSql(c.prefix, 's.low', 's.high', c.low, c.high, b)).join(' AND ');
  const short =
    `SELECT s.rid FROM search_date s${b.dialect.indexedBy('search_date_low')} WHERE s.param = ${b.bind(g.param)} ` +
    `AND s.low >= ${b.bind(g.lower)} AND s.low <= ${b.bind(g.upper)} AND s.high - s.low <= ${SHORT_DATE_MS} AND ${match()}`;
  const wide =
    `SELECT s.rid FROM search_date s${b.dialect.indexedBy('search_date_wide')} WHERE s.param = ${b.bind(g.param)} ` +
    `AND s.high - s.low > ${SHORT_DATE_MS} AND s.low <= ${b.bind(g.upper)} AND ${match()}`;
  const spans = `SELECT s.rid FROM search_date s${b.dialect.indexedBy('search_date_low')} WHERE s.param = ${b.bind(`${g.param}${SPAN_SUFFIX}`)} AND s.low <= ${b.bind(g.upper)}`;
  return `${short} UNION ALL ${wide} UNION ALL ${spans}`;
}

/**
 * Longest flat `a AND b AND …` / `a OR b OR …` chain; longer lists nest as a balanced tree. A chain
 * of n terms is an expression n deep and SQLite refuses depth > 1,000 ("Expression tree is too
 * large"); balanced, 1,000 terms are about 16 + log2(1000/16) deep.
 */
const FLAT_TERMS = 16;

/** Join self-contained terms (atoms, or parenthesised) with `op`, as a balanced tree when long. */
function nest(terms: readonly string[], op: 'AND' | 'OR'): string {
  if (terms.length <= FLAT_TERMS) return terms.join(` ${op} `);
  const mid = Math.ceil(terms.length / 2);
  return `(${nest(terms.slice(0, mid), op)}) ${op} (${nest(terms.slice(mid), op)})`;
}

/** OR of predicates that may themselves contain AND, as one self-contained (parenthesised) term. */
function or(terms: readonly string[]): string {
  return terms.length === 1 ? terms[0]! : `(${nest(terms.map((t) => `(${t})`), 'OR')})`;
}

/**
 * Most SELECTs in one compound; longer unions nest (SQLite refuses more than 500 terms: "too many
 * terms in compound SELECT"). A driving clause has a handful of value groups (see `rowGroups`),
 * so this only guards against IndexQuery shapes the FHIR parser does not produce.
 */
const COMPOUND_TERMS = 64;

function unionAll(selects: readonly string[]): string {
  if (selects.length <= COMPOUND_TERMS) return selects.join(' UNION ALL ');
  const chunks: string[] = [];
  for (let i = 0; i < selects.length; i += COMPOUND_TERMS) {
    chunks.push(`SELECT rid FROM (${selects.slice(i, i + COMPOUND_TERMS).join(' UNION ALL ')}) AS u`);
  }
  return unionAll(chunks);
}

/** Rank how selective a clause's index lookup probably is (0 = do not drive from it). */
function selectivity(clause: IndexClause): number {
  if (clause.negate || clause.anyOf.length === 0) return 0;
  let rank = Infinity;
  for (const c of clause.anyOf) rank = Math.min(rank, conditionRank(c));
  return rank;
}

function conditionRank(c: IndexCondition): number {
  switch (c.kind) {
    case 'reference':
      return 3;
    case 'token':
      return c.code !== undefined ? 2 : 0;
    case 'string':
      return c.op === 'contains' ? 0 : 1;
    case 'uri':
      return c.op === 'eq' ? 2 : 1;
    // A date range is a range scan of (param, low, high) or (param, high, low): better than
    // visiting every resource of the type, worse than a token or reference lookup.
    case 'date':
      return c.prefix === 'ne' ? 0 : 1;
    case 'referencedBy':
      return 3;
    // Linked searches drive when their own best clause would: the nested search is run once and
    // its few targets (or sources) are joined through the reference index.
    case 'chain':
      return Math.min(...c.targets.map((t) => subRank(t)));
    case 'has':
      return subRank(c.source);
    case 'composite':
      return c.components.length ? conditionRank(c.components[0]!) : 0;
    default:
      return 0;
  }
}

function subRank(q: SubQuery): number {
  return Math.max(0, ...q.where.map(selectivity));
}

function chooseDriver(clauses: readonly IndexClause[]): number {
  let best = -1;
  let bestRank = 0;
  clauses.forEach((clause, i) => {
    const rank = selectivity(clause);
    if (rank > bestRank) {
      best = i;
      bestRank = rank;
    }
  });
  return best;
}

function clauseSql(clause: IndexClause, driving: boolean, b: Binder): string {
  if (clause.anyOf.length === 0) return clause.negate ? b.dialect.true : b.dialect.false;
  // chooseDriver only picks clauses made of row and linked conditions.
  const sql = driving
    ? `r.rid IN (${unionAll([
        ...rowGroups(clause.anyOf.filter(isRowCondition)).map((g) => g.drive(b)),
        ...clause.anyOf.filter(isLinkedCondition).map((c) => linkedSql(c, b).drive()),
      ])})`
    : anyOfSql(clause.anyOf, b);
  return clause.negate ? `NOT (${sql})` : `(${sql})`;
}

/**
 * Chains, `_has`, composites and `_include` targets, each as a driving SELECT of rids or as a
 * probe of the candidate `r`. Nested searches reuse the aliases `r` and `s`: SQL resolves a name
 * to the innermost query that defines it, so the nested `whereSql` reads its own resources.
 */
function linkedSql(c: LinkedCondition, b: Binder): { drive(): string; probe(): string } {
  switch (c.kind) {
    case 'chain': {
      // (target_id, target_type) of every resource the chain's nested searches select.
      const targets = () => c.targets.map((t) => `SELECT r.id, r.type FROM resources r WHERE ${nestedWhereSql(t, b)}`).join(' UNION ALL ');
      return {
        drive: () => `SELECT s.rid FROM search_reference s WHERE s.param = ${b.bind(c.param)} AND (s.target_id, s.target_type) IN (${targets()})`,
        probe: () =>
          `EXISTS (SELECT 1 FROM ${perResource('reference', b)} WHERE s.rid = r.rid AND s.param = ${b.bind(c.param)} ` +
          `AND (s.target_id, s.target_type) IN (${targets()})${b.dialect.fence})`,
      };
    }
    case 'has': {
      const sources = () => `SELECT r.rid FROM resources r WHERE ${nestedWhereSql(c.source, b)}`;
      return {
        drive: () =>
          `SELECT t.rid FROM search_reference s JOIN resources t ON t.type = s.target_type AND t.id = s.target_id ` +
          `WHERE s.param = ${b.bind(c.param)} AND s.rid IN (${sources()})`,
        probe: () =>
          `EXISTS (SELECT 1 FROM search_reference s${b.dialect.indexedBy('search_reference_target')} WHERE s.param = ${b.bind(c.param)} ` +
          `AND s.target_id = r.id AND s.target_type = r.type AND s.rid IN (${sources()})${b.dialect.fence})`,
      };
    }
    case 'composite': {
      // One SELECT of element groups per component; the groups every component matches (INTERSECT).
      const arms = (columns: string, perRid: boolean) =>
        c.components
          .map((comp) => {
            const groups = groupsOf(comp.kind, comp.param, [comp]);
            const from = perRid ? `search_composite s${b.dialect.indexedBy('search_composite_rid')}` : 'search_composite s';
            const rid = perRid ? 's.rid = r.rid AND ' : '';
            // Bound in text order: the parameter, then the predicate's values.
            const param = b.bind(comp.param);
            const pred = or(groups.map((g) => (perRid ? g.probe(b) : g.match(b))));
            return `SELECT ${columns} FROM ${from} WHERE ${rid}s.param = ${param} AND ${pred}`;
          })
          .join(' INTERSECT ');
      return {
        drive: () => `SELECT rid FROM (${arms('s.rid, s.grp', false)}) AS c`,
        probe: () => `EXISTS (${arms('s.grp', true)})`,
      };
    }
    case 'referencedBy': {
      const sources = () =>
        `SELECT r.rid FROM resources r WHERE r.type = ${b.bind(c.sourceType)} AND r.id IN ${jsonList(c.sourceIds, b)} AND r.deleted = 0`;
      return {
        drive: () =>
          `SELECT t.rid FROM search_reference s JOIN resources t ON t.type = s.target_type AND t.id = s.target_id ` +
          `WHERE s.rid IN (${sources()}) AND s.param IN ${jsonList(c.params, b)}`,
        probe: () =>
          `(r.type, r.id) IN (SELECT s.target_type, s.target_id FROM search_reference s ` +
          `WHERE s.rid IN (${sources()}) AND s.param IN ${jsonList(c.params, b)}${b.dialect.fence})`,
      };
    }
  }
}

/**
 * The OR of a clause's conditions on the candidate `r`: `_id` and `_type` lists as one bound JSON
 * list each, and one probe per (kind, param) of the resource's index rows, testing every value
 * group of that parameter (`rowGroups`) on each row.
 */
function anyOfSql(conditions: readonly IndexCondition[], b: Binder): string {
  const terms: string[] = [];
  const ids = conditions.flatMap((c) => (c.kind === 'id' ? [c.id] : []));
  if (ids.length) terms.push(`r.id IN ${jsonList(ids, b)}`);
  const types = conditions.flatMap((c) => (c.kind === 'type' ? [c.type] : []));
  if (types.length) terms.push(`r.type IN ${jsonList(types, b)}`);
  for (const c of conditions) {
    if (c.kind === 'lastUpdated') terms.push(rangeSql(c.prefix, 'r.last_updated', 'r.last_updated', c.low, c.high, b));
    else if (c.kind === 'missing') {
      const exists = `EXISTS (SELECT 1 FROM ${perResource(c.of, b)} WHERE s.rid = r.rid AND s.param = ${b.bind(c.param)}${b.dialect.fence})`;
      terms.push(c.missing ? `NOT ${exists}` : exists);
    }
  }
  for (const { table, param, groups } of groupByParam(rowGroups(conditions.filter(isRowCondition)))) {
    terms.push(
      `EXISTS (SELECT 1 FROM ${perResource(table, b)} WHERE s.rid = r.rid AND s.param = ${b.bind(param)} AND ${or(groups.map((g) => g.probe(b)))}${b.dialect.fence})`,
    );
  }
  for (const c of conditions.filter(isLinkedCondition)) terms.push(linkedSql(c, b).probe());
  return or(terms);
}

/**
 * A per-resource probe of an index table, pinned to its `(rid, param)` index: without
 * statistics SQLite may otherwise pick the covering value index and scan every row of the
 * parameter for each resource (measured: minutes instead of milliseconds at 100k rows).
 */
function perResource(kind: SearchKind | 'composite', b: Binder): string {
  return `search_${kind} s${b.dialect.indexedBy(`search_${kind}_rid`)}`;
}

const ROW_KINDS = new Set<string>(KINDS);

function isRowCondition(c: IndexCondition): c is RowCondition {
  return ROW_KINDS.has(c.kind);
}

/** Conditions on other resources or on element groups, each planned on its own (see `linkedSql`). */
type LinkedCondition = ChainCondition | HasCondition | CompositeCondition | ReferencedByCondition;

function isLinkedCondition(c: IndexCondition): c is LinkedCondition {
  return c.kind === 'chain' || c.kind === 'has' || c.kind === 'composite' || c.kind === 'referencedBy';
}

/**
 * Values of one parameter that one predicate tests together: an OR list of any length is one
 * group, its values one bound JSON array read with `json_each`, so the SQL text (and the cached
 * statement) does not depend on how many values the list has.
 */
interface RowGroup {
  readonly table: SearchKind;
  readonly param: string;
  /** `SELECT s.rid …` of the matching rows, read from the `(param, value…, rid)` index: the driving clause. */
  drive(b: Binder): string;
  /** A predicate on one row `s` of `param` of the candidate resource: the per-resource probe. */
  probe(b: Binder): string;
  /** The same predicate where `s` is read from a value index (composite components). */
  match(b: Binder): string;
}

/**
 * A group tested by one predicate on `s`. `seek` is '' when the predicate drives (SQLite seeks the
 * value index with it, an IN list once per value) and '+' in a probe, where the candidate's few
 * rows of the parameter are read by `(rid, param)` and each is looked up in the list instead:
 * seeking `(rid, param, value)` once per list value costs list × candidates (measured: 100 ms for
 * 1,000 identifiers on 1,000 candidates, 2 ms as a lookup).
 */
function predicateGroup(table: SearchKind, param: string, pred: (b: Binder, seek: '' | '+') => string): RowGroup {
  return {
    table,
    param,
    drive: (b) => `SELECT s.rid FROM search_${table} s WHERE s.param = ${b.bind(param)} AND ${pred(b, '')}`,
    probe: (b) => pred(b, b.dialect.hint),
    match: (b) => pred(b, ''),
  };
}

/**
 * Rows whose `column` starts with one of `prefixes` (`x >= p AND x < p || U+10FFFF`, see SqlDialect.maxCharacter).
 * Driving, the JSON list is the outer loop and each prefix one range of the value index; probing,
 * the candidate's row is tested against the list. An empty prefix matches any value.
 */
function prefixGroups(table: SearchKind, param: string, column: string, prefixes: readonly string[]): RowGroup[] {
  const groups: RowGroup[] = [];
  if (prefixes.includes('')) groups.push(predicateGroup(table, param, () => `s.${column} IS NOT NULL`));
  const values = prefixes.filter((p) => p !== '');
  if (values.length === 0) return groups;
  const inRange = (b: Binder) => `s.${column} >= j.value AND s.${column} < j.value || ${b.dialect.maxCharacter}`;
  groups.push({
    table,
    param,
    drive: (b) =>
      `SELECT s.rid FROM ${jsonTable(values, b)} ${b.dialect.orderedJoin} search_${table} s ON s.param = ${b.bind(param)} AND ${inRange(b)}`,
    probe: (b) => `EXISTS (SELECT 1 FROM ${jsonTable(values, b)} WHERE ${inRange(b)})`,
    match: (b) => `EXISTS (SELECT 1 FROM ${jsonTable(values, b)} WHERE ${inRange(b)})`,
  });
  return groups;
}

/** `(SELECT j.value FROM json_each(?) j)`: a list of strings as one bound parameter. */
function jsonList(values: readonly string[], b: Binder): string {
  return `(SELECT j.value FROM ${jsonTable(values, b)})`;
}

/** `(SELECT j.value->>0, j.value->>1 FROM json_each(?) j)`: a list of string pairs as one bound parameter. */
function jsonPairs(pairs: readonly (readonly [string, string])[], b: Binder): string {
  return `(SELECT j.value->>0, j.value->>1 FROM ${b.dialect.jsonRows(bindJson(pairs, b), false)})`;
}

/** A list of strings as a table `j` with one column `value`, from one bound JSON array. */
function jsonTable(values: readonly string[], b: Binder): string {
  return b.dialect.jsonRows(bindJson(values, b), true);
}

/** Bind a JSON array of distinct values (by their JSON text). */
function bindJson(values: readonly unknown[], b: Binder): string {
  const text = (v: unknown): unknown => (typeof v === 'string' ? b.dialect.text(v) : Array.isArray(v) ? v.map(text) : v);
  return b.bindRaw(`[${[...new Set(values.map((v) => JSON.stringify(text(v))))].join(',')}]`);
}

/** Split row conditions into value groups, per (kind, param), in order of first appearance. */
function rowGroups(conditions: readonly RowCondition[]): RowGroup[] {
  const byParam = new Map<string, RowCondition[]>();
  for (const c of conditions) {
    const key = `${c.kind}\u0000${c.param}`;
    const list = byParam.get(key);
    if (list) list.push(c);
    else byParam.set(key, [c]);
  }
  return [...byParam.values()].flatMap((list) => groupsOf(list[0]!.kind, list[0]!.param, list));
}

function groupByParam(groups: readonly RowGroup[]): { table: SearchKind; param: string; groups: RowGroup[] }[] {
  const out = new Map<string, { table: SearchKind; param: string; groups: RowGroup[] }>();
  for (const g of groups) {
    const key = `${g.table}\u0000${g.param}`;
    const entry = out.get(key);
    if (entry) entry.groups.push(g);
    else out.set(key, { table: g.table, param: g.param, groups: [g] });
  }
  return [...out.values()];
}

function ofKind<K extends RowCondition['kind']>(conditions: readonly RowCondition[], kind: K): Extract<RowCondition, { kind: K }>[] {
  return conditions.filter((c): c is Extract<RowCondition, { kind: K }> => c.kind === kind);
}

/** The value groups of one parameter's conditions (all of kind `kind`). */
function groupsOf(kind: SearchKind, param: string, conditions: readonly RowCondition[]): RowGroup[] {
  const groups: RowGroup[] = [];
  const list = (pred: (b: Binder, seek: '' | '+') => string) => groups.push(predicateGroup(kind, param, pred));
  switch (kind) {
    case 'string': {
      const cs = ofKind(conditions, 'string');
      groups.push(...prefixGroups(kind, param, 'norm', cs.filter((c) => c.op === 'starts').map((c) => c.value)));
      const exact = cs.filter((c) => c.op === 'exact').map((c) => [normalizeSearchText(c.value), c.value] as const);
      if (exact.length) list((b, p) => `(${p}s.norm, ${p}s.exact) IN ${jsonPairs(exact, b)}`);
      const contains = cs.filter((c) => c.op === 'contains').map((c) => `%${escapeLike(c.value)}%`);
      if (contains.length) list((b) => `EXISTS (SELECT 1 FROM ${jsonTable(contains, b)} WHERE s.norm LIKE j.value ESCAPE '\\')`);
      break;
    }
    case 'token': {
      const cs = ofKind(conditions, 'token');
      const texts = cs.flatMap((c) => (c.text !== undefined ? [c.text] : []));
      groups.push(...prefixGroups(kind, param, 'text', texts));
      const coded = cs.filter((c) => c.text === undefined);
      // `code` (any system), `|code` (no system), `system|code`; then `system|` (any code).
      const anySystem = coded.flatMap((c) => (c.code !== undefined && c.system === undefined ? [c.code] : []));
      if (anySystem.length) list((b, p) => `${p}s.code IN ${jsonList(anySystem, b)}`);
      const noSystem = coded.flatMap((c) => (c.code !== undefined && c.system === null ? [c.code] : []));
      if (noSystem.length) list((b, p) => `${p}s.code IN ${jsonList(noSystem, b)} AND s.system IS NULL`);
      const pairs = coded.flatMap((c) => (c.code !== undefined && typeof c.system === 'string' ? [[c.code, c.system] as const] : []));
      if (pairs.length) list((b, p) => `(${p}s.code, ${p}s.system) IN ${jsonPairs(pairs, b)}`);
      const systems = coded.flatMap((c) => (c.code === undefined && typeof c.system === 'string' ? [c.system] : []));
      if (systems.length) list((b, p) => `s.code IS NOT NULL AND ${p}s.system IN ${jsonList(systems, b)}`);
      if (coded.some((c) => c.code === undefined && c.system === null)) list(() => 's.code IS NOT NULL AND s.system IS NULL');
      if (coded.some((c) => c.code === undefined && c.system === undefined)) list(() => 's.code IS NOT NULL');
      break;
    }
    case 'reference': {
      const cs = ofKind(conditions, 'reference');
      const urls = cs.flatMap((c) => ('url' in c ? [c.url] : []));
      if (urls.length) list((b, p) => `${p}s.url IN ${jsonList(urls, b)}`);
      const local = cs.flatMap((c) => ('url' in c ? [] : [c]));
      const anyType = local.filter((c) => c.types.length === 0).map((c) => c.id);
      if (anyType.length) list((b, p) => `${p}s.target_id IN ${jsonList(anyType, b)}`);
      const typed = local.flatMap((c) => (c.types.length === 1 ? [[c.id, c.types[0]!] as const] : []));
      if (typed.length) list((b, p) => `(${p}s.target_id, ${p}s.target_type) IN ${jsonPairs(typed, b)}`);
      // Plain ids share the parameter's target types: one group per distinct set of types.
      const byTypes = new Map<string, { types: string[]; ids: string[] }>();
      for (const c of local.filter((c) => c.types.length > 1)) {
        const types = [...new Set(c.types)].sort();
        const key = JSON.stringify(types);
        const entry = byTypes.get(key) ?? { types, ids: [] };
        entry.ids.push(c.id);
        byTypes.set(key, entry);
      }
      for (const { types, ids } of byTypes.values()) {
        list((b, p) => `${p}s.target_id IN ${jsonList(ids, b)} AND ${p}s.target_type IN ${jsonList(types, b)}`);
      }
      break;
    }
    case 'uri': {
      const cs = ofKind(conditions, 'uri');
      // `above` matches the value or one of its ancestors exactly: one list with the `eq` values.
      const exact = cs.flatMap((c) => (c.op === 'above' ? c.prefixes : c.op === 'eq' ? [c.value] : []));
      if (exact.length) list((b, p) => `${p}s.value IN ${jsonList(exact, b)}`);
      groups.push(...prefixGroups(kind, param, 'value', cs.flatMap((c) => (c.op === 'below' ? [c.value] : []))));
      break;
    }
    // Ranges: one predicate per value (OR-ed as a balanced tree by the caller).
    case 'date':
      for (const c of ofKind(conditions, 'date')) list((b) => rangeSql(c.prefix, 's.low', 's.high', c.low, c.high, b));
      break;
    case 'number':
      for (const c of ofKind(conditions, 'number')) list((b) => numberSql(c.prefix, 's.value', c.value, c.low, c.high, b));
      break;
    case 'quantity':
      for (const c of ofKind(conditions, 'quantity')) {
        list((b) => {
          const parts = [numberSql(c.prefix, 's.value', c.value, c.low, c.high, b)];
          if (c.system !== undefined) parts.push(`s.system = ${b.bind(c.system)}`);
          if (c.code !== undefined) parts.push(`(s.code = ${b.bind(c.code)} OR s.unit = ${b.bind(c.code)})`);
          return parts.join(' AND ');
        });
      }
      break;
  }
  return groups;
}

function escapeLike(value: string): string {
  return value.replace(/[\\%_]/g, (ch) => `\\${ch}`);
}

/**
 * A stored range [lo, hi] against the search range [low, high]
 * (http://hl7.org/fhir/R4/search.html#prefix). `ap` arrives already widened by the parser.
 */
function rangeSql(prefix: Prefix, lo: string, hi: string, low: number, high: number, b: Binder): string {
  switch (prefix) {
    case 'eq':
      return `(${lo} >= ${b.bind(low)} AND ${hi} <= ${b.bind(high)})`;
    case 'ne':
      return `(${lo} < ${b.bind(low)} OR ${hi} > ${b.bind(high)})`;
    case 'gt':
      return `${hi} > ${b.bind(high)}`;
    case 'lt':
      return `${lo} < ${b.bind(low)}`;
    case 'ge':
      // gt OR eq  ==  hi > high OR lo >= low; both imply hi >= low (an index range).
      return `(${hi} >= ${b.bind(low)} AND (${hi} > ${b.bind(high)} OR ${lo} >= ${b.bind(low)}))`;
    case 'le':
      // lt OR eq  ==  lo < low OR hi <= high; both imply lo <= high.
      return `(${lo} <= ${b.bind(high)} AND (${lo} < ${b.bind(low)} OR ${hi} <= ${b.bind(high)}))`;
    case 'sa':
      return `${lo} > ${b.bind(high)}`;
    case 'eb':
      return `${hi} < ${b.bind(low)}`;
    case 'ap':
      return `(${lo} <= ${b.bind(high)} AND ${hi} >= ${b.bind(low)})`;
  }
}

/**
 * A stored number against a search number: eq/ne use the implicit range [low, high) of
 * the value's precision, ap the widened range [low, high], the others the exact value
 * (http://hl7.org/fhir/R4/search.html#number).
 */
function numberSql(prefix: Prefix, col: string, value: number, low: number, high: number, b: Binder): string {
  switch (prefix) {
    case 'eq':
      return `(${col} >= ${b.bind(low)} AND ${col} < ${b.bind(high)})`;
    case 'ne':
      return `(${col} < ${b.bind(low)} OR ${col} >= ${b.bind(high)})`;
    case 'gt':
    case 'sa':
      return `${col} > ${b.bind(value)}`;
    case 'lt':
    case 'eb':
      return `${col} < ${b.bind(value)}`;
    case 'ge':
      return `${col} >= ${b.bind(value)}`;
    case 'le':
      return `${col} <= ${b.bind(value)}`;
    case 'ap':
      return `(${col} >= ${b.bind(low)} AND ${col} <= ${b.bind(high)})`;
  }
}

function sortKey(s: IndexSort, b: Binder): SortKey {
  if (s.of === 'id') return { expr: 'r.id', descending: s.descending, nullable: false };
  if (s.of === 'lastUpdated') return { expr: 'r.last_updated', descending: s.descending, nullable: false };
  const agg = s.descending ? 'MAX' : 'MIN';
  const value = SORT_VALUE[s.of](s.descending);
  return {
    expr: `(SELECT ${agg}(${value}) FROM ${perResource(s.of, b)} WHERE s.rid = r.rid AND s.param = ${b.bind(s.param)})`,
    descending: s.descending,
    nullable: true,
  };
}

const SORT_VALUE: Record<SearchKind, (descending: boolean) => string> = {
  string: () => 's.norm',
  token: () => 's.code',
  date: (descending) => (descending ? 's.high' : 's.low'),
  reference: () => "COALESCE(s.target_type || '/' || s.target_id, s.url)",
  number: () => 's.value',
  quantity: () => 's.value',
  uri: () => 's.value',
};
