/**
 * Keyset paging in the SQLite planner (search-sql.ts `planSearch`, `IndexQuery.keyset`): walking
 * a search page by page with `after` (and backwards with `before`) yields exactly the one-shot
 * order, for sorts over several keys in mixed directions, with ties, NULLs (missing values sort
 * last both ways) and the (type, id) tiebreak; every value stays bound.
 */
import { DatabaseSync } from 'node:sqlite';
import t from 'tap';
import type { IndexQuery, IndexSort, SortValue } from '../../../src/storage/search-types.ts';
import { SEARCH_DDL, SearchSql, planSearch, planWalk } from '../../../src/storage/sqlite/search-sql.ts';

const RESOURCES_DDL = `
CREATE TABLE resources (
  rid INTEGER PRIMARY KEY, type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL,
  last_updated INTEGER NOT NULL, deleted INTEGER NOT NULL DEFAULT 0, cid TEXT, UNIQUE(type, id));`;

/** 40 patients: few distinct birth dates and families (ties), some without either (NULLs), one deleted. */
function openDb(): DatabaseSync {
  const db = new DatabaseSync(':memory:');
  db.exec(RESOURCES_DDL);
  db.exec(SEARCH_DDL);
  const res = db.prepare('INSERT INTO resources (type, id, version, last_updated, deleted, cid) VALUES (?, ?, 1, ?, ?, ?)');
  const date = db.prepare("INSERT INTO search_date (rid, param, low, high) VALUES (?, 'birthdate', ?, ?)");
  const name = db.prepare("INSERT INTO search_string (rid, param, norm, exact) VALUES (?, 'family', ?, ?)");
  const tag = db.prepare("INSERT INTO search_token (rid, param, system, code) VALUES (?, '_tag', 's', ?)");
  for (let i = 0; i < 40; i++) {
    const id = `p${String((i * 17) % 40).padStart(2, '0')}`;
    const rid = Number(res.run('Patient', id, 1_000 + (i % 7), i === 13 ? 1 : 0, `c${i}`).lastInsertRowid);
    if (i % 5 !== 0) date.run(rid, (i % 4) * 86_400_000, (i % 4) * 86_400_000 + 86_399_999);
    // Most carry tag `s|t` (some twice: an equality-driven walk reads each resource once).
    if (i % 8 !== 3) tag.run(rid, 't');
    if (i % 9 === 2) tag.run(rid, 't');
    if (i % 6 !== 0) {
      name.run(rid, ['ann', 'bo', 'cy'][i % 3]!, 'x');
      if (i % 4 === 1) name.run(rid, 'zed', 'x'); // a second value: MIN ascending, MAX descending
    }
  }
  // Another type, for the (type, id) tiebreak at system level.
  const org = Number(res.run('Organization', 'o1', 1_003, 0, 'co').lastInsertRowid);
  date.run(org, 0, 1);
  return db;
}

const SORTS: Record<string, IndexSort[]> = {
  'default (creation order)': [],
  birthdate: [{ of: 'date', param: 'birthdate', descending: false }],
  '-birthdate': [{ of: 'date', param: 'birthdate', descending: true }],
  'family,-birthdate': [
    { of: 'string', param: 'family', descending: false },
    { of: 'date', param: 'birthdate', descending: true },
  ],
  '-family,_lastUpdated,-_id': [
    { of: 'string', param: 'family', descending: true },
    { of: 'lastUpdated', param: '_lastUpdated', descending: false },
    { of: 'id', param: '_id', descending: true },
  ],
};

t.test('paging forwards and backwards by keyset gives the one-shot order', async (t) => {
  const db = openDb();
  t.teardown(() => db.close());
  const index = new SearchSql(db);
  const tagged: IndexQuery['where'] = [{ negate: false, anyOf: [{ kind: 'token', param: '_tag', system: 's', code: 't' }] }];
  const variants = [
    { where: [], matches: { Patient: 39, system: 40 } },
    { where: tagged, matches: { Patient: 35, system: 35 } },
  ];
  for (const [label, sort] of Object.entries(SORTS)) {
    for (const resourceType of ['Patient', null]) {
      for (const { where, matches } of variants) {
        const name = `${label} ${resourceType ?? 'system'}${where.length ? ' _tag=s|t' : ''}`;
        // The filter plan's one-shot order is the reference; the ordered walks must page through it exactly.
        const base: IndexQuery = { resourceType, where, sort, count: 1000, offset: 0, wantTotal: false };
        const all = index.search(base, 'filter').map((h) => `${h.type}/${h.id}`);
        t.equal(all.length, matches[resourceType ? 'Patient' : 'system'], `${name}: deleted resources are not matched`);
        t.same(index.search(base, 'walk').map((h) => `${h.type}/${h.id}`), all, `${name}: the walk's one-shot order`);
        for (const plan of ['filter', 'walk'] as const) {
          for (const size of [1, 3, 7]) {
            const forward: string[] = [];
            let key: SortValue[] | undefined;
            for (let guard = 0; guard < 100; guard++) {
              const page = index.search({ ...base, count: size, ...(key ? { keyset: { direction: 'after' as const, key } } : {}) }, plan);
              forward.push(...page.map((h) => `${h.type}/${h.id}`));
              if (page.length < size) break;
              key = page[page.length - 1]!.key;
            }
            t.same(forward, all, `${name} ${plan}: forward in pages of ${size}`);
            const backward: string[] = [];
            let before: SortValue[] | undefined;
            for (let guard = 0; guard < 100; guard++) {
              const page = index.search({ ...base, count: size, keyset: { direction: 'before', ...(before ? { key: before } : {}) } }, plan);
              backward.unshift(...page.map((h) => `${h.type}/${h.id}`));
              if (page.length < size) break;
              before = page[0]!.key;
            }
            t.same(backward, all, `${name} ${plan}: backward in pages of ${size}`);
          }
          // Inclusive: the row at the key starts the page.
          const hits = index.search(base, plan);
          const middle = hits[10]!;
          const from = index.search({ ...base, count: 2, keyset: { direction: 'after', key: middle.key, inclusive: true } }, plan);
          t.same(from.map((h) => h.id), [hits[10]!.id, hits[11]!.id], `${name} ${plan}: inclusive after`);
          const upTo = index.search({ ...base, count: 2, keyset: { direction: 'before', key: middle.key, inclusive: true } }, plan);
          t.same(upTo.map((h) => h.id), [hits[9]!.id, hits[10]!.id], `${name} ${plan}: inclusive before`);
        }
      }
    }
  }
});

t.test('a keyset position binds its values and refuses a key of the wrong shape', async (t) => {
  const sort = SORTS['family,-birthdate']!;
  const plan = planSearch({
    resourceType: 'Patient',
    where: [],
    sort,
    count: 5,
    offset: 0,
    wantTotal: false,
    keyset: { direction: 'after', key: ["zz') OR 1=1 --", 123, 'Patient', 'p01'] },
  });
  t.notMatch(plan.sql, /zz|123|p01|'Patient'/, 'no key value is interpolated');
  t.equal(plan.sql.split('?').length - 1, plan.params.length, 'one bound value per placeholder');
  t.same(plan.params.slice(-2), [5, 0]);
  for (const key of [['a', 1, 'Patient'], ['a', 1, 2, 'p01'], [{}, 1, 'Patient', 'p01']] as unknown as SortValue[][]) {
    t.throws(
      () => planSearch({ resourceType: 'Patient', where: [], sort, count: 5, offset: 0, wantTotal: false, keyset: { direction: 'after', key } }),
      { name: 'StorageError', code: 'VLM_INDEX_BAD_KEYSET' },
    );
  }
});

t.test('ordered plans read their order from an index: no sort of the matches, the position is a seek', async (t) => {
  const db = openDb();
  t.teardown(() => db.close());
  const explain = ({ sql, params }: { sql: string; params: unknown[] }) =>
    db
      .prepare(`EXPLAIN QUERY PLAN ${sql}`)
      .all(...(params as never[]))
      .map((r) => String(r['detail']));
  const base: IndexQuery = { resourceType: 'Patient', where: [], sort: [], count: 5, offset: 0, wantTotal: false, keyset: { direction: 'after', key: ['Patient', 'p20'] } };
  const tagged: IndexQuery = { ...base, where: [{ negate: false, anyOf: [{ kind: 'token', param: '_tag', system: 's', code: 't' }] }] };
  const cases: [string, string[], RegExp][] = [
    ['default order (filter plan)', explain(planSearch(base)), /SEARCH r USING (?:COVERING )?INDEX search_resources_type \(type=\? AND rowid>\?\)/],
    ['default order (walk)', explain(planWalk(base)![0]!), /SEARCH r USING (?:COVERING )?INDEX search_resources_type \(type=\? AND rowid>\?\)/],
    ['default order, equality driver', explain(planWalk(tagged)![0]!), /SEARCH s USING (?:COVERING )?INDEX search_token_value \(param=\? AND code=\? AND system=\? AND rid>\?\)/],
    ['_sort=birthdate', explain(planWalk({ ...base, keyset: undefined, sort: [{ of: 'date', param: 'birthdate', descending: false }] })![0]!), /SEARCH s USING (?:COVERING )?INDEX search_date_low \(param=\?\)/],
    ['_sort=-birthdate', explain(planWalk({ ...base, keyset: undefined, sort: [{ of: 'date', param: 'birthdate', descending: true }] })![0]!), /SEARCH s USING (?:COVERING )?INDEX search_date_high \(param=\?\)/],
    ['_sort=_lastUpdated', explain(planWalk({ ...base, keyset: undefined, sort: [{ of: 'lastUpdated', param: '_lastUpdated', descending: false }] })![0]!), /USING INDEX (search_resources_updated|resources_type_updated) \(type=\?\)/],
  ];
  // Ids seek the (type, id) index — in a search and in the sources of a reverse link alike.
  const ids: IndexQuery = { ...base, keyset: undefined, where: [{ negate: false, anyOf: [{ kind: 'id', id: 'p01' }, { kind: 'id', id: 'p02' }] }] };
  const idPlan = explain(planSearch(ids));
  t.ok(idPlan.some((d) => /SEARCH r USING (?:COVERING )?INDEX sqlite_autoindex_resources_1 \(type=\? AND id=\?\)/.test(d)), `_id list: ${idPlan.join(' | ')}`);
  const referenced: IndexQuery = {
    ...base,
    resourceType: null,
    keyset: undefined,
    where: [{ negate: false, anyOf: [{ kind: 'referencedBy', params: ['subject'], sourceType: 'Patient', sourceIds: ['p01', 'p02'] }] }],
  };
  const refPlan = explain(planSearch(referenced));
  t.ok(refPlan.some((d) => /SEARCH r USING (?:COVERING )?INDEX sqlite_autoindex_resources_1 \(type=\? AND id=\?\)/.test(d)), `_include sources: ${refPlan.join(' | ')}`);
  t.notOk(refPlan.some((d) => /SCAN r\b/.test(d)), '_include: no walk over every resource');
  for (const [label, plan, expected] of cases) {
    t.ok(plan.some((d) => expected.test(d)), `${label}: ${plan.join(' | ')}`);
    // Ties of the first key may be ordered by rid in small runs ("FOR LAST TERM"); never the whole result.
    t.notOk(plan.some((d) => /TEMP B-TREE FOR ORDER BY/.test(d)), `${label}: no sort of the matches`);
  }
});
