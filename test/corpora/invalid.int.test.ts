/**
 * FHIR/fhir-test-cases valid/invalid cases (CORPORA/invalid, README §2) sent over HTTP to the
 * real server (started as `npm start` does) as the raw file bytes — several are not parseable
 * JSON, some carry a BOM. `accept` → POST 201; `MUST-reject` → 400 or 422 with an
 * OperationOutcome, and nothing stored (type-level history, search total and system history
 * unchanged). SHOULD-reject and MAY-reject outcomes are printed, not asserted.
 *
 * Cases whose only error is a malformed `Resource.id` cannot be rejected by a create: R4 says
 * "If an id is provided, the server SHALL ignore it" (http://hl7.org/fhir/R4/http.html#create).
 * Those are sent as an update to that id instead (PUT [base]/<Type>/<bad id>, the same id in
 * URL and body), which must be rejected; their create is checked to replace the id.
 */
import t from 'tap';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CORPORA } from '../helpers/corpora.ts';
import { startProcessServer, type ProcessServer } from '../helpers/process-server.ts';

const DIR = join(CORPORA, 'invalid');

interface Case {
  name: string;
  file: string;
  resourceType: string;
  jsonParses: boolean;
  serverExpectation: string;
  categories: string[];
  errors: { expression?: string }[];
}

const issueCodes = (outcome: any): string[] => (outcome?.issue ?? []).map((i: any) => i.code);

/** What the server holds of `type`: type-level history total, current count, system history total. */
async function holdings(s: ProcessServer, type: string): Promise<{ history: number; current: number; system: number }> {
  const history = await s.fhir('GET', `${type}/_history?_count=0`);
  const current = await s.fhir('GET', `${type}?_summary=count`);
  const system = await s.fhir('GET', '_history?_count=0');
  if (history.status !== 200 || current.status !== 200 || system.status !== 200) {
    throw new Error(`cannot count ${type}: ${history.status} ${current.status} ${system.status}`);
  }
  return { history: history.json.total, current: current.json.total, system: system.json.total };
}

t.test('validator cases over HTTP', async (t) => {
  const manifestFile = join(DIR, 'manifest.json');
  if (!existsSync(manifestFile)) {
    t.fail(`corpus not found at ${DIR} (set VELLUM_CORPORA)`);
    return;
  }
  const { cases } = JSON.parse(readFileSync(manifestFile, 'utf8')) as { cases: Case[] };
  t.equal(cases.length, 77, 'all cases loaded');
  // The audit trail is off here: "nothing stored" is checked on history totals, which AuditEvents would move.
  const s = await startProcessServer(t, { env: { VELLUM_AUDIT: 'off' } });

  const tally = new Map<string, { total: number; rejected: number }>();
  const informative: string[] = [];
  for (const c of cases) {
    const cls = c.serverExpectation.split(' ')[0]!; // "MAY-reject (validator-level …)" → MAY-reject
    const row = tally.get(cls) ?? { total: 0, rejected: 0 };
    tally.set(cls, row);
    row.total++;
    const bytes = readFileSync(join(DIR, c.file));
    if (c.resourceType === 'Parameters') {
      // Parameters is never persisted and has no REST endpoint (http://hl7.org/fhir/R4/parameters.html):
      // these cases are judged by the validator in test/fhir/validation/corpus-invalid.test.ts.
      const res = await s.fhir('POST', 'Parameters', new Uint8Array(bytes));
      t.equal(res.status, 404, `${c.name}: Parameters has no REST endpoint`);
      t.ok(issueCodes(res.json).includes('not-supported'), `${c.name}: not-supported`);
      tally.get(cls)!.total--;
      continue;
    }
    const before = await holdings(s, c.resourceType);
    const badIdOnly = cls === 'MUST-reject' && c.errors.every((e) => e.expression === `${c.resourceType}.id`);
    const badId: string | undefined = badIdOnly ? JSON.parse(bytes.toString('utf8')).id : undefined;
    const res = badId
      ? await s.fhir('PUT', `${c.resourceType}/${encodeURIComponent(badId)}`, new Uint8Array(bytes))
      : await s.fhir('POST', c.resourceType, new Uint8Array(bytes));
    const rejected = res.status >= 400;
    if (rejected) row.rejected++;

    if (cls === 'accept') {
      t.equal(res.status, 201, `${c.name} (accept): created`, { outcome: res.json });
      t.equal(res.json?.resourceType, c.resourceType);
    } else if (cls === 'MUST-reject') {
      const label = `${c.name} (MUST-reject: ${c.categories.join(', ')}${c.jsonParses ? '' : ', not JSON'}${badId ? ', by PUT' : ''})`;
      t.ok(res.status === 400 || res.status === 422, `${label}: 400/422 (${res.status})`, { body: res.text.slice(0, 300) });
      t.equal(res.json?.resourceType, 'OperationOutcome', `${label}: answered with an OperationOutcome`);
      t.ok(issueCodes(res.json).length > 0, `${label}: with issue codes`);
      t.same(await holdings(s, c.resourceType), before, `${label}: nothing stored`);
      if (badId !== undefined) {
        const created = await s.fhir('POST', c.resourceType, new Uint8Array(bytes));
        t.equal(created.status, 201, `${c.name}: a create ignores the malformed body id`);
        t.not(created.json?.id, badId, `${c.name}: and assigns its own`);
      }
    } else {
      informative.push(
        `${cls} ${c.name} [${c.categories.join(', ')}]: ${res.status}${rejected ? ` (${issueCodes(res.json).join(', ')})` : ''}`,
      );
      if (rejected) t.same(await holdings(s, c.resourceType), before, `${c.name}: a rejection stores nothing`);
    }
  }
  for (const [cls, row] of [...tally].sort()) t.comment(`${cls}: ${row.rejected} of ${row.total} rejected`);
  for (const line of informative) t.comment(line);
  t.equal(tally.get('accept')?.rejected, 0, 'no accept case rejected');
  t.equal(tally.get('MUST-reject')?.rejected, tally.get('MUST-reject')?.total, 'every MUST-reject case rejected');
  t.equal(await s.stop(), 0);
});
