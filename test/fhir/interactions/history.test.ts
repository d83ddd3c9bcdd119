/**
 * history — http://hl7.org/fhir/R4/http.html#history: instance, type and system level,
 * `_since`, `_at`, `_count` and paging (http://hl7.org/fhir/R4/http.html#paging).
 */
import t from 'tap';
import { startTestServer, vellumCodes, type TestServer } from '../../helpers/server.ts';
import { TYPE_CASES, minimalPatient, relative } from './examples.ts';

interface Version {
  key: string; // Type/id/_history/n
  type: string;
  id: string;
  versionId: number;
  lastUpdated: number;
  deleted: boolean;
}

/** Make some history across the seven types: creates, updates, deletes. Returns every version made. */
async function makeHistory(s: TestServer): Promise<Version[]> {
  const versions: Version[] = [];
  const record = (type: string, id: string, versionId: number, lastUpdated: string, deleted = false) =>
    versions.push({ key: `${type}/${id}/_history/${versionId}`, type, id, versionId, lastUpdated: Date.parse(lastUpdated), deleted });
  let n = 0;
  for (const c of TYPE_CASES) {
    for (let i = 0; i < 2; i++) {
      const created = await s.fhir('POST', c.type, c.revise(c.example(), n++));
      record(c.type, created.json.id, 1, created.json.meta.lastUpdated);
      const updated = await s.fhir('PUT', `${c.type}/${created.json.id}`, { ...c.revise(c.example(), n++), id: created.json.id });
      record(c.type, created.json.id, 2, updated.json.meta.lastUpdated);
      if (i === 1) {
        const deleted = await s.fhir('DELETE', `${c.type}/${created.json.id}`);
        t.equal(deleted.status, 204);
        // A deletion's time is only in the history entry; read it back from there.
        const h = await s.fhir('GET', `${c.type}/${created.json.id}/_history`);
        record(c.type, created.json.id, 3, h.json.entry[0].response.lastModified, true);
      }
    }
  }
  return versions;
}

function keyOf(entry: any): string {
  const id = entry.fullUrl.split('/').slice(-2).join('/');
  return `${id}/_history/${entry.response.etag.replace(/^W\/"(\d+)"$/, '$1')}`;
}

t.test('instance, type and system history', async (t) => {
  const s = await startTestServer(t);
  const versions = await makeHistory(s);

  const system = await s.fhir('GET', '_history?_count=1000');
  t.equal(system.status, 200);
  t.equal(system.json.resourceType, 'Bundle');
  t.equal(system.json.type, 'history');
  t.equal(system.json.total, versions.length);
  t.same(system.json.entry.map(keyOf).sort(), versions.map((v) => v.key).sort(), 'every version, once');
  const times = system.json.entry.map((e: any) => Date.parse(e.response.lastModified));
  t.same(times, [...times].sort((a: number, b: number) => b - a), 'newest first');
  t.same(system.json.entry.map(keyOf).slice(0, 1), [versions.at(-1)!.key]);

  for (const entry of system.json.entry) {
    const v = versions.find((x) => x.key === keyOf(entry))!;
    t.equal(entry.fullUrl, `${s.config.baseUrl}/${v.type}/${v.id}`);
    t.equal(entry.response.etag, `W/"${v.versionId}"`);
    t.equal(Date.parse(entry.response.lastModified), v.lastUpdated);
    if (v.deleted) {
      t.notOk(entry.resource, 'a deletion carries no resource');
      t.same(entry.request, { method: 'DELETE', url: `${v.type}/${v.id}` });
    } else {
      t.equal(entry.resource.meta.versionId, String(v.versionId));
      t.same(entry.request, v.versionId === 1 ? { method: 'POST', url: v.type } : { method: 'PUT', url: `${v.type}/${v.id}` });
      t.match(entry.response.status, v.versionId === 1 ? /^201\b/ : /^200\b/);
    }
  }

  for (const c of TYPE_CASES) {
    const type = await s.fhir('GET', `${c.type}/_history`);
    t.equal(type.status, 200);
    const expected = versions.filter((v) => v.type === c.type).map((v) => v.key);
    t.same(type.json.entry.map(keyOf).sort(), expected.sort(), `${c.type} type history`);
    t.equal(type.json.total, expected.length);
    const id = versions.find((v) => v.type === c.type)!.id;
    const instance = await s.fhir('GET', `${c.type}/${id}/_history`);
    t.same(instance.json.entry.map(keyOf), [`${c.type}/${id}/_history/2`, `${c.type}/${id}/_history/1`], `${c.type} instance history`);
  }

  const unknown = await s.fhir('GET', 'Patient/never-was/_history');
  t.equal(unknown.status, 404);
  t.same(vellumCodes(unknown.json), ['VLM_FHIR_NOT_FOUND']);
  const empty = await s.fhir('GET', 'Account/_history');
  t.equal(empty.status, 200);
  t.equal(empty.json.total, 0);
  t.same(empty.json.entry ?? [], []);
});

t.test('_since and _at', async (t) => {
  const s = await startTestServer(t);
  const versions = await makeHistory(s);
  const byTime = [...versions].sort((a, b) => a.lastUpdated - b.lastUpdated);

  for (const pivot of [byTime[0]!, byTime[Math.floor(byTime.length / 2)]!, byTime.at(-1)!]) {
    const since = new Date(pivot.lastUpdated).toISOString();
    const res = await s.fhir('GET', `_history?_count=1000&_since=${encodeURIComponent(since)}`);
    t.equal(res.status, 200);
    const expected = versions.filter((v) => v.lastUpdated >= pivot.lastUpdated).map((v) => v.key);
    t.same(res.json.entry.map(keyOf).sort(), expected.sort(), `_since=${since}`);
    t.equal(res.json.total, expected.length);
    t.ok(res.json.link.every((l: any) => new URL(l.url).searchParams.get('_since') === since), 'links keep _since');

    // the same instant written with an offset
    const shifted = new Date(pivot.lastUpdated + 3_600_000).toISOString().replace('Z', '+01:00');
    const offset = await s.fhir('GET', `_history?_count=1000&_since=${encodeURIComponent(shifted)}`);
    t.equal(offset.status, 200);
    t.same(offset.json.entry.map(keyOf).sort(), expected.sort(), '_since with a time-zone offset');

    // _at: the versions current at that instant (one per resource that existed then)
    const at = await s.fhir('GET', `_history?_count=1000&_at=${encodeURIComponent(since)}`);
    t.equal(at.status, 200);
    const current = new Map<string, Version>();
    for (const v of byTime) if (v.lastUpdated <= pivot.lastUpdated) current.set(`${v.type}/${v.id}`, v);
    const atExpected = [...current.values()].filter((v) => !versions.some((w) => w.type === v.type && w.id === v.id && w.versionId > v.versionId && w.lastUpdated <= pivot.lastUpdated));
    t.same(at.json.entry.map(keyOf).sort(), atExpected.map((v) => v.key).sort(), `_at=${since}`);
  }

  const future = await s.fhir('GET', '_history?_since=2999-01-01T00:00:00Z');
  t.equal(future.status, 200);
  t.equal(future.json.total, 0);
  const past = await s.fhir('GET', 'Patient/_history?_since=2000-01-01T00:00:00Z');
  t.equal(past.json.total, versions.filter((v) => v.type === 'Patient').length);
  const before = await s.fhir('GET', '_history?_at=2001');
  t.equal(before.status, 200);
  t.equal(before.json.total, 0, 'nothing existed in 2001');

  for (const [param, value] of [
    ['_since', 'yesterday'],
    ['_since', '2020-13-01T00:00:00Z'],
    ['_since', '2020-01-01T25:00:00Z'],
    ['_since', '2020-01-01T10:00:00'],
    ['_since', ''],
    ['_at', 'soon'],
    ['_at', '2020-02-30'],
    ['_count', 'ten'],
    ['_count', '-1'],
  ] as const) {
    for (const path of ['_history', 'Patient/_history', `Patient/${versions[0]!.id}/_history`]) {
      const res = await s.fhir('GET', `${path}?${param}=${encodeURIComponent(value)}`);
      t.equal(res.status, 400, `${path}?${param}=${value}`);
      t.same(vellumCodes(res.json), ['VLM_FHIR_BAD_PARAMETER']);
      t.same(res.json.issue[0].expression, [param]);
    }
  }
});

t.test('paging: every version exactly once, while others write', async (t) => {
  const s = await startTestServer(t);
  const made: string[] = [];
  const p = await s.fhir('PUT', 'Patient/paged', { ...minimalPatient('V0'), id: 'paged' });
  made.push('Patient/paged/_history/1');
  for (let i = 1; i < 12; i++) {
    await s.fhir('PUT', 'Patient/paged', { ...minimalPatient(`V${i}`), id: 'paged' });
    made.push(`Patient/paged/_history/${i + 1}`);
  }
  for (let i = 0; i < 11; i++) {
    const r = await s.fhir('POST', 'Patient', minimalPatient(`Other${i}`));
    made.push(`Patient/${r.json.id}/_history/1`);
  }
  t.equal(p.status, 201);
  const before = await s.fhir('GET', '_history?_count=1000');
  t.same(before.json.entry.map(keyOf).sort(), [...made].sort(), 'the history before paging');

  for (const start of ['_history?_count=5', 'Patient/_history?_count=4', 'Patient/paged/_history?_count=3']) {
    await t.test(start, async (t) => {
      const first = await s.fhir('GET', start);
      const total = first.json.total;
      const seen: string[] = [];
      let page = first;
      let pages = 0;
      let writes = 0;
      for (;;) {
        t.equal(page.status, 200);
        t.equal(page.json.total, total, 'the total does not move while paging');
        seen.push(...page.json.entry.map(keyOf));
        pages++;
        // Others write between pages: new versions of the paged resource and new resources.
        await s.fhir('PUT', 'Patient/paged', { ...minimalPatient(`Between${writes++}`), id: 'paged' });
        await s.fhir('POST', 'Patient', minimalPatient(`Between${writes++}`));
        const next = page.json.link.find((l: any) => l.relation === 'next');
        if (!next) break;
        t.ok(page.json.link.some((l: any) => l.relation === 'first'));
        page = await s.fhir('GET', relative(s.config.baseUrl, next.url));
        t.ok(page.json.link.some((l: any) => l.relation === 'previous'), 'later pages link back');
      }
      t.equal(new Set(seen).size, seen.length, 'no version appears twice');
      t.equal(seen.length, total, 'every version of the snapshot appears');
      if (start.startsWith('_history')) t.same([...seen].sort(), [...made].sort(), 'exactly the versions made before paging began');
      t.equal(pages, Math.ceil(total / Number(new URLSearchParams(start.split('?')[1]).get('_count'))));
      const self = first.json.link.find((l: any) => l.relation === 'self');
      t.ok(self, 'a self link');
    });
  }

  const bad = await s.fhir('GET', '_history?_snapshot=latest');
  t.equal(bad.status, 400);
  t.same(vellumCodes(bad.json), ['VLM_FHIR_BAD_PARAMETER']);
});

t.test('_count limits a page and says so in the links', async (t) => {
  const s = await startTestServer(t);
  for (let i = 0; i < 3; i++) await s.fhir('POST', 'Practitioner', TYPE_CASES[5]!.revise(TYPE_CASES[5]!.example(), i));
  const res = await s.fhir('GET', 'Practitioner/_history?_count=2');
  t.equal(res.json.entry.length, 2);
  t.equal(res.json.total, 3);
  const next = res.json.link.find((l: any) => l.relation === 'next');
  t.equal(new URL(next.url).searchParams.get('_count'), '2');
  const all = await s.fhir('GET', 'Practitioner/_history?_count=3');
  t.equal(all.json.entry.length, 3);
  t.notOk(all.json.link.some((l: any) => l.relation === 'next'), 'no next link on the last page');
  const zero = await s.fhir('GET', 'Practitioner/_history?_count=0');
  t.equal(zero.status, 200);
  t.equal(zero.json.total, 3);
  t.equal(zero.json.entry, undefined, 'no entry array: R4 JSON has no empty arrays');
});
