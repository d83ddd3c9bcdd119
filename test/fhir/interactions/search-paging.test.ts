/**
 * Keyset paging through HTTP (src/fhir/interactions/paging.ts): `next`/`previous` links carry a
 * sealed `_cursor`; pages stay consistent while others create and delete; GET and POST `_search`
 * agree; compartment, system-level and `$everything` paging; a tampered or foreign cursor is 400
 * VLM_FHIR_BAD_CURSOR.
 */
import t from 'tap';
import { openCursor, sealCursor, type CursorBinding } from '../../../src/fhir/interactions/paging.ts';
import type { FhirRequest } from '../../../src/fhir/request.ts';
import type { FhirServices } from '../../../src/fhir/services.ts';
import { startTestServer, vellumCodes, type TestServer } from '../../helpers/server.ts';
import { relative } from './examples.ts';

const matchIds = (bundle: any): string[] => (bundle.entry ?? []).filter((e: any) => e.search?.mode === 'match').map((e: any) => e.resource.id);
const linkOf = (bundle: any, relation: string): string | undefined => bundle.link?.find((l: any) => l.relation === relation)?.url;

function patient(family: string, birthDate: string | undefined, tag: string): Record<string, unknown> {
  return {
    resourceType: 'Patient',
    meta: { tag: [{ system: 'urn:vellum:paging', code: tag }] },
    name: [{ family }],
    ...(birthDate ? { birthDate } : {}),
  };
}

async function make(s: TestServer, family: string, birthDate: string | undefined, tag: string): Promise<string> {
  const res = await s.fhir('POST', 'Patient', patient(family, birthDate, tag));
  if (res.status !== 201) throw new Error(`create: ${res.status}`);
  return res.json.id;
}

/** Follow `relation` links from `page` to the end; returns every page. */
async function walk(s: TestServer, page: any, relation: 'next' | 'previous', between?: (pages: any[]) => Promise<void>): Promise<any[]> {
  const pages = [page];
  for (let guard = 0; guard < 200; guard++) {
    if (between) await between(pages);
    const url = linkOf(page, relation);
    if (!url) return pages;
    if (!url.startsWith(s.config.baseUrl)) throw new Error(`${url} is not under the base`);
    const res = await s.fhir('GET', url.slice(s.config.baseUrl.length).replace(/^\//, ''));
    if (res.status !== 200) throw new Error(`${relation}: ${res.status} ${res.text}`);
    page = res.json;
    pages.push(page);
  }
  throw new Error('no end');
}

t.test('sorted paging stays consistent while others create and delete', async (t) => {
  const s = await startTestServer(t);
  const families = ['Ames', 'Berg', 'Cole'];
  const ids: string[] = [];
  for (let i = 0; i < 24; i++) {
    // Ties on family and on birth date, and some without a birth date (they sort last).
    ids.push(await make(s, families[i % 3]!, i % 5 === 0 ? undefined : `19${70 + (i % 4)}-01-01`, 'walk'));
  }
  for (const sort of ['family,-birthdate', '-birthdate,family', '_id', '-_lastUpdated', '']) {
    await t.test(`_sort=${sort || '(default)'}`, async (t) => {
      const query = `Patient?_tag=urn:vellum:paging|walk${sort ? `&_sort=${sort}` : ''}`;
      const oneShot = (await s.fhir('GET', `${query}&_count=1000`)).json;
      const before = matchIds(oneShot);
      const first = (await s.fhir('GET', `${query}&_count=5`)).json;
      t.notOk(linkOf(first, 'previous'), 'the first page has no previous link');
      t.ok(linkOf(first, 'next'));
      t.match(linkOf(first, 'next'), /[?&]_cursor=[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}(&|$)/, 'next carries a cursor');
      t.notMatch(linkOf(first, 'next'), /_offset/, 'no offset in the links');
      // Between pages: a new match (sorting first and last), and a deletion of a match not yet served.
      const created: string[] = [];
      const deleted: string[] = [];
      let step = 0;
      const pages = await walk(s, first, 'next', async (sofar) => {
        step++;
        created.push(await make(s, step % 2 ? 'Aaron' : 'Zed', step % 2 ? '2001-01-01' : undefined, 'walk'));
        const served = new Set(sofar.flatMap(matchIds));
        const victim = [...before].reverse().find((id) => !served.has(id) && !deleted.includes(id));
        if (victim && step % 2 === 0) {
          t.equal((await s.fhir('DELETE', `Patient/${victim}`)).status, 204);
          deleted.push(victim);
        }
      });
      const seen = pages.flatMap(matchIds);
      t.equal(new Set(seen).size, seen.length, 'no match is served twice');
      const survivors = before.filter((id) => !deleted.includes(id));
      t.same(
        seen.filter((id) => !created.includes(id)),
        survivors,
        'every match that existed throughout, once, in the one-shot order',
      );
      t.ok(pages.every((p) => matchIds(p).length <= 5));
      // Back from the last page: the same pages, in reverse.
      const forwardNow = await walk(s, (await s.fhir('GET', `${query}&_count=5`)).json, 'next');
      const back = await walk(s, forwardNow[forwardNow.length - 1], 'previous');
      t.same(back.reverse().flatMap(matchIds), forwardNow.flatMap(matchIds), 'previous links walk the same order back');
      // The self link reproduces its page.
      const middle = forwardNow[1];
      const self = (await s.fhir('GET', relative(s.config.baseUrl, linkOf(middle, 'self')!))).json;
      t.same(matchIds(self), matchIds(middle), 'self reproduces the page');
      // Clean up for the next sort.
      for (const id of created) await s.fhir('DELETE', `Patient/${id}`);
      for (const id of deleted) ids.splice(ids.indexOf(id), 1);
    });
  }
});

t.test('_count may change between pages; POST _search links equal GET; _total=none still pages', async (t) => {
  const s = await startTestServer(t);
  for (let i = 0; i < 9; i++) await make(s, `F${i % 4}`, `1980-0${1 + (i % 9)}-01`, 'count');
  const query = '_tag=urn:vellum:paging|count&_sort=-birthdate';
  const get = (await s.fhir('GET', `Patient?${query}&_count=4`)).json;
  const post = await s.app.inject({
    method: 'POST',
    url: '/fhir/Patient/_search',
    headers: { accept: 'application/fhir+json', 'content-type': 'application/x-www-form-urlencoded' },
    payload: `${query}&_count=4`,
  });
  t.same(JSON.parse(post.body).link, get.link, 'the same links');
  const next = new URL(linkOf(get, 'next')!);
  next.searchParams.set('_count', '2');
  const smaller = (await s.fhir('GET', relative(s.config.baseUrl, next.toString()))).json;
  const all = matchIds((await s.fhir('GET', `Patient?${query}&_count=100`)).json);
  t.same(matchIds(smaller), all.slice(4, 6), 'a different _count continues from the position');
  const noTotal = (await s.fhir('GET', `Patient?${query}&_count=3&_total=none`)).json;
  const pages = await walk(s, noTotal, 'next');
  t.equal(pages.length, 3, 'exactly 3 pages: no empty page at the end');
  t.same(pages.flatMap(matchIds), all);
  t.notOk('total' in noTotal);
  // `_offset` sent by a client is honoured; the links from there are cursors.
  const offset = (await s.fhir('GET', `Patient?${query}&_count=3&_offset=3`)).json;
  t.same(matchIds(offset), all.slice(3, 6));
  t.match(linkOf(offset, 'self'), /_offset=3/);
  const after = (await s.fhir('GET', relative(s.config.baseUrl, linkOf(offset, 'next')!))).json;
  t.same(matchIds(after), all.slice(6, 9));
  const previous = (await s.fhir('GET', relative(s.config.baseUrl, linkOf(offset, 'previous')!))).json;
  t.same(matchIds(previous), all.slice(0, 3));
});

t.test('a tampered, foreign or misplaced cursor is 400 VLM_FHIR_BAD_CURSOR', async (t) => {
  const s = await startTestServer(t);
  for (let i = 0; i < 4; i++) await make(s, 'Tamper', undefined, 'tamper');
  await s.fhir('POST', 'Observation', { resourceType: 'Observation', status: 'final', code: { text: 'x' } });
  const first = (await s.fhir('GET', 'Patient?_tag=urn:vellum:paging|tamper&_count=2')).json;
  const next = new URL(linkOf(first, 'next')!);
  const cursor = next.searchParams.get('_cursor')!;
  const [payload, mac] = cursor.split('.') as [string, string];
  const body = JSON.parse(Buffer.from(payload, 'base64url').toString());
  const forged = Buffer.from(JSON.stringify({ ...body, k: ['Patient', ''] })).toString('base64url');
  const bad = async (url: string) => {
    const res = await s.fhir('GET', url);
    return { status: res.status, codes: vellumCodes(res.json) };
  };
  const BAD = { status: 400, codes: ['VLM_FHIR_BAD_CURSOR'] };
  const flip = mac.slice(0, -1) + (mac.endsWith('A') ? 'B' : 'A');
  t.same(await bad(`Patient?_tag=urn:vellum:paging|tamper&_count=2&_cursor=${forged}.${mac}`), BAD, 'edited position, old MAC');
  t.same(await bad(`Patient?_tag=urn:vellum:paging|tamper&_count=2&_cursor=${payload}.${flip}`), BAD, 'edited MAC');
  // The first character carries six bits of the MAC: changing it always changes the bytes.
  const first64 = mac.startsWith('A') ? 'B' : 'A';
  t.same(await bad(`Patient?_tag=urn:vellum:paging|tamper&_count=2&_cursor=${payload}.${first64}${mac.slice(1)}`), BAD, 'edited MAC bytes');
  // The last of 43 characters carries two padding bits: the three other spellings of the same bytes
  // are not the cursor this server sealed, and are refused too.
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  const last = alphabet.indexOf(mac.at(-1)!);
  const spellings = [0, 1, 2, 3].map((low) => alphabet[(last & ~3) | low]!).filter((c) => c !== mac.at(-1));
  t.equal(spellings.length, 3);
  for (const c of spellings) {
    const variant = mac.slice(0, -1) + c;
    t.same(Buffer.from(variant, 'base64url'), Buffer.from(mac, 'base64url'), 'same bytes');
    t.same(await bad(`Patient?_tag=urn:vellum:paging|tamper&_count=2&_cursor=${payload}.${variant}`), BAD, 'non-canonical MAC spelling');
  }
  t.same(await bad(`Patient?_tag=urn:vellum:paging|tamper&_count=2&_cursor=garbage`), BAD, 'not a cursor');
  t.same(await bad(`Patient?_tag=urn:vellum:paging|other&_count=2&_cursor=${cursor}`), BAD, 'another query (widened criteria)');
  t.same(await bad(`Patient?_count=2&_cursor=${cursor}`), BAD, 'the criteria dropped');
  t.same(await bad(`Patient?_tag=urn:vellum:paging|tamper&_sort=family&_count=2&_cursor=${cursor}`), BAD, 'another order');
  t.same(await bad(`Observation?_tag=urn:vellum:paging|tamper&_count=2&_cursor=${cursor}`), BAD, 'another type');
  t.same(await bad(`?_tag=urn:vellum:paging|tamper&_count=2&_cursor=${cursor}`), BAD, 'system level');
  t.same(await bad(`Patient/_history?_count=2&_cursor=${cursor}`), BAD, 'a search cursor on history');
  t.same(await bad(`Patient?_tag=urn:vellum:paging|tamper&_cursor=${cursor}&_cursor=${cursor}`), BAD, 'two cursors');
  const both = await s.fhir('GET', `Patient?_tag=urn:vellum:paging|tamper&_count=2&_cursor=${cursor}&_offset=2`);
  t.equal(both.status, 400);
  t.same(vellumCodes(both.json), ['VLM_FHIR_BAD_PARAMETER']);
  // The genuine link still works, with presentation parameters changed.
  const ok = await s.fhir('GET', `Patient?_tag=urn:vellum:paging|tamper&_count=3&_elements=name&_cursor=${cursor}`);
  t.equal(ok.status, 200);
  t.equal(matchIds(ok.json).length, 2);
  // A cursor sealed by another server (another master key) is foreign.
  const other = await startTestServer(t);
  for (let i = 0; i < 4; i++) await make(other, 'Tamper', undefined, 'tamper');
  const otherCursor = new URL(linkOf((await other.fhir('GET', 'Patient?_tag=urn:vellum:paging|tamper&_count=2')).json, 'next')!).searchParams.get('_cursor');
  t.same(await bad(`Patient?_tag=urn:vellum:paging|tamper&_count=2&_cursor=${otherCursor}`), BAD, "another server's cursor");
});

t.test('a cursor is bound to the patient compartment the client is confined to', async (t) => {
  const services = { cursorKey: new Uint8Array(32).fill(7) } as unknown as FhirServices;
  const binding: CursorBinding = { interaction: 'search', path: 'Observation', params: [['code', 'x']] };
  const request = (patient?: string, cursor?: string): FhirRequest =>
    ({
      query: [['code', 'x'], ...(cursor ? [['_cursor', cursor] as [string, string]] : [])],
      ...(patient ? { restriction: { patient, keyScope: `scope-${patient}` } } : {}),
    }) as unknown as FhirRequest;
  const cursor = sealCursor(services, binding, request('p1'), { direction: 'after', key: ['Observation', 'o9'] });
  t.same(openCursor(services, binding, request('p1', cursor), [2]), { direction: 'after', key: ['Observation', 'o9'] });
  const outcome = (fn: () => unknown): string => {
    try {
      fn();
      return 'accepted';
    } catch (err) {
      const e = err as { status?: number; issues?: { vellumCode?: string }[] };
      return `${e.status} ${e.issues?.[0]?.vellumCode}`;
    }
  };
  const BAD = '400 VLM_FHIR_BAD_CURSOR';
  t.equal(outcome(() => openCursor(services, binding, request('p2', cursor), [2])), BAD, 'another patient');
  t.equal(outcome(() => openCursor(services, binding, request(undefined, cursor), [2])), BAD, 'an unconfined client');
  const unconfined = sealCursor(services, binding, request(), { direction: 'before', key: ['Observation', 'o9'] });
  t.equal(outcome(() => openCursor(services, binding, request(undefined, unconfined), [2])), 'accepted');
  t.equal(outcome(() => openCursor(services, binding, request('p1', unconfined), [2])), BAD, 'a cursor of an unconfined client, used by a confined one');
  t.equal(outcome(() => openCursor(services, binding, request(undefined, unconfined), [3])), BAD, 'a key of the wrong length');
  const otherKey = { cursorKey: new Uint8Array(32).fill(8) } as unknown as FhirServices;
  t.equal(outcome(() => openCursor(otherKey, binding, request(undefined, unconfined), [2])), BAD, 'another key');
  const otherQuery: CursorBinding = { ...binding, params: [['code', 'y']] };
  t.equal(outcome(() => openCursor(services, otherQuery, request(undefined, unconfined), [2])), BAD, 'another query');
});

t.test('compartment and system-level search page by cursor', async (t) => {
  const s = await startTestServer(t);
  const pat = await make(s, 'Holder', '1990-01-01', 'comp');
  const obs: string[] = [];
  for (let i = 0; i < 7; i++) {
    const res = await s.fhir('POST', 'Observation', {
      resourceType: 'Observation',
      status: 'final',
      code: { text: 'pulse' },
      subject: { reference: `Patient/${pat}` },
      effectiveDateTime: `2020-01-0${1 + (i % 3)}`,
    });
    obs.push(res.json.id);
  }
  const first = (await s.fhir('GET', `Patient/${pat}/Observation?_count=3&_sort=-date`)).json;
  t.match(linkOf(first, 'next'), new RegExp(`/Patient/${pat}/Observation\\?`));
  const extra = await s.fhir('POST', 'Observation', { resourceType: 'Observation', status: 'final', code: { text: 'pulse' }, subject: { reference: `Patient/${pat}` }, effectiveDateTime: '2019-12-31' });
  const pages = await walk(s, first, 'next');
  const seen = pages.flatMap(matchIds);
  t.same([...seen].sort(), [...obs, extra.json.id].sort(), 'every observation once (the one created after page 1 sorts last)');
  const cursor = new URL(linkOf(first, 'next')!).searchParams.get('_cursor');
  const other = await make(s, 'Other', undefined, 'comp');
  const moved = await s.fhir('GET', `Patient/${other}/Observation?_count=3&_sort=-date&_cursor=${cursor}`);
  t.equal(moved.status, 400, "another patient's compartment");
  t.same(vellumCodes(moved.json), ['VLM_FHIR_BAD_CURSOR']);

  const system = (await s.fhir('GET', '?_type=Patient,Observation&_count=4')).json;
  const all = (await s.fhir('GET', '?_type=Patient,Observation&_count=100')).json;
  const keyOf = (b: any) => (b.entry ?? []).filter((e: any) => e.search?.mode === 'match').map((e: any) => `${e.resource.resourceType}/${e.resource.id}`);
  const walked = await walk(s, system, 'next');
  t.same(walked.flatMap(keyOf), keyOf(all), 'system level: every match once, in (type, id) order');
});

t.test('$everything pages by cursor', async (t) => {
  const s = await startTestServer(t);
  const pat = await make(s, 'Everyone', '1990-01-01', 'every');
  for (let i = 0; i < 5; i++) {
    await s.fhir('POST', 'Observation', { resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: `Patient/${pat}` } });
    await s.fhir('POST', 'Condition', { resourceType: 'Condition', subject: { reference: `Patient/${pat}` }, code: { text: 'c' } });
  }
  const keyOf = (b: any) => (b.entry ?? []).filter((e: any) => e.search?.mode === 'match').map((e: any) => `${e.resource.resourceType}/${e.resource.id}`);
  const all = keyOf((await s.fhir('GET', `Patient/${pat}/$everything?_count=100`)).json);
  t.equal(all.length, 11);
  const first = (await s.fhir('GET', `Patient/${pat}/$everything?_count=3`)).json;
  t.equal(first.total, 11);
  // A Condition (a type before the page position) created after page 1 does not shift later pages.
  let made = false;
  const pages = await walk(s, first, 'next', async () => {
    if (made) return;
    made = true;
    await s.fhir('POST', 'Condition', { resourceType: 'Condition', subject: { reference: `Patient/${pat}` }, code: { text: 'late' } });
  });
  const seen = pages.flatMap(keyOf);
  t.equal(new Set(seen).size, seen.length, 'no duplicates');
  t.same(seen.filter((k: string) => all.includes(k)), all, 'every resource that existed throughout, in order');
  const back = await walk(s, pages[pages.length - 1], 'previous');
  const now = keyOf((await s.fhir('GET', `Patient/${pat}/$everything?_count=100`)).json);
  t.same(back.reverse().flatMap(keyOf), now, 'previous links walk back over every match');
  const tampered = await s.fhir('GET', `Patient/${pat}/$everything?_count=3&_type=Condition&_cursor=${new URL(linkOf(first, 'next')!).searchParams.get('_cursor')}`);
  t.equal(tampered.status, 400, 'a cursor of another _type');
  t.same(vellumCodes(tampered.json), ['VLM_FHIR_BAD_CURSOR']);
});
