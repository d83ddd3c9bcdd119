/**
 * The one Fastify plugin that adapts FHIR interactions to HTTP: content-type parsers, content
 * negotiation, the FHIR route table, OperationOutcome for every error (including Fastify's own:
 * body too large → 413, bad media type → 415, unparseable JSON → 400), and JSON responses with
 * `_summary` / `_elements` / `_pretty` applied.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { VersionRecord } from '../storage/index-store.ts';
import { FhirError, fhirError, operationOutcome, toFhirError } from './errors.ts';
import { elementsList, isXml, negotiate, subset, summaryMode, type Summary } from './format.ts';
import { hasInexactNumbers, mayNeedExactNumbers, parseExact } from './json.ts';
import { queryValue, type FhirRequest, type FhirResponse } from './request.ts';
import type { Route } from './routes.ts';
import type { FhirServices } from './services.ts';
import type { WriteContext } from './writer.ts';

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
  /** The write context (agent) of a request; SMART replaces the anonymous default later. */
  context?: (request: FastifyRequest) => WriteContext;
}

/** Send an error as an OperationOutcome (faults are logged with details, answered generically). */
export function sendError(reply: FastifyReply, request: FastifyRequest, err: unknown): FastifyReply {
  const { error, fault } = toFhirError(err);
  if (fault) request.log.error({ err }, 'request failed');
  reply.code(error.status);
  for (const [name, value] of Object.entries(error.headers)) reply.header(name, value);
  return reply.type('application/fhir+json; charset=utf-8').send(JSON.stringify(operationOutcome(error.issues)));
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

  app.setErrorHandler((err, request, reply) => {
    const mapped = fastifyErrorToFhir(err as { code?: string; statusCode?: number });
    return sendError(reply, request, mapped ?? err);
  });
  app.setNotFoundHandler((request, reply) =>
    sendError(reply, request, fhirError(404, 'not-found', 'VLM_FHIR_NO_ROUTE', 'No FHIR interaction at this path')),
  );

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
        try {
          const query = parseQuery(req.url);
          const method = req.method === 'HEAD' ? 'GET' : req.method;
          const route = routes.find((r) => r.method === method);
          if (!route) {
            reply.header('Allow', allow);
            throw fhirError(405, 'not-supported', 'VLM_FHIR_METHOD_NOT_ALLOWED', `${req.method} is not allowed here`);
          }
          const params = req.params as { type?: string; id?: string; vid?: string };
          if (params.type !== undefined && !services.resourceTypes.has(params.type)) {
            throw fhirError(404, 'not-supported', 'VLM_FHIR_UNKNOWN_TYPE', `${params.type} is not an R4 resource type`);
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
            query,
            headers,
            body,
            ...(exactBody !== undefined ? { exactBody } : {}),
            contentType,
            baseUrl: services.baseUrl,
          };
          // Everything that can reject the request is checked before the interaction runs: a write
          // must never be committed and then answered with an error (406, or 400 for a bad
          // `_summary` / `_elements`).
          const responseType = negotiate(request);
          const shape = { summary: summaryMode(request), elements: elementsList(request) };
          const writeContext = { ...context(req), committed: [] as VersionRecord[] };
          const response = await route.handler(services, request, writeContext);
          await waitForAnchors(request, writeContext.committed);
          return send(reply, request, response, responseType, shape, req.method === 'HEAD');
        } catch (err) {
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
