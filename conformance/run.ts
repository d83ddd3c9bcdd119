/**
 * Black-box FHIR R4 conformance checks, runnable against any FHIR server:
 *
 *   npm run conformance -- --base-url http://127.0.0.1:8080/fhir [--token T] [--only pattern]
 *
 * Loads every `checks/<area>-<behaviour>.ts`, runs them one after another, prints one line per
 * check (PASS / FAIL / SKIP, id, short reason) and a final `N passed, N failed, N skipped`. The
 * exit status is the number of failed checks (at most 255); 255 also means the suite could not
 * run at all (bad arguments, a malformed check).
 *
 * This directory imports nothing from the server's code: plain `fetch`, and the spec.
 */
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { CheckFailure, CheckSkip, type Check } from './check.ts';
import { FhirClient } from './client.ts';
import { CheckContext, Suite } from './context.ts';

const USAGE = `usage: npm run conformance -- --base-url URL [--token T] [--only pattern] [--timeout seconds] [--list]

  --base-url URL    the FHIR base, e.g. http://127.0.0.1:8080/fhir
  --token T         sent as "Authorization: Bearer T" (only to the base URL's origin)
  --only pattern    run the checks whose id contains the pattern; comma-separated
                    alternatives, * matches anything (e.g. --only 'search-*,history')
  --timeout s       per-check time limit in seconds (default 60)
  --list            print the checks and their spec links, run nothing`;

const CHECKS_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), 'checks');

class UsageError extends Error {}

/** Load every check module, verifying its exports. */
async function loadChecks(): Promise<Check[]> {
  const files = readdirSync(CHECKS_DIR).filter((f) => f.endsWith('.ts')).sort();
  const checks: Check[] = [];
  for (const file of files) {
    const mod = (await import(pathToFileURL(path.join(CHECKS_DIR, file)).href)) as Partial<Check>;
    const id = file.slice(0, -'.ts'.length);
    const problems = [
      mod.id !== id ? `id must be "${id}"` : '',
      typeof mod.spec !== 'string' || !mod.spec.startsWith('http://hl7.org/fhir/R4/') ? 'spec must be an http://hl7.org/fhir/R4/ URL' : '',
      typeof mod.description !== 'string' || mod.description === '' ? 'description is missing' : '',
      typeof mod.run !== 'function' ? 'run(ctx) is missing' : '',
    ].filter(Boolean);
    if (problems.length) throw new UsageError(`checks/${file}: ${problems.join('; ')}`);
    checks.push({ id, spec: mod.spec!, description: mod.description!, run: mod.run!.bind(mod) });
  }
  return checks;
}

/** `--only` as a predicate: comma-separated substrings, `*` a wildcard. */
function selector(pattern: string | undefined): (id: string) => boolean {
  if (pattern === undefined) return () => true;
  const terms = pattern
    .split(',')
    .map((t) => t.trim())
    .filter(Boolean)
    .map((t) => new RegExp(t.split('*').map((part) => part.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')));
  return (id) => terms.some((re) => re.test(id));
}

type Outcome = { result: 'PASS' | 'FAIL' | 'SKIP'; reason: string };

async function runCheck(suite: Suite, check: Check, timeoutMs: number): Promise<Outcome> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new Error(`timed out after ${timeoutMs / 1000} s`)), timeoutMs);
  try {
    const ctx = new CheckContext(suite, check.id, controller.signal);
    const note = await Promise.race([
      check.run(ctx),
      new Promise<never>((_, reject) => controller.signal.addEventListener('abort', () => reject(controller.signal.reason))),
    ]);
    return { result: 'PASS', reason: typeof note === 'string' && note ? note : check.description };
  } catch (err) {
    if (err instanceof CheckSkip) return { result: 'SKIP', reason: err.message };
    if (err instanceof CheckFailure) return { result: 'FAIL', reason: err.message };
    const e = err as Error & { cause?: { message?: string; code?: string } };
    const cause = e?.cause?.code ?? e?.cause?.message;
    return { result: 'FAIL', reason: `error: ${e?.message ?? String(err)}${cause ? ` (${cause})` : ''}` };
  } finally {
    clearTimeout(timer);
  }
}

async function main(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        'base-url': { type: 'string' },
        token: { type: 'string' },
        only: { type: 'string' },
        timeout: { type: 'string' },
        list: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const checks = (await loadChecks()).filter((c) => selector(values.only)(c.id));
  if (values.list) {
    for (const c of checks) process.stdout.write(`${c.id}  ${c.spec}\n    ${c.description}\n`);
    return 0;
  }
  const baseUrl = values['base-url'];
  if (!baseUrl || !/^https?:\/\/[^/]/i.test(baseUrl)) throw new UsageError('--base-url must be an http(s) URL');
  const timeout = values.timeout === undefined ? 60 : Number(values.timeout);
  if (!(timeout > 0)) throw new UsageError('--timeout must be a positive number of seconds');
  if (checks.length === 0) throw new UsageError(`no check matches --only ${values.only}`);

  const suite = new Suite(new FhirClient(baseUrl, values.token));
  const counts = { PASS: 0, FAIL: 0, SKIP: 0 };
  const width = Math.max(...checks.map((c) => c.id.length));
  for (const check of checks) {
    const { result, reason } = await runCheck(suite, check, timeout * 1000);
    counts[result] += 1;
    process.stdout.write(`${result} ${check.id.padEnd(width)}  ${reason.replace(/\s+/g, ' ')}\n`);
  }
  process.stdout.write(`${counts.PASS} passed, ${counts.FAIL} failed, ${counts.SKIP} skipped\n`);
  return Math.min(counts.FAIL, 255);
}

// `--list | head` closes the pipe early; that is not an error.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw err;
});

main(process.argv.slice(2)).then(
  (status) => {
    process.exitCode = status;
  },
  (err: unknown) => {
    process.stderr.write(err instanceof UsageError ? `conformance: ${err.message}\n\n${USAGE}\n` : `conformance: ${(err as Error)?.stack ?? err}\n`);
    process.exitCode = 255;
  },
);
