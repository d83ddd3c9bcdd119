/**
 * Keyset paging in the SQLite planner (search-sql.ts `planSearch`, `IndexQuery.keyset`): walking
 * a search page by page with `after` (and backwards with `before`) yields exactly the one-shot
 * order, for sorts over several keys in mixed directions, with ties, NULLs (missing values sort
 * last both ways) and the (type, id) tiebreak; every value stays bound.
 */
import { DatabaseSync } from 'node:sqlite';
import t from 'tap';
import type { IndexQuery, IndexSort, SortValue } from '../../../src/storage/search-types.ts';
import { SEARCH_DDL, SearchSql, planSearch } from '../../../src/storage/sqlite/search-sql.ts';

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
  for (let i = 0; i < 40; i++) {
    const id = `p${String((i * 17) % 40).padStart(2, '0')}`;
    const rid = Number(res.run('Patient', id, 1_000 + (i % 7), i === 13 ? 1 : 0, `c${i}`).lastInsertRowid);
    if (i % 5 !== 0) date.run(rid, (i % 4) * 86_400_000, (i % 4) * 86_400_000 + 86_399_999);
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
  'default (type, id)': [],
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
  for (const [label, sort] of Object.entries(SORTS)) {
    for (const resourceType of ['Patient', null]) {
      const base: IndexQuery = { resourceType, where: [], sort, count: 1000, offset: 0, wantTotal: false };
      const all = index.search(base).map((h) => `${h.type}/${h.id}`);
      t.equal(all.length, resourceType ? 39 : 40, `${label}: deleted resources are not matched`);
      for (const size of [1, 3, 7]) {
        const forward: string[] = [];
        let key: SortValue[] | undefined;
        for (let guard = 0; guard < 100; guard++) {
          const page = index.search({ ...base, count: size, ...(key ? { keyset: { direction: 'after' as const, key } } : {}) });
          forward.push(...page.map((h) => `${h.type}/${h.id}`));
          if (page.length < size) break;
          key = page[page.length - 1]!.key;
        }
        t.same(forward, all, `${label} ${resourceType ?? 'system'}: forward in pages of ${size}`);
        const backward: string[] = [];
        let before: SortValue[] | undefined;
        for (let guard = 0; guard < 100; guard++) {
          const page = index.search({ ...base, count: size, keyset: { direction: 'before', ...(before ? { key: before } : {}) } });
          backward.unshift(...page.map((h) => `${h.type}/${h.id}`));
          if (page.length < size) break;
          before = page[0]!.key;
        }
        t.same(backward, all, `${label} ${resourceType ?? 'system'}: backward in pages of ${size}`);
      }
      // Inclusive: the row at the key starts the page.
      const hits = index.search(base);
      const middle = hits[10]!;
      const from = index.search({ ...base, count: 2, keyset: { direction: 'after', key: middle.key, inclusive: true } });
      t.same(from.map((h) => h.id), [hits[10]!.id, hits[11]!.id], `${label}: inclusive after`);
      const upTo = index.search({ ...base, count: 2, keyset: { direction: 'before', key: middle.key, inclusive: true } });
      t.same(upTo.map((h) => h.id), [hits[9]!.id, hits[10]!.id], `${label}: inclusive before`);
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

t.test('default order: the position is a seek on the (type, id) index, not a walk', async (t) => {
  const db = openDb();
  t.teardown(() => db.close());
  const { sql, params } = planSearch({
    resourceType: 'Patient',
    where: [],
    sort: [],
    count: 5,
    offset: 0,
    wantTotal: false,
    keyset: { direction: 'after', key: ['Patient', 'p20'] },
  });
  const plan = db
    .prepare(`EXPLAIN QUERY PLAN ${sql}`)
    .all(...params)
    .map((r) => String(r['detail']));
  t.ok(
    plan.some((d) => /SEARCH r USING INDEX sqlite_autoindex_resources_1 \(type=\? AND id>\?\)/.test(d)),
    `seeks (type=?, id>?): ${plan.join(' | ')}`,
  );
  t.notOk(plan.some((d) => /TEMP B-TREE/.test(d)), 'no sort step');
});
