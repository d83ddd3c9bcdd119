/**
 * The embedded authorization server as one Fastify plugin, registered under a prefix (normally
 * `/auth`, matching `authUrl`):
 *
 * | method | path | what |
 * |---|---|---|
 * | GET, POST | /authorize | SMART standalone launch: validate, show the login page (authorize.ts) |
 * | POST | /authorize/login, /authorize/approve | the login and approval forms |
 * | POST | /token | client_credentials, authorization_code (PKCE S256), refresh_token (token-endpoint.ts) |
 * | POST | /introspect | RFC 7662 (introspect.ts) |
 * | GET | /jwks | the public signing keys (keys.ts) |
 * | POST | /register | RFC 7591 client registration, administrator token (registration.ts) |
 * | POST | /users | create a login user, administrator token |
 * | GET | /.well-known/openid-configuration | OpenID Provider metadata (discovery.ts) |
 *
 * The plugin's content-type parsers (form, JSON, anything else → refused by the handler) and its
 * error handler stay inside its encapsulated scope. OAuth errors are RFC 6749 §5.2 JSON.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { AuthStore } from '../../storage/auth-store.ts';
import { authorizeBodyParams, startAuthorization, submitApproval, submitLogin } from './authorize.ts';
import type { JwksCache } from './client-auth.ts';
import { openidConfiguration } from './discovery.ts';
import { handleIntrospect } from './introspect.ts';
import type { SigningKeys } from './keys.ts';
import { authUrls, errorBody, FormBody, NO_STORE, OAuthError, oauthError, UNSUPPORTED_BODY, type AuthContext, type AuthResponse } from './oauth.ts';
import { errorPage, PAGE_HEADERS } from './pages.ts';
import { createUser, registerClient, requireAdmin } from './registration.ts';
import { handleToken } from './token-endpoint.ts';
import { createTokenVerifier, type TokenVerifier } from './verify.ts';

export interface AuthPluginOptions {
  store: AuthStore;
  keys: SigningKeys;
  /** Public URL where the plugin is mounted (its issuer), e.g. http://127.0.0.1:8080/auth. */
  authUrl: string;
  /** The FHIR base URL: `aud` of access tokens, and the `aud` an authorization request must name. */
  fhirBaseUrl: string;
  /** Seconds; defaults 3600, 30 days, 60, 30. */
  accessTokenTtl?: number;
  refreshTokenTtl?: number;
  codeTtl?: number;
  clockSkew?: number;
  /** Clock in seconds since the epoch (tests). */
  now?: () => number;
  /** Check that a patient id chosen on the approval page exists (optional). */
  patientExists?: (id: string) => Promise<boolean>;
  /** Verifier for administrator tokens and introspection; default: the embedded verifier over `keys`. */
  verifier?: TokenVerifier;
}

const FORM_LIMIT = 64 * 1024;
const JSON_LIMIT = 256 * 1024;
const CORS_PATHS = new Set(['/token', '/jwks', '/.well-known/openid-configuration']);

function send(reply: FastifyReply, res: AuthResponse): FastifyReply {
  reply.code(res.status);
  for (const [name, value] of Object.entries(res.headers ?? {})) reply.header(name, value);
  if (res.body === undefined) return reply.send();
  if (typeof res.body === 'string') return reply.send(res.body);
  if (!reply.hasHeader('content-type')) reply.type('application/json; charset=utf-8');
  return reply.send(JSON.stringify(res.body));
}

function sendOAuthError(reply: FastifyReply, err: OAuthError): FastifyReply {
  return send(reply, { status: err.status, headers: { ...NO_STORE, ...err.headers }, body: errorBody(err) });
}

function header(request: FastifyRequest, name: string): string | undefined {
  const value = request.headers[name];
  return Array.isArray(value) ? value.join(', ') : value;
}

/** The route path inside the plugin (without the prefix). */
function localPath(request: FastifyRequest, prefix: string): string {
  const url = request.routeOptions.url ?? '';
  return url.startsWith(prefix) ? url.slice(prefix.length) : url;
}

export async function authPlugin(app: FastifyInstance, options: AuthPluginOptions): Promise<void> {
  const urls = authUrls(options.authUrl, options.fhirBaseUrl);
  const clockSkew = options.clockSkew ?? 30;
  const now = options.now ?? (() => Math.floor(Date.now() / 1000));
  const ctx: AuthContext = {
    store: options.store,
    keys: options.keys,
    urls,
    accessTokenTtl: options.accessTokenTtl ?? 3600,
    refreshTokenTtl: options.refreshTokenTtl ?? 30 * 86_400,
    codeTtl: options.codeTtl ?? 60,
    clockSkew,
    now,
    ...(options.patientExists ? { patientExists: options.patientExists } : {}),
  };
  const verifier =
    options.verifier ?? createTokenVerifier({ mode: 'embedded', keys: options.keys, issuer: urls.issuer, audience: urls.fhirBaseUrl, clockSkew, now });
  const jwksCache: JwksCache = new Map();
  const prefix = app.prefix;

  // Parsers of this scope only: forms (the OAuth endpoints), JSON (registration), nothing else.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: FORM_LIMIT }, (_req, body, done) => {
    done(null, new FormBody(body as string));
  });
  app.addContentTypeParser('application/json', { parseAs: 'string', bodyLimit: JSON_LIMIT }, (_req, body, done) => {
    try {
      done(null, JSON.parse(body as string) as unknown);
    } catch {
      done(null, UNSUPPORTED_BODY);
    }
  });
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: FORM_LIMIT }, (_req, _body, done) => done(null, UNSUPPORTED_BODY));

  app.setErrorHandler((err, request, reply) => {
    const path = localPath(request, prefix);
    if (err instanceof OAuthError) return sendOAuthError(reply, err);
    const status = (err as { statusCode?: number }).statusCode;
    if (status !== undefined && status >= 400 && status < 500) {
      if (path.startsWith('/authorize')) return send(reply, { status: 400, headers: PAGE_HEADERS, body: errorPage('The request could not be read.') });
      const code = path === '/register' ? 'invalid_client_metadata' : 'invalid_request';
      return sendOAuthError(reply, oauthError(status === 413 ? 413 : 400, code, 'The request could not be read'));
    }
    request.log.error({ err }, 'authorization server fault');
    if (path.startsWith('/authorize')) return send(reply, { status: 500, headers: PAGE_HEADERS, body: errorPage('The server could not complete the request.') });
    return sendOAuthError(reply, oauthError(500, 'server_error', 'The server could not complete the request'));
  });

  app.addHook('onSend', async (request, reply) => {
    if (CORS_PATHS.has(localPath(request, prefix))) reply.header('Access-Control-Allow-Origin', '*');
  });

  const rawQuery = (request: FastifyRequest) => {
    const i = request.url.indexOf('?');
    return new URLSearchParams(i < 0 ? '' : request.url.slice(i + 1));
  };

  app.get('/authorize', async (request, reply) => send(reply, await startAuthorization(ctx, rawQuery(request), header(request, 'cookie'))));
  app.post('/authorize', async (request, reply) => {
    let params: URLSearchParams;
    try {
      params = authorizeBodyParams(request.body);
    } catch {
      return send(reply, { status: 400, headers: PAGE_HEADERS, body: errorPage('Send the authorization request as a form.') });
    }
    return send(reply, await startAuthorization(ctx, params, header(request, 'cookie')));
  });
  app.post('/authorize/login', async (request, reply) => send(reply, await submitLogin(ctx, request.body, header(request, 'cookie'))));
  app.post('/authorize/approve', async (request, reply) => send(reply, await submitApproval(ctx, request.body, header(request, 'cookie'))));

  app.post('/token', async (request, reply) => send(reply, await handleToken(ctx, request.body, header(request, 'authorization'), jwksCache)));
  app.options('/token', async (_request, reply) =>
    send(reply, {
      status: 204,
      headers: { 'Access-Control-Allow-Methods': 'POST', 'Access-Control-Allow-Headers': 'Content-Type, Authorization', 'Access-Control-Max-Age': '600' },
    }),
  );
  app.post('/introspect', async (request, reply) =>
    send(reply, await handleIntrospect(ctx, verifier, request.body, header(request, 'authorization'), jwksCache)),
  );
  app.get('/jwks', async (_request, reply) =>
    send(reply, { status: 200, headers: { 'Cache-Control': 'public, max-age=300', 'Content-Type': 'application/jwk-set+json' }, body: options.keys.jwks() }),
  );
  app.get('/.well-known/openid-configuration', async (_request, reply) => send(reply, { status: 200, body: openidConfiguration(urls) }));

  app.post('/register', async (request, reply) => {
    await requireAdmin(verifier, header(request, 'authorization'));
    return send(reply, await registerClient(ctx, request.body === UNSUPPORTED_BODY ? undefined : request.body));
  });
  app.post('/users', async (request, reply) => {
    await requireAdmin(verifier, header(request, 'authorization'));
    return send(reply, await createUser(ctx, request.body === UNSUPPORTED_BODY ? undefined : request.body));
  });
}
