/**
 * Bearer-token verification for the FHIR request path (RFC 6750, RFC 9068): signature, issuer,
 * audience, expiry and algorithm, against Vellum's own signing keys (embedded mode) or an external
 * authorization server's JWKS (resource-server mode). The result is a Principal; every failure is a
 * 401 FhirError with a `WWW-Authenticate: Bearer …` header, ready to throw from a route.
 *
 * Error codes: VLM_AUTH_TOKEN_MISSING, VLM_AUTH_TOKEN_MALFORMED, VLM_AUTH_TOKEN_ALG,
 * VLM_AUTH_TOKEN_INVALID (bad signature, unknown key, tampered), VLM_AUTH_TOKEN_EXPIRED,
 * VLM_AUTH_TOKEN_AUDIENCE, VLM_AUTH_TOKEN_ISSUER, VLM_AUTH_TOKEN_CLAIMS (401);
 * VLM_AUTH_ISSUER_UNAVAILABLE (503, the external JWKS cannot be fetched);
 * VLM_AUTH_SCOPE_INSUFFICIENT (403, from `insufficientScope`).
 */
import { createRemoteJWKSet, decodeProtectedHeader, errors as joseErrors, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import { FhirError, type IssueCode } from '../errors.ts';
import type { SigningKeys } from './keys.ts';
import { SIGNING_ALG } from './keys.ts';
import { allows, parseScopes, type Interaction, type Scope, type ScopeContext } from './scopes.ts';

/** Who is calling, as established by a verified access token. */
export interface Principal {
  /** OAuth client the token was issued to. */
  clientId: string;
  /** `sub`: the user's opaque id, or the client id for Backend Services tokens. */
  subject: string;
  /** Granted scopes, parsed (unknown scope strings dropped). */
  scopes: Scope[];
  /** Granted scopes as issued (space-delimited). */
  scope: string;
  /**
   * Who stands behind the token: `system` (Backend Services, only system/ scopes), `patient`
   * (a patient user: fhirUser is Patient/…), else `user` (a practitioner or other user).
   */
  context: ScopeContext;
  /** Patient id in context (launch/patient): patient/ scopes are confined to this compartment. */
  patient?: string;
  /** FHIR identity of the user or client (`Practitioner/1`, `Patient/2`, `Organization/3`). */
  fhirUser?: string;
  /** v3 PurposeOfUse code (`TREAT` unless the token says otherwise). */
  purposeOfUse: string;
  /** Vellum administrator (bootstrap admin client with system/*.*); never true for external tokens. */
  admin: boolean;
  /** `jti` and `exp` of the token (for audit). */
  tokenId?: string;
  expiresAt: number;
}

export interface TokenVerifier {
  /** Verify a bearer token (the value after `Bearer `); raises a 401 FhirError (503 when the issuer's keys cannot be fetched). */
  verify(token: string | undefined): Promise<Principal>;
}

export type TokenVerifierOptions =
  | {
      mode: 'embedded';
      keys: SigningKeys;
      /** Vellum's authorization server URL (`iss`). */
      issuer: string;
      /** The FHIR base URL (`aud`). */
      audience: string;
      clockSkew?: number;
      /** Clock in seconds (tests). */
      now?: () => number;
      /** Refuse tokens whose exp is further ahead than this (seconds; default 86400). */
      maxLifetime?: number;
    }
  | {
      mode: 'external';
      issuer: string;
      jwksUrl: string;
      audience: string;
      /** Asymmetric algorithms only (config.ts enforces it). */
      algorithms: string[];
      clockSkew?: number;
      now?: () => number;
      maxLifetime?: number;
      /** Key resolver override (tests); default `createRemoteJWKSet(jwksUrl)`. */
      keySet?: JWTVerifyGetKey;
    };

const MAX_TOKEN_LENGTH = 16 * 1024;
const REALM = 'vellum';

function quote(s: string): string {
  return `"${s.replace(/["\\]/g, '')}"`;
}

/** A 401 with the RFC 6750 §3 challenge; `oauthError` absent for a missing token (§3.1). */
export function authError(vellumCode: string, diagnostics: string, oauthError?: 'invalid_token' | 'invalid_request', code: IssueCode = 'login'): FhirError {
  const challenge = `Bearer realm=${quote(REALM)}${oauthError ? `, error=${quote(oauthError)}, error_description=${quote(diagnostics)}` : ''}`;
  return new FhirError(401, [{ severity: 'error', code, vellumCode, diagnostics }], { 'WWW-Authenticate': challenge });
}

/** 403 for a valid token whose scopes do not cover the interaction (RFC 6750 §3.1 insufficient_scope). */
export function insufficientScope(interaction: Interaction, resourceType: string): FhirError {
  const diagnostics = `The token's scopes do not allow ${interaction} on ${resourceType}`;
  return new FhirError(403, [{ severity: 'error', code: 'forbidden', vellumCode: 'VLM_AUTH_SCOPE_INSUFFICIENT', diagnostics }], {
    'WWW-Authenticate': `Bearer realm=${quote(REALM)}, error="insufficient_scope", error_description=${quote(diagnostics)}`,
  });
}

/**
 * The token of an `Authorization` header value (`Bearer <token>`, scheme case-insensitive).
 * Raises VLM_AUTH_TOKEN_MISSING when absent, VLM_AUTH_TOKEN_MALFORMED when another scheme or shape.
 */
export function bearerToken(header: string | string[] | undefined): string {
  if (header === undefined || header === '') throw authError('VLM_AUTH_TOKEN_MISSING', 'An access token is required (Authorization: Bearer …)');
  if (Array.isArray(header)) throw authError('VLM_AUTH_TOKEN_MALFORMED', 'Send exactly one Authorization header', 'invalid_request');
  const m = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(header);
  if (!m) throw authError('VLM_AUTH_TOKEN_MALFORMED', 'The Authorization header is not "Bearer <token>"', 'invalid_request');
  return m[1]!;
}

/**
 * Scope decision for one interaction (https://hl7.org/fhir/smart-app-launch/STU2.2/scopes-and-launch-context.html):
 * `allowed`, and when the grant comes from patient/ scopes (or the caller is a patient user), the
 * patient whose compartment the request must stay within. A patient-level grant without a patient in
 * context allows nothing.
 */
export function decide(principal: Principal, interaction: Interaction, resourceType: string): { allowed: boolean; patient?: string } {
  const { scopes } = principal;
  if (principal.context === 'system') return { allowed: allows(scopes, 'system', interaction, resourceType) };
  if (principal.context === 'user' && allows(scopes, 'user', interaction, resourceType)) return { allowed: true };
  // Patient users only ever see their own compartment, whichever scope granted it.
  const patientGrant = allows(scopes, 'patient', interaction, resourceType) || (principal.context === 'patient' && allows(scopes, 'user', interaction, resourceType));
  if (patientGrant && principal.patient) return { allowed: true, patient: principal.patient };
  return { allowed: false };
}

const PATIENT_ID = /^[A-Za-z0-9\-.]{1,64}$/;

/** Map verified claims to a Principal (shared by embedded and external modes). */
export function principalFromClaims(claims: JWTPayload, options: { trustAdmin: boolean }): Principal {
  const rawScope = typeof claims.scope === 'string' ? claims.scope : Array.isArray(claims.scp) ? claims.scp.join(' ') : typeof claims.scp === 'string' ? claims.scp : undefined;
  const clientId = [claims.client_id, claims.azp, claims.cid].find((v) => typeof v === 'string' && v !== '') as string | undefined;
  if (rawScope === undefined || clientId === undefined || typeof claims.sub !== 'string' || typeof claims.exp !== 'number') {
    throw authError('VLM_AUTH_TOKEN_CLAIMS', 'The token lacks scope, client_id, sub or exp', 'invalid_token');
  }
  const { scopes } = parseScopes(rawScope);
  const fhirUser = typeof claims.fhirUser === 'string' ? claims.fhirUser : undefined;
  const patient = typeof claims.patient === 'string' && PATIENT_ID.test(claims.patient) ? claims.patient : undefined;
  const resourceScopes = scopes.filter((s) => s.kind === 'resource');
  const systemOnly = resourceScopes.length > 0 && resourceScopes.every((s) => s.kind === 'resource' && s.context === 'system');
  let context: ScopeContext;
  if (systemOnly) context = 'system';
  else if (fhirUser?.startsWith('Patient/')) context = 'patient';
  else context = 'user';
  // One or more PurposeOfUse codes, space-separated (token-endpoint.ts).
  const purpose = typeof claims.purpose_of_use === 'string' && /^[A-Z]{2,20}( [A-Z]{2,20}){0,7}$/.test(claims.purpose_of_use) ? claims.purpose_of_use : 'TREAT';
  return {
    clientId,
    subject: claims.sub,
    scopes,
    scope: rawScope,
    context,
    ...(patient ? { patient } : context === 'patient' && fhirUser ? { patient: fhirUser.slice('Patient/'.length) } : {}),
    ...(fhirUser ? { fhirUser } : {}),
    purposeOfUse: purpose,
    admin: options.trustAdmin && claims.vellum_admin === true,
    ...(typeof claims.jti === 'string' ? { tokenId: claims.jti } : {}),
    expiresAt: claims.exp,
  };
}

function joseFailure(err: unknown): FhirError {
  if (err instanceof FhirError) return err;
  if (err instanceof joseErrors.JWTExpired) return authError('VLM_AUTH_TOKEN_EXPIRED', 'The access token has expired', 'invalid_token');
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    if (err.claim === 'aud') return authError('VLM_AUTH_TOKEN_AUDIENCE', 'The access token is not meant for this server', 'invalid_token');
    if (err.claim === 'iss') return authError('VLM_AUTH_TOKEN_ISSUER', 'The access token comes from an untrusted issuer', 'invalid_token');
    return authError('VLM_AUTH_TOKEN_CLAIMS', 'The access token claims are not acceptable', 'invalid_token');
  }
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return authError('VLM_AUTH_TOKEN_ALG', 'The token algorithm is not accepted', 'invalid_token');
  if (err instanceof joseErrors.JWKSTimeout || (err instanceof joseErrors.JOSEError && err.code === 'ERR_JOSE_GENERIC') || err instanceof TypeError) {
    return new FhirError(503, [
      { severity: 'error', code: 'transient', vellumCode: 'VLM_AUTH_ISSUER_UNAVAILABLE', diagnostics: "The authorization server's keys cannot be fetched" },
    ]);
  }
  return authError('VLM_AUTH_TOKEN_INVALID', 'The access token is not valid', 'invalid_token');
}

/** Build the verifier for the configured mode. */
export function createTokenVerifier(options: TokenVerifierOptions): TokenVerifier {
  const algorithms = options.mode === 'embedded' ? [SIGNING_ALG] : options.algorithms;
  const keySet: () => JWTVerifyGetKey =
    options.mode === 'embedded'
      ? () => options.keys.keySet() // re-read on every call: rotation replaces the set
      : (() => {
          const remote = options.keySet ?? createRemoteJWKSet(new URL(options.jwksUrl), { timeoutDuration: 5000, cooldownDuration: 30_000 });
          return () => remote;
        })();
  return {
    async verify(token) {
      if (token === undefined || token === '') throw authError('VLM_AUTH_TOKEN_MISSING', 'An access token is required (Authorization: Bearer …)');
      if (token.length > MAX_TOKEN_LENGTH || token.split('.').length !== 3) {
        throw authError('VLM_AUTH_TOKEN_MALFORMED', 'The access token is not a signed JWT', 'invalid_token');
      }
      let alg: string | undefined;
      try {
        alg = decodeProtectedHeader(token).alg;
      } catch {
        throw authError('VLM_AUTH_TOKEN_MALFORMED', 'The access token is not a signed JWT', 'invalid_token');
      }
      // Explicit allow-list before any key lookup: `none`, HS* (key confusion) and anything unexpected.
      if (typeof alg !== 'string' || !algorithms.includes(alg)) throw authError('VLM_AUTH_TOKEN_ALG', 'The token algorithm is not accepted', 'invalid_token');
      try {
        const { payload } = await jwtVerify(token, keySet(), {
          algorithms,
          issuer: options.issuer,
          audience: options.audience,
          clockTolerance: options.clockSkew ?? 30,
          ...(options.now ? { currentDate: new Date(options.now() * 1000) } : {}),
          requiredClaims: ['exp', 'sub'],
          // RFC 9068 §4: Vellum's access tokens are typed, so an id token cannot pass as one.
          ...(options.mode === 'embedded' ? { typ: 'at+jwt' } : {}),
        });
        // A token good for longer than any Vellum issues (or a sane external server would) is refused.
        const now = options.now ? options.now() : Math.floor(Date.now() / 1000);
        if (typeof payload.exp === 'number' && payload.exp > now + (options.maxLifetime ?? 86_400)) {
          throw authError('VLM_AUTH_TOKEN_CLAIMS', 'The access token expires too far in the future', 'invalid_token');
        }
        return principalFromClaims(payload, { trustAdmin: options.mode === 'embedded' });
      } catch (err) {
        throw joseFailure(err);
      }
    },
  };
}
