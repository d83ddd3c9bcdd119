/**
 * Search on PostgreSQL: the plans of src/storage/sqlite/search-sql.ts (same tables, same shapes,
 * same order and keyset paging) written in PostgreSQL's dialect, and the rows each search kind
 * writes. PostgreSQL has statistics, so the SQLite access-path hints are left out and its own
 * planner picks the indexes; the choice between the filter plan and an ordered walk is the same
 * (`planPage`).
 */
import type pg from 'pg';
import { storageError, type StorageError } from '../errors.ts';
import type { BasicRow, IndexQuery, SearchRow } from '../search-types.ts';
import {
  PAGE_PLAN_LIMIT,
  compositeColumns,
  insertValues,
  planCount,
  planPage,
  planSearch,
  toHit,
  walkOrder,
  withLimit,
  type PlannedSql,
  type SearchHit,
  type SearchPlan,
  type SqlDialect,
} from '../sqlite/search-sql.ts';

export const POSTGRES: SqlDialect = {
  placeholder: (n) => `$${n}`,
  indexedBy: () => '',
  hint: '',
  orderedJoin: 'JOIN',
  isNotDistinct: 'IS NOT DISTINCT FROM',
  rowid: 'ctid',
  true: 'TRUE',
  false: 'FALSE',
  maxCharacter: `chr(${0x10ffff})`,
  fence: ' OFFSET 0',
  text: pgText,
  jsonRows: (bound, text) => `${text ? 'json_array_elements_text' : 'json_array_elements'}(${bound}::json) AS j(value)`,
};

/**
 * PostgreSQL's text cannot hold U+0000: in search rows and search values it becomes U+FFFD (the
 * replacement character), on both sides, so a value with NUL still finds itself. The resource
 * itself is stored in its envelope, unchanged.
 */
export function pgText(value: string): string {
  return value.includes('\0') ? value.replaceAll('\0', '\uFFFD') : value;
}

/** Something that runs a statement: the pool, or the client of a transaction. */
export type Queryable = Pick<pg.Pool, 'query'> | Pick<pg.PoolClient, 'query'>;

/** Parameter suffix of span rows (search-sql.ts SPAN_SUFFIX). */
const SPAN_SUFFIX = '#span';

const TABLES = ['string', 'token', 'date', 'reference', 'number', 'quantity', 'uri', 'composite'] as const;

/** One statement deleting every search row of a resource. */
const DELETE_ROWS = `WITH ${TABLES.slice(1)
  .map((t) => `d_${t} AS (DELETE FROM search_${t} WHERE rid = $1)`)
  .join(', ')} DELETE FROM search_string WHERE rid = $1`;

const COLUMNS: Record<SearchRow['kind'], readonly string[]> = {
  string: ['rid', 'param', 'norm', 'exact'],
  token: ['rid', 'param', 'system', 'code', 'text'],
  date: ['rid', 'param', 'low', 'high'],
  reference: ['rid', 'param', 'target_type', 'target_id', 'url'],
  number: ['rid', 'param', 'value'],
  quantity: ['rid', 'param', 'value', 'system', 'code', 'unit'],
  uri: ['rid', 'param', 'value'],
  composite: ['rid', 'param', 'grp', 'norm', 'exact', 'system', 'code', 'text', 'low', 'high', 'target_type', 'target_id', 'url', 'value', 'unit'],
};

/** Most bound values in one INSERT (PostgreSQL allows 65,535). */
const MAX_VALUES = 30_000;

export class PgSearch {
  readonly #db: Queryable;

  constructor(db: Queryable) {
    this.#db = db;
  }

  /** One page of hits in the planned order (as `SearchSql.search`). */
  async search(q: IndexQuery, plan: SearchPlan = 'auto'): Promise<SearchHit[]> {
    try {
      if (q.count <= 0) return [];
      const page = planPage(q, plan, POSTGRES);
      const walk = page.probe === undefined ? page.walk : (await this.#count(page.probe)) >= PAGE_PLAN_LIMIT ? page.walk : undefined;
      let hits: SearchHit[];
      if (walk !== undefined) {
        hits = [];
        for (const segment of walkOrder(q, walk)) {
          const wanted = q.count - hits.length;
          if (wanted <= 0) break;
          hits.push(...(await this.#rows(withLimit(segment, wanted), q)));
        }
      } else {
        hits = await this.#rows(planSearch(q, POSTGRES), q);
      }
      return q.keyset?.direction === 'before' ? hits.reverse() : hits;
    } catch (err) {
      throw pgQueryLimitError(err) ?? err;
    }
  }

  /** All matches counted; with `limit`, more than `limit` gives undefined (as `SearchSql.count`). */
  async count(q: IndexQuery, limit?: number): Promise<number | undefined> {
    try {
      const n = await this.#count(planCount(q, limit === undefined ? undefined : limit + 1, POSTGRES));
      return limit !== undefined && n > limit ? undefined : n;
    } catch (err) {
      throw pgQueryLimitError(err) ?? err;
    }
  }

  async #count(planned: PlannedSql): Promise<number> {
    const { rows } = await this.#db.query(planned.sql, planned.params as unknown[]);
    return Number((rows[0] as { n?: unknown } | undefined)?.n ?? 0);
  }

  async #rows(planned: PlannedSql, q: IndexQuery): Promise<SearchHit[]> {
    const { rows } = await this.#db.query(planned.sql, planned.params as unknown[]);
    return (rows as Record<string, unknown>[]).map((row) => toHit(row, q.sort.length));
  }

  /** Replace the search rows of `rid` (inside the caller's transaction): one DELETE, one INSERT per kind. */
  async replaceRows(rid: number, rows: readonly SearchRow[], existed: boolean): Promise<void> {
    if (existed) await this.#db.query(DELETE_ROWS, [rid]);
    const byKind = new Map<SearchRow['kind'], unknown[][]>();
    const add = (kind: SearchRow['kind'], values: unknown[]) => {
      const list = byKind.get(kind);
      if (list) list.push(values);
      else byKind.set(kind, [values]);
    };
    for (const row of rows) {
      const values = rowValues(rid, row)?.map((v) => (typeof v === 'string' ? pgText(v) : v));
      if (values) add(row.kind, values);
    }
    // A span row per date parameter with several values (search-sql.ts SEARCH_DDL, dateRangeDriver).
    const spans = new Map<string, { low: number; high: number; n: number }>();
    for (const row of rows) {
      if (row.kind !== 'date') continue;
      const span = spans.get(row.param);
      spans.set(row.param, span ? { low: Math.min(span.low, row.low), high: Math.max(span.high, row.high), n: span.n + 1 } : { low: row.low, high: row.high, n: 1 });
    }
    for (const [param, span] of spans) if (span.n > 1) add('date', [rid, `${param}${SPAN_SUFFIX}`, span.low, span.high]);
    for (const [kind, list] of byKind) {
      const columns = COLUMNS[kind];
      const perStatement = Math.max(1, Math.floor(MAX_VALUES / columns.length));
      for (let i = 0; i < list.length; i += perStatement) {
        const chunk = list.slice(i, i + perStatement);
        const params: unknown[] = [];
        const tuples = chunk.map((values) => `(${values.map((v) => `$${params.push(v)}`).join(', ')})`);
        await this.#db.query(`INSERT INTO search_${kind} (${columns.join(', ')}) VALUES ${tuples.join(', ')}`, params);
      }
    }
  }
}

/** A row's column values in COLUMNS order (as on SQLite); undefined for a row PostgreSQL does not index (see compositeValues). */
function rowValues(rid: number, row: SearchRow): unknown[] | undefined {
  if (row.kind !== 'composite') return insertValues(rid, row);
  const values = compositeValues(row.part);
  return values && [rid, row.part.param, row.group, ...values];
}

/**
 * A component's values in search_composite's columns (norm … unit), as on SQLite — but `value` is
 * a number column here (SQLite's is untyped): a uri component (no R4 composite has one) is not indexed.
 */
function compositeValues(p: BasicRow): unknown[] | undefined {
  return p.kind === 'uri' ? undefined : compositeColumns(p);
}

/**
 * PostgreSQL's errors for a statement beyond its limits (class 54, program_limit_exceeded:
 * stack depth, too many arguments or columns) as VLM_INDEX_QUERY_TOO_COMPLEX ('invalid'), like
 * SQLite's (search-sql.ts `queryLimitError`); undefined for anything else.
 */
export function pgQueryLimitError(err: unknown): StorageError | undefined {
  const code = (err as { code?: unknown } | undefined)?.code;
  if (typeof code !== 'string' || !code.startsWith('54')) return undefined;
  return storageError('VLM_INDEX_QUERY_TOO_COMPLEX', 'invalid', 'The search is too complex for the index: use fewer parameters or values', err);
}
