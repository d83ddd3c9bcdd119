/**
 * The token endpoint (RFC 6749 §3.2): `client_credentials` (SMART Backend Services
 * https://hl7.org/fhir/smart-app-launch/STU2.2/backend-services.html), `authorization_code` with
 * PKCE S256 (RFC 7636; https://hl7.org/fhir/smart-app-launch/STU2.2/app-launch.html#obtain-access-token)
 * and `refresh_token` with rotation (https://hl7.org/fhir/smart-app-launch/STU2.2/app-launch.html#refresh-access-token).
 *
 * Errors (RFC 6749 §5.2): invalid_request, invalid_client, invalid_grant, invalid_scope,
 * unauthorized_client, unsupported_grant_type.
 */
import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import { hashSecret, type ClientRecord } from '../../storage/auth-store.ts';
import { authenticateClient, type JwksCache } from './client-auth.ts';
import { formParams, invalidClient, NO_STORE, oauthError, type AuthContext, type AuthResponse } from './oauth.ts';
import { formatScopes, hasScope, intersectScopes, isScopeSubset, parseScopes, type Scope } from './scopes.ts';
import { DEFAULT_PURPOSE_OF_USE, issueRefreshToken, mintAccessToken, mintIdToken, PURPOSE_OF_USE } from './tokens.ts';

const GRANT_TYPES = ['client_credentials', 'authorization_code', 'refresh_token'] as const;
const PKCE_VERIFIER = /^[A-Za-z0-9\-._~]{43,128}$/;
/** online_access refresh tokens live at most a day (Vellum keeps no login session to bind them to). */
const ONLINE_REFRESH_TTL = 86_400;

/** Handle POST /token: `body` is what the plugin's parsers produced, `authorization` the header. */
export async function handleToken(ctx: AuthContext, body: unknown, authorization: string | undefined, jwksCache: JwksCache): Promise<AuthResponse> {
  const params = formParams(body);
  const grantType = params.get('grant_type');
  if (!grantType) throw oauthError(400, 'invalid_request', 'grant_type is required');
  if (!(GRANT_TYPES as readonly string[]).includes(grantType)) throw oauthError(400, 'unsupported_grant_type', 'Supported: client_credentials, authorization_code, refresh_token');
  const client =
    grantType === 'refresh_token' && !presentsClient(params, authorization)
      ? await publicClientOfRefreshToken(ctx, params.get('refresh_token'))
      : (await authenticateClient(ctx, params, authorization, jwksCache)).client;
  if (!client.grantTypes.includes(grantType as ClientRecord['grantTypes'][number])) {
    throw oauthError(400, 'unauthorized_client', `This client is not registered for ${grantType}`);
  }
  const purposeOfUse = purpose(params.get('purpose_of_use'));
  let response: Record<string, unknown>;
  switch (grantType) {
    case 'client_credentials':
      response = await clientCredentials(ctx, client, params, purposeOfUse);
      break;
    case 'authorization_code':
      response = await authorizationCode(ctx, client, params, purposeOfUse);
      break;
    default:
      response = await refreshToken(ctx, client, params, purposeOfUse);
  }
  return { status: 200, headers: NO_STORE, body: response };
}

/** Whether the request carries any client identification (Basic, assertion, or client_id). */
function presentsClient(params: Map<string, string>, authorization: string | undefined): boolean {
  return authorization !== undefined || params.has('client_id') || params.has('client_assertion') || params.has('client_assertion_type') || params.has('client_secret');
}

/**
 * A public client may refresh without naming itself (fhirclient.js does; the refresh token is bound
 * to its client). Confidential clients must authenticate (RFC 6749 §6).
 */
async function publicClientOfRefreshToken(ctx: AuthContext, token: string | undefined): Promise<ClientRecord> {
  if (!token) throw oauthError(400, 'invalid_request', 'refresh_token is required');
  const hash = hashSecret(token.slice(0, 256));
  const record = await ctx.store.findRefreshToken(hash, ctx.now());
  if (!record) {
    // Unknown, expired or already rotated: redeeming tells which, and a reuse revokes the family.
    const redeemed = await ctx.store.redeemRefreshToken(hash, ctx.now());
    if (redeemed.status === 'reused') await ctx.store.revokeFamily(redeemed.record.family);
    throw oauthError(400, 'invalid_grant', 'The refresh token is not valid or has expired');
  }
  const client = await ctx.store.getClient(record.clientId);
  if (!client) throw oauthError(400, 'invalid_grant', 'The refresh token is not valid or has expired');
  if (client.authMethod !== 'none') throw invalidClient('This client must authenticate', client.authMethod === 'client_secret_basic');
  return client;
}

/** One or more v3 PurposeOfUse codes, space-separated (each distinct code once, in the order given). */
function purpose(value: string | undefined): string {
  if (value === undefined) return DEFAULT_PURPOSE_OF_USE;
  const codes = [...new Set(value.split(' '))];
  if (codes.length === 0 || codes.length > 8 || !codes.every((code) => PURPOSE_OF_USE.has(code))) {
    throw oauthError(400, 'invalid_request', 'purpose_of_use is one or more v3 PurposeOfUse codes, space-separated (e.g. TREAT, ETREAT, HPAYMT)');
  }
  return codes.join(' ');
}

function requestedScopes(raw: string | undefined): Scope[] {
  const { scopes, unknown } = parseScopes(raw);
  if (unknown.length > 0) throw oauthError(400, 'invalid_scope', `Unknown scope ${unknown[0]!.slice(0, 80)}`);
  return scopes;
}

/** The administrator holds `system/*.*` (or its v2 spelling) from the bootstrap admin client. */
function isAdminGrant(client: ClientRecord, granted: Scope[]): boolean {
  return client.admin && granted.some((s) => s.kind === 'resource' && s.context === 'system' && s.resourceType === '*' && s.permissions.size === 5 && !s.query);
}

/** Backend Services: only system/ scopes; no refresh token (spec: SHALL NOT). */
async function clientCredentials(ctx: AuthContext, client: ClientRecord, params: Map<string, string>, purposeOfUse: string): Promise<Record<string, unknown>> {
  if (client.authMethod === 'none') throw oauthError(400, 'unauthorized_client', 'Public clients cannot use client_credentials');
  const raw = params.get('scope');
  if (!raw?.trim()) throw oauthError(400, 'invalid_request', 'scope is required');
  const granted = intersectScopes(requestedScopes(raw), parseScopes(client.scope).scopes, { contexts: ['system'], specials: [] });
  if (granted.length === 0) throw oauthError(400, 'invalid_scope', 'None of the requested scopes can be granted to this client (only system/ scopes it is registered for)');
  const scope = formatScopes(granted);
  const access = await mintAccessToken(ctx, {
    clientId: client.clientId,
    subject: client.clientId,
    scope,
    purposeOfUse,
    ...(client.fhirUser ? { fhirUser: client.fhirUser } : {}),
    admin: isAdminGrant(client, granted),
  });
  return { access_token: access.token, token_type: 'Bearer', expires_in: access.expiresIn, scope };
}

function pkceMatches(verifier: string, challenge: string): boolean {
  const computed = Buffer.from(createHash('sha256').update(verifier, 'ascii').digest('base64url'));
  const expected = Buffer.from(challenge);
  return computed.length === expected.length && timingSafeEqual(computed, expected);
}

async function authorizationCode(ctx: AuthContext, client: ClientRecord, params: Map<string, string>, purposeOfUse: string): Promise<Record<string, unknown>> {
  const code = params.get('code');
  const redirectUri = params.get('redirect_uri');
  const verifier = params.get('code_verifier');
  if (!code) throw oauthError(400, 'invalid_request', 'code is required');
  if (!redirectUri) throw oauthError(400, 'invalid_request', 'redirect_uri is required');
  if (!verifier) throw oauthError(400, 'invalid_request', 'code_verifier is required (PKCE)');
  if (code.length > 256) throw oauthError(400, 'invalid_grant', 'The code is not valid');
  const codeHash = hashSecret(code);
  const redeemed = await ctx.store.redeemCode(codeHash, ctx.now());
  if (redeemed.status === 'reused') {
    // RFC 6749 §4.1.2: a replayed code revokes what it produced.
    await ctx.store.revokeFamily(codeHash);
    throw oauthError(400, 'invalid_grant', 'The code was already used');
  }
  if (redeemed.status !== 'ok') throw oauthError(400, 'invalid_grant', redeemed.status === 'expired' ? 'The code has expired' : 'The code is not valid');
  const record = redeemed.record;
  if (record.clientId !== client.clientId) throw oauthError(400, 'invalid_grant', 'The code was issued to another client');
  if (record.redirectUri !== redirectUri) throw oauthError(400, 'invalid_grant', 'redirect_uri does not match the authorization request');
  if (!PKCE_VERIFIER.test(verifier) || !pkceMatches(verifier, record.codeChallenge)) throw oauthError(400, 'invalid_grant', 'code_verifier does not match the code_challenge');

  const granted = parseScopes(record.scope).scopes;
  return userTokens(ctx, client, {
    granted,
    userId: record.userId,
    fhirUser: record.fhirUser,
    ...(record.patient ? { patient: record.patient } : {}),
    ...(record.nonce ? { nonce: record.nonce } : {}),
    authTime: record.authTime,
    purposeOfUse,
    family: codeHash,
    refreshExpiresAt: undefined,
  });
}

async function refreshToken(ctx: AuthContext, client: ClientRecord, params: Map<string, string>, purposeOfUse: string): Promise<Record<string, unknown>> {
  const token = params.get('refresh_token');
  if (!token) throw oauthError(400, 'invalid_request', 'refresh_token is required');
  if (token.length > 256) throw oauthError(400, 'invalid_grant', 'The refresh token is not valid');
  const redeemed = await ctx.store.redeemRefreshToken(hashSecret(token), ctx.now());
  if (redeemed.status === 'reused') {
    // A rotated token came back: someone holds a copy. Revoke the whole grant (OAuth 2.0 Security BCP §4.14).
    await ctx.store.revokeFamily(redeemed.record.family);
    throw oauthError(400, 'invalid_grant', 'The refresh token was already used');
  }
  if (redeemed.status !== 'ok') throw oauthError(400, 'invalid_grant', 'The refresh token is not valid or has expired');
  const record = redeemed.record;
  if (record.clientId !== client.clientId) throw oauthError(400, 'invalid_grant', 'The refresh token was issued to another client');
  const original = parseScopes(record.scope).scopes;
  let granted = original;
  const raw = params.get('scope');
  if (raw !== undefined && raw.trim() !== '') {
    // A narrower request is allowed; anything beyond the original grant is not (spec @103–@115).
    granted = requestedScopes(raw);
    if (!isScopeSubset(granted, original)) throw oauthError(400, 'invalid_scope', 'The requested scope exceeds the original grant');
  }
  return userTokens(ctx, client, {
    granted,
    userId: record.userId,
    fhirUser: record.fhirUser,
    ...(record.patient ? { patient: record.patient } : {}),
    authTime: record.authTime,
    purposeOfUse,
    family: record.family,
    refreshExpiresAt: record.expiresAt,
    // RFC 6749 §6: a rotated refresh token keeps the scope of the one it replaces.
    refreshScope: record.scope,
  });
}

interface UserGrant {
  granted: Scope[];
  userId: string;
  fhirUser: string;
  patient?: string;
  nonce?: string;
  authTime: number;
  purposeOfUse: string;
  /** Refresh-token family (the code's hash for a new grant). */
  family: string;
  /** Absolute expiry carried across rotations; undefined = a new grant. */
  refreshExpiresAt: number | undefined;
  /** Scope of the next refresh token (default: the granted scope). */
  refreshScope?: string;
}

/** Access token + (openid) id token + (offline/online_access) refresh token for a user grant. */
async function userTokens(ctx: AuthContext, client: ClientRecord, g: UserGrant): Promise<Record<string, unknown>> {
  const scope = formatScopes(g.granted);
  const patient = g.patient && (hasScope(g.granted, 'launch/patient') || g.granted.some((s) => s.kind === 'resource' && s.context === 'patient')) ? g.patient : undefined;
  const access = await mintAccessToken(ctx, {
    clientId: client.clientId,
    subject: g.userId,
    scope,
    fhirUser: g.fhirUser,
    ...(patient ? { patient } : {}),
    purposeOfUse: g.purposeOfUse,
  });
  const response: Record<string, unknown> = { access_token: access.token, token_type: 'Bearer', expires_in: access.expiresIn, scope };
  if (patient) response.patient = patient;
  if (hasScope(g.granted, 'openid')) {
    response.id_token = await mintIdToken(ctx, {
      clientId: client.clientId,
      subject: g.userId,
      ...(hasScope(g.granted, 'fhirUser') ? { fhirUser: g.fhirUser } : {}),
      ...(g.nonce ? { nonce: g.nonce } : {}),
      authTime: g.authTime,
    });
  }
  const offline = hasScope(g.granted, 'offline_access');
  if ((offline || hasScope(g.granted, 'online_access')) && client.grantTypes.includes('refresh_token')) {
    const expiresAt = g.refreshExpiresAt ?? ctx.now() + (offline ? ctx.refreshTokenTtl : Math.min(ctx.refreshTokenTtl, ONLINE_REFRESH_TTL));
    response.refresh_token = await issueRefreshToken(ctx, {
      family: g.family || randomUUID(),
      clientId: client.clientId,
      scope: g.refreshScope ?? scope,
      userId: g.userId,
      fhirUser: g.fhirUser,
      ...(g.patient ? { patient: g.patient } : {}),
      authTime: g.authTime,
      expiresAt,
    });
  }
  return response;
}
