/**
 * Client authentication at the token and introspection endpoints:
 * - `client_secret_basic` (RFC 6749 §2.3.1),
 * - `private_key_jwt` (RFC 7523 §2.2 / §3, SMART Backend Services
 *   https://hl7.org/fhir/smart-app-launch/STU2.2/client-confidential-asymmetric.html): RS384 or ES384
 *   signed by a key of the client's registered JWKS, `iss` = `sub` = client id, `aud` = token URL,
 *   `exp` at most five minutes ahead, `jti` never seen before;
 * - public clients (`none`): `client_id` only.
 * Every failure is `invalid_client` (401), except malformed requests (`invalid_request`, 400).
 */
import { createLocalJWKSet, createRemoteJWKSet, decodeJwt, decodeProtectedHeader, errors as joseErrors, jwtVerify, type JWTVerifyGetKey } from 'jose';
import { secretMatches, type ClientRecord } from '../../storage/auth-store.ts';
import { invalidClient, oauthError, type AuthContext } from './oauth.ts';

export const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
export const ASSERTION_ALGORITHMS = ['RS384', 'ES384'];
/** SMART Backend Services: "exp … no more than five minutes in the future". */
export const MAX_ASSERTION_LIFETIME = 300;

export interface AuthenticatedClient {
  client: ClientRecord;
  method: ClientRecord['authMethod'];
}

/** Remote JWKS resolvers per `jwks_uri`, kept for the life of the plugin (jose caches the keys). */
export type JwksCache = Map<string, JWTVerifyGetKey>;

/**
 * Authenticate the client of a token-endpoint style request (`params` = form body,
 * `authorization` = the Authorization header). Raises OAuthError invalid_client / invalid_request.
 */
export async function authenticateClient(
  ctx: AuthContext,
  params: Map<string, string>,
  authorization: string | undefined,
  jwksCache: JwksCache,
): Promise<AuthenticatedClient> {
  const bodyClientId = params.get('client_id');
  const hasAssertion = params.has('client_assertion') || params.has('client_assertion_type');
  const hasBasic = authorization !== undefined && /^basic /i.test(authorization);
  if (authorization !== undefined && !hasBasic) throw invalidClient('Only HTTP Basic client authentication is accepted in the Authorization header', true);
  if (hasBasic && hasAssertion) throw oauthError(400, 'invalid_request', 'Use exactly one client authentication method');
  if (params.has('client_secret')) throw invalidClient('client_secret_post is not supported: use HTTP Basic or private_key_jwt');

  if (hasBasic) {
    const client = await basicClient(ctx, authorization!);
    if (bodyClientId !== undefined && bodyClientId !== client.clientId) throw invalidClient('client_id does not match the authenticated client', true);
    return { client, method: 'client_secret_basic' };
  }
  if (hasAssertion) {
    const type = params.get('client_assertion_type');
    const assertion = params.get('client_assertion');
    if (!type || !assertion) throw oauthError(400, 'invalid_request', 'client_assertion and client_assertion_type are both required');
    if (type !== JWT_BEARER) throw invalidClient(`client_assertion_type must be ${JWT_BEARER}`);
    const client = await verifyClientAssertion(ctx, assertion, jwksCache);
    if (bodyClientId !== undefined && bodyClientId !== client.clientId) throw invalidClient('client_id does not match the client assertion');
    return { client, method: 'private_key_jwt' };
  }
  if (!bodyClientId) throw invalidClient('Client authentication is required');
  const client = await ctx.store.getClient(bodyClientId);
  if (!client) throw invalidClient('Unknown client');
  if (client.authMethod !== 'none') throw invalidClient('This client must authenticate', client.authMethod === 'client_secret_basic');
  return { client, method: 'none' };
}

async function basicClient(ctx: AuthContext, header: string): Promise<ClientRecord> {
  const encoded = header.slice('basic '.length).trim();
  let decoded: string;
  try {
    if (!/^[A-Za-z0-9+/]+={0,2}$/.test(encoded)) throw new Error('not base64');
    decoded = Buffer.from(encoded, 'base64').toString('utf8');
  } catch {
    throw invalidClient('Malformed Basic credentials', true);
  }
  const colon = decoded.indexOf(':');
  if (colon <= 0) throw invalidClient('Malformed Basic credentials', true);
  let id: string;
  let secret: string;
  try {
    // RFC 6749 §2.3.1: both parts are form-urlencoded before Base64.
    id = decodeURIComponent(decoded.slice(0, colon).replace(/\+/g, ' '));
    secret = decodeURIComponent(decoded.slice(colon + 1).replace(/\+/g, ' '));
  } catch {
    throw invalidClient('Malformed Basic credentials', true);
  }
  if (!secret) throw invalidClient('Malformed Basic credentials', true);
  const client = await ctx.store.getClient(id);
  if (!client || client.authMethod !== 'client_secret_basic' || !client.secretHash || !secretMatches(secret, client.secretHash)) {
    throw invalidClient('Client authentication failed', true);
  }
  return client;
}

/** Verify a `private_key_jwt` client assertion and record its `jti`; returns the client. Raises invalid_client. */
export async function verifyClientAssertion(ctx: AuthContext, assertion: string, jwksCache: JwksCache): Promise<ClientRecord> {
  if (assertion.length > 16 * 1024 || assertion.split('.').length !== 3) throw invalidClient('client_assertion is not a signed JWT');
  let header: ReturnType<typeof decodeProtectedHeader>;
  let claims: ReturnType<typeof decodeJwt>;
  try {
    header = decodeProtectedHeader(assertion);
    claims = decodeJwt(assertion);
  } catch {
    throw invalidClient('client_assertion is not a signed JWT');
  }
  // Allow-list first: `none`, HS* (a public key used as an HMAC secret) and anything else are refused.
  if (typeof header.alg !== 'string' || !ASSERTION_ALGORITHMS.includes(header.alg)) {
    throw invalidClient(`client_assertion must be signed with ${ASSERTION_ALGORITHMS.join(' or ')}`);
  }
  if (header.typ !== 'JWT') throw invalidClient('client_assertion header typ must be JWT');
  if (typeof header.kid !== 'string' || header.kid === '') throw invalidClient('client_assertion header kid is required');
  if (typeof claims.iss !== 'string' || claims.iss === '' || claims.sub !== claims.iss) throw invalidClient('client_assertion iss and sub must both be the client id');
  const client = await ctx.store.getClient(claims.iss);
  if (!client || client.authMethod !== 'private_key_jwt') throw invalidClient('Unknown client, or not registered for private_key_jwt');
  if (header.jku !== undefined && header.jku !== client.jwksUri) throw invalidClient('client_assertion jku is not the registered JWKS URL');

  let keySet: JWTVerifyGetKey;
  if (client.jwks) keySet = createLocalJWKSet(client.jwks as Parameters<typeof createLocalJWKSet>[0]);
  else if (client.jwksUri) {
    let cached = jwksCache.get(client.jwksUri);
    if (!cached) {
      cached = createRemoteJWKSet(new URL(client.jwksUri), { timeoutDuration: 5000 });
      jwksCache.set(client.jwksUri, cached);
    }
    keySet = cached;
  } else throw invalidClient('The client has no registered keys');

  const now = ctx.now();
  let exp: number;
  let jti: string;
  try {
    const { payload } = await jwtVerify(assertion, keySet, {
      algorithms: ASSERTION_ALGORITHMS,
      issuer: client.clientId,
      subject: client.clientId,
      audience: ctx.urls.token,
      requiredClaims: ['exp', 'jti'],
      clockTolerance: ctx.clockSkew,
      currentDate: new Date(now * 1000),
      typ: 'JWT',
    });
    exp = payload.exp!;
    jti = payload.jti!;
  } catch (err) {
    if (err instanceof joseErrors.JWTExpired) throw invalidClient('client_assertion has expired');
    if (err instanceof joseErrors.JWTClaimValidationFailed) throw invalidClient(`client_assertion claim ${err.claim} is not valid`);
    throw invalidClient('client_assertion signature cannot be verified with the registered keys');
  }
  if (typeof exp !== 'number' || exp > now + MAX_ASSERTION_LIFETIME + ctx.clockSkew) throw invalidClient('client_assertion exp is more than five minutes ahead');
  if (typeof jti !== 'string' || jti === '' || jti.length > 256) throw invalidClient('client_assertion jti is missing or too long');
  if (!(await ctx.store.useJti(client.clientId, jti, exp + ctx.clockSkew, now))) throw invalidClient('client_assertion jti was already used');
  return client;
}
