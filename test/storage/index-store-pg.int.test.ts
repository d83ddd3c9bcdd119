/**
 * The index on PostgreSQL (src/storage/postgres/pg-index.ts), below the FHIR layer: the search
 * cases of test/fixtures/search-cases.json (official R4 examples) through both plan shapes, and
 * what several nodes on one database rely on — one winner per version, seqs in commit order, one
 * batch per leaf, one data key per scope, numbered subscription events.
 */
import fs from 'node:fs';
import path from 'node:path';
import t, { type Test } from 'tap';
import { createExtractor } from '../../src/fhir/search/extract.ts';
import { parseSearchRequest } from '../../src/fhir/search/parse.ts';
import { createSearchRegistry } from '../../src/fhir/search/registry.ts';
import type { FhirResource } from '../../src/fhir/request.ts';
import { R4_RESOURCE_TYPES } from '../../src/fhir/validation/resource-types.ts';
import type { IndexWrite } from '../../src/storage/index-store.ts';
import { migrate, openPostgres } from '../../src/storage/postgres/database.ts';
import { PgIndexStore } from '../../src/storage/postgres/pg-index.ts';
import { PgSearch } from '../../src/storage/postgres/pg-search.ts';
import type { IndexQuery } from '../../src/storage/search-types.ts';
import { freshDatabase, launchCluster } from '../helpers/postgres.ts';
import { R4_EXAMPLES, loadSearchCases } from '../helpers/search-cases.ts';

const EXAMPLES = R4_EXAMPLES;
const fixture = loadSearchCases();
const registry = createSearchRegistry(R4_RESOURCE_TYPES);
const extractor = createExtractor(registry, { baseUrl: fixture.baseUrl });

function parse(type: string | null, query: string): IndexQuery {
  const parsed = parseSearchRequest(registry, type, [...new URLSearchParams(query)], { baseUrl: fixture.baseUrl, now: Date.parse(fixture.now) });
  if (parsed.errors.length || parsed.unknown.length) throw new Error(`${query}: ${JSON.stringify(parsed.errors)} ${parsed.unknown}`);
  return parsed.query;
}

function write(type: string, id: string, versionId: number, extra: Partial<IndexWrite> = {}): IndexWrite {
  return {
    type,
    id,
    versionId,
    expectedVersion: versionId - 1,
    lastUpdated: Date.parse('2024-01-01T00:00:00Z') + versionId,
    deleted: false,
    method: versionId === 1 ? 'create' : 'update',
    cid: `cid-${type}-${id}-${versionId}`,
    keyScope: 'shared',
    searchRows: [],
    ...extra,
  };
}

async function openIndex(t: Test, url: string): Promise<PgIndexStore> {
  const pool = await openPostgres({ url, maxConnections: 4 });
  await migrate(pool);
  const index = new PgIndexStore(pool, { ownsPool: true });
  t.teardown(() => index.close());
  return index;
}



t.test('the search cases of the R4 examples, by the filter plan and by the ordered walks', async (t) => {
  const url = await freshDatabase(t);
  const index = await openIndex(t, url);
  for (const entry of fixture.resources) {
    const resource = JSON.parse(fs.readFileSync(path.join(EXAMPLES, entry.file), 'utf8')) as FhirResource;
    const lastUpdated = Date.parse(entry.lastUpdated ?? fixture.defaultLastUpdated);
    await index.commit([{ ...write(resource.resourceType, resource.id!, 1), lastUpdated, searchRows: extractor.extract(resource) }]);
    if (entry.deleted) await index.commit([{ ...write(resource.resourceType, resource.id!, 2), lastUpdated, deleted: true, method: 'delete' }]);
  }
  const pool = await openPostgres({ url, maxConnections: 2 });
  t.teardown(() => pool.end());
  const search = new PgSearch(pool);
  for (const c of fixture.cases) {
    const query = parse(c.type, c.query);
    const name = `${c.type ?? '[system]'}?${c.query}`;
    const ids = (hits: { type: string; id: string }[]) => hits.map((h) => (c.type === null ? `${h.type}/${h.id}` : h.id));
    const auto = ids(await search.search(query));
    if (c.ordered) t.same(auto, c.expect, `${name}: ids in order`);
    else t.same([...auto].sort(), [...c.expect].sort(), `${name}: ids`);
    t.equal(await search.count(query), c.total ?? c.expect.length, `${name}: total`);
    // Both plan shapes give the same page in the same order.
    t.same(ids(await search.search(query, 'filter')), auto, `${name}: filter plan`);
    if (query.offset === 0) t.same(ids(await search.search(query, 'walk')), auto, `${name}: ordered walk`);
  }
  // The store's own search: records of the current versions, with the total.
  const page = await index.search({ ...parse('Patient', 'family=doe'), wantTotal: true });
  t.same(
    page.records.map((r) => [r.type, r.id, r.versionId]),
    [['Patient', 'xds', 1]],
  );
  t.equal(page.total, 1);
});

t.test('two nodes on one database: one winner per version, seqs in commit order', async (t) => {
  const url = await freshDatabase(t);
  const [a, b] = [await openIndex(t, url), await openIndex(t, url)];
  await a.commit([write('Patient', 'p1', 1)]);
  t.equal((await b.current('Patient', 'p1'))?.versionId, 1, 'a write on one node is read on the other');
  // Twenty rounds of both nodes updating the same resource from the same version.
  let conflicts = 0;
  for (let v = 2; v <= 21; v++) {
    const results = await Promise.allSettled([a.commit([write('Patient', 'p1', v)]), b.commit([write('Patient', 'p1', v)])]);
    const won = results.filter((r) => r.status === 'fulfilled');
    t.equal(won.length, 1, `version ${v}: exactly one commit wins`);
    for (const r of results) if (r.status === 'rejected') (t.equal((r.reason as { code?: string }).code, 'VLM_INDEX_VERSION_CONFLICT'), conflicts++);
  }
  t.equal(conflicts, 20);
  const history = await b.history({ type: 'Patient', id: 'p1', count: 100, offset: 0 });
  t.same(
    history.records.map((r) => r.versionId),
    Array.from({ length: 21 }, (_, i) => 21 - i),
    'every version once, newest first',
  );
  // Concurrent creates of different resources: seq order is commit order (a snapshot never misses an earlier seq).
  const writes = Array.from({ length: 40 }, (_, i) => (i % 2 ? a : b).commit([write('Observation', `o${i}`, 1)]));
  const records = (await Promise.all(writes)).flat();
  const seqs = records.map((r) => r.seq).sort((x, y) => x - y);
  t.equal(new Set(seqs).size, 40, 'distinct seqs');
  t.equal(await a.lastSeq(), seqs[seqs.length - 1], 'lastSeq is the newest');
  const snapshot = await b.snapshotVersions({ type: 'Observation', maxSeq: await a.lastSeq(), afterSeq: 0, limit: 100 });
  t.equal(snapshot.length, 40, 'a snapshot at lastSeq holds every committed version');
});

t.test('anchor queue: a leaf goes into one batch only; data keys: one per scope', async (t) => {
  const url = await freshDatabase(t);
  const [a, b] = [await openIndex(t, url), await openIndex(t, url)];
  const leaf = (n: number) => new Uint8Array(32).fill(n);
  for (let i = 1; i <= 3; i++) await a.commit([write('Patient', `p${i}`, 1, { anchor: { leaf: leaf(i), salt: leaf(100 + i) } })]);
  const pending = await b.pendingLeaves(10);
  t.same(
    pending.map((p) => [...p.leaf.slice(0, 1)]),
    [[1], [2], [3]],
  );
  const batch = { leafCount: 3, manifestCid: 'bafy-manifest', seqs: pending.map((p) => p.seq) };
  const planned = await Promise.allSettled([a.planBatch({ ...batch, root: leaf(7) }), b.planBatch({ ...batch, root: leaf(8) })]);
  t.equal(planned.filter((r) => r.status === 'fulfilled').length, 1, 'one node plans the batch');
  const rejected = planned.find((r) => r.status === 'rejected') as PromiseRejectedResult;
  t.equal(rejected.reason.code, 'VLM_ANCHOR_LEAF_TAKEN');
  const winner = (planned.find((r) => r.status === 'fulfilled') as PromiseFulfilledResult<{ id: number }>).value;
  t.equal(await a.backlog(), 3, 'planned, not yet anchored');
  t.same((await b.plannedBatches()).map((p) => p.id), [winner.id], 'the loser left no batch behind');
  await b.recordAnchor(winner.id, { chainBatchId: 1, txHash: '0xabc', blockNumber: 5, blockTimestamp: 1_700_000_000, chainId: 31337, contract: '0xdef' });
  const anchor = await a.anchorOf(pending[1]!.seq);
  t.equal(anchor?.status, 'anchored');
  t.equal(anchor?.batch?.leafIndex, 1);
  t.equal(anchor?.batch?.receipt?.txHash, '0xabc');
  t.equal(await b.backlog(), 0);
  t.same((await b.batchLeaves(winner.id)).map((l) => l[0]), [1, 2, 3]);

  const keys = await Promise.all([a.dataKeys.putWrappedKeyIfAbsent('scope-1', leaf(1)), b.dataKeys.putWrappedKeyIfAbsent('scope-1', leaf(2))]);
  t.same(keys[0], keys[1], 'both nodes hold the same key for a scope');
  await a.dataKeys.deleteWrappedKey('scope-1');
  t.equal(await b.dataKeys.getWrappedKey('scope-1'), undefined, 'a shredded key is gone on every node');
});

t.test('subscription outbox: events numbered per subscription inside the commit', async (t) => {
  const url = await freshDatabase(t);
  const index = await openIndex(t, url);
  index.subscriptions.setFilters([
    { subscription: 's1', type: 'Observation', where: parse('Observation', 'code=http://loinc.org|1-1').where },
    { subscription: 's2', type: 'Observation', where: [], interactions: ['delete'] },
  ]);
  const rows = (code: string) => extractor.extract({ resourceType: 'Observation', id: 'x', status: 'final', code: { coding: [{ system: 'http://loinc.org', code }] } });
  await index.commit([{ ...write('Observation', 'o1', 1), searchRows: rows('1-1') }]);
  await index.commit([{ ...write('Observation', 'o2', 1), searchRows: rows('2-2') }]);
  await index.commit([{ ...write('Observation', 'o1', 2), searchRows: rows('1-1') }]);
  await index.commit([{ ...write('Observation', 'o1', 3), deleted: true, method: 'delete' }]);
  t.same([...index.subscriptions.takeDirty()].sort(), ['s1', 's2']);
  const events = await index.subscriptions.events('s1', 0, 10);
  t.same(events.map((e) => e.number), [1, 2, 3], 'o1 created, updated and deleted');
  t.same((await index.subscriptions.events('s2', 0, 10)).map((e) => e.number), [1], 'deletions only');
  await index.subscriptions.putState({ id: 's1', owner: { client: 'c' }, delivered: 3, failures: 0, retryAt: 0, handshake: true, notified: 2 }, [
    { number: 1, notified: 1 },
    { number: 3, notified: 2 },
  ]);
  t.same((await index.subscriptions.notifiedEvents('s1', 1, 2, 10)).map((e) => [e.number, e.notified]), [[1, 1], [3, 2]]);
  t.equal(await index.subscriptions.eventCount('s1'), 3);
  await index.subscriptions.remove('s1');
  t.same(await index.subscriptions.events('s1', 0, 10), []);
  t.same([...(await index.subscriptions.owners()).keys()], ['s1'], 'a removed subscription keeps its owner');
});

t.test('a database that cannot be reached is unavailable, not a fault, and comes back without a restart', async (t) => {
  const cluster = await launchCluster();
  const index = await openIndex(t, cluster.url);
  await index.commit([write('Patient', 'p1', 1)]);
  cluster.stop();
  const attempts: (() => Promise<unknown>)[] = [() => index.current('Patient', 'p1'), () => index.commit([write('Patient', 'p2', 1)]), () => index.search(parse('Patient', ''))];
  for (const attempt of attempts) await t.rejects(attempt(), { code: 'VLM_DB_UNAVAILABLE', category: 'unavailable' });
  cluster.start();
  t.equal((await index.current('Patient', 'p1'))?.versionId, 1, 'reads work again');
  t.equal((await index.commit([write('Patient', 'p2', 1)]))[0]?.versionId, 1, 'writes too');
});
