/**
 * `_include` / `_revinclude` through HTTP — http://hl7.org/fhir/R4/search.html#include: included
 * resources carry `search.mode = include`, each once, never a match again; `:iterate` follows
 * what was included; at most 1,000 per page, and an outcome entry says when that cut the page.
 */
import t from 'tap';
import { startTestServer, vellumCodes } from '../../helpers/server.ts';
import { ids, loadFixture, outcomeEntries } from '../search/fixtures.ts';

t.test('_include and _revinclude over a small linked data set', async (t) => {
  const s = await startTestServer(t);
  await loadFixture(s);
  const get = async (query: string) => {
    const res = await s.fhir('GET', query);
    t.equal(res.status, 200, query);
    return res.json;
  };

  let b = await get('Observation?code=1234-5&_include=Observation:subject');
  t.same(ids(b), ['Observation/o3', 'Observation/o4']);
  t.same(ids(b, 'include'), ['Patient/p1', 'Patient/p3']);
  t.equal(b.total, 2, 'total counts matches only');
  t.ok(new URL(b.link.find((l: any) => l.relation === 'self').url).searchParams.get('_include'), 'links keep _include');
  for (const e of b.entry.filter((e: any) => e.search.mode === 'include')) {
    t.equal(e.fullUrl, `${s.config.baseUrl}/${e.resource.resourceType}/${e.resource.id}`);
  }

  b = await get('Observation?_id=o1,o3&_include=Observation:subject');
  t.same(ids(b, 'include'), ['Patient/p1'], 'a resource included twice appears once');

  b = await get('Observation?_id=o1&_include=Observation:subject:Group');
  t.same(ids(b, 'include'), [], 'target type filter');
  b = await get('Observation?_id=o1&_include=Observation:subject:Patient&_include=Observation:encounter');
  t.same(ids(b, 'include'), ['Encounter/e1', 'Patient/p1'], 'several directives');
  b = await get('Observation?_id=o1&_include=Observation:*');
  t.same(ids(b, 'include'), ['Encounter/e1', 'Patient/p1'], 'Type:* follows every reference parameter');
  b = await get('Observation?_id=o1&_include=*');
  t.same(ids(b, 'include'), ['Encounter/e1', 'Patient/p1'], '* alone');
  b = await get('Patient?_id=p1&_include=Observation:subject');
  t.same(ids(b, 'include'), [], 'a directive about another source type includes nothing');

  b = await get('Patient?_id=p1&_revinclude=Observation:subject');
  t.same(ids(b), ['Patient/p1']);
  t.same(ids(b, 'include'), ['Observation/o1', 'Observation/o3']);
  b = await get('Patient?_id=p1,p2&_revinclude=Observation:patient&_revinclude=Encounter:subject');
  t.same(ids(b, 'include'), ['Encounter/e1', 'Encounter/e2', 'Observation/o1', 'Observation/o2', 'Observation/o3', 'Observation/o5']);
  b = await get('Patient?_id=p2&_revinclude=Observation:*');
  t.same(ids(b, 'include'), ['Observation/o2', 'Observation/o5'], '_revinclude Type:*');
  b = await get('Encounter?_id=e1&_revinclude=Observation:subject:Patient');
  t.same(ids(b, 'include'), [], '_revinclude target type filter');

  // A match is never repeated as an include.
  b = await get('Patient?_id=p1,p2&_include=Patient:organization&_revinclude=Patient:organization');
  t.same(ids(b), ['Patient/p1', 'Patient/p2']);
  t.same(ids(b, 'include'), ['Organization/org1', 'Organization/org2']);

  // :iterate applies to included resources as well.
  b = await get('Observation?_id=o1&_include=Observation:subject&_include=Patient:organization');
  t.same(ids(b, 'include'), ['Patient/p1'], 'without :iterate, only the matches are followed');
  b = await get('Observation?_id=o1&_include=Observation:subject&_include:iterate=Patient:organization');
  t.same(ids(b, 'include'), ['Organization/org1', 'Patient/p1']);
  b = await get('Observation?_id=o1&_include=Observation:subject&_include:recurse=Patient:organization');
  t.same(ids(b, 'include'), ['Organization/org1', 'Patient/p1'], ':recurse (older name)');
  b = await get('Organization?_id=org1&_revinclude=Patient:organization&_revinclude:iterate=Observation:subject');
  t.same(ids(b, 'include'), ['Observation/o1', 'Observation/o3', 'Patient/p1']);
  b = await get('Observation?_id=o1&_include:iterate=Observation:encounter&_include:iterate=Encounter:subject&_include:iterate=Patient:general-practitioner');
  t.same(ids(b, 'include'), ['Encounter/e1', 'Patient/p1', 'Practitioner/pr1'], 'iterate through three hops');

  // Paging: includes follow the page's matches only.
  b = await get('Observation?code=1234-5&_sort=_id&_count=1&_include=Observation:subject');
  t.same(ids(b), ['Observation/o3']);
  t.same(ids(b, 'include'), ['Patient/p1']);

  b = await get('Observation?code=1234-5&_summary=count&_include=Observation:subject');
  t.equal(b.total, 2);
  t.same(ids(b, 'include'), [], 'no includes with _summary=count');

  // A deleted target is not included.
  t.ok([200, 204].includes((await s.fhir('DELETE', 'Patient/p3')).status));
  b = await get('Observation?_id=o4&_include=Observation:subject');
  t.same(ids(b, 'include'), []);
  t.same(outcomeEntries(b), []);
});

t.test('malformed and unknown _include / _revinclude', async (t) => {
  const s = await startTestServer(t);
  await loadFixture(s);
  for (const bad of [
    '_include=Observation',
    '_include=Observation:',
    '_include=Nope:subject',
    '_include=Observation:code',
    '_include=Observation:subject:Nope',
    '_include=Observation:subject:Organization',
    '_include=Observation:subject:Patient:extra',
    '_include:deep=Observation:subject',
    '_revinclude=Observation',
    '_revinclude=Observation:status',
  ]) {
    const res = await s.fhir('GET', `Observation?${bad}`);
    t.equal(res.status, 400, bad);
    t.same(vellumCodes(res.json), ['VLM_FHIR_BAD_SEARCH_PARAMETER'], bad);
    t.same(res.json.issue[0].expression, [bad.split('=')[0]], 'the issue names the parameter');
  }
  for (const unknown of ['_include=Observation:nope', '_revinclude=Observation:nope', '_revinclude=*']) {
    const name = unknown.split('=')[0]!;
    const lenient = await s.fhir('GET', `Observation?_id=o1&${unknown}`);
    t.equal(lenient.status, 200, `${unknown}: lenient`);
    t.same(ids(lenient.json), ['Observation/o1']);
    t.same(ids(lenient.json, 'include'), []);
    t.same(vellumCodes(outcomeEntries(lenient.json)[0]), ['VLM_FHIR_UNKNOWN_PARAMETER']);
    t.same(outcomeEntries(lenient.json)[0].issue[0].expression, [name]);
    const strict = await s.fhir('GET', `Observation?_id=o1&${unknown}`, undefined, { prefer: 'handling=strict' });
    t.equal(strict.status, 400, `${unknown}: strict`);
    t.same(vellumCodes(strict.json), ['VLM_FHIR_UNKNOWN_PARAMETER']);
  }
});

t.test('at most 1,000 included resources per page, and the outcome says so', async (t) => {
  const s = await startTestServer(t);
  await s.fhir('PUT', 'Patient/many', { resourceType: 'Patient', id: 'many' });
  const n = 1001;
  for (let i = 0; i < n; i++) {
    const res = await s.fhir('POST', 'Observation', {
      resourceType: 'Observation',
      status: 'final',
      code: { text: 'x' },
      subject: { reference: 'Patient/many' },
    });
    if (res.status !== 201) t.fail(`create ${i}: ${res.status}`);
  }
  const res = await s.fhir('GET', 'Patient?_id=many&_revinclude=Observation:subject');
  t.equal(res.status, 200);
  t.same(ids(res.json), ['Patient/many']);
  const included = ids(res.json, 'include');
  t.equal(included.length, 1000, 'capped at 1,000');
  t.equal(new Set(included).size, 1000, 'each once');
  const [outcome] = outcomeEntries(res.json);
  t.same(vellumCodes(outcome), ['VLM_FHIR_INCLUDES_CAPPED']);
  t.same(outcome.issue.map((i: any) => [i.severity, i.code]), [['warning', 'too-costly']]);

  const under = await s.fhir('GET', 'Observation?_count=5&_include=Observation:subject');
  t.same(ids(under.json, 'include'), ['Patient/many']);
  t.same(outcomeEntries(under.json), [], 'no outcome when nothing was cut');

  // Several matches whose includes together pass the cap: the page ends early instead of dropping
  // any, and following `next` yields every included resource.
  for (const p of ['pa', 'pb', 'pc']) {
    await s.fhir('PUT', `Patient/${p}`, { resourceType: 'Patient', id: p });
    const entry = Array.from({ length: 400 }, () => ({
      resource: { resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: `Patient/${p}` } },
      request: { method: 'POST', url: 'Observation' },
    }));
    t.equal((await s.fhir('POST', '', { resourceType: 'Bundle', type: 'transaction', entry })).status, 200);
  }
  const seenMatches: string[] = [];
  const seenIncluded: string[] = [];
  let url: string | undefined = 'Patient?_id=pa,pb,pc&_revinclude=Observation:subject&_count=3';
  let pages = 0;
  while (url) {
    const page = await s.fhir('GET', url);
    t.equal(page.status, 200);
    t.same(outcomeEntries(page.json), [], `page ${++pages}: nothing dropped`);
    t.ok(ids(page.json, 'include').length <= 1000, 'within the cap');
    seenMatches.push(...ids(page.json));
    seenIncluded.push(...ids(page.json, 'include'));
    const next = page.json.link.find((l: any) => l.relation === 'next');
    url = next ? next.url.slice(next.url.indexOf('/fhir/') + '/fhir/'.length) : undefined;
  }
  t.equal(pages, 2, 'the first page ended after two matches (800 included), the second holds the third');
  t.same(seenMatches.sort(), ['Patient/pa', 'Patient/pb', 'Patient/pc']);
  t.equal(seenIncluded.length, 1200, 'every Observation included');
  t.equal(new Set(seenIncluded).size, 1200, 'each once');
});
