/**
 * Assertions for checks. Each throws a `CheckFailure` whose reason names the request and what the
 * server answered, so a failing line is enough to reproduce the problem with curl.
 */
import { fail } from './check.ts';
import type { FhirResponse } from './client.ts';
import type { Bundle, OperationOutcome, Resource } from './fhir.ts';

/** `GET Patient/1 → 404`, with the first OperationOutcome issue when the body carries one. */
export function describe(res: FhirResponse, shortUrl: (url: string) => string = (u) => u): string {
  let text = `${res.method} ${shortUrl(res.url)} → ${res.status}`;
  const issue = res.json?.resourceType === 'OperationOutcome' ? res.json.issue?.[0] : undefined;
  if (issue) text += ` (${[issue.severity, issue.code, issue.diagnostics].filter(Boolean).join(' ')})`;
  return text;
}

function show(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 200 ? `${text.slice(0, 200)}…` : text;
}

export class Expect {
  readonly #shortUrl: (url: string) => string;

  constructor(shortUrl: (url: string) => string) {
    this.#shortUrl = shortUrl;
  }

  /** `GET Patient/1 → 404` for messages. */
  describe(res: FhirResponse): string {
    return describe(res, this.#shortUrl);
  }

  /** The status is `expected` (or one of them). */
  status(res: FhirResponse, expected: number | number[], why = ''): void {
    const list = Array.isArray(expected) ? expected : [expected];
    if (!list.includes(res.status)) fail(`${this.describe(res)}, expected ${list.join(' or ')}${why ? ` ${why}` : ''}`);
  }

  /** Fails with `reason` unless `condition`. */
  ok(condition: unknown, reason: string): asserts condition {
    if (!condition) fail(reason);
  }

  /** `actual` equals `expected` (JSON equality). */
  equal<T>(actual: T, expected: T, what: string): void {
    if (JSON.stringify(actual) !== JSON.stringify(expected)) fail(`${what}: got ${show(actual)}, expected ${show(expected)}`);
  }

  /** The body is a resource of `type` (any type when omitted); returns it. */
  resource(res: FhirResponse, type?: string): Resource {
    const body = res.json;
    if (!body || typeof body !== 'object' || typeof body.resourceType !== 'string') {
      fail(`${this.describe(res)}: the body is not a FHIR JSON resource${res.text ? ` (${show(res.text)})` : ' (empty)'}`);
    }
    if (type !== undefined && body.resourceType !== type) fail(`${this.describe(res)}: body is a ${body.resourceType}, expected ${type}`);
    return body as Resource;
  }

  /** The body is an OperationOutcome with at least one issue; returns it. */
  outcome(res: FhirResponse): OperationOutcome {
    const outcome = this.resource(res, 'OperationOutcome') as OperationOutcome;
    if (!Array.isArray(outcome.issue) || outcome.issue.length === 0) fail(`${this.describe(res)}: OperationOutcome without issues`);
    return outcome;
  }

  /** The body is a Bundle of `type`; returns it. */
  bundle(res: FhirResponse, type: string): Bundle {
    const bundle = this.resource(res, 'Bundle') as Bundle;
    if (bundle.type !== type) fail(`${this.describe(res)}: Bundle.type is ${show(bundle.type)}, expected ${type}`);
    return bundle;
  }

  /** The header is present; returns its value. */
  header(res: FhirResponse, name: string): string {
    const value = res.headers.get(name);
    if (value === null) fail(`${this.describe(res)}: no ${name} header`);
    return value;
  }

  /** The two id lists hold the same ids, in any order, each once. */
  sameIds(actual: (string | undefined)[], expected: string[], what: string): void {
    const a = [...actual].map(String).sort();
    const e = [...expected].sort();
    if (a.length === e.length && a.every((id, i) => id === e[i])) return;
    const missing = e.filter((id) => !a.includes(id));
    const extra = a.filter((id) => !e.includes(id));
    const dupes = a.filter((id, i) => a.indexOf(id) !== i);
    const parts = [
      missing.length ? `missing ${missing.join(', ')}` : '',
      extra.length ? `unexpected ${extra.join(', ')}` : '',
      dupes.length ? `repeated ${dupes.join(', ')}` : '',
    ].filter(Boolean);
    fail(`${what}: ${parts.join('; ')} (got ${a.length}, expected ${e.length})`);
  }
}
