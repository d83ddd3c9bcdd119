/**
 * Search index integration: a real node:sqlite database with the resources table of the
 * index contract plus SEARCH_DDL, loaded with official R4 examples, then every case of
 * test/fixtures/search-cases.json (query → expected ids) through parse → plan → SQLite.
 */
import fs from 'node:fs';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import t from 'tap';
import { createExtractor } from '../../../src/fhir/search/extract.ts';
import { parseSearchRequest } from '../../../src/fhir/search/parse.ts';
import { createSearchRegistry } from '../../../src/fhir/search/registry.ts';
import type { FhirResource } from '../../../src/fhir/request.ts';
import { R4_RESOURCE_TYPES } from '../../../src/fhir/validation/resource-types.ts';
import type { IndexQuery } from '../../../src/storage/search-types.ts';
import {
  SEARCH_DDL,
  SearchSql,
  deleteSearchRows,
  insertSearchRows,
  planCount,
  planSearch,
} from '../../../src/storage/sqlite/search-sql.ts';
import { R4_EXAMPLES, loadSearchCases, type SearchCase } from '../../helpers/search-cases.ts';

const EXAMPLES = R4_EXAMPLES;

const RESOURCES_DDL = `
CREATE TABLE resources (
  rid INTEGER PRIMARY KEY,
  type TEXT NOT NULL, id TEXT NOT NULL,
  version INTEGER NOT NULL,
  last_updated INTEGER NOT NULL,
  deleted INTEGER NOT NULL DEFAULT 0,
  cid TEXT,
  UNIQUE(type, id)
);`;

const fixture = loadSearchCases();
const registry = createSearchRegistry(R4_RESOURCE_TYPES);
const extractor = createExtractor(registry, { baseUrl: fixture.baseUrl });

function openLoadedDb(): { db: DatabaseSync; rids: Map<string, number> } {
  const db = new DatabaseSync(':memory:');
  db.exec(RESOURCES_DDL);
  db.exec(SEARCH_DDL);
  const insert = db.prepare('INSERT INTO resources (type, id, version, last_updated, deleted, cid) VALUES (?, ?, 1, ?, ?, ?)');
  const rids = new Map<string, number>();
  db.exec('BEGIN');
  for (const entry of fixture.resources) {
    const resource = JSON.parse(fs.readFileSync(path.join(EXAMPLES, entry.file), 'utf8')) as FhirResource;
    const lastUpdated = Date.parse(entry.lastUpdated ?? fixture.defaultLastUpdated);
    const { lastInsertRowid } = insert.run(resource.resourceType, resource.id!, lastUpdated, entry.deleted ? 1 : 0, `cid-${resource.id}`);
    const rid = Number(lastInsertRowid);
    rids.set(`${resource.resourceType}/${resource.id}`, rid);
    // Rows even for the deleted one: the planner must filter on resources.deleted by itself.
    insertSearchRows(db, rid, extractor.extract(resource));
  }
  db.exec('COMMIT');
  return { db, rids };
}

function parse(c: SearchCase): IndexQuery {
  const parsed = parseSearchRequest(registry, c.type, [...new URLSearchParams(c.query)], {
    baseUrl: fixture.baseUrl,
    now: Date.parse(fixture.now),
  });
  if (parsed.errors.length || parsed.unknown.length) {
    throw new Error(`${c.query}: errors ${JSON.stringify(parsed.errors)} unknown ${parsed.unknown}`);
  }
  return parsed.query;
}

t.test('search cases (fixture) over a real SQLite index', async (t) => {
  const { db } = openLoadedDb();
  t.teardown(() => db.close());
  const index = new SearchSql(db);
  for (const c of fixture.cases) {
    t.test(`${c.type ?? '[system]'}?${c.query} — ${c.name}`, async (t) => {
      const query = parse(c);
      const hits = index.search(query);
      const ids = hits.map((h) => (c.type === null ? `${h.type}/${h.id}` : h.id));
      if (c.ordered) t.same(ids, c.expect, 'ids in order');
      else t.same([...ids].sort(), [...c.expect].sort(), 'ids');
      t.equal(index.count(query), c.total ?? c.expect.length, 'planCount total');
    });
  }
});

t.test('planned SQL binds every value and keeps the contract shape', async (t) => {
  const query = parse({ name: '', type: 'Observation', query: "code=http://loinc.org|8310-5&subject=Patient/x&identifier=a'b--&date=ge2020&_sort=-date&_count=7", expect: [] });
  const plan = planSearch(query);
  t.match(plan.sql, /^SELECT rid, type, id, version, cid, last_updated, k0 FROM \(SELECT r\.rid, r\.type, r\.id, r\.version, r\.cid, r\.last_updated, \(SELECT MAX\(s\.high\) .* FROM resources r WHERE r\.deleted = 0 AND /);
  t.match(plan.sql, /LIMIT \? OFFSET \?$/);
  t.notMatch(plan.sql, /8310|loinc|Patient|'b|2020|Observation|subject|identifier/, 'no value or parameter code is interpolated');
  t.equal(plan.sql.split('?').length - 1, plan.params.length, 'one bound value per placeholder');
  t.same(plan.params.slice(-2), [7, 0]);
  const count = planCount(query);
  t.match(count.sql, /^SELECT COUNT\(\*\) AS n FROM resources r WHERE r\.deleted = 0 AND /);
  t.equal(count.sql.split('?').length - 1, count.params.length);
});

t.test('deleteSearchRows removes a resource from every index table', async (t) => {
  const { db, rids } = openLoadedDb();
  t.teardown(() => db.close());
  const index = new SearchSql(db);
  const rid = rids.get('Patient/xds')!;
  const query = parse({ name: '', type: 'Patient', query: 'family=doe', expect: [] });
  t.same(index.search(query).map((h) => h.id), ['xds']);
  deleteSearchRows(db, rid);
  t.same(index.search(query), []);
  for (const kind of ['string', 'token', 'date', 'reference', 'number', 'quantity', 'uri']) {
    const row = db.prepare(`SELECT COUNT(*) AS n FROM search_${kind} WHERE rid = ?`).get(rid) as { n: number };
    t.equal(row.n, 0, `search_${kind} empty for rid`);
  }
  // Re-index (the update path: delete then insert inside one transaction).
  const resource = JSON.parse(fs.readFileSync(path.join(EXAMPLES, 'Patient/Patient-xds.json'), 'utf8')) as FhirResource;
  index.deleteRows(rid);
  index.insertRows(rid, extractor.extract(resource));
  t.same(index.search(query).map((h) => h.id), ['xds']);
});

t.test('SEARCH_DDL is idempotent and search rows follow the resource (FK cascade)', async (t) => {
  const { db, rids } = openLoadedDb();
  t.teardown(() => db.close());
  db.exec(SEARCH_DDL);
  db.exec('PRAGMA foreign_keys = ON');
  const rid = rids.get('Observation/example')!;
  db.prepare('DELETE FROM resources WHERE rid = ?').run(rid);
  const row = db.prepare('SELECT COUNT(*) AS n FROM search_token WHERE rid = ?').get(rid) as { n: number };
  t.equal(row.n, 0);
});

t.test('timing: a larger index (informational, no assertion on speed)', async (t) => {
  // ~100k Observations spread over 2,000 patients, 20 codes and 10 years; prints query times.
  const db = new DatabaseSync(':memory:');
  t.teardown(() => db.close());
  db.exec(RESOURCES_DDL);
  db.exec(SEARCH_DDL);
  const index = new SearchSql(db);
  const insert = db.prepare('INSERT INTO resources (type, id, version, last_updated, deleted, cid) VALUES (?, ?, 1, ?, 0, ?)');
  const start = performance.now();
  db.exec('BEGIN');
  const N = 100_000;
  for (let i = 0; i < N; i++) {
    const day = new Date(Date.UTC(2015, 0, 1) + (i % 3650) * 86_400_000).toISOString().slice(0, 10);
    const resource: FhirResource = {
      resourceType: 'Observation',
      id: `o${i}`,
      status: 'final',
      code: { coding: [{ system: 'http://loinc.org', code: `code-${i % 20}` }] },
      subject: { reference: `Patient/p${i % 2000}` },
      effectiveDateTime: day,
      valueQuantity: { value: i % 200, unit: 'kg', system: 'http://unitsofmeasure.org', code: 'kg' },
    };
    const rid = Number(insert.run('Observation', resource.id!, i, `cid${i}`).lastInsertRowid);
    index.insertRows(rid, extractor.extract(resource));
  }
  db.exec('COMMIT');
  db.exec('ANALYZE');
  t.comment(`loaded ${N} observations (extract + index) in ${Math.round(performance.now() - start)} ms`);
  for (const q of [
    'subject=Patient/p17',
    'code=http://loinc.org|code-3&date=ge2020-01-01&_count=50',
    'code=http://loinc.org|code-3&date=ge2020-01-01&_count=50&_sort=-date',
    'date=ge2024-06-01',
    'value-quantity=gt150&_count=50',
  ]) {
    const query = parse({ name: '', type: 'Observation', query: q, expect: [] });
    index.search(query);
    const t0 = performance.now();
    const hits = index.search(query);
    const t1 = performance.now();
    const total = index.count(query);
    const t2 = performance.now();
    t.comment(`${q}: page ${hits.length} in ${(t1 - t0).toFixed(2)} ms, total ${total} in ${(t2 - t1).toFixed(2)} ms`);
    t.ok(hits.length > 0, q);
  }
});
