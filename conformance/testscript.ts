/**
 * A small FHIR TestScript runner (http://hl7.org/fhir/R4/testscript.html): replays a TestScript's
 * fixtures, variables, setup / test / teardown operations and asserts against any FHIR base URL
 * with plain `fetch`, and reports every action with a status and, when it did not pass, a code.
 *
 *   node --import tsx conformance/testscript.ts --base-url http://127.0.0.1:8080/fhir \
 *     [--fixtures DIR]… [--var name=value]… [--continue] script.json…
 *
 * It speaks JSON only. An operation that asks for XML (`accept` / `contentType` `xml`) is sent as
 * `application/fhir+json` and marked `xml-sent-as-json`; asserts on an XML format are skipped with
 * the code `xml-not-supported`. XPath `path`s of the simple child-step form the spec examples use
 * (`fhir:Patient/fhir:name/fhir:family/@value`, `Patient/id`) are read as the equivalent FHIRPath
 * and, like an XPath value, yield the first match.
 *
 * Execution follows the TestScript / TestReport rules: a failing setup action skips the rest of the
 * setup and every test (teardown still runs); a failing test action skips the rest of that test;
 * `warningOnly` asserts never stop anything. `continueOnFailure` instead judges every action on its
 * own, so one contested expectation does not hide the rest of a script.
 *
 * Like the rest of `conformance/`, this imports nothing from the server's code.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import fhirpath from 'fhirpath';
import r4Model from 'fhirpath/fhir-context/r4/index.js';
import { FHIR_JSON } from './client.ts';

// ---- the TestScript shape (the parts the runner reads) ----

export interface Coding {
  system?: string;
  code?: string;
}

export interface TestScriptOperation {
  type?: Coding;
  resource?: string;
  label?: string;
  description?: string;
  accept?: string;
  contentType?: string;
  destination?: number;
  origin?: number;
  encodeRequestUrl?: boolean;
  method?: string;
  params?: string;
  requestHeader?: { field: string; value: string }[];
  requestId?: string;
  responseId?: string;
  sourceId?: string;
  targetId?: string;
  url?: string;
}

export interface TestScriptAssert {
  label?: string;
  description?: string;
  direction?: 'request' | 'response';
  compareToSourceId?: string;
  compareToSourceExpression?: string;
  compareToSourcePath?: string;
  contentType?: string;
  expression?: string;
  headerField?: string;
  minimumId?: string;
  navigationLinks?: boolean;
  operator?: string;
  path?: string;
  requestMethod?: string;
  requestURL?: string;
  resource?: string;
  response?: string;
  responseCode?: string;
  sourceId?: string;
  validateProfileId?: string;
  value?: string;
  warningOnly?: boolean;
}

export interface TestScriptAction {
  operation?: TestScriptOperation;
  assert?: TestScriptAssert;
}

export interface TestScript {
  resourceType: 'TestScript';
  id?: string;
  name?: string;
  contained?: { resourceType: string; id?: string }[];
  fixture?: { id?: string; autocreate?: boolean; autodelete?: boolean; resource?: { reference?: string } }[];
  profile?: { id?: string; reference?: string }[];
  variable?: {
    name: string;
    defaultValue?: string;
    expression?: string;
    headerField?: string;
    path?: string;
    sourceId?: string;
  }[];
  setup?: { action: TestScriptAction[] };
  test?: { id?: string; name?: string; action: TestScriptAction[] }[];
  teardown?: { action: TestScriptAction[] };
}

// ---- the report ----

export type Status = 'pass' | 'fail' | 'warning' | 'skip' | 'error';

/**
 * Why an action did not pass (or a note on one that did):
 * - `assert-failed` the assert was evaluated and does not hold (`expected` / `actual` say how)
 * - `no-source` the response, request or fixture the assert reads does not exist
 * - `fixture-not-found` a fixture (or its reference) the action needs could not be loaded
 * - `unresolved-variable` a `${name}` has no value (no source, no default, none supplied)
 * - `request-failed` the request could not be sent or answered (network error, timeout)
 * - `xml-not-supported` the assert is about XML, which this runner does not speak
 * - `xml-sent-as-json` (on a passing operation) the script asked for XML; JSON was sent
 * - `profile-not-applicable` validateProfileId names a profile other than a base R4 resource
 *   profile; only those can be checked (with the server's `$validate`)
 * - `profile-type-mismatch` the profile is for another resource type than the resource checked
 * - `validation-errors` `$validate` reported error or fatal issues
 * - `no-validate` the server answered `$validate` with 404/405/501
 * - `unsupported` an operation type, path syntax or assert kind this runner does not implement
 * - `expression-error` a FHIRPath expression could not be evaluated
 * - `skipped-after-failure` an earlier setup/test action failed (TestReport semantics)
 */
export type ResultCode =
  | 'assert-failed'
  | 'no-source'
  | 'fixture-not-found'
  | 'unresolved-variable'
  | 'request-failed'
  | 'xml-not-supported'
  | 'xml-sent-as-json'
  | 'profile-not-applicable'
  | 'profile-type-mismatch'
  | 'validation-errors'
  | 'no-validate'
  | 'unsupported'
  | 'expression-error'
  | 'skipped-after-failure';

export interface ActionResult {
  /** `setup#2`, `test:R001#3` (test id, else `test[1]`), `teardown#1`, `autocreate:<fixture>`, `autodelete:<fixture>`. */
  key: string;
  kind: 'operation' | 'assert';
  label?: string;
  status: Status;
  code?: ResultCode;
  /** For a failed assert: what the script expected and what was found (values, not prose). */
  expected?: string;
  actual?: string;
  /** The request an operation sent: `GET http://…/Patient/example`. */
  request?: string;
  /** The HTTP status an operation received. */
  httpStatus?: number;
  /** The issue codes of an OperationOutcome an operation received. */
  issues?: string[];
  /** Human-readable detail; never asserted on. */
  detail?: string;
}

export interface ScriptReport {
  id?: string;
  name?: string;
  results: ActionResult[];
  /** Per status, how many actions ended so. */
  counts: Record<Status, number>;
}

export interface RunOptions {
  /** The FHIR base every operation goes to (unless `destinations` names another one). */
  baseUrl: string;
  /** Base URL per `operation.destination` (multi-server scripts); default `baseUrl`. */
  destinations?: Record<number, string>;
  /** The directory the script was loaded from: relative fixture references resolve against it. */
  scriptDir?: string;
  /**
   * Where `Type/id` fixture references are looked up: `<dir>/<Type>/<Type>-<id>.json` (the layout
   * of the R4 examples package as the corpora hold it), `<dir>/<Type>/<id>.json`, `<dir>/<Type>-<id>.json`.
   */
  fixtureDirs?: string[];
  /** Values for variables the script leaves to the tester (no default, no source); they win over the script's. */
  variables?: Record<string, string>;
  /** Judge every action on its own instead of skipping the rest of a failed setup / test. */
  continueOnFailure?: boolean;
  /** Sent with every request (e.g. `authorization`). */
  headers?: Record<string, string>;
  fetch?: typeof fetch;
  signal?: AbortSignal;
}

// ---- exchanges ----

interface Exchange {
  request: { method: string; url: string; headers: Record<string, string>; body: unknown };
  response: { status: number; headers: Headers; text: string; json: any };
  /** The script asked for XML; JSON was sent. */
  xmlAsJson: boolean;
}

interface ServerId {
  type: string;
  id: string;
  versionId?: string;
}

/** An action's outcome before it is keyed: thrown (`Outcome`) or returned. */
class Outcome extends Error {
  readonly status: Status;
  readonly code: ResultCode;
  readonly expected: string | undefined;
  readonly actual: string | undefined;

  constructor(status: Status, code: ResultCode, detail: string, values: { expected?: string; actual?: string } = {}) {
    super(detail);
    this.status = status;
    this.code = code;
    this.expected = values.expected;
    this.actual = values.actual;
  }
}

const fail = (code: ResultCode, detail: string, values?: { expected?: string; actual?: string }): never => {
  throw new Outcome('fail', code, detail, values);
};
const skip = (code: ResultCode, detail: string): never => {
  throw new Outcome('skip', code, detail);
};

/** http://hl7.org/fhir/R4/valueset-assert-response-code-types.html */
const RESPONSE_CODES: Record<string, number> = {
  okay: 200,
  created: 201,
  noContent: 204,
  notModified: 304,
  bad: 400,
  forbidden: 403,
  notFound: 404,
  methodNotAllowed: 405,
  conflict: 409,
  gone: 410,
  preconditionFailed: 412,
  unprocessable: 422,
};

/** http://hl7.org/fhir/R4/codesystem-testscript-operation-codes.html → HTTP method. */
const METHODS: Record<string, string> = {
  read: 'GET',
  vread: 'GET',
  search: 'GET',
  'search-type': 'GET',
  'search-system': 'GET',
  history: 'GET',
  'history-instance': 'GET',
  'history-type': 'GET',
  'history-system': 'GET',
  capabilities: 'GET',
  create: 'POST',
  transaction: 'POST',
  batch: 'POST',
  update: 'PUT',
  updateCreate: 'PUT',
  patch: 'PATCH',
  delete: 'DELETE',
};

const XML = /xml/i;

/** `json` / `xml` shorthand (http://hl7.org/fhir/R4/valueset-mimetypes.html allows both) → a media type. */
function mediaType(format: string): string {
  if (format === 'json') return FHIR_JSON;
  if (format === 'xml') return 'application/fhir+xml';
  return format;
}

/** A copy, since fhirpath.js annotates the data it walks. */
function evaluate(data: unknown, expression: string): unknown[] {
  try {
    return fhirpath.evaluate(structuredClone(data), expression, {}, r4Model) as unknown[];
  } catch (err) {
    return fail('expression-error', `${expression}: ${(err as Error).message}`);
  }
}

/**
 * A simple XPath (`fhir:Patient/fhir:name/fhir:family/@value`, `Patient/id`) as FHIRPath
 * (`Patient.name.family`); anything richer (predicates, axes, functions, JSONPath) is unsupported.
 */
export function xpathToFhirPath(xpath: string): string {
  const steps = xpath
    .replace(/^\/+/, '')
    .split('/')
    .filter((s) => s !== '' && s !== '@value')
    .map((s) => s.replace(/^fhir:/, ''));
  if (steps.length === 0 || !steps.every((s) => /^[A-Za-z][A-Za-z0-9_]*$/.test(s))) {
    return fail('unsupported', `path ${JSON.stringify(xpath)} is not a simple XPath of child steps`);
  }
  return steps.join('.');
}

function show(value: unknown): string {
  if (value === undefined) return '(none)';
  return typeof value === 'string' ? value : JSON.stringify(value);
}

/** Every element of `minimum` is in `actual` (arrays: each item matches some item), as the crucible engine reads minimumId. */
function containsMinimum(minimum: unknown, actual: unknown, at: string, missing: string[]): boolean {
  if (Array.isArray(minimum)) {
    if (!Array.isArray(actual)) return missing.push(at), false;
    const pool = [...actual];
    let ok = true;
    minimum.forEach((item, i) => {
      const found = pool.findIndex((candidate) => containsMinimum(item, candidate, `${at}[${i}]`, []));
      if (found < 0) {
        missing.push(`${at}[${i}]`);
        ok = false;
      } else pool.splice(found, 1);
    });
    return ok;
  }
  if (minimum !== null && typeof minimum === 'object') {
    if (actual === null || typeof actual !== 'object' || Array.isArray(actual)) return missing.push(at), false;
    let ok = true;
    for (const [key, value] of Object.entries(minimum)) {
      if (!containsMinimum(value, (actual as Record<string, unknown>)[key], at ? `${at}.${key}` : key, missing)) ok = false;
    }
    return ok;
  }
  if (minimum === actual) return true;
  missing.push(at);
  return false;
}

/** `Type/id[/_history/vid]` at the end of a URL (a `Location` header). */
function idFromUrl(url: string): ServerId | undefined {
  const m = /([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/([A-Za-z0-9\-.]{1,64}))?\/?$/.exec(url.split('?')[0]!);
  return m ? { type: m[1]!, id: m[2]!, versionId: m[3] } : undefined;
}

/** Runs one TestScript. */
export class TestScriptRun {
  readonly #script: TestScript;
  readonly #options: RunOptions;
  readonly #fetch: typeof fetch;
  readonly #fixtures = new Map<string, any>();
  readonly #fixtureErrors = new Map<string, string>();
  readonly #responses = new Map<string, Exchange>();
  readonly #requests = new Map<string, Exchange>();
  readonly #ids = new Map<string, ServerId>();
  #last: Exchange | undefined;
  readonly #results: ActionResult[] = [];

  constructor(script: TestScript, options: RunOptions) {
    this.#script = script;
    this.#options = options;
    this.#fetch = options.fetch ?? fetch;
  }

  /** Runs the script: autocreate, setup, tests, teardown, autodelete. */
  async run(): Promise<ScriptReport> {
    const script = this.#script;
    await this.#loadFixtures();
    for (const f of script.fixture ?? []) {
      if (f.autocreate && f.id) await this.#auto(`autocreate:${f.id}`, { type: { code: 'create' }, sourceId: f.id });
    }
    const setupOk = await this.#actions('setup', script.setup?.action ?? [], true);
    for (const [i, test] of (script.test ?? []).entries()) {
      const prefix = `test:${test.id ?? `[${i + 1}]`}`;
      if (!setupOk && !this.#options.continueOnFailure) {
        test.action.forEach((a, j) => this.#skipped(`${prefix}#${j + 1}`, a, 'the setup failed'));
        continue;
      }
      await this.#actions(prefix, test.action, false);
    }
    await this.#actions('teardown', script.teardown?.action ?? [], false, true);
    for (const f of script.fixture ?? []) {
      if (f.autodelete && f.id) {
        if (this.#ids.has(f.id)) await this.#auto(`autodelete:${f.id}`, { type: { code: 'delete' }, targetId: f.id });
        else this.#results.push({ key: `autodelete:${f.id}`, kind: 'operation', status: 'skip', code: 'no-source', detail: 'the fixture was never created' });
      }
    }
    const counts: Record<Status, number> = { pass: 0, fail: 0, warning: 0, skip: 0, error: 0 };
    for (const r of this.#results) counts[r.status]++;
    return { id: script.id, name: script.name, results: this.#results, counts };
  }

  /** An implicit autocreate / autodelete: it has no assert of its own, so anything but 2xx fails it. */
  async #auto(key: string, operation: TestScriptOperation): Promise<void> {
    const result = await this.#judge(key, { operation });
    if (result.status === 'pass' && (result.httpStatus! < 200 || result.httpStatus! >= 300)) {
      Object.assign(result, { status: 'fail', code: 'assert-failed', expected: '2xx', actual: String(result.httpStatus) });
    }
    this.#results.push(result);
  }

  /** Runs a list of actions; false when one failed (and, unless continuing, the rest were skipped). */
  async #actions(prefix: string, actions: TestScriptAction[], isSetup: boolean, isTeardown = false): Promise<boolean> {
    let ok = true;
    for (const [j, action] of actions.entries()) {
      const key = `${prefix}#${j + 1}`;
      if (!ok && !this.#options.continueOnFailure && !isTeardown) {
        this.#skipped(key, action, isSetup ? 'an earlier setup action failed' : 'an earlier action of this test failed');
        continue;
      }
      const result = await this.#judge(key, action);
      this.#results.push(result);
      // An operation that was not sent leaves nothing for the asserts after it to read.
      if (result.kind === 'operation' && result.status === 'error') this.#last = undefined;
      if (result.status === 'fail' || result.status === 'error') ok = false;
    }
    return ok;
  }

  #skipped(key: string, action: TestScriptAction, why: string): void {
    const kind = action.operation ? 'operation' : 'assert';
    this.#results.push({ key, kind, label: (action.operation ?? action.assert)?.label, status: 'skip', code: 'skipped-after-failure', detail: why });
  }

  async #judge(key: string, action: TestScriptAction): Promise<ActionResult> {
    const kind = action.operation ? 'operation' : 'assert';
    const label = action.operation?.label ?? action.assert?.label;
    try {
      if (action.operation) return { key, kind, label, ...(await this.#operation(action.operation)) };
      if (action.assert) {
        const detail = await this.#assert(action.assert);
        return { key, kind, label, status: 'pass', detail };
      }
      return { key, kind, label, status: 'error', code: 'unsupported', detail: 'an action with neither operation nor assert' };
    } catch (err) {
      if (!(err instanceof Outcome)) {
        return { key, kind, label, status: 'error', code: 'request-failed', detail: (err as Error)?.message ?? String(err) };
      }
      const warn = kind === 'assert' && action.assert?.warningOnly && err.status === 'fail';
      const status: Status = warn ? 'warning' : kind === 'operation' && err.status === 'fail' ? 'error' : err.status;
      const result: ActionResult = { key, kind, label, status, code: err.code, detail: err.message };
      if (err.expected !== undefined) result.expected = err.expected;
      if (err.actual !== undefined) result.actual = err.actual;
      return result;
    }
  }

  // ---- fixtures and variables ----

  async #loadFixtures(): Promise<void> {
    for (const f of this.#script.fixture ?? []) {
      if (!f.id) continue;
      const ref = f.resource?.reference;
      try {
        if (!ref) throw new Error('no resource.reference');
        this.#fixtures.set(f.id, await this.#fixture(ref));
      } catch (err) {
        this.#fixtureErrors.set(f.id, `${ref}: ${(err as Error).message}`);
      }
    }
  }

  /** A fixture by reference: `#contained`, an absolute URL, a file beside the script, or `Type/id` in `fixtureDirs`. */
  async #fixture(ref: string): Promise<unknown> {
    if (ref.startsWith('#')) {
      const found = this.#script.contained?.find((r) => r.id === ref.slice(1));
      if (!found) throw new Error('no such contained resource');
      return found;
    }
    if (/^https?:\/\//i.test(ref)) {
      const res = await this.#fetch(ref, { headers: { accept: FHIR_JSON, ...this.#options.headers }, signal: this.#options.signal });
      if (!res.ok) throw new Error(`GET answered ${res.status}`);
      return res.json();
    }
    const candidates: string[] = [];
    if (this.#options.scriptDir) candidates.push(path.resolve(this.#options.scriptDir, ref));
    const typed = /^([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})$/.exec(ref);
    if (typed) {
      const [, type, id] = typed;
      for (const dir of this.#options.fixtureDirs ?? []) {
        candidates.push(path.join(dir, type!, `${type}-${id}.json`), path.join(dir, type!, `${id}.json`), path.join(dir, `${type}-${id}.json`));
      }
    }
    const file = candidates.find((c) => existsSync(c) && !c.endsWith('.xml'));
    if (!file) {
      throw new Error(candidates.some((c) => c.endsWith('.xml')) ? 'XML fixtures are not supported' : `not found (looked in ${candidates.join(', ') || 'nowhere'})`);
    }
    return JSON.parse(readFileSync(file, 'utf8'));
  }

  /** The fixture or stored response body `id` names. */
  #resource(id: string): any {
    if (this.#responses.has(id)) return this.#responses.get(id)!.response.json;
    if (this.#fixtures.has(id)) return this.#fixtures.get(id);
    if (this.#fixtureErrors.has(id)) return fail('fixture-not-found', `fixture ${id}: ${this.#fixtureErrors.get(id)}`);
    return fail('no-source', `no fixture or response named ${id}`);
  }

  /** A variable's value, evaluated now (http://hl7.org/fhir/R4/testscript-definitions.html#TestScript.variable). */
  #variable(name: string): string | undefined {
    const supplied = this.#options.variables?.[name];
    if (supplied !== undefined) return supplied;
    const v = this.#script.variable?.find((x) => x.name === name);
    if (!v) return undefined;
    let value: unknown;
    const source = (): any => {
      if (v.sourceId === undefined) return this.#last?.response.json;
      if (this.#responses.has(v.sourceId)) return this.#responses.get(v.sourceId)!.response.json;
      return this.#fixtures.get(v.sourceId);
    };
    if (v.headerField) {
      const exchange = v.sourceId === undefined ? this.#last : this.#responses.get(v.sourceId);
      value = exchange?.response.headers.get(v.headerField) ?? undefined;
    } else if (v.expression) {
      const data = source();
      value = data === undefined ? undefined : evaluate(data, v.expression)[0];
    } else if (v.path) {
      const data = source();
      value = data === undefined ? undefined : evaluate(data, xpathToFhirPath(v.path))[0];
    }
    if (value === undefined || value === null || value === '') return v.defaultValue;
    return String(value);
  }

  #substitute(text: string): string {
    return text.replace(/\$\{([^}]+)\}/g, (_, name: string) => {
      const value = this.#variable(name);
      return value ?? fail('unresolved-variable', `\${${name}} has no value`);
    });
  }

  // ---- operations (http://hl7.org/fhir/R4/testscript-definitions.html#TestScript.setup.action.operation) ----

  async #operation(op: TestScriptOperation): Promise<Omit<ActionResult, 'key' | 'kind' | 'label'>> {
    const code = op.type?.code;
    const method = op.method?.toUpperCase() ?? (code ? METHODS[code] : undefined);
    if (!method) return fail('unsupported', `operation type ${code ?? '(none)'} without a method`);
    const base = (op.destination !== undefined ? this.#options.destinations?.[op.destination] : undefined) ?? this.#options.baseUrl;
    const body = ['POST', 'PUT', 'PATCH'].includes(method) && op.sourceId !== undefined ? this.#resource(op.sourceId) : undefined;
    let target = this.#path(op, code, body);
    if (op.encodeRequestUrl !== false) target = encodeURI(decodeUriSafe(target));
    const url = /^https?:\/\//i.test(target) ? target : `${base.replace(/\/+$/, '')}/${target.replace(/^\/+/, '')}`.replace(/\/(\?|$)/, '$1');

    const xmlAsJson = XML.test(op.accept ?? '') || XML.test(op.contentType ?? '');
    const headers: Record<string, string> = { ...this.#options.headers, accept: FHIR_JSON };
    if (body !== undefined) headers['content-type'] = code === 'patch' ? 'application/json-patch+json' : FHIR_JSON;
    for (const h of op.requestHeader ?? []) {
      const value = this.#substitute(h.value);
      // The runner speaks JSON: an XML format header is replaced, not sent.
      if (/^(accept|content-type)$/i.test(h.field) && XML.test(value)) continue;
      headers[h.field.toLowerCase()] = value;
    }
    const request = { method, url, headers, body };
    let res: Response;
    try {
      res = await this.#fetch(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        redirect: 'manual',
        signal: this.#options.signal,
      });
    } catch (err) {
      return fail('request-failed', `${method} ${url}: ${(err as Error).message}`);
    }
    const text = await res.text();
    let json: any;
    try {
      json = text.trim() === '' ? undefined : JSON.parse(text);
    } catch {
      json = undefined;
    }
    const exchange: Exchange = { request, response: { status: res.status, headers: res.headers, text, json }, xmlAsJson };
    this.#last = exchange;
    if (op.responseId) this.#responses.set(op.responseId, exchange);
    if (op.requestId) this.#requests.set(op.requestId, exchange);
    this.#remember(op, exchange);
    const result: Omit<ActionResult, 'key' | 'kind' | 'label'> = { status: 'pass', request: `${method} ${url}`, httpStatus: res.status };
    if (json?.resourceType === 'OperationOutcome') result.issues = (json.issue ?? []).map((i: { code?: string }) => i.code ?? '');
    if (xmlAsJson) result.code = 'xml-sent-as-json';
    return result;
  }

  /** The request path relative to the base (or absolute), per the operation's url / params / targetId / sourceId. */
  #path(op: TestScriptOperation, code: string | undefined, body: any): string {
    if (op.url) return this.#substitute(op.url);
    if (code === 'capabilities') return 'metadata';
    const type = op.resource ?? body?.resourceType;
    if (op.params) return `${type ?? ''}${this.#substitute(op.params)}`;
    if (op.targetId) {
      const target = this.#target(op.targetId);
      const instance = `${target.type}/${target.id}`;
      if (code === 'vread') {
        if (!target.versionId) return fail('no-source', `${op.targetId} has no version id`);
        return `${instance}/_history/${target.versionId}`;
      }
      if (code === 'history' || code === 'history-instance') return `${instance}/_history`;
      return instance;
    }
    if (code === 'transaction' || code === 'batch') return '';
    if (code === 'history-system' || (code === 'history' && !type)) return '_history';
    if (code === 'history' || code === 'history-type') return `${type}/_history`;
    if (code === 'update' || code === 'updateCreate') {
      if (!body?.id) return fail('no-source', 'an update without params, url or targetId needs a fixture with an id');
      return `${type}/${body.id}`;
    }
    if (!type) return fail('unsupported', 'the operation names no resource, url, params, targetId or sourceId');
    return type;
  }

  /** The server-side identity of what `targetId` names: what a create/update of that fixture returned, else its own id. */
  #target(targetId: string): ServerId {
    const known = this.#ids.get(targetId);
    if (known) return known;
    const resource = this.#resource(targetId);
    if (!resource?.resourceType || !resource?.id) return fail('no-source', `${targetId} has no resource type and id`);
    return { type: resource.resourceType, id: resource.id, versionId: resource.meta?.versionId };
  }

  /** After a successful write, remember which server resource the fixture / response now stands for. */
  #remember(op: TestScriptOperation, exchange: Exchange): void {
    const { status, headers, json } = exchange.response;
    if (status < 200 || status >= 300 || exchange.request.method === 'DELETE') return;
    const location = headers.get('location') ?? headers.get('content-location');
    let id = location ? idFromUrl(location) : undefined;
    if (!id && json?.resourceType && json?.id && json.resourceType !== 'Bundle' && json.resourceType !== 'OperationOutcome') {
      id = { type: json.resourceType, id: json.id, versionId: json.meta?.versionId };
    }
    if (!id) return;
    if (op.sourceId && (exchange.request.method === 'POST' || exchange.request.method === 'PUT')) this.#ids.set(op.sourceId, id);
    if (op.responseId) this.#ids.set(op.responseId, id);
  }

  // ---- asserts (http://hl7.org/fhir/R4/testscript-definitions.html#TestScript.setup.action.assert) ----

  #exchange(a: TestScriptAssert): Exchange {
    if (a.sourceId === undefined) return this.#last ?? fail('no-source', 'no response to read: no operation ran, or the last one was not sent');
    const found = a.direction === 'request' ? this.#requests.get(a.sourceId) ?? this.#responses.get(a.sourceId) : this.#responses.get(a.sourceId);
    return found ?? fail('no-source', `no exchange named ${a.sourceId}`);
  }

  /** What an assert reads: the request or response body (sourceId or the last exchange), or a fixture. */
  #subject(a: TestScriptAssert): any {
    if (a.direction === 'request') return this.#exchange(a).request.body ?? fail('no-source', 'the request had no body');
    if (a.sourceId !== undefined) return this.#resource(a.sourceId) ?? fail('no-source', `${a.sourceId} has no body`);
    return this.#exchange(a).response.json ?? fail('no-source', 'the last response had no JSON body');
  }

  async #assert(a: TestScriptAssert): Promise<string> {
    if (a.contentType !== undefined) return this.#assertContentType(a);
    if (a.expression !== undefined || a.path !== undefined || a.compareToSourceExpression !== undefined || a.compareToSourcePath !== undefined) {
      return this.#assertValue(a);
    }
    if (a.headerField !== undefined) return this.#assertHeader(a);
    if (a.minimumId !== undefined) return this.#assertMinimum(a);
    if (a.navigationLinks !== undefined) return this.#assertLinks(a);
    if (a.requestMethod !== undefined) {
      return compare(a.operator, this.#exchange(a).request.method.toLowerCase(), a.requestMethod.toLowerCase());
    }
    if (a.requestURL !== undefined) return compare(a.operator ?? 'equals', this.#exchange(a).request.url, this.#substitute(a.requestURL));
    if (a.resource !== undefined) return compare(a.operator, this.#subject(a)?.resourceType, a.resource);
    if (a.responseCode !== undefined) return compare(a.operator, String(this.#exchange(a).response.status), a.responseCode);
    if (a.response !== undefined) {
      const expected = RESPONSE_CODES[a.response];
      if (expected === undefined) return fail('unsupported', `response code ${a.response}`);
      const status = this.#exchange(a).response.status;
      const actual = Object.entries(RESPONSE_CODES).find(([, n]) => n === status)?.[0] ?? String(status);
      return compare(a.operator, actual, a.response);
    }
    if (a.validateProfileId !== undefined) return this.#assertProfile(a);
    return fail('unsupported', 'an assert of no kind this runner knows');
  }

  #assertContentType(a: TestScriptAssert): string {
    const expected = mediaType(a.contentType!);
    const exchange = this.#exchange(a);
    if (XML.test(expected)) skip('xml-not-supported', `the assert expects ${expected}; the runner speaks JSON only`);
    const header = a.direction === 'request' ? exchange.request.headers['content-type'] : exchange.response.headers.get('content-type');
    const actual = header?.split(';')[0]?.trim();
    return compare(a.operator, actual, expected);
  }

  #assertHeader(a: TestScriptAssert): string {
    const exchange = this.#exchange(a);
    const name = a.headerField!;
    const actual = a.direction === 'request' ? exchange.request.headers[name.toLowerCase()] : (exchange.response.headers.get(name) ?? undefined);
    const expected = this.#expected(a);
    if (a.direction === 'request' && exchange.xmlAsJson && /^(accept|content-type)$/i.test(name) && XML.test(expected ?? '')) {
      skip('xml-not-supported', `the assert expects the request's ${name} to be XML; the runner sent JSON`);
    }
    return compare(a.operator, actual, expected);
  }

  /** value (with variables) or the compareToSource side. */
  #expected(a: TestScriptAssert): string | undefined {
    if (a.value !== undefined) return this.#substitute(a.value);
    if (a.compareToSourceId === undefined) return undefined;
    const other = this.#resource(a.compareToSourceId);
    if (a.compareToSourceExpression !== undefined) return single(evaluate(other, a.compareToSourceExpression), 'compareToSourceExpression');
    if (a.compareToSourcePath !== undefined) return first(evaluate(other, xpathToFhirPath(a.compareToSourcePath)));
    return undefined;
  }

  #assertValue(a: TestScriptAssert): string {
    const subject = this.#subject(a);
    const operator = a.operator ?? 'equals';
    // The R4 example `testscript-example` gives only the compareTo side; the one reading that can be
    // evaluated is "the same expression on the response as on the compared fixture".
    const expression = a.expression ?? (a.path === undefined ? a.compareToSourceExpression : undefined);
    const xpath = a.path ?? (a.expression === undefined && a.compareToSourceExpression === undefined ? a.compareToSourcePath : undefined);
    const items = expression !== undefined ? evaluate(subject, expression) : evaluate(subject, xpathToFhirPath(xpath!)).slice(0, 1);
    const expected = this.#expected(a);
    if (operator === 'empty' || operator === 'notEmpty') {
      const empty = items.length === 0;
      if (empty !== (operator === 'empty')) fail('assert-failed', `${operator}`, { expected: operator, actual: show(items) });
      return `${operator}`;
    }
    if (operator === 'eval' || expected === undefined) {
      // No expected value: the expression is a test of its own (http://hl7.org/fhir/R4/valueset-assert-operator-codes.html `eval`).
      if (!(items.length === 1 && items[0] === true)) fail('assert-failed', `${expression ?? xpath} is not true`, { expected: 'true', actual: show(items) });
      return 'true';
    }
    const actual = expression !== undefined ? single(items, 'expression') : first(items);
    return compare(operator, actual, expected);
  }

  #assertMinimum(a: TestScriptAssert): string {
    const minimum = this.#resource(a.minimumId!);
    const subject = this.#subject(a);
    const missing: string[] = [];
    if (!containsMinimum(minimum, subject, '', missing)) {
      fail('assert-failed', `minimumId ${a.minimumId}: missing or different at ${missing.join(', ')}`, { expected: a.minimumId, actual: missing.join(',') });
    }
    return `contains ${a.minimumId}`;
  }

  /**
   * navigationLinks: the Bundle carries the paging links its results call for
   * (http://hl7.org/fhir/R4/http.html#paging): `self` and `first`, and `next` when the total says
   * more matches follow this page. (The crucible engine demands `first`, `last` and `next` always,
   * which no server can satisfy on a single-page result; `last` is optional in R4.)
   */
  #assertLinks(a: TestScriptAssert): string {
    const bundle = this.#subject(a);
    if (bundle?.resourceType !== 'Bundle') fail('assert-failed', 'not a Bundle', { expected: 'Bundle', actual: show(bundle?.resourceType) });
    const links = new Map<string, string>((bundle.link ?? []).map((l: { relation: string; url: string }) => [l.relation, l.url]));
    const matches = (bundle.entry ?? []).filter((e: any) => (e.search?.mode ?? 'match') === 'match').length;
    const wanted = ['self', 'first'];
    if (typeof bundle.total === 'number' && bundle.total > matches) wanted.push('next');
    const absent = wanted.filter((r) => !links.has(r));
    const present = [...links.keys()].sort().join(',');
    if (a.navigationLinks === false) return 'not checked';
    if (absent.length) fail('assert-failed', `missing links ${absent.join(', ')}`, { expected: wanted.join(','), actual: present });
    return `links ${present}`;
  }

  /**
   * validateProfileId: only the base R4 profile of a resource type can be checked, with the
   * server's `$validate` (POST [base]/[type]/$validate); no issue of severity error or fatal passes.
   */
  async #assertProfile(a: TestScriptAssert): Promise<string> {
    const profile = this.#script.profile?.find((p) => p.id === a.validateProfileId);
    if (!profile?.reference) return fail('no-source', `no profile ${a.validateProfileId}`);
    const m = /^http:\/\/hl7\.org\/fhir\/StructureDefinition\/([A-Z][A-Za-z]+)$/.exec(profile.reference);
    if (!m) return skip('profile-not-applicable', `${profile.reference} is not a base R4 resource profile`);
    const resource = this.#subject(a);
    const type = m[1]!;
    if (resource?.resourceType !== type) {
      return fail('profile-type-mismatch', `${profile.reference} is for ${type}`, { expected: type, actual: show(resource?.resourceType) });
    }
    const url = `${this.#options.baseUrl.replace(/\/+$/, '')}/${type}/$validate`;
    const res = await this.#fetch(url, {
      method: 'POST',
      headers: { ...this.#options.headers, accept: FHIR_JSON, 'content-type': FHIR_JSON },
      body: JSON.stringify(resource),
      signal: this.#options.signal,
    });
    const outcome = (await res.json().catch(() => undefined)) as { issue?: { severity?: string; code?: string }[] } | undefined;
    if ([404, 405, 501].includes(res.status)) return skip('no-validate', `POST ${type}/$validate answered ${res.status}`);
    const errors = (outcome?.issue ?? []).filter((i) => i.severity === 'error' || i.severity === 'fatal');
    if (!res.ok || errors.length) {
      return fail('validation-errors', `POST ${type}/$validate answered ${res.status}`, {
        expected: 'no error issues',
        actual: errors.map((i) => i.code).join(',') || String(res.status),
      });
    }
    return `conforms to ${profile.reference}`;
  }
}

function decodeUriSafe(text: string): string {
  try {
    return decodeURI(text);
  } catch {
    return text;
  }
}

function single(items: unknown[], what: string): string {
  if (items.length !== 1) fail('assert-failed', `${what} gave ${items.length} values`, { expected: '1 value', actual: show(items) });
  return String(items[0]);
}

function first(items: unknown[]): string | undefined {
  return items.length ? String(items[0]) : undefined;
}

/** http://hl7.org/fhir/R4/valueset-assert-operator-codes.html; `equals` when none is given. */
function compare(operator: string | undefined, actual: string | undefined, expected: string | undefined): string {
  const op = operator ?? 'equals';
  const list = () => (expected ?? '').split(',').map((s) => s.trim());
  let ok: boolean;
  switch (op) {
    case 'equals':
      ok = actual === expected;
      break;
    case 'notEquals':
      ok = actual !== expected;
      break;
    case 'in':
      ok = actual !== undefined && list().includes(actual);
      break;
    case 'notIn':
      ok = actual === undefined || !list().includes(actual);
      break;
    case 'greaterThan':
      ok = Number(actual) > Number(expected);
      break;
    case 'lessThan':
      ok = Number(actual) < Number(expected);
      break;
    case 'empty':
      ok = actual === undefined || actual === '';
      break;
    case 'notEmpty':
      ok = actual !== undefined && actual !== '';
      break;
    case 'contains':
      ok = actual !== undefined && expected !== undefined && actual.includes(expected);
      break;
    case 'notContains':
      ok = actual === undefined || expected === undefined || !actual.includes(expected);
      break;
    default:
      return fail('unsupported', `operator ${op}`);
  }
  const expectation = op === 'empty' || op === 'notEmpty' ? op : `${op} ${show(expected)}`;
  if (!ok) fail('assert-failed', `expected ${expectation}, found ${show(actual)}`, { expected: expectation, actual: show(actual) });
  return `${expectation}: ${show(actual)}`;
}

/** Reads a TestScript file (JSON). */
export function loadTestScript(file: string): TestScript {
  const script = JSON.parse(readFileSync(file, 'utf8')) as TestScript;
  if (script?.resourceType !== 'TestScript') throw new Error(`${file} is not a TestScript`);
  return script;
}

/** Runs one TestScript file against `options.baseUrl`; relative fixture references resolve beside the file. */
export function runTestScriptFile(file: string, options: Omit<RunOptions, 'scriptDir'>): Promise<ScriptReport> {
  return new TestScriptRun(loadTestScript(file), { ...options, scriptDir: path.dirname(file) }).run();
}

// ---- command line ----

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      'base-url': { type: 'string' },
      fixtures: { type: 'string', multiple: true },
      var: { type: 'string', multiple: true },
      continue: { type: 'boolean' },
      token: { type: 'string' },
    },
  });
  const baseUrl = values['base-url'];
  if (!baseUrl || positionals.length === 0) {
    console.error('usage: node --import tsx conformance/testscript.ts --base-url URL [--fixtures DIR]… [--var name=value]… [--continue] [--token T] script.json…');
    return 255;
  }
  const variables = Object.fromEntries((values.var ?? []).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
  let failed = 0;
  for (const file of positionals) {
    const report = await runTestScriptFile(path.resolve(file), {
      baseUrl,
      fixtureDirs: values.fixtures,
      variables,
      continueOnFailure: values.continue,
      headers: values.token ? { authorization: `Bearer ${values.token}` } : undefined,
    });
    console.log(`# ${file} (${report.name ?? report.id})`);
    for (const r of report.results) {
      console.log([r.status.toUpperCase().padEnd(7), r.key.padEnd(28), r.code ?? '', r.request ?? '', r.httpStatus ?? '', r.detail ?? ''].join(' ').trimEnd());
    }
    console.log(Object.entries(report.counts).map(([k, n]) => `${n} ${k}`).join(', '));
    failed += report.counts.fail + report.counts.error;
  }
  return Math.min(failed, 254);
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  process.exitCode = await main();
}
