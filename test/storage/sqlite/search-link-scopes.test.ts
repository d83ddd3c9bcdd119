/**
 * IndexQuery.linkScopes (consent on chains and `_has`, src/fhir/access.ts `linkScopes`): the
 * resources a chain's targets or a `_has`'s sources select count only when the key scope of their
 * current version passes the filter of their type — at any depth, on both the driving and the
 * probing plan, in the page and in the count. The query's own matches are never filtered.
 */
import { DatabaseSync } from 'node:sqlite';
import t from 'tap';
import type { IndexClause, IndexQuery, KeyScopeFilter, SearchRow } from '../../../src/storage/search-types.ts';
import { SEARCH_DDL, SearchSql, insertSearchRows } from '../../../src/storage/sqlite/search-sql.ts';

const DDL = `
CREATE TABLE resources (
  rid INTEGER PRIMARY KEY, type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL,
  last_updated INTEGER NOT NULL, deleted INTEGER NOT NULL DEFAULT 0, cid TEXT, UNIQUE(type, id));
CREATE TABLE versions (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, rid INTEGER NOT NULL, type TEXT NOT NULL, id TEXT NOT NULL,
  version INTEGER NOT NULL, key_scope TEXT NOT NULL, UNIQUE (type, id, version));`;

const db = new DatabaseSync(':memory:');
db.exec(DDL);
db.exec(SEARCH_DDL);
const sql = new SearchSql(db);

let rid = 0;
/** A resource at version 2, whose version 1 had another key scope (only the current one counts). */
function add(type: string, id: string, keyScope: string, rows: SearchRow[]): void {
  rid++;
  db.prepare('INSERT INTO resources (rid, type, id, version, last_updated) VALUES (?, ?, ?, 2, 0)').run(rid, type, id);
  db.prepare('INSERT INTO versions (rid, type, id, version, key_scope) VALUES (?, ?, ?, 1, ?)').run(rid, type, id, 'old-scope');
  db.prepare('INSERT INTO versions (rid, type, id, version, key_scope) VALUES (?, ?, ?, 2, ?)').run(rid, type, id, keyScope);
  insertSearchRows(db, rid, rows);
}
const ref = (param: string, type: string, id: string): SearchRow => ({ kind: 'reference', param, targetType: type, targetId: id, url: null });
const name = (value: string): SearchRow => ({ kind: 'string', param: 'name', norm: value.toLowerCase(), exact: value });
const code = (value: string): SearchRow => ({ kind: 'token', param: 'code', system: 'http://x', code: value, text: null });

add('Patient', 'pa', 'scope-a', [name('Fam')]);
add('Patient', 'pb', 'scope-b', [name('Fam')]);
add('Practitioner', 'prac-a', 'shared', []);
add('Practitioner', 'prac-b', 'shared', []);
add('Observation', 'oa', 'scope-a', [ref('subject', 'Patient', 'pa'), ref('performer', 'Practitioner', 'prac-a'), code('c')]);
add('Observation', 'ob', 'scope-b', [ref('subject', 'Patient', 'pb'), ref('performer', 'Practitioner', 'prac-b'), code('c'), code('secret')]);
add('Observation', 'link', 'scope-a', [ref('subject', 'Patient', 'pa'), ref('has-member', 'Observation', 'ob'), code('panel')]);

const clause = (...anyOf: IndexClause['anyOf']): IndexClause => ({ negate: false, anyOf });
function query(resourceType: string, where: IndexClause[], linkScopes?: Record<string, KeyScopeFilter>): IndexQuery {
  return { resourceType, where, sort: [], count: 100, offset: 0, wantTotal: true, ...(linkScopes ? { linkScopes } : {}) };
}
// Which resources match (the order is tested elsewhere: search-keyset.test.ts, search-cases.json).
const run = (q: IndexQuery) => ({ ids: sql.search(q).map((h) => h.id).sort(), total: sql.count(q) });

// Observation?subject.name=fam (the chain drives) and Observation?code=c&subject.name=fam (it probes).
const chain = clause({ kind: 'chain', param: 'subject', targets: [{ resourceType: 'Patient', where: [clause({ kind: 'string', param: 'name', op: 'starts', value: 'fam' })] }] });
const codeC = clause({ kind: 'token', param: 'code', code: 'c' });
// Observation?has-member:Observation.code=secret
const memberChain = clause({
  kind: 'chain',
  param: 'has-member',
  targets: [{ resourceType: 'Observation', where: [clause({ kind: 'token', param: 'code', code: 'secret' })] }],
});
// Practitioner?_has:Observation:performer:subject=Patient/pb
const has = (patient: string) =>
  clause({ kind: 'has', param: 'performer', source: { resourceType: 'Observation', where: [clause({ kind: 'reference', param: 'subject', id: patient, types: ['Patient'] })] } });
// Practitioner?_has:Observation:performer:subject.name=fam (a chain inside a _has)
const hasChain = clause({ kind: 'has', param: 'performer', source: { resourceType: 'Observation', where: [chain] } });

const onlyA: KeyScopeFilter = { only: ['shared', 'scope-a'] };

t.test('chains: the targets must pass the filter', async (t) => {
  t.same(run(query('Observation', [chain])), { ids: ['link', 'oa', 'ob'], total: 3 }, 'unfiltered');
  t.same(run(query('Observation', [chain], { Patient: onlyA })), { ids: ['link', 'oa'], total: 2 }, 'only scope a (driving)');
  t.same(run(query('Observation', [codeC, chain], { Patient: onlyA })), { ids: ['oa'], total: 1 }, 'only scope a (probing)');
  t.same(run(query('Observation', [chain], { Patient: { except: ['scope-a'] } })), { ids: ['ob'], total: 1 }, 'all but scope a');
  t.same(run(query('Observation', [chain], { Patient: { only: [] } })), { ids: [], total: 0 }, 'nothing');
  t.same(run(query('Observation', [chain], { Patient: { only: ['old-scope'] } })), { ids: [], total: 0 }, "a former version's scope does not count");
  t.same(run(query('Observation', [chain], { Observation: { only: [] } })), { ids: ['link', 'oa', 'ob'], total: 3 }, "the query's own matches are not filtered");
});

t.test('a chain through a withheld resource is no oracle', async (t) => {
  t.same(run(query('Observation', [memberChain])).ids, ['link'], 'unfiltered: link matches through ob');
  t.same(run(query('Observation', [memberChain], { Observation: onlyA })), { ids: [], total: 0 }, 'ob withheld: no match');
});

t.test('_has: the sources must pass the filter', async (t) => {
  t.same(run(query('Practitioner', [has('pb')])), { ids: ['prac-b'], total: 1 }, 'unfiltered');
  t.same(run(query('Practitioner', [has('pb')], { Observation: onlyA })), { ids: [], total: 0 }, 'withheld source');
  t.same(run(query('Practitioner', [has('pa')], { Observation: onlyA })), { ids: ['prac-a'], total: 1 }, 'permitted source');
  t.same(run(query('Practitioner', [clause({ kind: 'id', id: 'prac-b' }), has('pb')], { Observation: onlyA })).ids, [], 'probing');
  t.same(run(query('Practitioner', [hasChain], { Observation: onlyA, Patient: onlyA })).ids, ['prac-a'], 'nested: both levels filtered');
  t.same(run(query('Practitioner', [hasChain], { Patient: onlyA })).ids, ['prac-a'], 'nested: the inner chain alone');
  t.same(run(query('Practitioner', [hasChain], { Observation: onlyA })).ids, ['prac-a'], 'nested: the _has alone');
  t.same(run(query('Practitioner', [hasChain])).ids, ['prac-a', 'prac-b'], 'nested: unfiltered');
});
