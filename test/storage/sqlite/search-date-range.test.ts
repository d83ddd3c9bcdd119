/**
 * Bounded date ranges (search-sql.ts `dateRangeGroup` / `dateRangeDriver`): AND-ed conditions on
 * one date parameter drive the search from one range of `search_date_low` with both ends bound
 * (checked with EXPLAIN QUERY PLAN), and find exactly what the unbounded plan finds — short rows,
 * wide rows (month/year precision, long and open periods) and resources whose different values
 * match different conditions (span rows, also back-filled for rows indexed before they existed).
 */
import { DatabaseSync } from 'node:sqlite';
import t from 'tap';
import { parseSearchRequest } from '../../../src/fhir/search/parse.ts';
import { createSearchRegistry } from '../../../src/fhir/search/registry.ts';
import { R4_RESOURCE_TYPES } from '../../../src/fhir/validation/resource-types.ts';
import { DATE_MAX, type IndexClause, type IndexQuery, type SearchRow } from '../../../src/storage/search-types.ts';
import { SEARCH_DDL, SearchSql, planSearch } from '../../../src/storage/sqlite/search-sql.ts';

const registry = createSearchRegistry(R4_RESOURCE_TYPES);
const RESOURCES_DDL = `
CREATE TABLE resources (
  rid INTEGER PRIMARY KEY, type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL,
  last_updated INTEGER NOT NULL, deleted INTEGER NOT NULL DEFAULT 0, cid TEXT, UNIQUE(type, id));`;
const DAY = 86_400_000;
const at = (iso: string) => Date.parse(iso);

/** Observations with `date` rows: [low, high] pairs per resource. */
const OBSERVATIONS: Record<string, [number, number][]> = {
  // Short rows: instants and days, a year either side of January 2020.
  ...Object.fromEntries(
    Array.from({ length: 200 }, (_, i) => {
      const low = at('2019-01-01T00:00:00Z') + i * 3.7 * DAY;
      return [`s${i}`, [[Math.round(low), Math.round(low) + (i % 2 ? 0 : DAY - 1)]]];
    }),
  ),
  'month-jan': [[at('2020-01-01T00:00:00Z'), at('2020-02-01T00:00:00Z') - 1]],
  'year-2020': [[at('2020-01-01T00:00:00Z'), at('2021-01-01T00:00:00Z') - 1]],
  'period-long': [[at('2019-06-01T00:00:00Z'), at('2020-06-01T00:00:00Z')]],
  'period-open': [[at('2019-12-01T00:00:00Z'), DATE_MAX]],
  'day-edge': [[at('2020-01-31T00:00:00Z'), at('2020-01-31T23:59:59.999Z')]],
  'just-before': [[at('2019-12-31T23:59:59.999Z'), at('2019-12-31T23:59:59.999Z')]],
  'just-after': [[at('2020-02-01T00:00:00Z'), at('2020-02-01T00:00:00Z')]],
  // Two values, one each side of January: matches ge2020-01-01 by one and lt2020-02-01 by the other.
  'two-sides': [
    [at('2019-06-01T10:00:00Z'), at('2019-06-01T10:00:00Z')],
    [at('2020-06-01T10:00:00Z'), at('2020-06-01T10:00:00Z')],
  ],
  // Two values both outside on the same side: no match.
  'two-late': [
    [at('2020-06-01T10:00:00Z'), at('2020-06-01T10:00:00Z')],
    [at('2020-07-01T10:00:00Z'), at('2020-07-01T10:00:00Z')],
  ],
};

function openDb(withSpans: boolean): DatabaseSync {
  const db = new DatabaseSync(':memory:');
  db.exec(RESOURCES_DDL);
  db.exec(SEARCH_DDL);
  const index = new SearchSql(db);
  const res = db.prepare("INSERT INTO resources (type, id, version, last_updated, deleted, cid) VALUES ('Observation', ?, 1, 0, 0, 'c')");
  const raw = db.prepare("INSERT INTO search_date (rid, param, low, high) VALUES (?, 'date', ?, ?)");
  for (const [id, ranges] of Object.entries(OBSERVATIONS)) {
    const rid = Number(res.run(id).lastInsertRowid);
    const rows: SearchRow[] = ranges.map(([low, high]) => ({ kind: 'date', param: 'date', low, high }));
    if (withSpans) index.insertRows(rid, rows);
    else for (const [low, high] of ranges) raw.run(rid, low, high); // as indexed before span rows existed
  }
  return db;
}

function query(params: [string, string][]): IndexQuery {
  const parsed = parseSearchRequest(registry, 'Observation', params, { baseUrl: 'https://x.example/fhir', now: at('2026-01-01T00:00:00Z') });
  if (parsed.errors.length || parsed.unknown.length) throw new Error(JSON.stringify(parsed));
  return { ...parsed.query, count: 1000, offset: 0 };
}

/** The same conditions with each clause's value repeated (`date=ge2020,ge2020`): same matches, no range group. */
function ungrouped(q: IndexQuery): IndexQuery {
  return { ...q, where: q.where.map((c: IndexClause) => ({ ...c, anyOf: [...c.anyOf, ...c.anyOf] })) };
}

function planOf(db: DatabaseSync, q: IndexQuery): string[] {
  const { sql, params } = planSearch(q);
  return db
    .prepare(`EXPLAIN QUERY PLAN ${sql}`)
    .all(...params)
    .map((r) => String(r['detail']));
}

const CASES: [string, [string, string][]][] = [
  ['ge + lt', [['date', 'ge2020-01-01'], ['date', 'lt2020-02-01']]],
  ['gt + le', [['date', 'gt2019-12-31'], ['date', 'le2020-01-31']]],
  ['eq on a month', [['date', '2020-01']]],
  ['eq on a day', [['date', 'eq2020-01-31']]],
  ['ap', [['date', 'ap2020-01-15']]],
  ['sa + eb', [['date', 'sa2019-12-31'], ['date', 'eb2020-02-01']]],
  ['ge + le + eq', [['date', 'ge2019-01-01'], ['date', 'le2021-12-31'], ['date', '2020']]],
];

t.test('a bounded range drives from search_date_low with both bounds', async (t) => {
  const db = openDb(true);
  t.teardown(() => db.close());
  for (const [label, params] of CASES) {
    const plan = planOf(db, query(params));
    t.ok(
      plan.some((d) => /SEARCH s USING (?:COVERING )?INDEX search_date_low \(param=\? AND low>\? AND low<\?\)/.test(d)),
      `${label}: short rows in one range, bounded both ends: ${plan.join(' | ')}`,
    );
    t.ok(plan.some((d) => /USING (?:COVERING )?INDEX search_date_wide \(param=\? AND (?:low>\? AND )?low<\?\)/.test(d)), `${label}: wide rows from the partial index`);
    t.ok(plan.some((d) => /SEARCH r USING INTEGER PRIMARY KEY/.test(d)), `${label}: resources looked up by rid`);
    t.notOk(plan.some((d) => /SCAN (r|s)\b/.test(d)), `${label}: no scan`);
  }
  // Open-ended: no group, the single-clause driver as before.
  const open = planOf(db, query([['date', 'ge2020-01-01']]));
  t.notOk(open.some((d) => /search_date_wide/.test(d)), 'ge alone keeps its one-sided plan');
  // A token lookup still drives over a date range.
  const token = planOf(db, query([['code', 'http://loinc.org|1234-5'], ['date', 'ge2020-01-01'], ['date', 'lt2020-02-01']]));
  t.ok(token.some((d) => /search_token_value/.test(d)), 'a token code drives');
});

t.test('the bounded plan finds exactly what the unbounded one does', async (t) => {
  for (const withSpans of [true, false]) {
    const db = openDb(withSpans);
    if (!withSpans) db.exec("DELETE FROM search_state WHERE key = 'date_spans'; " + SEARCH_DDL); // the upgrade back-fill
    const index = new SearchSql(db);
    for (const [label, params] of CASES) {
      const q = query(params);
      const bounded = index.search(q).map((h) => h.id).sort();
      const reference = index.search(ungrouped(q)).map((h) => h.id).sort();
      t.same(bounded, reference, `${label}${withSpans ? '' : ' (back-filled spans)'}`);
      t.ok(reference.length > 0, `${label}: matches something`);
    }
    const janQ = query(CASES[0]![1]);
    const jan = index.search(janQ).map((h) => h.id);
    for (const id of ['month-jan', 'year-2020', 'period-long', 'period-open', 'day-edge', 'two-sides']) t.ok(jan.includes(id), `ge+lt finds ${id}`);
    for (const id of ['just-before', 'just-after', 'two-late']) t.notOk(jan.includes(id), `ge+lt leaves ${id}`);
    t.equal(index.count(janQ), jan.length, 'the total agrees');
    db.close();
  }
});

t.test('span rows follow the resource and are never matched themselves', async (t) => {
  const db = openDb(true);
  t.teardown(() => db.close());
  const spans = db.prepare("SELECT r.id FROM search_date s JOIN resources r USING (rid) WHERE s.param = 'date#span' ORDER BY r.id").all();
  t.same(spans.map((r) => r['id']), ['two-late', 'two-sides'], 'one span row per multi-valued parameter');
  const index = new SearchSql(db);
  const rid = Number((db.prepare("SELECT rid FROM resources WHERE id = 'two-sides'").get() as { rid: number }).rid);
  index.deleteRows(rid);
  index.insertRows(rid, [{ kind: 'date', param: 'date', low: 0, high: 0 }]);
  t.same(
    db.prepare("SELECT COUNT(*) AS n FROM search_date WHERE rid = ? AND param = 'date#span'").get(rid),
    { n: 0 },
    'one value left: no span row',
  );
  const missing = index.search(query([['date:missing', 'true']])).map((h) => h.id);
  t.same(missing, [], 'span rows do not count as values (:missing)');
});
