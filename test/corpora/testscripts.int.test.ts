/**
 * The corpora's FHIR TestScripts (CORPORA/testscripts, README §4b: the 6 HL7 R4 examples and the
 * 12 crucible testscript-engine scripts) replayed with `conformance/testscript.ts` against a real
 * Vellum listening on a real port (in-process, as `startTestServer` composes it), one server for
 * all scripts, in file order.
 *
 * Every operation and assert must pass, except the ones listed in EXPECTED below, each with the
 * status and code it must end with and why. An expected failure that starts passing fails too, so
 * the list cannot go stale. How the scripts are run:
 *
 * - Every action is judged on its own (`continueOnFailure`): under TestReport rules one failed setup
 *   assert (e.g. crucible's 200-for-a-create) would skip every test of the script and hide them.
 * - The runner speaks JSON only: operations that ask for XML are sent as JSON (and say so,
 *   `xml-sent-as-json`); asserts on an XML format are skipped (`xml-not-supported`).
 * - Fixtures: crucible's `fixtures/…json` resolve beside the script; the HL7 scripts' `Patient/example`
 *   and `Patient/pat1` are the R4 examples (CORPORA/r4-examples).
 * - The read scripts read a "known" resource (`KnownPatientResourceId` = example): SEEDS puts the
 *   R4 example with that id on the server first, as the scripts assume a tester would.
 * - Variables the scripts leave to the tester (a `hint`, no source, no default) get VARIABLES.
 * - validateProfileId (all the scripts' profiles are base R4 StructureDefinitions) is checked with
 *   Vellum's `$validate`.
 *
 * First, the runner checks itself with test/fixtures/testscripts/runner-selfcheck.json, whose
 * deliberately wrong asserts must fail (a runner that passes everything would pass the corpus too).
 */
import t, { type Test } from 'tap';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runTestScriptFile, type ActionResult, type ResultCode, type ScriptReport, type Status, type TestScript } from '../../conformance/testscript.ts';
import { CORPORA } from '../helpers/corpora.ts';
import { FHIR_JSON, startTestServer, type TestServer } from '../helpers/server.ts';

const DIR = join(CORPORA, 'testscripts');
const EXAMPLES = join(CORPORA, 'r4-examples');

/** Script (path under testscripts/) → R4 examples (under r4-examples/) PUT before it runs. */
const KNOWN_PATIENT = ['Patient/Patient-example.json'];
const SEEDS: Record<string, string[]> = {
  'hl7-r4-spec/TestScript-testscript-example-readtest.json': KNOWN_PATIENT,
  'hl7-r4-spec/TestScript-testscript-example-multisystem.json': KNOWN_PATIENT,
  'crucible-testscript-engine/read_testscript.json': KNOWN_PATIENT,
  'crucible-testscript-engine/read_testscript_obs.json': ['Observation/Observation-example.json'],
};

/** Search criteria the search scripts ask the tester for: those of the fixture they create. */
const VARIABLES = {
  PatientSearchFamilyName: 'Chalmers',
  PatientSearchGivenName: 'Peter',
  ObservationSearchCode: '15074-8',
  ObservationSearchStatus: 'final',
};

interface Expected {
  status: Status;
  code: ResultCode;
  /** The failed assert's expectation and finding, as the runner reports them. */
  expected?: string;
  actual?: string;
  /** The operation whose answer the failure follows from: its key, HTTP status and OperationOutcome issue codes. */
  because?: { key: string; httpStatus: number; issues?: string[] };
  reason: string;
}

// ---- why actions do not pass ----

const XML: Expected = {
  status: 'skip',
  code: 'xml-not-supported',
  reason:
    'The assert is about XML (a fhir+xml response Content-Type, or an XML Accept sent). The runner and Vellum speak JSON ' +
    'only (Vellum answers XML with 406/415, README "What it implements"); the operation was sent as JSON.',
};

const CAPITALS: Expected = {
  status: 'fail',
  code: 'assert-failed',
  expected: 'equals bad',
  actual: 'notFound',
  because: { key: 'test:R004#1', httpStatus: 404, issues: ['not-found'] },
  reason:
    'The script expects 400 for reading Patient/ID-may-not-contain-CAPITALS, but R4 ids are [A-Za-z0-9\\-\\.]{1,64} — ' +
    'capitals are allowed (http://hl7.org/fhir/R4/datatypes.html#id). The id is valid and unknown: 404 is right.',
};

/** Update of Patient/example with a fixture whose id differs from the URL's. */
function idMismatch(opKey: string, fixture: string, alsoInvalid = false): Expected {
  return {
    status: 'fail',
    code: 'assert-failed',
    because: { key: opKey, httpStatus: 400, issues: ['invalid'] },
    reason:
      `The script PUTs ${fixture} to Patient/example unchanged; R4 http.html#update: "If ... the id disagrees with the id in ` +
      `the URL, the server SHALL respond with an HTTP 400"` +
      (alsoInvalid ? '. The fixture is also invalid: birthDate "1978-3-1" is not an R4 date (YYYY-MM-DD).' : '.'),
  };
}

const LAST_MODIFIED_ON_400: Expected = {
  status: 'warning',
  code: 'assert-failed',
  expected: 'notEmpty',
  actual: '(none)',
  reason: 'Last-Modified of the update that was (rightly) rejected with 400 above: an error response has no version to date.',
};

const PATIENT_PAT1 = 'Patient/pat1 (id "pat1")';
const CRUCIBLE_EXAMPLE2 = 'fixtures/Patient/example2.json (id "example2")';

/** Script → action key → how it must end and why. Everything else must pass. */
const EXPECTED: Record<string, Record<string, Expected>> = {
  'hl7-r4-spec/TestScript-testscript-example-history.json': {
    'setup#6': { ...idMismatch('setup#5', PATIENT_PAT1), expected: 'equals 200', actual: '400' },
  },
  'hl7-r4-spec/TestScript-testscript-example-multisystem.json': {
    'test:01-ReadPatient-Destination1#3': XML,
    'test:01-ReadPatient-Destination1#5': XML,
    'test:02-ReadPatient-Destination2#2': XML,
    'test:02-ReadPatient-Destination2#4': XML,
  },
  'hl7-r4-spec/TestScript-testscript-example-readtest.json': {
    'test:R001#3': XML,
    'test:R004#2': CAPITALS,
  },
  'hl7-r4-spec/TestScript-testscript-example-search.json': {
    'test:02-PatientSearchDynamic#3': XML,
  },
  'hl7-r4-spec/TestScript-testscript-example-update.json': {
    'test:01-UpdatePatient#2': { ...idMismatch('test:01-UpdatePatient#1', PATIENT_PAT1), expected: 'equals okay', actual: 'bad' },
    'test:01-UpdatePatient#3': XML,
    'test:01-UpdatePatient#4': LAST_MODIFIED_ON_400,
  },
  'hl7-r4-spec/TestScript-testscript-example.json': {},

  'crucible-testscript-engine/general_testscript.json': {
    'setup#4': {
      status: 'fail',
      code: 'assert-failed',
      expected: 'equals 200',
      actual: '201',
      because: { key: 'setup#3', httpStatus: 201 },
      reason:
        'The PUT creates Patient/example (the setup deleted it just before; on this server it never existed), and R4 ' +
        'http.html#update says 201 Created when the update creates the resource. The script asks for 200 although its ' +
        'label says "01-ConfirmResponse201"; the HL7 original (hl7-r4-spec/TestScript-testscript-example.json) expects 201.',
    },
  },
  'crucible-testscript-engine/general_testscript_obs.json': {
    'test:01-ReadObservation#7': {
      status: 'warning',
      code: 'no-source',
      reason: 'minimumId names fixture "fixture-observation-minimum", which the script does not declare (warningOnly).',
    },
  },
  'crucible-testscript-engine/history_testscript.json': {
    'setup#6': { ...idMismatch('setup#5', CRUCIBLE_EXAMPLE2, true), expected: 'equals 200', actual: '400' },
    'test:01-HistoryPatient#4': {
      status: 'fail',
      code: 'profile-type-mismatch',
      expected: 'Patient',
      actual: 'Bundle',
      reason:
        'The script\'s "bundle-profile" references http://hl7.org/fhir/StructureDefinition/Patient, but the response it ' +
        'validates is the history Bundle (the _obs variant and the HL7 original reference the Bundle profile).',
    },
  },
  'crucible-testscript-engine/history_testscript_obs.json': {},
  'crucible-testscript-engine/read_testscript.json': {
    'test:R001#3': XML,
    'test:R004#2': CAPITALS,
  },
  'crucible-testscript-engine/read_testscript_obs.json': {
    'test:R001#3': XML,
    'test:R004#2': { ...CAPITALS, reason: CAPITALS.reason.replace('Patient/', 'Observation/') },
  },
  'crucible-testscript-engine/search_testscript.json': {
    'test:02-PatientSearchDynamic#3': XML,
  },
  'crucible-testscript-engine/search_testscript_autocreate.json': {
    'test:01-PatientCreateSearch#1': {
      status: 'error',
      code: 'unresolved-variable',
      reason:
        'The read uses ${PatientCreateLocation}, the Location of response "PatientCreateResponse"; this autocreate ' +
        'variant dropped the create operation that produced it (autocreate has no responseId), so nothing defines it.',
    },
    'test:01-PatientCreateSearch#2': { status: 'fail', code: 'no-source', reason: 'Asserts on the response of the read above, which could not be sent.' },
    'test:01-PatientCreateSearch#3': { status: 'fail', code: 'no-source', reason: 'Asserts on the response of the read above, which could not be sent.' },
    'test:02-PatientSearchDynamic#3': XML,
  },
  'crucible-testscript-engine/search_testscript_obs.json': {
    'test:02-ObservationSearchDynamic#3': XML,
    'test:02-ObservationSearchDynamic#7': {
      status: 'fail',
      code: 'assert-failed',
      expected: 'true',
      actual: '[false]',
      reason:
        'The search sends family= and given= to Observation (copied from the Patient script; they are not Observation ' +
        'parameters). Vellum ignores them, as R4 lets it, and says so with an OperationOutcome entry of search.mode ' +
        '"outcome" (http://hl7.org/fhir/R4/search.html#errors). Bundle.total counts matches only ' +
        '(http://hl7.org/fhir/R4/bundle-definitions.html#Bundle.total), so "total >= entry.count()" is false exactly ' +
        'when such an entry is present.',
    },
  },
  'crucible-testscript-engine/update_testscript.json': {
    'test:01-UpdatePatient#2': { ...idMismatch('test:01-UpdatePatient#1', CRUCIBLE_EXAMPLE2, true), expected: 'equals okay', actual: 'bad' },
    'test:01-UpdatePatient#3': XML,
    'test:01-UpdatePatient#4': LAST_MODIFIED_ON_400,
  },
  'crucible-testscript-engine/update_testscript_autocreate.json': {
    'autocreate:fixture-patient-update': {
      status: 'fail',
      code: 'assert-failed',
      expected: '2xx',
      actual: '400',
      because: { key: 'autocreate:fixture-patient-update', httpStatus: 400, issues: ['value', 'value'] },
      reason: 'The fixture (crucible fixtures/Patient/example2.json) is invalid R4: birthDate "1978-3-1" (and its extension\'s dateTime) is not YYYY-MM-DD.',
    },
    'test:01-UpdatePatient#2': { ...idMismatch('test:01-UpdatePatient#1', CRUCIBLE_EXAMPLE2, true), expected: 'equals okay', actual: 'bad' },
    'test:01-UpdatePatient#3': XML,
    'test:01-UpdatePatient#4': LAST_MODIFIED_ON_400,
    'autodelete:fixture-patient-update': {
      status: 'skip',
      code: 'no-source',
      reason: 'Nothing to delete: the autocreate of this fixture was (rightly) rejected, see above.',
    },
  },
  'crucible-testscript-engine/update_testscript_obs.json': {
    'test:01-UpdateObservation#3': XML,
  },
};

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** A Vellum on a real port whose base URL (Location headers, links) names that port. */
async function listeningServer(t: Test): Promise<{ server: TestServer; baseUrl: string }> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const server = await startTestServer(t, { PORT: String(port) });
    try {
      await server.app.listen({ port, host: '127.0.0.1' });
      return { server, baseUrl: server.config.baseUrl };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt === 5) throw err;
    }
  }
}

/** How many results a script must produce: every action, plus each autocreate / autodelete. */
function actionCount(script: TestScript): number {
  const auto = (script.fixture ?? []).reduce((n, f) => n + (f.autocreate ? 1 : 0) + (f.autodelete ? 1 : 0), 0);
  const tests = (script.test ?? []).reduce((n, x) => n + x.action.length, 0);
  return auto + (script.setup?.action.length ?? 0) + tests + (script.teardown?.action.length ?? 0);
}

function describe(r: ActionResult): string {
  return [r.status, r.code, r.request, r.httpStatus, r.expected && `expected ${r.expected}`, r.actual && `found ${r.actual}`, r.detail]
    .filter((x) => x !== undefined && x !== '')
    .join(' · ');
}

/** The runner's own check (test/fixtures/testscripts/runner-selfcheck.json): key → status and code; the rest pass. */
const SELF_CHECK: Record<string, { status: Status; code?: ResultCode; expected?: string; actual?: string }> = {
  'test:instance#8': { status: 'skip', code: 'profile-not-applicable' },
  'test:instance#14': { status: 'warning', code: 'assert-failed', expected: 'equals Wrong', actual: 'Selfcheck' },
  'test:instance#15': { status: 'fail', code: 'assert-failed', expected: 'equals Wrong', actual: 'Selfcheck' },
  'test:search#6': { status: 'fail', code: 'assert-failed', expected: 'equals Patient', actual: 'Bundle' },
  // TestReport rules (no continueOnFailure here): a failed action skips the rest of its test.
  'test:search#7': { status: 'skip', code: 'skipped-after-failure' },
  'test:broken#1': { status: 'error', code: 'unresolved-variable' },
  'test:broken#2': { status: 'skip', code: 'skipped-after-failure' },
};

t.test('TestScripts replayed against a real Vellum', async (t) => {
  if (!existsSync(DIR)) {
    t.fail(`corpus not found at ${DIR} (set VELLUM_CORPORA)`);
    return;
  }
  const { baseUrl } = await listeningServer(t);

  await t.test('runner self-check: asserts that must fail do fail', async (t) => {
    const path = fileURLToPath(new URL('../fixtures/testscripts/runner-selfcheck.json', import.meta.url));
    const script = JSON.parse(readFileSync(path, 'utf8')) as TestScript;
    const report = await runTestScriptFile(path, { baseUrl, signal: AbortSignal.timeout(30_000) });
    t.equal(report.results.length, actionCount(script), 'one result per action');
    for (const r of report.results) {
      const want = SELF_CHECK[r.key] ?? { status: 'pass' };
      const got = { status: r.status, code: r.code, expected: r.expected, actual: r.actual };
      t.match(got, want, `${r.key} — ${describe(r)}`);
      if (!SELF_CHECK[r.key]) t.equal(r.code, undefined, `${r.key}: no code on a plain pass`);
    }
    t.equal(report.results.find((r) => r.key === 'test:instance#9')?.httpStatus, 304, 'the If-None-Match read was answered 304');
  });

  await t.test('the corpora TestScripts', async (t) => {
    const files = ['hl7-r4-spec', 'crucible-testscript-engine'].flatMap((d) =>
      readdirSync(join(DIR, d))
        .filter((f) => f.endsWith('.json'))
        .sort()
        .map((f) => `${d}/${f}`),
    );
    t.same([...files].sort(), Object.keys(EXPECTED).sort(), 'every script in the corpus has an entry in EXPECTED (6 + 12)');

    const summary: string[] = [];
    for (const file of files) {
      for (const example of SEEDS[file] ?? []) {
        const resource = JSON.parse(readFileSync(join(EXAMPLES, example), 'utf8'));
        const res = await fetch(`${baseUrl}/${resource.resourceType}/${resource.id}`, {
          method: 'PUT',
          headers: { 'content-type': FHIR_JSON, accept: FHIR_JSON },
          body: JSON.stringify(resource),
        });
        await res.arrayBuffer();
        t.ok(res.status === 200 || res.status === 201, `${file}: seeding ${example} → ${res.status}`);
      }
      const path = join(DIR, file);
      const script = JSON.parse(readFileSync(path, 'utf8')) as TestScript;
      const report: ScriptReport = await runTestScriptFile(path, {
        baseUrl,
        fixtureDirs: [EXAMPLES],
        variables: VARIABLES,
        continueOnFailure: true,
        signal: AbortSignal.timeout(60_000),
      });
      const expected = EXPECTED[file] ?? {};
      await t.test(file, async (t) => {
        t.equal(report.results.length, actionCount(script), 'one result per action (and per autocreate / autodelete)');
        const byKey = new Map(report.results.map((r) => [r.key, r]));
        for (const r of report.results) {
          const want = expected[r.key];
          if (!want) {
            t.equal(r.status, 'pass', `${r.key} (${r.kind}${r.label ? ` ${r.label}` : ''}) passes — ${describe(r)}`);
            if (r.code !== undefined) t.equal(r.code, 'xml-sent-as-json', `${r.key}: the only note on a pass is the XML→JSON substitution`);
            continue;
          }
          const got: Partial<ActionResult> = { status: r.status, code: r.code };
          const wanted: Partial<ActionResult> = { status: want.status, code: want.code };
          if (want.expected !== undefined) (got.expected = r.expected), (wanted.expected = want.expected);
          if (want.actual !== undefined) (got.actual = r.actual), (wanted.actual = want.actual);
          t.same(got, wanted, `${r.key} ends as expected (${want.reason}) — ${describe(r)}`);
          if (want.because) {
            const op = byKey.get(want.because.key);
            t.equal(op?.httpStatus, want.because.httpStatus, `${r.key}: ${want.because.key} answered ${want.because.httpStatus}`);
            if (want.because.issues) t.same(op?.issues, want.because.issues, `${r.key}: ${want.because.key}'s OperationOutcome issue codes`);
          }
        }
        for (const key of Object.keys(expected)) t.ok(byKey.has(key), `expected entry ${key} names an action of the script`);
      });
      const c = report.counts;
      summary.push(`${file}: ${c.pass} pass, ${c.fail} fail, ${c.warning} warning, ${c.skip} skip, ${c.error} error`);
    }
    t.comment(summary.join('\n'));
  });
});
