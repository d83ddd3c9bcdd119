/**
 * Long OR lists and long AND lists in the SQLite search planner: a list of any length is one
 * bound JSON parameter (one SQL text), matches exactly the union of its values' single searches
 * (driving the plan or probed per candidate), still reads the indexes (EXPLAIN QUERY PLAN), and a
 * search beyond SQLite's limits on one statement is VLM_INDEX_QUERY_TOO_COMPLEX ('invalid'),
 * while other SQLite errors keep their own handling. Prints timings on ~20k Observations.
 */
import { DatabaseSync } from 'node:sqlite';
import t from 'tap';
import { createExtractor } from '../../../src/fhir/search/extract.ts';
import { parseSearchRequest } from '../../../src/fhir/search/parse.ts';
import { createSearchRegistry } from '../../../src/fhir/search/registry.ts';
import type { FhirResource } from '../../../src/fhir/request.ts';
import { R4_RESOURCE_TYPES } from '../../../src/fhir/validation/resource-types.ts';
import { StorageError, isStorageError } from '../../../src/storage/errors.ts';
import type { IndexQuery } from '../../../src/storage/search-types.ts';
import { SEARCH_DDL, SearchSql, planCount, planSearch, queryLimitError } from '../../../src/storage/sqlite/search-sql.ts';
import { SqliteIndexStore } from '../../../src/storage/sqlite/sqlite-index.ts';

const BASE = 'http://example.org/fhir';
const registry = createSearchRegistry(R4_RESOURCE_TYPES);
const extractor = createExtractor(registry, { baseUrl: BASE });

const RESOURCES_DDL = `
CREATE TABLE resources (
  rid INTEGER PRIMARY KEY,
  type TEXT NOT NULL, id TEXT NOT NULL,
  version INTEGER NOT NULL,
  last_updated INTEGER NOT NULL,
  deleted INTEGER NOT NULL DEFAULT 0,
  cid TEXT,
  UNIQUE(type, id)
);
CREATE INDEX resources_type_updated ON resources (type, last_updated);`;

const SYSTEMS = ['http://loinc.org', 'http://snomed.info/sct', 'urn:local'];

function openDb(): { db: DatabaseSync; index: SearchSql; load(resources: FhirResource[]): void } {
  const db = new DatabaseSync(':memory:');
  db.exec(RESOURCES_DDL);
  db.exec(SEARCH_DDL);
  const index = new SearchSql(db);
  const insert = db.prepare('INSERT INTO resources (type, id, version, last_updated, deleted, cid) VALUES (?, ?, 1, ?, 0, ?)');
  return {
    db,
    index,
    load(resources) {
      db.exec('BEGIN');
      resources.forEach((r, i) => {
        const rid = Number(insert.run(r.resourceType, r.id!, Date.UTC(2020, 0, 1) + i * 60_000, `cid-${r.id}`).lastInsertRowid);
        index.insertRows(rid, extractor.extract(r));
      });
      db.exec('COMMIT');
    },
  };
}

/** 300 Observations and 300 Patients covering every list shape (tokens with and without system, typed, untyped and external references, names, profiles, dates). */
function corpus(): FhirResource[] {
  const out: FhirResource[] = [];
  for (let i = 0; i < 300; i++) {
    const coding: Record<string, string>[] = [{ system: SYSTEMS[i % 3]!, code: `c${i % 50}` }];
    if (i % 5 === 0) coding.push({ code: `ns${i % 7}` });
    out.push({
      resourceType: 'Observation',
      id: `o${i}`,
      meta: { profile: [`http://example.org/StructureDefinition/obs/p${i % 30}`] },
      status: i % 10 === 0 ? 'preliminary' : 'final',
      code: { coding, text: `Reading ${i % 40}` },
      identifier: [{ system: 'urn:ids', value: `id-${i}` }],
      subject: { reference: i % 7 === 0 ? `http://other.org/fhir/Patient/e${i % 20}` : i % 4 === 0 ? `Group/g${i % 40}` : `Patient/p${i % 40}` },
      performer: [{ reference: 'Practitioner/doc' }],
      effectiveDateTime: new Date(Date.UTC(2019, 0, 1) + (i % 100) * 86_400_000).toISOString().slice(0, 10),
    });
    out.push({
      resourceType: 'Patient',
      id: `p${i}`,
      meta: { profile: [`http://example.org/StructureDefinition/pat/p${i % 30}`] },
      identifier: [{ system: 'urn:mrn', value: `mrn-${i}` }],
      name: [{ family: `Fam${String(i).padStart(4, '0')}x${i % 2 ? 'é' : 'e'}`, given: [`Given${i % 9}`] }],
      generalPractitioner: [{ reference: 'Practitioner/doc' }],
    });
  }
  return out;
}

function parse(type: string | null, params: [string, string][]): IndexQuery {
  const parsed = parseSearchRequest(registry, type, params, { baseUrl: BASE, now: Date.UTC(2025, 0, 1) });
  if (parsed.errors.length || parsed.unknown.length) {
    throw new Error(`${JSON.stringify(params).slice(0, 200)}: ${JSON.stringify(parsed.errors)} ${parsed.unknown}`);
  }
  return { ...parsed.query, count: 1000, offset: 0 };
}

/** 1,000 values: the `hits` (which match something) spread among misses. */
function thousand(hits: readonly string[], miss: (i: number) => string): string[] {
  const values = Array.from({ length: 1000 - hits.length }, (_, i) => miss(i));
  hits.forEach((h, k) => values.splice(Math.floor((k * values.length) / hits.length), 0, h));
  return values;
}

const commaList = (values: readonly string[]) => values.map((v) => v.replace(/[\\,]/g, (c) => `\\${c}`)).join(',');

interface ListCase {
  name: string;
  type: string;
  param: string;
  /** Values that match something, spread among 1,000 - hits.length misses. */
  hits: string[];
  miss: (i: number) => string;
  /** A clause placed before the list that matches every resource of the type and drives the plan, making the list a per-candidate probe. */
  driver: [string, string];
}

const CASES: ListCase[] = [
  {
    name: 'token system|code',
    type: 'Observation',
    param: 'code',
    hits: ['http://loinc.org|c3', 'urn:local|c5', 'http://snomed.info/sct|c49'],
    miss: (i) => `http://loinc.org|miss${i}`,
    driver: ['performer', 'Practitioner/doc'],
  },
  {
    name: 'token code only',
    type: 'Observation',
    param: 'code',
    hits: ['c7', 'ns3', 'c11'],
    miss: (i) => `miss${i}`,
    driver: ['performer', 'Practitioner/doc'],
  },
  {
    name: 'token mixed shapes (code, |code, system|code, system|)',
    type: 'Observation',
    param: 'code',
    hits: ['c8', '|ns2', 'urn:local|c2', 'http://snomed.info/sct|', '|c9'],
    miss: (i) => (i % 2 ? `urn:x|m${i}` : `|m${i}`),
    driver: ['performer', 'Practitioner/doc'],
  },
  {
    name: 'token identifier system|value',
    type: 'Observation',
    param: 'identifier',
    hits: ['urn:ids|id-0', 'urn:ids|id-150', 'urn:ids|id-299'],
    miss: (i) => `urn:ids|id-x${i}`,
    driver: ['performer', 'Practitioner/doc'],
  },
  {
    name: 'token :text prefixes',
    type: 'Observation',
    param: 'code:text',
    hits: ['reading 3', 'Reading 17'],
    miss: (i) => `nothing ${i}`,
    driver: ['performer', 'Practitioner/doc'],
  },
  {
    name: 'string prefix (accents normalised)',
    type: 'Patient',
    param: 'family',
    hits: ['Fam0001', 'fam0002xE', 'FAM029', 'Fam0100xé'],
    miss: (i) => `Nobody${i}`,
    driver: ['general-practitioner', 'Practitioner/doc'],
  },
  {
    name: 'string :exact',
    type: 'Patient',
    param: 'family:exact',
    hits: ['Fam0001xé', 'Fam0002xe', 'Fam0003xe'],
    miss: (i) => `Fam${String(i).padStart(4, '0')}xE`,
    driver: ['general-practitioner', 'Practitioner/doc'],
  },
  {
    name: 'string :contains',
    type: 'Patient',
    param: 'family:contains',
    hits: ['0042', '99x', '%', '_'],
    miss: (i) => `zz${i}`,
    driver: ['general-practitioner', 'Practitioner/doc'],
  },
  {
    name: 'reference Type/id',
    type: 'Observation',
    param: 'subject',
    hits: ['Patient/p1', 'Group/g8', 'Patient/p39', 'Group/g1'],
    miss: (i) => `Patient/nobody${i}`,
    driver: ['performer', 'Practitioner/doc'],
  },
  {
    name: 'reference plain ids, :Type and external urls',
    type: 'Observation',
    param: 'subject',
    hits: ['p2', 'g12', 'http://other.org/fhir/Patient/e7', `${BASE}/Patient/p5`],
    miss: (i) => (i % 2 ? `x${i}` : `http://other.org/fhir/Patient/x${i}`),
    driver: ['performer', 'Practitioner/doc'],
  },
  {
    name: 'uri',
    type: 'Observation',
    param: '_profile',
    hits: ['http://example.org/StructureDefinition/obs/p3', 'http://example.org/StructureDefinition/obs/p29'],
    miss: (i) => `http://example.org/StructureDefinition/obs/q${i}`,
    driver: ['performer', 'Practitioner/doc'],
  },
  {
    name: 'uri :below',
    type: 'Patient',
    param: '_profile:below',
    hits: ['http://example.org/StructureDefinition/pat/p1', 'http://example.org/StructureDefinition/pat/p22'],
    miss: (i) => `http://nowhere.org/${i}`,
    driver: ['general-practitioner', 'Practitioner/doc'],
  },
  {
    name: 'uri :above',
    type: 'Observation',
    param: '_profile:above',
    hits: ['http://example.org/StructureDefinition/obs/p4/v2', 'http://example.org/StructureDefinition/obs/p5'],
    miss: (i) => `http://nowhere.org/${i}/a`,
    driver: ['performer', 'Practitioner/doc'],
  },
  {
    name: '_id',
    type: 'Observation',
    param: '_id',
    hits: ['o1', 'o200', 'o299'],
    miss: (i) => `nope${i}`,
    driver: ['performer', 'Practitioner/doc'],
  },
  {
    name: 'date (one predicate per value, balanced OR)',
    type: 'Observation',
    param: 'date',
    hits: ['2019-01-05', 'ge2019-04-09', 'lt2019-01-02'],
    miss: (i) => `${1900 + (i % 100)}-01-01`,
    driver: ['performer', 'Practitioner/doc'],
  },
];

t.test('1,000-value OR lists match exactly the union of their single values', async (t) => {
  const { db, index, load } = openDb();
  t.teardown(() => db.close());
  load(corpus());
  const ids = (q: IndexQuery) => index.search(q).map((h) => h.id).sort();
  for (const c of CASES) {
    t.test(c.name, async (t) => {
      const values = thousand(c.hits, c.miss);
      const expected = new Set<string>();
      for (const v of values) for (const id of ids(parse(c.type, [[c.param, commaList([v])]]))) expected.add(id);
      const want = [...expected].sort();
      t.ok(want.length > 0 && want.length < 300, 'some values match, and not every resource');
      const list = parse(c.type, [[c.param, commaList(values)]]);
      t.equal(list.where[0]!.anyOf.length, 1000, '1,000 values in one clause');
      t.same(ids(list), want, 'the list alone (driving when it can)');
      t.equal(index.count(list), want.length, 'count');
      const probed = parse(c.type, [c.driver, [c.param, commaList(values)]]);
      t.same(ids(probed), want, 'after a driving clause (probed per candidate)');
      t.equal(index.count(probed), want.length);
      // Lists of every length share one SQL text with one bound value per list (per value shape:
      // the hits alone have every shape of the list).
      const short = planSearch(parse(c.type, [[c.param, commaList(c.hits)]]));
      const long = planSearch(list);
      if (!c.param.startsWith('date')) {
        t.equal(long.sql, short.sql, 'same SQL for 2 and 1,000 values');
        t.equal(long.params.length, short.params.length, 'same number of bound values');
      }
      t.equal(long.sql.split('?').length - 1, long.params.length, 'one bound value per placeholder');
      t.notMatch(long.sql, /miss|nobody|nope|Fam0|loinc|example\.org|other\.org|2019|1950/, 'no value is interpolated');
    });
  }
  t.test(':not over 1,000 codes is the complement', async (t) => {
    const values = thousand(['c1', 'c2', 'ns4'], (i) => `miss${i}`);
    const all = ids(parse('Observation', []));
    const some = new Set(ids(parse('Observation', [['code', commaList(values)]])));
    t.same(ids(parse('Observation', [['code:not', commaList(values)]])), all.filter((id) => !some.has(id)));
  });
  t.test('1,000 AND repetitions nest as a balanced tree', async (t) => {
    const params: [string, string][] = [['subject', 'Patient/p1']];
    for (let i = 0; i < 999; i++) params.push([i % 2 ? '_profile:below' : 'date', i % 2 ? 'http://example.org/StructureDefinition' : 'ge2018']);
    const q = parse('Observation', params);
    t.equal(q.where.length, 1000);
    t.same(ids(q), ids(parse('Observation', [['subject', 'Patient/p1']])));
    t.equal(index.count(q), ids(q).length);
  });
  t.test('1,000 _lastUpdated values and 1,000 _type values', async (t) => {
    // Resource k of the corpus was written at 2020-01-01 + k minutes; Patient pN is resource 2N + 1.
    const stamps = thousand(['2020-01-01T00:01:00Z', 'eq2020-01-01T00:05:00Z'], (i) => `19${String(i % 100).padStart(2, '0')}-01`);
    t.same(ids(parse('Patient', [['_lastUpdated', commaList(stamps)]])), ['p0', 'p2']);
    const types = thousand(['Patient', 'Observation'], (i) => R4_RESOURCE_TYPES[i % R4_RESOURCE_TYPES.length]!);
    const system = parse(null, [['_type', commaList(types)], ['_id', 'p1,o1,nope']]);
    t.same(index.search(system).map((h) => `${h.type}/${h.id}`).sort(), ['Observation/o1', 'Patient/p1']);
    t.equal(planSearch(system).sql, planSearch(parse(null, [['_type', 'Patient'], ['_id', 'p1']])).sql, 'one SQL text');
  });
});

/** `EXPLAIN QUERY PLAN` lines of a planned statement. */
function plan(db: DatabaseSync, planned: { sql: string; params: unknown[] }): string[] {
  return db
    .prepare(`EXPLAIN QUERY PLAN ${planned.sql}`)
    .all(...(planned.params as never[]))
    .map((row) => String(row['detail']));
}

t.test('timing and query plans on ~20k Observations (informational, no assertion on speed)', async (t) => {
  const { db, index } = openDb();
  t.teardown(() => db.close());
  const insert = db.prepare('INSERT INTO resources (type, id, version, last_updated, deleted, cid) VALUES (?, ?, 1, ?, 0, ?)');
  const start = performance.now();
  const N = 20_000;
  db.exec('BEGIN');
  for (let i = 0; i < N; i++) {
    const code = i % 20 === 0 ? '8867-4' : `code-${i % 20}`;
    const resource: FhirResource = {
      resourceType: 'Observation',
      id: `o${i}`,
      status: 'final',
      code: { coding: [{ system: 'http://loinc.org', code }] },
      subject: { reference: `Patient/p${i % 1000}` },
      identifier: [{ system: 'urn:ids', value: `id-${i}` }],
      effectiveDateTime: new Date(Date.UTC(2015, 0, 1) + (i % 3650) * 86_400_000).toISOString().slice(0, 10),
    };
    const rid = Number(insert.run('Observation', resource.id!, i, `cid${i}`).lastInsertRowid);
    index.insertRows(rid, extractor.extract(resource));
  }
  db.exec('COMMIT');
  t.comment(`loaded ${N} observations in ${Math.round(performance.now() - start)} ms (no ANALYZE, as in production)`);
  const many = (n: number, f: (i: number) => string) => commaList(Array.from({ length: n }, (_, i) => f(i)));
  for (const [label, params] of [
    ['code=http://loinc.org|8867-4&date=ge2020-01-01&_count=50', [['code', 'http://loinc.org|8867-4'], ['date', 'ge2020-01-01']]],
    ['subject=Patient/p17', [['subject', 'Patient/p17']]],
    ['code=<1,000 system|code>', [['code', many(1000, (i) => `http://loinc.org|code-${i}`)]]],
    ['identifier=<1,000 system|value>', [['identifier', many(1000, (i) => `urn:ids|id-${i * 13}`)]]],
    ['subject=<1,000 references>', [['subject', many(1000, (i) => `Patient/p${i * 3}`)]]],
    ['subject=Patient/p17&code=<1,000 codes>', [['subject', 'Patient/p17'], ['code', many(1000, (i) => `code-${i}`)]]],
    ['code=http://loinc.org|8867-4&identifier=<1,000 system|value>', [['code', 'http://loinc.org|8867-4'], ['identifier', many(1000, (i) => `urn:ids|id-${i * 13}`)]]],
  ] as [string, [string, string][]][]) {
    const query = { ...parse('Observation', params), count: 50 };
    index.search(query);
    const t0 = performance.now();
    const hits = index.search(query);
    const t1 = performance.now();
    const total = index.count(query);
    const t2 = performance.now();
    t.comment(`${label}: page ${hits.length} in ${(t1 - t0).toFixed(2)} ms, total ${total} in ${(t2 - t1).toFixed(2)} ms`);
    t.ok(hits.length > 0, label);
    for (const planned of [planSearch(query), planCount(query)]) {
      const lines = plan(db, planned);
      t.notOk(
        lines.some((l) => /^SCAN (?!j\b|json_each\b)/.test(l)),
        `${label}: no table scan besides the bound lists\n${lines.join('\n')}`,
      );
      t.ok(lines.some((l) => /^SEARCH s USING COVERING INDEX search_\w+_value|^SEARCH s USING COVERING INDEX search_reference_target/.test(l)), 'driven by a value index');
    }
  }
});

t.test('a search beyond SQLite limits is VLM_INDEX_QUERY_TOO_COMPLEX (invalid); other errors keep their handling', async (t) => {
  const scratch = new DatabaseSync(':memory:');
  const error = (sql: string): unknown => {
    try {
      scratch.prepare(sql).all();
    } catch (err) {
      return err;
    }
    throw new Error(`no error from ${sql.slice(0, 60)}`);
  };
  const limits = {
    'expression depth': error(`SELECT ${Array.from({ length: 1100 }, (_, i) => `${i} = 1`).join(' OR ')}`),
    'compound terms': error(Array.from({ length: 600 }, (_, i) => `SELECT ${i}`).join(' UNION ALL ')),
    'SQL variables': error(`SELECT ${Array.from({ length: 40_000 }, () => '?').join(',')}`),
    'LIKE pattern': error(`SELECT 'a' LIKE '${'%'.repeat(60_000)}'`),
  };
  for (const [name, err] of Object.entries(limits)) {
    const mapped = queryLimitError(err);
    t.ok(mapped instanceof StorageError, name);
    t.equal(mapped?.code, 'VLM_INDEX_QUERY_TOO_COMPLEX');
    t.equal(mapped?.category, 'invalid');
    t.equal(mapped?.cause, err, 'the SQLite error is the cause');
  }
  t.equal(queryLimitError(error('SELECT * FROM no_such_table')), undefined, 'a schema fault is not the request’s');
  t.equal(queryLimitError(error('SELECT no_such_function(1)')), undefined);
  scratch.close();
  let closed: unknown;
  try {
    scratch.prepare('SELECT 1');
  } catch (err) {
    closed = err;
  }
  t.equal(queryLimitError(closed), undefined, 'a closed database');
  const corrupt = Object.assign(new Error('database disk image is malformed'), { code: 'ERR_SQLITE_ERROR', errcode: 11 });
  t.equal(queryLimitError(corrupt), undefined, 'a corrupt database');
  const busy = Object.assign(new Error('database is locked'), { code: 'ERR_SQLITE_ERROR', errcode: 5 });
  t.equal(queryLimitError(busy), undefined, 'a busy database');
  const lookalike = Object.assign(new Error('too many SQL variables'), { code: 'ERR_SQLITE_ERROR', errcode: 11 });
  t.equal(queryLimitError(lookalike), undefined, 'the message alone is not enough');
  t.equal(queryLimitError(new Error('Expression tree is too large')), undefined, 'not a SQLite error');
  t.equal(queryLimitError('Expression tree is too large'), undefined);

  // 20,000 dates bind 40,000 values: more than SQLite's 32,766 variables.
  const dates = Array.from({ length: 20_000 }, (_, i) => new Date(Date.UTC(2000, 0, 1) + i * 86_400_000).toISOString().slice(0, 10));
  const huge = parse('Observation', [['date', dates.join(',')]]);
  const { db, index } = openDb();
  t.throws(() => index.search(huge), { name: 'StorageError', code: 'VLM_INDEX_QUERY_TOO_COMPLEX', category: 'invalid' });
  t.throws(() => index.count(huge), { name: 'StorageError', code: 'VLM_INDEX_QUERY_TOO_COMPLEX', category: 'invalid' });
  db.exec('DROP TABLE search_token');
  let schema: unknown;
  try {
    index.search(parse('Observation', [['code', 'x']]));
  } catch (err) {
    schema = err;
  }
  t.notOk(isStorageError(schema), 'a missing table propagates as it was (a fault, 500)');
  t.match(String((schema as Error).message), /no such table/);
  db.close();

  const store = SqliteIndexStore.open(':memory:');
  await t.rejects(store.search(huge), { name: 'StorageError', code: 'VLM_INDEX_QUERY_TOO_COMPLEX', category: 'invalid' });
  const fine = await store.search({ ...parse('Observation', [['code', 'x']]), wantTotal: true });
  t.same(fine, { records: [], total: 0, keys: [] });
  await store.close();
  await t.rejects(store.search(huge), { name: 'StorageError', code: 'VLM_INDEX_CLOSED', category: 'unavailable' });
});
