/**
 * The SQLite search index: one narrow table per search parameter kind, keyed by the
 * `resources.rid` of the current, non-deleted version, and a planner that turns an
 * IndexQuery into one SELECT whose values are all bound parameters.
 *
 * Plan shape (see `planSearch`):
 *   SELECT r.… FROM resources r
 *   WHERE r.deleted = 0 AND [+]r.type = ?
 *     AND r.rid IN (SELECT s.rid FROM search_<kind> s WHERE …)        -- the one "driving" clause
 *     AND EXISTS (SELECT 1 FROM search_<kind> s INDEXED BY search_<kind>_rid
 *                 WHERE s.rid = r.rid AND …)                          -- every other clause
 *   ORDER BY <sort keys>, r.type, r.id
 *   LIMIT ? OFFSET ?
 * The driving clause is the most selective-looking one (reference, then token/uri equality,
 * then string prefix); it is read from the `(param, value…, rid)` index and its rids looked
 * up by primary key (`+r.type` stops SQLite from walking the whole type instead). The other
 * clauses probe the covering `(rid, param, value…)` index once per candidate, pinned with
 * INDEXED BY because without ANALYZE statistics SQLite otherwise picks the value index and
 * scans the whole parameter per resource. Without a driving clause the type's rows are walked
 * in `(type, id)` order and the LIMIT stops the walk early. Measured on 100k Observations
 * (test/storage/sqlite/search-sql.test.ts prints it): `subject=Patient/x` well under 1 ms,
 * `code=s|c&date=ge2020&_count=50` (5k code matches) under 10 ms, totals included.
 *
 * Default order: `r.type, r.id` — deterministic, index-backed, and unaffected by updates
 * (an update does not move a resource between pages). Sort keys always end with that
 * tiebreak. For a multi-valued parameter the lowest value sorts ascending and the highest
 * descending; resources without a value sort last in both directions.
 *
 * Date semantics follow http://hl7.org/fhir/R4/search.html#date: stored values are
 * inclusive ranges [low, high], the search value is the range its precision implies.
 */

import type { DatabaseSync, SQLInputValue, StatementSync } from 'node:sqlite';
import {
  normalizeSearchText,
  type IndexClause,
  type IndexCondition,
  type IndexQuery,
  type IndexSort,
  type Prefix,
  type SearchKind,
  type SearchRow,
} from '../search-types.ts';

const KINDS: readonly SearchKind[] = ['string', 'token', 'date', 'reference', 'number', 'quantity', 'uri'];

const FK = 'rid INTEGER NOT NULL REFERENCES resources(rid) ON DELETE CASCADE';

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

CREATE INDEX IF NOT EXISTS search_resources_updated ON resources(type, last_updated);
`;

const INSERT_SQL: Record<SearchKind, string> = {
  string: 'INSERT INTO search_string (rid, param, norm, exact) VALUES (?, ?, ?, ?)',
  token: 'INSERT INTO search_token (rid, param, system, code, text) VALUES (?, ?, ?, ?, ?)',
  date: 'INSERT INTO search_date (rid, param, low, high) VALUES (?, ?, ?, ?)',
  reference: 'INSERT INTO search_reference (rid, param, target_type, target_id, url) VALUES (?, ?, ?, ?, ?)',
  number: 'INSERT INTO search_number (rid, param, value) VALUES (?, ?, ?)',
  quantity: 'INSERT INTO search_quantity (rid, param, value, system, code, unit) VALUES (?, ?, ?, ?, ?, ?)',
  uri: 'INSERT INTO search_uri (rid, param, value) VALUES (?, ?, ?)',
};

/** One search hit: the resources row of the current version. */
export interface SearchHit {
  readonly rid: number;
  readonly type: string;
  readonly id: string;
  readonly version: number;
  readonly cid: string | null;
  readonly lastUpdated: number;
}

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
  }

  /** Delete every search row of `rid` (before re-indexing an update, or on delete). */
  deleteRows(rid: number): void {
    for (const kind of KINDS) this.#statement(`DELETE FROM search_${kind} WHERE rid = ?`).run(rid);
  }

  /** Run a search: one page of hits in the planned order. */
  search(q: IndexQuery): SearchHit[] {
    const { sql, params } = planSearch(q);
    return this.#statement(sql).all(...params).map(toHit);
  }

  /** Count all matches of a search, ignoring sort and paging. */
  count(q: IndexQuery): number {
    const { sql, params } = planCount(q);
    const row = this.#statement(sql).get(...params);
    return Number(row?.['n'] ?? 0);
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

/** Insert the search rows of `rid` (prepares statements each call; prefer `SearchSql` on hot paths). */
export function insertSearchRows(db: DatabaseSync, rid: number, rows: readonly SearchRow[]): void {
  new SearchSql(db).insertRows(rid, rows);
}

/** Delete every search row of `rid` (prepares statements each call; prefer `SearchSql` on hot paths). */
export function deleteSearchRows(db: DatabaseSync, rid: number): void {
  new SearchSql(db).deleteRows(rid);
}

function insertValues(rid: number, row: SearchRow): SQLInputValue[] {
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
  }
}

function toHit(row: Record<string, unknown>): SearchHit {
  return {
    rid: Number(row['rid']),
    type: String(row['type']),
    id: String(row['id']),
    version: Number(row['version']),
    cid: row['cid'] === null || row['cid'] === undefined ? null : String(row['cid']),
    lastUpdated: Number(row['last_updated']),
  };
}

/** Plan one page of a search: `SELECT r.rid, r.type, r.id, r.version, r.cid, r.last_updated … LIMIT ? OFFSET ?`. */
export function planSearch(q: IndexQuery): PlannedSql {
  const b = new Binder();
  const where = whereSql(q, b);
  const order = [...q.sort.map((s) => sortSql(s, b)), 'r.type', 'r.id'].join(', ');
  const sql =
    `SELECT r.rid, r.type, r.id, r.version, r.cid, r.last_updated FROM resources r WHERE ${where} ` +
    `ORDER BY ${order} LIMIT ${b.bind(q.count)} OFFSET ${b.bind(q.offset)}`;
  return { sql, params: b.params };
}

/** Plan the total of a search: `SELECT COUNT(*) AS n …` over the same filter (ignores sort and paging). */
export function planCount(q: IndexQuery): PlannedSql {
  const b = new Binder();
  const sql = `SELECT COUNT(*) AS n FROM resources r WHERE ${whereSql(q, b)}`;
  return { sql, params: b.params };
}

/** Collects bound values in the order their `?` placeholders appear. */
class Binder {
  readonly params: SQLInputValue[] = [];
  bind(value: SQLInputValue): string {
    this.params.push(value);
    return '?';
  }
}

function whereSql(q: IndexQuery, b: Binder): string {
  const parts = ['r.deleted = 0'];
  const driver = chooseDriver(q.where);
  // With a driving clause, `+` keeps SQLite from walking the (type, id) index and probing the
  // IN list for every resource of the type: rows come from the driver by rowid instead.
  if (q.resourceType !== null) parts.push(`${driver >= 0 ? '+' : ''}r.type = ${b.bind(q.resourceType)}`);
  q.where.forEach((clause, i) => parts.push(clauseSql(clause, i === driver, b)));
  return parts.join(' AND ');
}

/** Rank how selective a clause's index lookup probably is (0 = do not drive from it). */
function selectivity(clause: IndexClause): number {
  if (clause.negate || clause.anyOf.length === 0) return 0;
  let rank = Infinity;
  for (const c of clause.anyOf) {
    let r = 0;
    switch (c.kind) {
      case 'reference':
        r = 3;
        break;
      case 'token':
        r = c.code !== undefined ? 2 : 0;
        break;
      case 'string':
        r = c.op === 'contains' ? 0 : 1;
        break;
      case 'uri':
        r = c.op === 'eq' ? 2 : 1;
        break;
      default:
        r = 0;
    }
    rank = Math.min(rank, r);
  }
  return rank;
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
  if (clause.anyOf.length === 0) return clause.negate ? '1' : '0';
  let sql: string;
  if (driving) {
    // chooseDriver only picks clauses made of row conditions.
    const selects = clause.anyOf.filter(isRowCondition).map((c) => {
      const { table, pred } = rowPredicate(c, b);
      return `SELECT s.rid FROM search_${table} s WHERE ${pred}`;
    });
    sql = `r.rid IN (${selects.join(' UNION ALL ')})`;
  } else {
    sql = clause.anyOf.map((c) => conditionSql(c, b)).join(' OR ');
  }
  return clause.negate ? `NOT (${sql})` : `(${sql})`;
}

function conditionSql(c: IndexCondition, b: Binder): string {
  switch (c.kind) {
    case 'id':
      return `r.id = ${b.bind(c.id)}`;
    case 'type':
      return `r.type = ${b.bind(c.type)}`;
    case 'lastUpdated':
      return rangeSql(c.prefix, 'r.last_updated', 'r.last_updated', c.low, c.high, b);
    case 'missing': {
      const exists = `EXISTS (SELECT 1 FROM ${perResource(c.of)} WHERE s.rid = r.rid AND s.param = ${b.bind(c.param)})`;
      return c.missing ? `NOT ${exists}` : exists;
    }
    default: {
      const { table, pred } = rowPredicate(c, b);
      return `EXISTS (SELECT 1 FROM ${perResource(table)} WHERE s.rid = r.rid AND ${pred})`;
    }
  }
}

/**
 * A per-resource probe of an index table, pinned to its `(rid, param)` index: without
 * statistics SQLite may otherwise pick the covering value index and scan every row of the
 * parameter for each resource (measured: minutes instead of milliseconds at 100k rows).
 */
function perResource(kind: SearchKind): string {
  return `search_${kind} s INDEXED BY search_${kind}_rid`;
}

type RowCondition = Exclude<IndexCondition, { kind: 'id' | 'type' | 'lastUpdated' | 'missing' }>;

function isRowCondition(c: IndexCondition): c is RowCondition {
  return c.kind !== 'id' && c.kind !== 'type' && c.kind !== 'lastUpdated' && c.kind !== 'missing';
}

function rowPredicate(c: RowCondition, b: Binder): { table: SearchKind; pred: string } {
  return { table: c.kind, pred: `s.param = ${b.bind(c.param)} AND ${valuePredicate(c, b)}` };
}

function valuePredicate(c: RowCondition, b: Binder): string {
  switch (c.kind) {
    case 'string': {
      if (c.op === 'exact') return `s.norm = ${b.bind(normalizeSearchText(c.value))} AND s.exact = ${b.bind(c.value)}`;
      if (c.op === 'contains') return `s.norm LIKE ${b.bind(`%${escapeLike(c.value)}%`)} ESCAPE '\\'`;
      return prefixSql('s.norm', c.value, b);
    }
    case 'token': {
      if (c.text !== undefined) return prefixSql('s.text', c.text, b);
      const parts: string[] = [];
      if (c.code !== undefined) parts.push(`s.code = ${b.bind(c.code)}`);
      else parts.push('s.code IS NOT NULL');
      if (c.system === null) parts.push('s.system IS NULL');
      else if (c.system !== undefined) parts.push(`s.system = ${b.bind(c.system)}`);
      return parts.join(' AND ');
    }
    case 'date':
      return rangeSql(c.prefix, 's.low', 's.high', c.low, c.high, b);
    case 'reference': {
      if ('url' in c) return `s.url = ${b.bind(c.url)}`;
      const id = `s.target_id = ${b.bind(c.id)}`;
      if (c.types.length === 0) return id;
      return `${id} AND s.target_type IN (${c.types.map((t) => b.bind(t)).join(', ')})`;
    }
    case 'number':
      return numberSql(c.prefix, 's.value', c.value, c.low, c.high, b);
    case 'quantity': {
      const parts = [numberSql(c.prefix, 's.value', c.value, c.low, c.high, b)];
      if (c.system !== undefined) parts.push(`s.system = ${b.bind(c.system)}`);
      if (c.code !== undefined) parts.push(`(s.code = ${b.bind(c.code)} OR s.unit = ${b.bind(c.code)})`);
      return parts.join(' AND ');
    }
    case 'uri': {
      if (c.op === 'above') return `s.value IN (${c.prefixes.map((p) => b.bind(p)).join(', ')})`;
      if (c.op === 'below') return prefixSql('s.value', c.value, b);
      return `s.value = ${b.bind(c.value)}`;
    }
  }
}

/** Highest code point: `x >= p AND x < p || U+10FFFF` selects every x starting with p on an index. */
const MAX_CHAR = '\u{10FFFF}';

function prefixSql(column: string, prefix: string, b: Binder): string {
  if (prefix === '') return `${column} IS NOT NULL`;
  return `${column} >= ${b.bind(prefix)} AND ${column} < ${b.bind(prefix + MAX_CHAR)}`;
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

function sortSql(s: IndexSort, b: Binder): string {
  const dir = s.descending ? 'DESC' : 'ASC';
  if (s.of === 'id') return `r.id ${dir}`;
  if (s.of === 'lastUpdated') return `r.last_updated ${dir}`;
  const agg = s.descending ? 'MAX' : 'MIN';
  const value = SORT_VALUE[s.of](s.descending);
  return (
    `(SELECT ${agg}(${value}) FROM ${perResource(s.of)} WHERE s.rid = r.rid AND s.param = ${b.bind(s.param)}) ` +
    `${dir} NULLS LAST`
  );
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
