/**
 * Shared pieces of the authorization server: the OAuth error catalogue (RFC 6749 §5.2, RFC 7591
 * §3.2.2, RFC 6750 §3.1), form-parameter handling (RFC 6749 §3.2: no repeated parameters), the
 * context every endpoint receives, and the framework-free request/response shapes.
 */
import type { AuthStore } from '../../storage/auth-store.ts';
import type { SigningKeys } from './keys.ts';

export type OAuthErrorCode =
  | 'invalid_request'
  | 'invalid_client'
  | 'invalid_grant'
  | 'invalid_scope'
  | 'unauthorized_client'
  | 'unsupported_grant_type'
  | 'unsupported_response_type'
  | 'access_denied'
  | 'server_error'
  | 'invalid_client_metadata'
  | 'invalid_redirect_uri'
  | 'invalid_token'
  | 'insufficient_scope';

export class OAuthError extends Error {
  override readonly name = 'OAuthError';
  constructor(
    readonly status: number,
    readonly error: OAuthErrorCode,
    readonly description: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(description);
  }
}

/** Raise an OAuth error in one line: `throw oauthError(400, 'invalid_grant', 'The code has expired')`. */
export function oauthError(status: number, error: OAuthErrorCode, description: string, headers?: Record<string, string>): OAuthError {
  return new OAuthError(status, error, description, headers);
}

/** The client failed to authenticate: 401 invalid_client, with a Basic challenge when it tried Basic (RFC 6749 §5.2). */
export function invalidClient(description: string, basic = false): OAuthError {
  return new OAuthError(401, 'invalid_client', description, basic ? { 'WWW-Authenticate': 'Basic realm="vellum"' } : {});
}

/** A parsed `application/x-www-form-urlencoded` body (what the plugin's content-type parser produces). */
export class FormBody {
  readonly params: URLSearchParams;
  constructor(text: string) {
    this.params = new URLSearchParams(text);
  }
}

/** A request body the plugin could not parse as a form or JSON. */
export const UNSUPPORTED_BODY = Symbol('unsupported body');

/**
 * Single-valued form parameters. Raises `invalid_request` when the body is not a form, or a
 * parameter repeats (RFC 6749 §3.1, §3.2: parameters MUST NOT be included more than once).
 */
export function formParams(body: unknown): Map<string, string> {
  if (!(body instanceof FormBody)) throw oauthError(400, 'invalid_request', 'Send the parameters as application/x-www-form-urlencoded');
  return uniqueParams(body.params);
}

/** Single-valued parameters of a query or form; repeated names raise `invalid_request`. */
export function uniqueParams(params: URLSearchParams): Map<string, string> {
  const out = new Map<string, string>();
  for (const [name, value] of params) {
    if (out.has(name)) throw oauthError(400, 'invalid_request', `Parameter ${name.slice(0, 40)} is repeated`);
    out.set(name, value);
  }
  return out;
}

/** Resolved public URLs of the authorization server. */
export interface AuthUrls {
  /** Issuer = base URL of the authorization server (e.g. http://127.0.0.1:8080/auth). */
  issuer: string;
  fhirBaseUrl: string;
  authorize: string;
  token: string;
  introspect: string;
  register: string;
  jwks: string;
  users: string;
}

/** The public URLs for an authorization server mounted at `authUrl`, guarding the FHIR base `fhirBaseUrl`. */
export function authUrls(authUrl: string, fhirBaseUrl: string): AuthUrls {
  const issuer = authUrl.replace(/\/+$/, '');
  return {
    issuer,
    fhirBaseUrl: fhirBaseUrl.replace(/\/+$/, ''),
    authorize: `${issuer}/authorize`,
    token: `${issuer}/token`,
    introspect: `${issuer}/introspect`,
    register: `${issuer}/register`,
    jwks: `${issuer}/jwks`,
    users: `${issuer}/users`,
  };
}

/** Everything an endpoint needs: narrow components, no Fastify. */
export interface AuthContext {
  store: AuthStore;
  keys: SigningKeys;
  urls: AuthUrls;
  accessTokenTtl: number;
  refreshTokenTtl: number;
  codeTtl: number;
  clockSkew: number;
  /** Seconds since the epoch. */
  now(): number;
  /** Optional check that a patient id chosen on the approval page exists. */
  patientExists?: (id: string) => Promise<boolean>;
}

/** A framework-free response. */
export interface AuthResponse {
  status: number;
  headers?: Record<string, string | string[]>;
  /** JSON-serialised unless a string (HTML pages). */
  body?: unknown;
}

/** RFC 6749 §5.1: token responses are never cached. */
export const NO_STORE = { 'Cache-Control': 'no-store', Pragma: 'no-cache' };

/** JSON body of an OAuth error. */
export function errorBody(err: OAuthError): { error: string; error_description: string } {
  return { error: err.error, error_description: err.description };
}

export const FHIR_ID = /^[A-Za-z0-9\-.]{1,64}$/;
