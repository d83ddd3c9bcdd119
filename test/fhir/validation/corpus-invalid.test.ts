import t from 'tap';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createValidator } from '../../../src/fhir/validation/validator.ts';
import { CORPORA } from '../../helpers/corpora.ts';

// FHIR/fhir-test-cases valid/invalid cases (../shared/corpora/invalid, README §2):
// `accept` must give no error, `MUST-reject` must be rejected (by JSON.parse or with ≥ 1 error).
// SHOULD-reject and MAY-reject outcomes are only reported.

const DIR = join(CORPORA, 'invalid');

interface Case {
  name: string;
  file: string;
  resourceType: string;
  jsonParses: boolean;
  serverExpectation: string;
  categories: string[];
}

t.test('validator cases from FHIR/fhir-test-cases', async (t) => {
  const manifestFile = join(DIR, 'manifest.json');
  if (!existsSync(manifestFile)) {
    t.fail(`corpus not found at ${DIR} (set VELLUM_CORPORA)`);
    return;
  }
  const manifest = JSON.parse(readFileSync(manifestFile, 'utf8')) as { cases: Case[] };
  const validator = createValidator();
  const tally = new Map<string, { total: number; rejected: number; byParse: number }>();
  for (const c of manifest.cases) {
    const cls = c.serverExpectation.split(' ')[0] ?? c.serverExpectation; // "MAY-reject (validator-level ...)" → MAY-reject
    const row = tally.get(cls) ?? { total: 0, rejected: 0, byParse: 0 };
    tally.set(cls, row);
    row.total++;
    let parsed: unknown;
    try {
      // A leading UTF-8 BOM is dropped, as fastify's JSON body parser (secure-json-parse) does.
      parsed = JSON.parse(readFileSync(join(DIR, c.file), 'utf8').replace(/^\uFEFF/, ''));
    } catch {
      t.notOk(c.jsonParses, `${c.name}: JSON.parse fails as the manifest says`);
      t.not(cls, 'accept', `${c.name}: an accept case must parse`);
      row.rejected++;
      row.byParse++;
      continue;
    }
    t.ok(c.jsonParses, `${c.name}: parses as the manifest says`);
    const errors = validator.validate(parsed).filter((i) => i.severity === 'error');
    if (errors.length > 0) row.rejected++;
    if (cls === 'accept') t.same(errors, [], `${c.name} (accept) gives no error`);
    else if (cls === 'MUST-reject') t.ok(errors.length > 0, `${c.name} (MUST-reject: ${c.categories.join(', ')}) is rejected`);
  }
  for (const [cls, row] of [...tally].sort()) {
    const verb = cls === 'accept' ? 'rejected (must be 0)' : 'rejected';
    t.comment(`${cls}: ${row.rejected} of ${row.total} ${verb}${row.byParse ? ` (${row.byParse} by JSON.parse)` : ''}`);
  }
  t.equal(tally.get('accept')?.rejected, 0);
  t.equal(tally.get('MUST-reject')?.rejected, tally.get('MUST-reject')?.total);
});
