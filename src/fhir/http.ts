/**
 * The one Fastify plugin that adapts FHIR interactions to HTTP: content-type parsers, content
 * negotiation, the FHIR route table, OperationOutcome for every error (including Fastify's own:
 * body too large → 413, bad media type → 415, unparseable JSON → 400), and JSON responses with
 * `_summary` / `_elements` / `_pretty` applied.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { VersionRecord } from '../storage/index-store.ts';
import { isStorageError } from '../storage/errors.ts';
import { FhirError, fhirError, operationOutcome, toFhirError } from './errors.ts';
import { elementsList, isXml, negotiate, subset, summaryMode, type Summary } from './format.ts';
import { hasInexactNumbers, mayNeedExactNumbers, parseExact } from './json.ts';
import { queryValue, type FhirRequest, type FhirResponse } from './request.ts';
import type { Route } from './routes.ts';
import type { FhirServices } from './services.ts';
import type { WriteContext } from './writer.ts';
import type { AuditInput, AuditTrail } from './audit.ts';
import type { Principal } from './auth/verify.ts';

const WRITES = new Set(['create', 'update', 'patch', 'delete', 'conditional-update', 'conditional-patch', 'conditional-delete']);

const JSON_BODY_TYPES = ['application/fhir+json', 'application/json', 'application/json+fhir', 'application/json-patch+json'];

/** Split a raw query string into ordered name/value pairs (names repeat for AND). */
export function parseQuery(url: string): [string, string][] {
  const index = url.indexOf('?');
  if (index < 0) return [];
  try {
    return [...new URLSearchParams(url.slice(index + 1))];
  } catch {
    throw fhirError(400, 'invalid', 'VLM_FHIR_BAD_QUERY', 'The query string cannot be decoded');
  }
}

function mediaType(header: string | undefined): string | undefined {
  return header?.split(';')[0]?.trim().toLowerCase() || undefined;
}

function lowerHeaders(request: FastifyRequest): Record<string, string | undefined> {
  const out: Record<string, string | undefined> = {};
  for (const [name, value] of Object.entries(request.headers)) out[name] = Array.isArray(value) ? value.join(', ') : value;
  return out;
}

/** The exact form of a JSON body (json.ts), or undefined when it is the same as the plain parse. */
function exact(text: string): unknown {
  try {
    const value = parseExact(text);
    return hasInexactNumbers(value) ? value : undefined;
  } catch {
    // Too deep for the reviver: the plain body is refused by validation anyway.
    return undefined;
  }
}

/** Serialize a body, honouring `_pretty`. */
function serialize(body: unknown, request: { query: [string, string][] }): string {
  return queryValue(request as FhirRequest, '_pretty') === 'true' ? JSON.stringify(body, null, 2) : JSON.stringify(body);
}

export interface FhirPluginOptions {
  services: FhirServices;
  routes: Route[];
  /** The write context (agent) of a request without a principal (authorization off). */
  context?: (request: FastifyRequest) => WriteContext;
  /** Where every interaction's AuditEvent goes (absent: no audit trail). */
  audit?: AuditTrail;
}

/** Servers whose disk was found full, until a write succeeds again: the cause is logged once per episode. */
const storageFull = new WeakSet<object>();

/** Send an error as an OperationOutcome (faults are logged with details, answered generically). */
export function sendError(reply: FastifyReply, request: FastifyRequest, err: unknown): FastifyReply {
  const { error, fault, full } = toFhirError(lostRace(request, err));
  if (fault) request.log.error({ err }, 'request failed');
  if (full && !storageFull.has(request.server)) {
    storageFull.add(request.server);
    request.log.error({ err }, 'storage is full: requests that write are answered 507 VLM_STORAGE_FULL until space is freed');
  }
  reply.code(error.status);
  for (const [name, value] of Object.entries(error.headers)) reply.header(name, value);
  return reply.type('application/fhir+json; charset=utf-8').send(JSON.stringify(operationOutcome(error.issues)));
}

/**
 * A write that lost a race with another node's write of the same resource (both read version n;
 * the other committed n + 1 first): with If-Match, the precondition no longer holds — 412, as if it
 * had been checked after the other write; without, 409 (the index's VLM_INDEX_VERSION_CONFLICT).
 */
function lostRace(request: FastifyRequest, err: unknown): unknown {
  if (!isStorageError(err, 'VLM_INDEX_VERSION_CONFLICT') || request.headers['if-match'] === undefined) return err;
  return fhirError(412, 'conflict', 'VLM_FHIR_VERSION_MISMATCH', 'If-Match no longer names the current version: another writer changed it');
}

function fastifyErrorToFhir(err: { code?: string; statusCode?: number; message?: string }): FhirError | undefined {
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return fhirError(413, 'too-long', 'VLM_FHIR_BODY_TOO_LARGE', 'The request body is larger than the server accepts');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return fhirError(415, 'not-supported', 'VLM_FHIR_UNSUPPORTED_MEDIA_TYPE', 'Send application/fhir+json (or application/json)');
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return fhirError(400, 'required', 'VLM_FHIR_BODY_MISSING', 'The JSON body is empty');
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return fhirError(400, 'structure', 'VLM_FHIR_BAD_CONTENT_LENGTH', 'Content-Length does not match the body');
  }
  if (err instanceof SyntaxError || err.code === 'FST_ERR_CTP_INVALID_JSON_BODY') {
    return fhirError(400, 'structure', 'VLM_FHIR_JSON_SYNTAX', 'The body is not valid JSON');
  }
  if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) {
    return fhirError(err.statusCode, 'invalid', 'VLM_FHIR_BAD_REQUEST', 'The request is malformed');
  }
  return undefined;
}

/** Register the FHIR routes under the current prefix. */
export async function fhirPlugin(app: FastifyInstance, options: FhirPluginOptions): Promise<void> {
  const { services } = options;
  const context = options.context ?? (() => ({ agent: { display: 'anonymous client' } }));

  app.removeAllContentTypeParsers();
  const jsonParser = app.getDefaultJsonParser('error', 'error');
  // JSON bodies whose decimals a double cannot hold (`5.40`) are also parsed exactly, in the
  // handler, from the text kept here.
  const exactText = new WeakMap<FastifyRequest, string>();
  app.addContentTypeParser(JSON_BODY_TYPES, { parseAs: 'string' }, (req, body, done) => {
    if (typeof body === 'string' && mayNeedExactNumbers(body)) exactText.set(req, body);
    jsonParser(req, body as string, done);
  });
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (_req, body, done) => {
    try {
      done(null, [...new URLSearchParams(body as string)]);
    } catch (err) {
      done(err as Error, undefined);
    }
  });
  // Anything else (XML included) is answered 415 by the route, with an OperationOutcome.
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, { unsupported: true, length: (body as Buffer).length }));

  app.setErrorHandler(async (err, request, reply) => {
    const mapped = fastifyErrorToFhir(err as { code?: string; statusCode?: number });
    const failure = mapped ?? err;
    await auditFailure(request, 'unrouted', failure);
    return sendError(reply, request, failure);
  });
  app.setNotFoundHandler(async (request, reply) => {
    const failure = fhirError(404, 'not-found', 'VLM_FHIR_NO_ROUTE', 'No FHIR interaction at this path');
    await auditFailure(request, 'unrouted', failure);
    return sendError(reply, request, failure);
  });

  /** Record AuditEvents; if they cannot be stored, the request fails (503) rather than go unaudited. */
  async function audited(inputs: AuditInput[]): Promise<void> {
    if (!options.audit || inputs.length === 0) return;
    try {
      await Promise.all(inputs.map((input) => options.audit!.record(input)));
    } catch (err) {
      app.log.error({ err: { code: (err as { code?: string }).code, name: (err as Error)?.name } }, 'audit trail write failed');
      throw fhirError(503, 'transient', 'VLM_AUDIT_UNAVAILABLE', 'The access could not be audited');
    }
  }

  async function auditFailure(req: FastifyRequest, interaction: string, err: unknown, request?: FhirRequest, principal?: Principal): Promise<void> {
    if (!options.audit) return;
    const { error } = toFhirError(err);
    const code = error.issues.map((i) => i.vellumCode).find(Boolean);
    await audited(
      auditInputs(interaction, req, request, principal, { status: error.status }, code),
    ).catch(() => undefined); // the failure is answered either way
  }

  const byPath = new Map<string, Route[]>();
  for (const route of options.routes) byPath.set(route.path, [...(byPath.get(route.path) ?? []), route]);

  for (const [path, routes] of byPath) {
    const methods = new Set<string>(routes.map((r) => r.method));
    // HEAD is answered wherever GET is (below), so it is allowed there too.
    if (methods.has('GET')) methods.add('HEAD');
    const allow = [...methods].join(', ');
    app.route({
      // Every method reaches the handler, so that one the path does not take is a 405 with Allow.
      method: ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'],
      url: path,
      exposeHeadRoute: false,
      handler: async (req, reply) => {
        let principal: Principal | undefined;
        let fhirRequest: FhirRequest | undefined;
        let interaction = 'unrouted';
        try {
          const query = parseQuery(req.url);
          const method = req.method === 'HEAD' ? 'GET' : req.method;
          const route = routes.find((r) => r.method === method);
          if (route) interaction = route.interaction;
          if (!route) {
            reply.header('Allow', allow);
            throw fhirError(405, 'not-supported', 'VLM_FHIR_METHOD_NOT_ALLOWED', `${req.method} is not allowed here`);
          }
          const params = req.params as { type?: string; id?: string; vid?: string; ctype?: string };
          for (const named of [params.type, params.ctype]) {
            if (named !== undefined && !services.resourceTypes.has(named)) {
              throw fhirError(404, 'not-supported', 'VLM_FHIR_UNKNOWN_TYPE', `${named} is not an R4 resource type`);
            }
          }
          const contentType = mediaType(req.headers['content-type']);
          let body: unknown = req.body;
          if (body && typeof body === 'object' && (body as { unsupported?: boolean }).unsupported) {
            if ((body as { length: number }).length > 0 || ['POST', 'PUT', 'PATCH'].includes(method)) {
              const why = contentType && isXml(contentType) ? 'XML is not supported; send JSON' : 'Send application/fhir+json';
              throw fhirError(415, 'not-supported', 'VLM_FHIR_UNSUPPORTED_MEDIA_TYPE', why);
            }
            body = undefined;
          }
          const headers = lowerHeaders(req);
          const text = exactText.get(req);
          const exactBody = text === undefined ? undefined : exact(text);
          const request: FhirRequest = {
            method,
            resourceType: params.type,
            id: params.id,
            versionId: params.vid,
            ...(params.ctype !== undefined ? { compartmentType: params.ctype } : {}),
            query,
            headers,
            body,
            ...(exactBody !== undefined ? { exactBody } : {}),
            contentType,
            baseUrl: services.baseUrl,
            consentLog: [],
          };
          // Everything that can reject the request is checked before the interaction runs: a write
          // must never be committed and then answered with an error (406, or 400 for a bad
          // `_summary` / `_elements`).
          fhirRequest = request;
          if (services.access && route.interaction !== 'capabilities') {
            principal = await services.access.authenticate(req.headers.authorization);
            request.principal = principal;
          }
          const responseType = route.anyAccept ? 'application/fhir+json' : negotiate(request);
          const shape = { summary: summaryMode(request), elements: elementsList(request) };
          const writeContext: WriteContext = principal
            ? {
                agent: { display: principal.clientId, ...(principal.fhirUser ? { reference: principal.fhirUser } : {}) },
                principal,
                committed: [],
                // Decisions on the versions it writes go to the request's AuditEvent too (access.ts).
                consentLog: request.consentLog,
              }
            : { ...context(req), committed: [] };
          // Reads of the audit trail see every access so far: convert what is still queued.
          if (options.audit && !WRITES.has(route.interaction) && (request.compartmentType ?? request.resourceType ?? 'AuditEvent') === 'AuditEvent') {
            await options.audit.settle();
          }
          const response = breakGlassLabel(request, await route.handler(services, request, writeContext));
          await waitForAnchors(request, writeContext.committed!);
          await audited(auditInputs(interaction, req, request, principal, response));
          if (WRITES.has(route.interaction) && storageFull.delete(app)) app.log.info('storage has space again: writes succeed');
          return send(reply, request, response, responseType, shape, req.method === 'HEAD');
        } catch (err) {
          await auditFailure(req, interaction, err, fhirRequest, principal);
          return sendError(reply, req, err);
        }
      },
    });
  }

  /**
   * `Prefer: anchor=wait` (a Vellum preference, like `respond-async`): answer a write only once
   * its versions are in a batch mined on chain. Writes are otherwise acknowledged before anchoring.
   */
  async function waitForAnchors(request: FhirRequest, committed: VersionRecord[]): Promise<void> {
    if (committed.length === 0 || !/(?:^|[;,\s])anchor\s*=\s*"?wait"?/.test(request.headers['prefer'] ?? '')) return;
    if (!services.anchoring) throw fhirError(501, 'not-supported', 'VLM_ANCHOR_DISABLED', 'Anchoring is not enabled on this server');
    for (const record of committed) await services.anchoring.waitFor(record.seq, request.signal);
  }

  function send(
    reply: FastifyReply,
    request: FhirRequest,
    response: FhirResponse,
    type: string,
    shape: { summary: Summary | undefined; elements: string[] | undefined },
    head: boolean,
  ): FastifyReply {
    reply.code(response.status);
    for (const [name, value] of Object.entries(response.headers ?? {})) reply.header(name, value);
    if (response.body) return head ? reply.type(response.body.type).send() : reply.type(response.body.type).send(response.body.data);
    if (!response.resource || response.status === 304 || response.status === 204) return reply.send();
    let body: Record<string, unknown> = response.resource;
    if (!response.raw && body.resourceType !== 'Bundle' && body.resourceType !== 'OperationOutcome') {
      const { summary, elements } = shape;
      if (summary || elements) body = subset(body as never, summary, elements, services.definitions);
    }
    reply.type(`${type}; charset=utf-8`);
    return head ? reply.send() : reply.send(serialize(body, request));
  }
}

/** Patient compartment references an audited resource may carry at its top level. */
const PATIENT_FIELDS = ['subject', 'patient', 'beneficiary', 'individual'];

function patientOf(request: FhirRequest | undefined, resource: Record<string, unknown> | undefined): string | undefined {
  if (request?.restriction) return `Patient/${request.restriction.patient}`;
  if (request?.resourceType === 'Patient' && request.id) return `Patient/${request.id}`;
  if (resource && resource.resourceType === 'Patient' && typeof resource.id === 'string') return `Patient/${resource.id}`;
  if (resource && resource.resourceType !== 'Bundle') {
    for (const field of PATIENT_FIELDS) {
      const ref = (resource[field] as { reference?: unknown } | undefined)?.reference;
      if (typeof ref === 'string' && /^Patient\/[A-Za-z0-9\-.]{1,64}$/.test(ref)) return ref;
    }
  }
  for (const [name, value] of request?.query ?? []) {
    if (name === 'patient' || name === 'subject' || name === 'patient:Patient' || name === 'subject:Patient') {
      const id = value.replace(/^.*Patient\//, '');
      if (/^[A-Za-z0-9\-.]{1,64}$/.test(id)) return `Patient/${id}`;
    }
  }
  return undefined;
}

const VERSION_LOCATION = /(?:^|\/)([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/([0-9]+))?$/;

/** v3 ActReason `BTG`: the security label of data released under break-glass. */
const BREAK_GLASS_LABEL = { system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code: 'BTG', display: 'break the glass' };

/**
 * A response that released data under break-glass (purpose ETREAT without consent) says so: the
 * `X-Vellum-Break-Glass` header and a BTG security label on the returned resource or bundle.
 */
function breakGlassLabel(request: FhirRequest, response: FhirResponse): FhirResponse {
  if (!request.consentLog?.some((entry) => entry.decision === 'break-glass')) return response;
  const resource = response.resource;
  const labelled = resource
    ? {
        ...resource,
        meta: {
          ...((resource.meta as Record<string, unknown> | undefined) ?? {}),
          security: [...(((resource.meta as { security?: unknown[] } | undefined)?.security) ?? []), BREAK_GLASS_LABEL],
        },
      }
    : undefined;
  return { ...response, ...(labelled ? { resource: labelled } : {}), headers: { ...(response.headers ?? {}), 'X-Vellum-Break-Glass': 'ETREAT' } };
}

/** The AuditEvents of one interaction: one, or one per entry of a batch or transaction. */
function auditInputs(
  interaction: string,
  req: FastifyRequest,
  request: FhirRequest | undefined,
  principal: Principal | undefined,
  response: { status: number; resource?: Record<string, unknown>; headers?: Record<string, string> },
  errorCode?: string,
): AuditInput[] {
  const consent = request?.consentLog?.length ? { consent: request.consentLog } : {};
  const base = { principal, address: req.ip, method: request?.method ?? req.method, ...consent };
  const requestEntries = (request?.body as { entry?: { request?: { method?: string; url?: string }; resource?: Record<string, unknown> }[] } | undefined)?.entry;
  if (interaction === 'transaction' && Array.isArray(requestEntries) && requestEntries.length > 0) {
    const answered = (response.resource?.resourceType === 'Bundle' ? (response.resource.entry as { response?: { status?: string; location?: string }; resource?: Record<string, unknown> }[]) : undefined) ?? [];
    return requestEntries.map((entry, i) => {
      const answer = answered[i];
      const status = answer?.response?.status ? Number.parseInt(answer.response.status, 10) || response.status : response.status;
      const method = typeof entry?.request?.method === 'string' ? entry.request.method : 'GET';
      const url = typeof entry?.request?.url === 'string' ? entry.request.url.split('?')[0]! : '';
      const at = VERSION_LOCATION.exec(answer?.response?.location ?? url);
      const type = at?.[1] ?? url.split('/')[0];
      return {
        ...base,
        principal,
        interaction: method === 'POST' ? 'create' : method === 'PUT' ? 'update' : method === 'PATCH' ? 'patch' : method === 'DELETE' ? 'delete' : 'read',
        method,
        status,
        ...(errorCode && status >= 400 ? { errorCode } : {}),
        ...(type ? { resourceType: type } : {}),
        ...(at?.[2] ? { id: at[2] } : {}),
        ...(at?.[3] ? { versionId: at[3] } : {}),
        ...(principal?.patient ? { patient: `Patient/${principal.patient}` } : {}),
        entry: i + 1,
      };
    });
  }
  const location = response.headers?.['Location'] ?? response.headers?.['Content-Location'];
  const at = location ? VERSION_LOCATION.exec(location) : undefined;
  const etag = /W\/"([0-9]+)"/.exec(response.headers?.['ETag'] ?? '')?.[1];
  const isSearch = /^(search|history)/.test(interaction);
  const queryIndex = req.url.indexOf('?');
  const resource = response.resource && response.resource.resourceType !== 'OperationOutcome' ? response.resource : undefined;
  const operation = /\/(\$[A-Za-z-]+)(?:\?|$)/.exec(req.url)?.[1];
  return [
    {
      ...base,
      interaction,
      status: response.status,
      ...(errorCode ? { errorCode } : {}),
      ...(request?.compartmentType ?? request?.resourceType ?? at?.[1] ? { resourceType: request?.compartmentType ?? request?.resourceType ?? at?.[1] } : {}),
      ...((request?.id && !request.compartmentType) || at?.[2] ? { id: (request?.compartmentType ? undefined : request?.id) ?? at![2]! } : {}),
      ...(request?.versionId ?? at?.[3] ?? (!isSearch && etag) ? { versionId: request?.versionId ?? at?.[3] ?? etag! } : {}),
      ...(isSearch ? { query: queryIndex >= 0 ? req.url.slice(queryIndex + 1) : '' } : {}),
      ...(operation ? { operation } : {}),
      ...(patientOf(request, resource) ? { patient: patientOf(request, resource)! } : {}),
    },
  ];
}
