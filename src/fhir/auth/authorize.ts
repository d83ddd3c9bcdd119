/**
 * The authorization endpoint for the SMART standalone launch
 * (https://hl7.org/fhir/smart-app-launch/STU2.2/app-launch.html#obtain-authorization-code;
 * RFC 6749 §4.1; PKCE S256 required, RFC 7636): validate the request, show the login page, then the
 * approval page, then redirect to the client with `code` and `state`.
 *
 * Between the pages the validated request travels in a signed form token (HMAC-SHA256 under a key
 * of the auth store) bound to a random cookie (SameSite=Lax, HttpOnly): a cross-site page can
 * neither forge the token nor submit it with the victim's cookie (CSRF), and the request cannot be
 * altered after validation. Errors go back to the client per RFC 6749 §4.1.2.1 once `client_id`
 * and `redirect_uri` are known good; before that they are a 400 page.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { hashSecret, newSecret, verifyPassword, type ClientRecord, type UserRecord } from '../../storage/auth-store.ts';
import { FHIR_ID, FormBody, oauthError, uniqueParams, type AuthContext, type AuthResponse, type OAuthErrorCode } from './oauth.ts';
import { approvalPage, errorPage, loginPage, PAGE_HEADERS } from './pages.ts';
import { formatScopes, intersectScopes, parseScopes, type Scope } from './scopes.ts';

export const CSRF_COOKIE = 'vellum_authz';
/** How long the login and approval pages stay valid. */
const FORM_TTL = 600;
const PKCE_CHALLENGE = /^[A-Za-z0-9_-]{43}$/;
const MAX_PARAM = 2048;
const USER_SPECIALS = ['openid', 'fhirUser', 'profile', 'launch/patient', 'offline_access', 'online_access'] as const;

/** A validated authorization request. */
interface AuthzRequest {
  clientId: string;
  redirectUri: string;
  /** Requested ∩ registered (before the user and patient are known). */
  scope: string;
  state: string;
  codeChallenge: string;
  nonce?: string;
}

interface FormToken {
  stage: 'login' | 'approve';
  request: AuthzRequest;
  userId?: string;
  /** SHA-256 of the CSRF cookie value. */
  csrf: string;
  exp: number;
}

/** An error the client is told about by redirect (RFC 6749 §4.1.2.1). */
class RedirectError extends Error {
  constructor(
    readonly error: OAuthErrorCode,
    readonly description: string,
  ) {
    super(description);
  }
}

function page(status: number, html: string, extra: Record<string, string | string[]> = {}): AuthResponse {
  return { status, headers: { ...PAGE_HEADERS, ...extra }, body: html };
}

function redirectTo(uri: string, params: Record<string, string | undefined>, status = 302): AuthResponse {
  const url = new URL(uri);
  for (const [name, value] of Object.entries(params)) if (value !== undefined) url.searchParams.append(name, value);
  return { status, headers: { Location: url.toString(), 'Cache-Control': 'no-store', 'Referrer-Policy': 'no-referrer' } };
}

/** The value of cookie `name` in a Cookie header. */
export function readCookie(header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

function csrfCookie(ctx: AuthContext, value: string): string {
  const url = new URL(ctx.urls.issuer);
  const secure = url.protocol === 'https:' ? '; Secure' : '';
  return `${CSRF_COOKIE}=${value}; Path=${url.pathname || '/'}; HttpOnly; SameSite=Lax; Max-Age=${FORM_TTL * 6}${secure}`;
}

const sha256 = (s: string) => createHash('sha256').update(s, 'utf8').digest('base64url');

async function signForm(ctx: AuthContext, token: FormToken): Promise<string> {
  const payload = Buffer.from(JSON.stringify(token), 'utf8').toString('base64url');
  const mac = createHmac('sha256', await ctx.store.secret('authorize-form')).update(payload).digest('base64url');
  return `${payload}.${mac}`;
}

/** Verify a form token against its HMAC, expiry, stage and the CSRF cookie; undefined when any check fails. */
async function openForm(ctx: AuthContext, text: string | undefined, stage: FormToken['stage'], cookie: string | undefined): Promise<FormToken | undefined> {
  if (!text || text.length > 16 * 1024 || !cookie) return undefined;
  const [payload, mac] = text.split('.');
  if (!payload || !mac) return undefined;
  const expected = createHmac('sha256', await ctx.store.secret('authorize-form')).update(payload).digest();
  const given = Buffer.from(mac, 'base64url');
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined;
  let token: FormToken;
  try {
    token = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as FormToken;
  } catch {
    return undefined;
  }
  const csrf = Buffer.from(sha256(cookie));
  const bound = Buffer.from(String(token.csrf));
  if (token.stage !== stage || token.exp < ctx.now() || csrf.length !== bound.length || !timingSafeEqual(csrf, bound)) return undefined;
  return token;
}

function sameUrl(a: string, b: string): boolean {
  return a.replace(/\/+$/, '') === b.replace(/\/+$/, '');
}

/**
 * Validate an authorization request (GET query or POST form, `authorize-post`). Returns the login
 * page, a redirect with `error`, or a 400 page when the client or redirect_uri cannot be trusted.
 */
export async function startAuthorization(ctx: AuthContext, raw: URLSearchParams, cookieHeader: string | undefined): Promise<AuthResponse> {
  let params: Map<string, string>;
  try {
    params = uniqueParams(raw);
  } catch {
    return page(400, errorPage('The authorization request repeats a parameter.'));
  }
  const clientId = params.get('client_id');
  const redirectUri = params.get('redirect_uri');
  if (!clientId) return page(400, errorPage('The authorization request has no client_id.'));
  const client = clientId.length <= 256 ? await ctx.store.getClient(clientId) : undefined;
  if (!client) return page(400, errorPage('The application is not registered here.'));
  if (!redirectUri) return page(400, errorPage('The authorization request has no redirect_uri.'));
  // Exact string match with a registered URI (RFC 6749 §3.1.2.3; OAuth 2.0 Security BCP §4.1.3).
  if (!client.redirectUris.includes(redirectUri)) return page(400, errorPage('The redirect_uri is not registered for this application.'));

  const state = params.get('state');
  try {
    const request = validate(ctx, client, params, redirectUri);
    const existing = readCookie(cookieHeader, CSRF_COOKIE);
    const cookie = existing && /^[A-Za-z0-9_-]{43}$/.test(existing) ? existing : randomBytes(32).toString('base64url');
    const formToken = await signForm(ctx, { stage: 'login', request, csrf: sha256(cookie), exp: ctx.now() + FORM_TTL });
    return page(
      200,
      loginPage({ action: `${ctx.urls.authorize}/login`, formToken, clientName: client.clientName ?? client.clientId }),
      existing === cookie ? {} : { 'Set-Cookie': csrfCookie(ctx, cookie) },
    );
  } catch (err) {
    if (err instanceof RedirectError) {
      return redirectTo(redirectUri, { error: err.error, error_description: err.description, state: state && state.length <= MAX_PARAM ? state : undefined });
    }
    throw err;
  }
}

function validate(ctx: AuthContext, client: ClientRecord, params: Map<string, string>, redirectUri: string): AuthzRequest {
  for (const [name, value] of params) if (value.length > MAX_PARAM) throw new RedirectError('invalid_request', `Parameter ${name.slice(0, 40)} is too long`);
  const responseType = params.get('response_type');
  if (!responseType) throw new RedirectError('invalid_request', 'response_type is required');
  if (responseType !== 'code') throw new RedirectError('unsupported_response_type', 'Only response_type=code is supported');
  const state = params.get('state');
  if (!state) throw new RedirectError('invalid_request', 'state is required');
  if (!client.grantTypes.includes('authorization_code')) throw new RedirectError('unauthorized_client', 'This client is not registered for authorization_code');
  const aud = params.get('aud');
  if (!aud) throw new RedirectError('invalid_request', 'aud is required (the FHIR base URL)');
  if (!sameUrl(aud, ctx.urls.fhirBaseUrl)) throw new RedirectError('invalid_request', 'aud is not the FHIR base URL of this server');
  if (params.has('launch')) throw new RedirectError('invalid_request', 'EHR launch is not supported; use the standalone launch');
  const method = params.get('code_challenge_method');
  const challenge = params.get('code_challenge');
  if (!challenge) throw new RedirectError('invalid_request', 'code_challenge is required (PKCE)');
  if (method !== 'S256') throw new RedirectError('invalid_request', 'code_challenge_method must be S256');
  if (!PKCE_CHALLENGE.test(challenge)) throw new RedirectError('invalid_request', 'code_challenge is not a base64url SHA-256 value');
  const requested = parseScopes(params.get('scope')).scopes;
  const candidate = intersectScopes(requested, parseScopes(client.scope).scopes, { contexts: ['patient', 'user'], specials: [...USER_SPECIALS] });
  if (!candidate.some((s) => s.kind === 'resource' || s.name === 'openid')) throw new RedirectError('invalid_scope', 'None of the requested scopes can be granted to this client');
  const nonce = params.get('nonce');
  return { clientId: client.clientId, redirectUri, scope: formatScopes(candidate), state, codeChallenge: challenge, ...(nonce ? { nonce } : {}) };
}

function isPatientUser(user: UserRecord): boolean {
  return user.fhirUser.startsWith('Patient/');
}

/** Whether the candidate grant needs a patient in context (patient/ scopes or launch/patient). */
function wantsPatient(scopes: Scope[]): boolean {
  return scopes.some((s) => (s.kind === 'resource' && s.context === 'patient') || (s.kind === 'special' && s.name === 'launch/patient'));
}

/**
 * The final grant for a user: a patient user keeps patient/ scopes (in their own compartment) and
 * loses user/ ones; a practitioner keeps user/ scopes, and patient/ scopes only with a chosen patient.
 */
function finalGrant(candidate: Scope[], user: UserRecord, chosenPatient: string | undefined): { scopes: Scope[]; patient?: string } {
  if (isPatientUser(user)) {
    return { scopes: candidate.filter((s) => !(s.kind === 'resource' && s.context === 'user')), patient: user.fhirUser.slice('Patient/'.length) };
  }
  if (chosenPatient) return { scopes: candidate, patient: chosenPatient };
  return { scopes: candidate.filter((s) => !(s.kind === 'resource' && s.context === 'patient') && !(s.kind === 'special' && s.name === 'launch/patient')) };
}

// Password checks for unknown users still cost one scrypt, so timing does not reveal user names.
const DUMMY_HASH = 'scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';

function formFields(body: unknown): Map<string, string> | undefined {
  if (!(body instanceof FormBody)) return undefined;
  try {
    return uniqueParams(body.params);
  } catch {
    return undefined;
  }
}

const EXPIRED_FORM = 'This sign-in page has expired or was not opened in this browser. Go back to the application and start again.';

/** POST /authorize/login: check the credentials, then show the approval page. */
export async function submitLogin(ctx: AuthContext, body: unknown, cookieHeader: string | undefined): Promise<AuthResponse> {
  const fields = formFields(body);
  const cookie = readCookie(cookieHeader, CSRF_COOKIE);
  const form = await openForm(ctx, fields?.get('form_token'), 'login', cookie);
  if (!fields || !form || !cookie) return page(400, errorPage(EXPIRED_FORM));
  const client = await ctx.store.getClient(form.request.clientId);
  if (!client) return page(400, errorPage('The application is no longer registered.'));
  const clientName = client.clientName ?? client.clientId;
  const username = fields.get('username') ?? '';
  const password = fields.get('password') ?? '';
  const user = username && username.length <= 256 ? await ctx.store.getUserByName(username) : undefined;
  const ok = (await verifyPassword(password.slice(0, 1024), user?.passwordHash ?? DUMMY_HASH)) && user !== undefined;
  if (!ok) {
    const formToken = await signForm(ctx, { ...form, exp: ctx.now() + FORM_TTL });
    return page(401, loginPage({ action: `${ctx.urls.authorize}/login`, formToken, clientName, error: 'Unknown user name or wrong password.' }));
  }
  return approval(ctx, client, form, user);
}

async function approval(ctx: AuthContext, client: ClientRecord, form: FormToken, user: UserRecord, error?: string): Promise<AuthResponse> {
  const candidate = parseScopes(form.request.scope).scopes;
  const askPatient = !isPatientUser(user) && wantsPatient(candidate);
  const shown = formatScopes(finalGrant(candidate, user, askPatient ? 'chosen' : undefined).scopes).split(' ').filter(Boolean);
  const formToken = await signForm(ctx, { stage: 'approve', request: form.request, userId: user.id, csrf: form.csrf, exp: ctx.now() + FORM_TTL });
  return page(
    error ? 400 : 200,
    approvalPage({
      action: `${ctx.urls.authorize}/approve`,
      formToken,
      clientName: client.clientName ?? client.clientId,
      user: `${user.username} (${user.fhirUser})`,
      scopes: shown,
      askPatient,
      ...(error ? { error } : {}),
    }),
  );
}

/** POST /authorize/approve: the user's decision; on approval a single-use code goes to the client. */
export async function submitApproval(ctx: AuthContext, body: unknown, cookieHeader: string | undefined): Promise<AuthResponse> {
  const fields = formFields(body);
  const cookie = readCookie(cookieHeader, CSRF_COOKIE);
  const form = await openForm(ctx, fields?.get('form_token'), 'approve', cookie);
  if (!fields || !form || !form.userId) return page(400, errorPage(EXPIRED_FORM));
  const { request } = form;
  const client = await ctx.store.getClient(request.clientId);
  const user = await ctx.store.getUser(form.userId);
  if (!client || !client.redirectUris.includes(request.redirectUri)) return page(400, errorPage('The application is no longer registered.'));
  const state = request.state;
  if (!user) return redirectTo(request.redirectUri, { error: 'access_denied', error_description: 'The user no longer exists', state }, 303);
  if (fields.get('decision') !== 'approve') return redirectTo(request.redirectUri, { error: 'access_denied', error_description: 'The user denied access', state }, 303);

  const candidate = parseScopes(request.scope).scopes;
  let chosen: string | undefined;
  if (!isPatientUser(user) && wantsPatient(candidate)) {
    const value = fields.get('patient')?.trim();
    if (value) {
      if (!FHIR_ID.test(value) || (ctx.patientExists && !(await ctx.patientExists(value)))) {
        return approval(ctx, client, form, user, 'No patient with this id.');
      }
      chosen = value;
    }
  }
  const grant = finalGrant(candidate, user, chosen);
  if (grant.scopes.length === 0) return redirectTo(request.redirectUri, { error: 'invalid_scope', error_description: 'Nothing could be granted', state }, 303);
  const code = newSecret();
  await ctx.store.saveCode({
    codeHash: hashSecret(code),
    clientId: client.clientId,
    redirectUri: request.redirectUri,
    codeChallenge: request.codeChallenge,
    scope: formatScopes(grant.scopes),
    userId: user.id,
    fhirUser: user.fhirUser,
    ...(grant.patient ? { patient: grant.patient } : {}),
    ...(request.nonce ? { nonce: request.nonce } : {}),
    authTime: ctx.now(),
    expiresAt: ctx.now() + ctx.codeTtl,
  });
  return redirectTo(request.redirectUri, { code, state }, 303);
}

/** Parameters of an authorization request body (authorize-post); form bodies only. */
export function authorizeBodyParams(body: unknown): URLSearchParams {
  if (!(body instanceof FormBody)) throw oauthError(400, 'invalid_request', 'Send the authorization request as application/x-www-form-urlencoded');
  return body.params;
}
