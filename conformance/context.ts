/**
 * What a check gets to work with: the server (through a fetch wrapper), its CapabilityStatement,
 * assertions, and a tag unique to this check in this run so the check can create its own data
 * and find exactly that data again — every resource a check creates carries the identifier
 * `ctx.system|ctx.tag`, and `ctx.scope()` is the search parameter that selects them. Checks never
 * see each other's data, so they run in any order and against a server already full of data.
 */
import { randomBytes } from 'node:crypto';
import { Expect } from './assert.ts';
import { fail, skip } from './check.ts';
import type { FhirClient, FhirResponse, Params, RequestOptions } from './client.ts';
import { queryString } from './client.ts';
import { link, matches, entryId, type Bundle, type Identifier, type Resource } from './fhir.ts';

export interface ResourceCapability {
  type: string;
  interaction?: { code: string }[];
  versioning?: string;
  readHistory?: boolean;
  updateCreate?: boolean;
  conditionalCreate?: boolean;
  conditionalRead?: string;
  conditionalUpdate?: boolean;
  conditionalDelete?: string;
  searchParam?: { name: string; type?: string }[];
  searchInclude?: string[];
  searchRevInclude?: string[];
  operation?: { name: string; definition?: string }[];
}

export interface CapabilityStatement extends Resource {
  fhirVersion?: string;
  format?: string[];
  patchFormat?: string[];
  rest?: {
    mode?: string;
    resource?: ResourceCapability[];
    interaction?: { code: string }[];
    operation?: { name: string; definition?: string }[];
  }[];
}

/** State shared by all checks of one run: the client and the CapabilityStatement, read once. */
export class Suite {
  readonly client: FhirClient;
  /** Unique to this run; part of every check's identifier system. */
  readonly runTag: string;
  #capabilities: Promise<FhirResponse> | undefined;

  constructor(client: FhirClient) {
    this.client = client;
    this.runTag = `${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;
  }

  /** GET [base]/metadata, once per run (the response is shared, the checks' data is not). */
  metadata(): Promise<FhirResponse> {
    this.#capabilities ??= this.client.request('metadata', {}, AbortSignal.timeout(30_000));
    return this.#capabilities;
  }
}

export class CheckContext {
  readonly baseUrl: string;
  /** Lowercase letters and digits, unique to this check in this run. */
  readonly tag: string;
  /** An identifier system unique to this check in this run. */
  readonly system: string;
  readonly signal: AbortSignal;
  readonly expect: Expect;
  readonly #suite: Suite;

  constructor(suite: Suite, checkId: string, signal: AbortSignal) {
    this.#suite = suite;
    this.baseUrl = suite.client.baseUrl;
    this.tag = `t${randomBytes(6).toString('hex')}`;
    this.system = `http://example.org/fhir-conformance/${suite.runTag}/${checkId}`;
    this.signal = signal;
    this.expect = new Expect((url) => suite.client.shortUrl(url));
  }

  /** A request to the server; `path` is relative to the base URL (or absolute). */
  fetch(path: string, options: RequestOptions = {}): Promise<FhirResponse> {
    return this.#suite.client.request(path, options, this.signal);
  }

  /** `path?params`. */
  path(path: string, params: Params | [string, string][]): string {
    const q = queryString(params);
    return q ? `${path}?${q}` : path;
  }

  fail(reason: string): never {
    return fail(reason);
  }

  skip(reason: string): never {
    return skip(reason);
  }

  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  // ---- the CapabilityStatement ----

  /** The server's CapabilityStatement (fails the check when it cannot be read). */
  async capabilities(): Promise<CapabilityStatement> {
    const res = await this.#suite.metadata();
    this.expect.status(res, 200, 'for the CapabilityStatement');
    return this.expect.resource(res, 'CapabilityStatement') as CapabilityStatement;
  }

  /** The statement's entry for `type`; skips the check when the server does not list the type. */
  async resourceCapability(type: string): Promise<ResourceCapability> {
    const statement = await this.capabilities();
    const rest = statement.rest?.find((r) => r.mode === 'server') ?? statement.rest?.[0];
    const entry = rest?.resource?.find((r) => r.type === type);
    if (!entry) skip(`the CapabilityStatement does not list ${type}`);
    return entry;
  }

  /** Skips unless the CapabilityStatement lists `interaction` for `type`. */
  async requireInteraction(type: string, ...interactions: string[]): Promise<ResourceCapability> {
    const entry = await this.resourceCapability(type);
    for (const code of interactions) {
      if (!entry.interaction?.some((i) => i.code === code)) skip(`the CapabilityStatement lists no ${code} interaction for ${type}`);
    }
    return entry;
  }

  /** Skips when the CapabilityStatement lists search parameters for `type` but not these. */
  async requireSearchParam(type: string, ...names: string[]): Promise<void> {
    const entry = await this.requireInteraction(type, 'search-type');
    if (!entry.searchParam?.length) return;
    for (const name of names) {
      if (!entry.searchParam.some((p) => p.name === name)) skip(`the CapabilityStatement lists no ${name} search parameter for ${type}`);
    }
  }

  /** Skips unless the CapabilityStatement lists the operation `$name`, system-wide or on `type`. */
  async requireOperation(type: string, name: string): Promise<void> {
    const statement = await this.capabilities();
    const rest = statement.rest?.find((r) => r.mode === 'server') ?? statement.rest?.[0];
    const named = (o: { name: string; definition?: string }) =>
      o.name === name || (o.definition ?? '').endsWith(`/Resource-${name}`) || (o.definition ?? '').endsWith(`/${type}-${name}`);
    const listed = rest?.operation?.some(named) || rest?.resource?.find((r) => r.type === type)?.operation?.some(named);
    if (!listed) skip(`the CapabilityStatement does not list $${name} for ${type}`);
  }

  // ---- the check's own data ----

  /** An identifier in this check's system (value defaults to the check's tag). */
  identifier(value: string = this.tag): Identifier {
    return { system: this.system, value };
  }

  /** The search parameters that select exactly the resources this check tagged with `value`. */
  scope(value: string = this.tag): Params {
    return { identifier: `${this.system}|${value}` };
  }

  /** `resource` with this check's identifier added (value defaults to the tag). */
  tagged<T extends Resource>(resource: T, value: string = this.tag): T {
    return { ...resource, identifier: [...((resource.identifier as Identifier[] | undefined) ?? []), this.identifier(value)] };
  }

  /** POST [base]/[type]: expects 201 and returns the created resource (read back if the body is empty). */
  async create<T extends Resource>(resource: T): Promise<Resource> {
    const res = await this.fetch(resource.resourceType, {
      method: 'POST',
      body: resource,
      headers: { prefer: 'return=representation' },
    });
    this.expect.status(res, 201, `creating a ${resource.resourceType}`);
    if (res.json?.resourceType === resource.resourceType && typeof res.json.id === 'string') return res.json as Resource;
    const location = this.expect.header(res, 'location');
    const read = await this.fetch(location.replace(/\/_history\/[^/]+$/, ''));
    this.expect.status(read, 200, 'reading back a created resource');
    return this.expect.resource(read, resource.resourceType);
  }

  /** PUT [base]/[type]/[id]: expects 200 and returns the new version (read back if the body is empty). */
  async update<T extends Resource>(resource: T): Promise<Resource> {
    const path = `${resource.resourceType}/${resource.id}`;
    const res = await this.fetch(path, { method: 'PUT', body: resource, headers: { prefer: 'return=representation' } });
    this.expect.status(res, 200, `updating ${path}`);
    if (res.json?.resourceType === resource.resourceType && typeof res.json.id === 'string') return res.json as Resource;
    const read = await this.fetch(path);
    this.expect.status(read, 200, 'reading back an updated resource');
    return this.expect.resource(read, resource.resourceType);
  }

  /** GET [base]/[type]?params: expects 200 and a searchset Bundle. */
  async search(type: string, params: Params | [string, string][], options: RequestOptions = {}): Promise<Bundle> {
    const res = await this.fetch(this.path(type, params), options);
    this.expect.status(res, 200);
    return this.expect.bundle(res, 'searchset');
  }

  /**
   * Every page of a Bundle, following `next` links; fails on a page that is not 200 with a Bundle
   * of the same type. Past `maxPages` pages it fails, or with `stop`, returns what it has (for
   * history on a busy server, where only the newest pages matter).
   */
  async pages(first: Bundle, maxPages = 20, overflow: 'fail' | 'stop' = 'fail'): Promise<Bundle[]> {
    const pages = [first];
    let next = link(first, 'next');
    while (next !== undefined) {
      if (pages.length >= maxPages) {
        if (overflow === 'stop') break;
        fail(`more than ${maxPages} pages of results; expected far fewer`);
      }
      const res = await this.fetch(next);
      this.expect.status(res, 200, 'following a next link');
      const page = this.expect.bundle(res, first.type ?? 'searchset');
      pages.push(page);
      next = link(page, 'next');
    }
    return pages;
  }

  /** The ids of every match of a search, across all its pages. */
  async searchIds(type: string, params: Params | [string, string][], options: RequestOptions = {}): Promise<string[]> {
    const pages = await this.pages(await this.search(type, params, options));
    return pages.flatMap((p) => matches(p).map((e) => entryId(e) ?? '(entry without id)'));
  }
}
