/**
 * Administration: dynamic client registration (RFC 7591) and login users, both behind the
 * administrator's access token (the bootstrap admin client's `system/*.*` token).
 *
 * Clients: `token_endpoint_auth_method` `private_key_jwt` (with `jwks` or `jwks_uri`),
 * `client_secret_basic`, or `none` (public apps; authorization_code with PKCE only), `grant_types`,
 * `redirect_uris`, `scope`, `client_name`, and Vellum's `fhir_user` binding the client to a FHIR
 * identity. Invalid metadata → 400 `invalid_client_metadata` / `invalid_redirect_uri` (§3.2.2).
 */
import { randomUUID } from 'node:crypto';
import { importJWK, type JWK } from 'jose';
import { isStorageError } from '../../storage/errors.ts';
import { hashPassword, hashSecret, newSecret, type ClientRecord, type GrantType } from '../../storage/auth-store.ts';
import { ASSERTION_ALGORITHMS } from './client-auth.ts';
import { NO_STORE, oauthError, type AuthContext, type AuthResponse } from './oauth.ts';
import { parseScopes } from './scopes.ts';
import { authError, bearerToken, type Principal, type TokenVerifier } from './verify.ts';
import { FhirError } from '../errors.ts';
import { isRecipientKey, RECIPIENT_ALG } from '../bulk/files.ts';

const CLIENT_FHIR_USER = /^(Practitioner|PractitionerRole|Organization|Patient)\/[A-Za-z0-9\-.]{1,64}$/;
const LOGIN_FHIR_USER = /^(Patient|Practitioner|PractitionerRole)\/[A-Za-z0-9\-.]{1,64}$/;
const USERNAME = /^[A-Za-z0-9._@+-]{1,128}$/;
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];
const LOOPBACK = new Set(['localhost', '127.0.0.1', '[::1]']);

const badMetadata = (description: string) => oauthError(400, 'invalid_client_metadata', description);

/**
 * Check the administrator's bearer token. Raises OAuthError 401 `invalid_token` (missing or bad
 * token) or 403 `insufficient_scope` (valid, but not the administrator).
 */
export async function requireAdmin(verifier: TokenVerifier, authorization: string | undefined): Promise<Principal> {
  let principal: Principal;
  try {
    principal = await verifier.verify(bearerToken(authorization));
  } catch (err) {
    const fhir = err instanceof FhirError ? err : authError('VLM_AUTH_TOKEN_INVALID', 'The access token is not valid', 'invalid_token');
    throw oauthError(401, 'invalid_token', fhir.issues[0]?.diagnostics ?? 'The access token is not valid', fhir.headers);
  }
  if (!principal.admin) {
    throw oauthError(403, 'insufficient_scope', 'An administrator token is required', {
      'WWW-Authenticate': 'Bearer realm="vellum", error="insufficient_scope"',
    });
  }
  return principal;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function stringArray(v: unknown, name: string): string[] {
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw badMetadata(`${name} must be an array of strings`);
  return v as string[];
}

/** A URL a client may be sent back to or fetch keys from: https, http on loopback, or (redirects) a private-use scheme. */
function checkUrl(raw: string, what: 'redirect' | 'jwks'): void {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw oauthError(400, what === 'redirect' ? 'invalid_redirect_uri' : 'invalid_client_metadata', `${raw.slice(0, 100)} is not an absolute URL`);
  }
  const fail = (why: string) => oauthError(400, what === 'redirect' ? 'invalid_redirect_uri' : 'invalid_client_metadata', why);
  if (url.hash || raw.includes('#')) throw fail('URLs must not have a fragment');
  if (url.protocol === 'https:') return;
  if (url.protocol === 'http:' && LOOPBACK.has(url.hostname)) return;
  // RFC 8252 §7.1: native apps use a private-use scheme in reverse-domain form (com.example.app:/cb).
  if (what === 'redirect' && /^[a-z][a-z0-9+\-]*\.[a-z0-9.+\-]+:$/.test(url.protocol)) return;
  throw fail('URLs must be https (http only on loopback)');
}

/**
 * A client's JWK Set: signing keys for its assertions (private_key_jwt), and at most one
 * encryption key (`"use": "enc"`: EC P-256/P-384 or X25519, ECDH-ES+A256KW) that Bulk Data
 * export files are encrypted to (bulk/files.ts). `signing`: whether assertion keys are needed.
 */
async function checkJwks(jwks: unknown, signing: boolean): Promise<{ keys: Record<string, unknown>[] }> {
  if (!isObject(jwks) || !Array.isArray(jwks.keys) || jwks.keys.length === 0 || jwks.keys.length > 10) {
    throw badMetadata('jwks must be a JWK Set with 1 to 10 keys');
  }
  const keys = jwks.keys as unknown[];
  if (keys.filter((k) => isObject(k) && k.use === 'enc').length > 1) throw badMetadata('jwks may hold one encryption key');
  if (signing && !keys.some((k) => isObject(k) && k.use !== 'enc')) throw badMetadata('private_key_jwt needs a signing key in jwks');
  for (const key of keys) {
    if (!isObject(key)) throw badMetadata('jwks keys must be objects');
    if (PRIVATE_MEMBERS.some((m) => m in key)) throw badMetadata('jwks must hold public keys only');
    if (typeof key.kid !== 'string' || key.kid === '') throw badMetadata('every key needs a kid');
    if (key.use === 'enc') {
      if (!isRecipientKey(key)) throw badMetadata(`an encryption key must be EC P-256, P-384 or X25519 for ${RECIPIENT_ALG}`);
      try {
        await importJWK(key as JWK, RECIPIENT_ALG);
      } catch {
        throw badMetadata('the encryption key of jwks cannot be imported');
      }
      continue;
    }
    if (!signing) throw badMetadata('without private_key_jwt, jwks may only hold an encryption key');
    const alg = key.alg ?? (key.kty === 'EC' ? 'ES384' : key.kty === 'RSA' ? 'RS384' : undefined);
    if (typeof alg !== 'string' || !ASSERTION_ALGORITHMS.includes(alg)) throw badMetadata(`keys must be for ${ASSERTION_ALGORITHMS.join(' or ')}`);
    if (alg === 'ES384' && (key.kty !== 'EC' || key.crv !== 'P-384')) throw badMetadata('ES384 keys must be EC P-384');
    if (alg === 'RS384' && (key.kty !== 'RSA' || typeof key.n !== 'string' || key.n.length < 342)) throw badMetadata('RS384 keys must be RSA of at least 2048 bits');
    try {
      await importJWK(key as JWK, alg);
    } catch {
      throw badMetadata('a key of jwks cannot be imported');
    }
  }
  return { keys: jwks.keys as Record<string, unknown>[] };
}

/** POST /register (RFC 7591 §3.1): validate the metadata, store the client, answer §3.2.1. */
export async function registerClient(ctx: AuthContext, body: unknown): Promise<AuthResponse> {
  if (!isObject(body)) throw badMetadata('The body must be a JSON object of client metadata');
  const method = body.token_endpoint_auth_method ?? 'client_secret_basic';
  if (method !== 'private_key_jwt' && method !== 'client_secret_basic' && method !== 'none') {
    throw badMetadata('token_endpoint_auth_method must be private_key_jwt, client_secret_basic or none');
  }
  const grantTypes = body.grant_types === undefined ? ['authorization_code'] : stringArray(body.grant_types, 'grant_types');
  const allowedGrants: GrantType[] = ['client_credentials', 'authorization_code', 'refresh_token'];
  if (grantTypes.length === 0 || grantTypes.some((g) => !allowedGrants.includes(g as GrantType))) {
    throw badMetadata(`grant_types must be drawn from ${allowedGrants.join(', ')}`);
  }
  if (grantTypes.includes('refresh_token') && !grantTypes.includes('authorization_code')) throw badMetadata('refresh_token needs authorization_code');
  if (method === 'none' && grantTypes.includes('client_credentials')) throw badMetadata('public clients cannot use client_credentials');
  if (body.response_types !== undefined) {
    const rt = stringArray(body.response_types, 'response_types');
    if (rt.some((r) => r !== 'code')) throw badMetadata('only response_types ["code"] is supported');
  }
  const redirectUris = body.redirect_uris === undefined ? [] : stringArray(body.redirect_uris, 'redirect_uris');
  if (grantTypes.includes('authorization_code') && redirectUris.length === 0) throw oauthError(400, 'invalid_redirect_uri', 'authorization_code needs redirect_uris');
  if (redirectUris.length > 20) throw oauthError(400, 'invalid_redirect_uri', 'at most 20 redirect_uris');
  for (const uri of redirectUris) checkUrl(uri, 'redirect');

  if (typeof body.scope !== 'string' || body.scope.trim() === '' || body.scope.length > 4096) throw badMetadata('scope is required (space-delimited SMART scopes)');
  const { unknown } = parseScopes(body.scope);
  if (unknown.length > 0) throw badMetadata(`unknown scope ${unknown[0]!.slice(0, 80)}`);
  if (body.client_name !== undefined && (typeof body.client_name !== 'string' || body.client_name.length > 200)) throw badMetadata('client_name must be a string');
  if (body.fhir_user !== undefined && (typeof body.fhir_user !== 'string' || !CLIENT_FHIR_USER.test(body.fhir_user))) {
    throw badMetadata('fhir_user must be Practitioner/…, PractitionerRole/…, Organization/… or Patient/…');
  }

  let jwks: { keys: Record<string, unknown>[] } | undefined;
  let jwksUri: string | undefined;
  if (method === 'private_key_jwt') {
    if (body.jwks !== undefined && body.jwks_uri !== undefined) throw badMetadata('give jwks or jwks_uri, not both (RFC 7591 §2)');
    if (body.jwks !== undefined) jwks = await checkJwks(body.jwks, true);
    else if (typeof body.jwks_uri === 'string') {
      checkUrl(body.jwks_uri, 'jwks');
      jwksUri = body.jwks_uri;
    } else throw badMetadata('private_key_jwt needs jwks or jwks_uri');
  } else if (body.jwks_uri !== undefined) {
    throw badMetadata('jwks_uri only goes with private_key_jwt');
  } else if (body.jwks !== undefined) {
    jwks = await checkJwks(body.jwks, false);
  }

  const clientId = randomUUID();
  const secret = method === 'client_secret_basic' ? newSecret() : undefined;
  const now = ctx.now();
  const record: ClientRecord = {
    clientId,
    ...(typeof body.client_name === 'string' ? { clientName: body.client_name } : {}),
    authMethod: method,
    ...(secret ? { secretHash: hashSecret(secret) } : {}),
    ...(jwks ? { jwks } : {}),
    ...(jwksUri ? { jwksUri } : {}),
    grantTypes: grantTypes as GrantType[],
    redirectUris,
    scope: body.scope.trim().split(/ +/).join(' '),
    ...(typeof body.fhir_user === 'string' ? { fhirUser: body.fhir_user } : {}),
    admin: false,
    createdAt: now,
  };
  await ctx.store.createClient(record);
  return { status: 201, headers: NO_STORE, body: { ...clientMetadata(record), client_id_issued_at: now, ...(secret ? { client_secret: secret, client_secret_expires_at: 0 } : {}) } };
}

/** The registered metadata of a client, as RFC 7591 §3.2.1 echoes it. */
export function clientMetadata(c: ClientRecord): Record<string, unknown> {
  return {
    client_id: c.clientId,
    ...(c.clientName ? { client_name: c.clientName } : {}),
    token_endpoint_auth_method: c.authMethod,
    grant_types: c.grantTypes,
    ...(c.grantTypes.includes('authorization_code') ? { response_types: ['code'], redirect_uris: c.redirectUris } : {}),
    scope: c.scope,
    ...(c.jwks ? { jwks: c.jwks } : {}),
    ...(c.jwksUri ? { jwks_uri: c.jwksUri } : {}),
    ...(c.fhirUser ? { fhir_user: c.fhirUser } : {}),
  };
}

/** POST /users: create a login user `{username, password, fhir_user}` → 201 `{id, username, fhir_user}`; 409 when the name is taken. */
export async function createUser(ctx: AuthContext, body: unknown): Promise<AuthResponse> {
  if (!isObject(body)) throw oauthError(400, 'invalid_request', 'The body must be a JSON object');
  const { username, password, fhir_user: fhirUser } = body;
  if (typeof username !== 'string' || !USERNAME.test(username)) throw oauthError(400, 'invalid_request', 'username must be 1–128 of A-Z a-z 0-9 . _ @ + -');
  if (typeof password !== 'string' || password.length < 8 || password.length > 1024) throw oauthError(400, 'invalid_request', 'password must be 8 to 1024 characters');
  if (typeof fhirUser !== 'string' || !LOGIN_FHIR_USER.test(fhirUser)) throw oauthError(400, 'invalid_request', 'fhir_user must be Patient/…, Practitioner/… or PractitionerRole/…');
  const id = randomUUID();
  try {
    await ctx.store.createUser({ id, username, passwordHash: await hashPassword(password), fhirUser, createdAt: ctx.now() });
  } catch (err) {
    if (isStorageError(err, 'VLM_AUTH_USER_EXISTS')) throw oauthError(409, 'invalid_request', 'A user with this name exists');
    throw err;
  }
  return { status: 201, headers: NO_STORE, body: { id, username, fhir_user: fhirUser } };
}
