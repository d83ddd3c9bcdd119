/**
 * SMART standalone launch through the login and approval pages, PKCE, id tokens, refresh
 * (https://hl7.org/fhir/smart-app-launch/STU2.2/app-launch.html; smart-checks.md A1–A5, T1–T9).
 */
import { createLocalJWKSet, decodeJwt, jwtVerify } from 'jose';
import t from 'tap';
import { appAndUsers, authorizeThroughPages, basic, cookieOf, formToken, pkce, startHarness, type Harness } from './harness.ts';

function authorizeUrl(h: Harness, params: Record<string, string | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined) q.append(k, v);
  return `/auth/authorize?${q}`;
}

function baseParams(h: Harness, app: { clientId: string; redirectUri: string }): Record<string, string> {
  return {
    response_type: 'code',
    client_id: app.clientId,
    redirect_uri: app.redirectUri,
    scope: 'openid fhirUser launch/patient patient/*.rs offline_access',
    state: 'st-123',
    aud: h.fhirBase,
    code_challenge: pkce().challenge,
    code_challenge_method: 'S256',
  };
}

t.test('the whole standalone launch: patient user, openid fhirUser launch/patient offline_access, then refresh', async (t) => {
  const h = await startHarness(t);
  const app = await appAndUsers(h);
  const flow = await authorizeThroughPages(h, {
    clientId: app.clientId,
    redirectUri: app.redirectUri,
    scope: 'openid fhirUser launch/patient patient/*.rs offline_access',
    username: app.patient.username,
    password: app.patient.password,
    nonce: 'n-0S6_WzA2Mj',
    state: 'xyz-state/with?odd&chars',
  });
  t.equal(`${flow.location.origin}${flow.location.pathname}`, app.redirectUri, 'redirected to the registered URI');
  t.equal(flow.state, 'xyz-state/with?odd&chars', 'A2 exact state');
  t.ok(flow.code.length >= 40, 'a code');

  const res = await h.token({ grant_type: 'authorization_code', code: flow.code, redirect_uri: app.redirectUri, code_verifier: flow.verifier, client_id: app.clientId });
  t.equal(res.status, 200, res.text);
  t.match(res.json, {
    token_type: 'Bearer',
    expires_in: 3600,
    scope: 'openid fhirUser launch/patient patient/*.rs offline_access',
    patient: 'p1',
    access_token: String,
    id_token: String,
    refresh_token: String,
  });
  t.match(res.headers['cache-control'], /no-store/);
  t.match(res.headers.pragma, /no-cache/);

  const principal = await h.auth.verifier.verify(res.json.access_token);
  t.match(principal, { clientId: app.clientId, subject: app.patient.id, context: 'patient', patient: 'p1', fhirUser: 'Patient/p1', purposeOfUse: 'TREAT', admin: false });

  const jwks = createLocalJWKSet((await h.request('GET', '/auth/jwks')).json);
  const { payload: id, protectedHeader } = await jwtVerify(res.json.id_token, jwks, { issuer: 'http://vellum.test/auth', audience: app.clientId });
  t.equal(protectedHeader.alg, 'RS256', 'OIDC: RS256');
  t.ok(protectedHeader.kid, 'kid');
  t.match(id, { sub: app.patient.id, fhirUser: 'Patient/p1', nonce: 'n-0S6_WzA2Mj', iat: Number, exp: Number, auth_time: Number });

  // The stub FHIR route enforces the token: own Patient yes, other patients and other types no.
  const auth = { authorization: `Bearer ${res.json.access_token}` };
  t.equal((await h.request('GET', '/fhir/Patient/p1', { headers: auth })).status, 200);
  t.equal((await h.request('GET', '/fhir/Patient/p2', { headers: auth })).status, 403);

  // The code is single-use; a replay also revokes the refresh tokens it produced.
  const replay = await h.token({ grant_type: 'authorization_code', code: flow.code, redirect_uri: app.redirectUri, code_verifier: flow.verifier, client_id: app.clientId });
  t.equal(replay.status, 400);
  t.equal(replay.json.error, 'invalid_grant');
  const afterReplay = await h.token({ grant_type: 'refresh_token', refresh_token: res.json.refresh_token });
  t.equal(afterReplay.json.error, 'invalid_grant', 'refresh tokens of a replayed code are revoked');

  // A fresh grant, then refresh with rotation.
  const flow2 = await authorizeThroughPages(h, {
    clientId: app.clientId,
    redirectUri: app.redirectUri,
    scope: 'openid fhirUser launch/patient patient/*.rs offline_access',
    username: app.patient.username,
    password: app.patient.password,
  });
  const first = await h.token({ grant_type: 'authorization_code', code: flow2.code, redirect_uri: app.redirectUri, code_verifier: flow2.verifier, client_id: app.clientId });
  const refreshed = await h.token({ grant_type: 'refresh_token', refresh_token: first.json.refresh_token });
  t.equal(refreshed.status, 200, refreshed.text);
  t.match(refreshed.json, { token_type: 'Bearer', expires_in: 3600, scope: 'openid fhirUser launch/patient patient/*.rs offline_access', patient: 'p1', refresh_token: String });
  t.not(refreshed.json.refresh_token, first.json.refresh_token, 'rotated');
  // T8: narrower scope is fine, wider is not.
  const narrow = await h.token({ grant_type: 'refresh_token', refresh_token: refreshed.json.refresh_token, scope: 'patient/Observation.rs offline_access' });
  t.equal(narrow.status, 200, narrow.text);
  t.equal(narrow.json.scope, 'patient/Observation.rs offline_access');
  const wider = await h.token({ grant_type: 'refresh_token', refresh_token: narrow.json.refresh_token, scope: 'patient/*.cruds' });
  t.equal(wider.json.error, 'invalid_scope');
  // The rotated-out token is dead, and reusing it revokes the family (the newest token too).
  const reuse = await h.token({ grant_type: 'refresh_token', refresh_token: first.json.refresh_token });
  t.equal(reuse.json.error, 'invalid_grant');
  const newest = await h.token({ grant_type: 'refresh_token', refresh_token: narrow.json.refresh_token });
  t.equal(newest.json.error, 'invalid_grant', 'family revoked after reuse');
  // Refresh errors
  t.equal((await h.token({ grant_type: 'refresh_token' , client_id: app.clientId})).json.error, 'invalid_request');
  t.equal((await h.token({ grant_type: 'refresh_token', refresh_token: 'made-up' })).json.error, 'invalid_grant');
});

t.test('practitioner: user scopes, patient chosen on the approval page', async (t) => {
  const h = await startHarness(t);
  const app = await appAndUsers(h);
  const flow = await authorizeThroughPages(h, {
    clientId: app.clientId,
    redirectUri: app.redirectUri,
    scope: 'openid fhirUser launch/patient patient/*.rs user/*.rs',
    username: app.practitioner.username,
    password: app.practitioner.password,
    patient: 'p7',
  });
  const res = await h.token({ grant_type: 'authorization_code', code: flow.code, redirect_uri: app.redirectUri, code_verifier: flow.verifier, client_id: app.clientId });
  t.equal(res.status, 200, res.text);
  t.equal(res.json.patient, 'p7');
  t.equal(res.json.scope, 'openid fhirUser launch/patient patient/*.rs user/*.rs');
  t.notOk(res.json.refresh_token, 'no offline_access, no refresh token');
  t.match(await h.auth.verifier.verify(res.json.access_token), { context: 'user', fhirUser: 'Practitioner/d1', patient: 'p7' });

  // Without choosing a patient, patient-level scopes and launch/patient are dropped.
  const flow2 = await authorizeThroughPages(h, {
    clientId: app.clientId,
    redirectUri: app.redirectUri,
    scope: 'openid fhirUser launch/patient patient/*.rs user/*.rs',
    username: app.practitioner.username,
    password: app.practitioner.password,
  });
  const res2 = await h.token({ grant_type: 'authorization_code', code: flow2.code, redirect_uri: app.redirectUri, code_verifier: flow2.verifier, client_id: app.clientId });
  t.equal(res2.json.scope, 'openid fhirUser user/*.rs');
  t.notOk(res2.json.patient);
  t.equal(decodeJwt(res2.json.id_token).fhirUser, 'Practitioner/d1');
});

t.test('PKCE at the token endpoint', async (t) => {
  const h = await startHarness(t);
  const app = await appAndUsers(h);
  const go = () =>
    authorizeThroughPages(h, { clientId: app.clientId, redirectUri: app.redirectUri, scope: 'patient/*.rs', username: 'alice', password: 'correct horse battery' });
  const a = await go();
  const missing = await h.token({ grant_type: 'authorization_code', code: a.code, redirect_uri: app.redirectUri, client_id: app.clientId });
  t.equal(missing.status, 400, 'T7 missing verifier');
  t.equal(missing.json.error, 'invalid_request');
  const wrong = await h.token({ grant_type: 'authorization_code', code: a.code, redirect_uri: app.redirectUri, client_id: app.clientId, code_verifier: pkce().verifier });
  t.equal(wrong.status, 400, 'T7 wrong verifier');
  t.equal(wrong.json.error, 'invalid_grant');
  const after = await h.token({ grant_type: 'authorization_code', code: a.code, redirect_uri: app.redirectUri, client_id: app.clientId, code_verifier: a.verifier });
  t.equal(after.json.error, 'invalid_grant', 'a code burnt by a wrong verifier stays burnt');
  const b = await go();
  const plainVerifier = await h.token({ grant_type: 'authorization_code', code: b.code, redirect_uri: app.redirectUri, client_id: app.clientId, code_verifier: b.location.searchParams.get('code') ?? '' });
  t.equal(plainVerifier.json.error, 'invalid_grant');
  const c = await go();
  const otherRedirect = await h.token({ grant_type: 'authorization_code', code: c.code, redirect_uri: 'https://app.example.org/other', client_id: app.clientId, code_verifier: c.verifier });
  t.equal(otherRedirect.json.error, 'invalid_grant', 'code bound to redirect_uri');
  const d = await go();
  const noRedirect = await h.token({ grant_type: 'authorization_code', code: d.code, client_id: app.clientId, code_verifier: d.verifier });
  t.equal(noRedirect.json.error, 'invalid_request', 'redirect_uri required');
  const noCode = await h.token({ grant_type: 'authorization_code', redirect_uri: app.redirectUri, client_id: app.clientId, code_verifier: d.verifier });
  t.equal(noCode.json.error, 'invalid_request', 'code required');
  const forged = await h.token({ grant_type: 'authorization_code', code: 'forged-code', redirect_uri: app.redirectUri, client_id: app.clientId, code_verifier: d.verifier });
  t.equal(forged.json.error, 'invalid_grant', 'forged code');
  // Expired code
  const e = await go();
  h.advance(120);
  const expired = await h.token({ grant_type: 'authorization_code', code: e.code, redirect_uri: app.redirectUri, client_id: app.clientId, code_verifier: e.verifier });
  t.equal(expired.json.error, 'invalid_grant', 'codes are short-lived');
});

t.test('codes are bound to the client', async (t) => {
  const h = await startHarness(t);
  const app = await appAndUsers(h);
  const other = await h.register({ token_endpoint_auth_method: 'none', redirect_uris: [app.redirectUri], scope: 'patient/*.rs' }, await h.adminToken());
  const a = await authorizeThroughPages(h, { clientId: app.clientId, redirectUri: app.redirectUri, scope: 'patient/*.rs', username: 'alice', password: 'correct horse battery' });
  const stolen = await h.token({ grant_type: 'authorization_code', code: a.code, redirect_uri: app.redirectUri, client_id: other.json.client_id, code_verifier: a.verifier });
  t.equal(stolen.json.error, 'invalid_grant');
});

t.test('confidential app (client_secret_basic) must authenticate at the token endpoint', async (t) => {
  const h = await startHarness(t);
  const app = await appAndUsers(h, { authMethod: 'client_secret_basic' });
  const a = await authorizeThroughPages(h, { clientId: app.clientId, redirectUri: app.redirectUri, scope: 'patient/*.rs offline_access', username: 'alice', password: 'correct horse battery' });
  const unauth = await h.token({ grant_type: 'authorization_code', code: a.code, redirect_uri: app.redirectUri, client_id: app.clientId, code_verifier: a.verifier });
  t.equal(unauth.status, 401);
  t.equal(unauth.json.error, 'invalid_client');
  const b = await authorizeThroughPages(h, { clientId: app.clientId, redirectUri: app.redirectUri, scope: 'patient/*.rs offline_access', username: 'alice', password: 'correct horse battery' });
  const ok = await h.token({ grant_type: 'authorization_code', code: b.code, redirect_uri: app.redirectUri, code_verifier: b.verifier }, { authorization: basic(app.clientId, app.clientSecret!) });
  t.equal(ok.status, 200, ok.text);
  const noAuthRefresh = await h.token({ grant_type: 'refresh_token', refresh_token: ok.json.refresh_token, client_id: app.clientId });
  t.equal(noAuthRefresh.json.error, 'invalid_client', 'refresh needs client authentication too');
  const refresh = await h.token({ grant_type: 'refresh_token', refresh_token: ok.json.refresh_token }, { authorization: basic(app.clientId, app.clientSecret!) });
  t.equal(refresh.status, 200);
});

t.test('authorization request validation (A4): page errors and redirect errors', async (t) => {
  const h = await startHarness(t);
  const app = await appAndUsers(h);
  const base = baseParams(h, app);
  const pageError = async (name: string, params: Record<string, string | undefined>) => {
    const res = await h.request('GET', authorizeUrl(h, params));
    t.equal(res.status, 400, `${name}: 400 page`);
    t.match(res.headers['content-type'], /text\/html/);
    t.notOk(res.headers.location, `${name}: no redirect`);
  };
  await pageError('missing client_id', { ...base, client_id: undefined });
  await pageError('unknown client_id', { ...base, client_id: 'ghost' });
  await pageError('missing redirect_uri', { ...base, redirect_uri: undefined });
  await pageError('unregistered redirect_uri', { ...base, redirect_uri: 'https://evil.example/callback' });
  await pageError('redirect_uri prefix match is not enough', { ...base, redirect_uri: `${app.redirectUri}/x` });
  await pageError('non-URL redirect_uri', { ...base, redirect_uri: 'not a url' });
  const dup = await h.request('GET', `${authorizeUrl(h, base)}&client_id=${app.clientId}`);
  t.equal(dup.status, 400, 'repeated parameter');

  const redirectError = async (name: string, params: Record<string, string | undefined>, error: string) => {
    const res = await h.request('GET', authorizeUrl(h, params));
    t.equal(res.status, 302, `${name}: redirect`);
    const loc = new URL(String(res.headers.location));
    t.equal(`${loc.origin}${loc.pathname}`, app.redirectUri);
    t.equal(loc.searchParams.get('error'), error, `${name}: ${error}`);
    if (params.state) t.equal(loc.searchParams.get('state'), params.state, `${name}: state echoed`);
  };
  await redirectError('missing response_type', { ...base, response_type: undefined }, 'invalid_request');
  await redirectError('response_type token', { ...base, response_type: 'token' }, 'unsupported_response_type');
  await redirectError('missing aud', { ...base, aud: undefined }, 'invalid_request');
  await redirectError('aud not a URL', { ...base, aud: 'banana' }, 'invalid_request');
  await redirectError('aud of another server', { ...base, aud: 'https://other.example/fhir' }, 'invalid_request');
  await redirectError('missing code_challenge', { ...base, code_challenge: undefined }, 'invalid_request');
  await redirectError('missing code_challenge_method', { ...base, code_challenge_method: undefined }, 'invalid_request');
  await redirectError('plain method', { ...base, code_challenge_method: 'plain' }, 'invalid_request');
  await redirectError('method without challenge', { ...base, code_challenge: undefined }, 'invalid_request');
  await redirectError('malformed challenge', { ...base, code_challenge: 'short' }, 'invalid_request');
  await redirectError('missing state', { ...base, state: undefined }, 'invalid_request');
  await redirectError('nothing grantable', { ...base, scope: 'system/*.* user/Patient.cud' }, 'invalid_scope');
  await redirectError('missing scope', { ...base, scope: undefined }, 'invalid_scope');
  await redirectError('EHR launch', { ...base, launch: 'abc' }, 'invalid_request');

  // aud with a trailing slash is the same server.
  const ok = await h.request('GET', authorizeUrl(h, { ...base, aud: `${h.fhirBase}/` }));
  t.equal(ok.status, 200);
  t.match(ok.text, /name="form_token"/);
  t.equal(ok.headers['x-frame-options'], 'DENY', 'no framing');
  t.match(ok.headers['content-security-policy'], /frame-ancestors 'none'/);
  t.match(ok.headers['set-cookie'], /HttpOnly; SameSite=Lax/);
});

t.test('POST /authorize (authorize-post) works like GET', async (t) => {
  const h = await startHarness(t);
  const app = await appAndUsers(h);
  const res = await h.request('POST', '/auth/authorize', { form: baseParams(h, app) });
  t.equal(res.status, 200);
  t.match(res.text, /Sign in/);
  const json = await h.request('POST', '/auth/authorize', { json: baseParams(h, app) });
  t.equal(json.status, 400);
});

t.test('login page: wrong password, CSRF, forged and stale form tokens, denial', async (t) => {
  const h = await startHarness(t);
  const app = await appAndUsers(h);
  const page = await h.request('GET', authorizeUrl(h, baseParams(h, app)));
  const cookie = cookieOf(page.headers);
  const token = formToken(page.text);

  const wrong = await h.request('POST', '/auth/authorize/login', { form: { form_token: token, username: 'alice', password: 'nope' }, headers: { cookie } });
  t.equal(wrong.status, 401);
  t.match(wrong.text, /wrong password/);
  t.notMatch(wrong.text, /nope/, 'the password is not echoed');
  const unknown = await h.request('POST', '/auth/authorize/login', { form: { form_token: token, username: 'mallory', password: 'whatever1' }, headers: { cookie } });
  t.equal(unknown.status, 401);

  const noCookie = await h.request('POST', '/auth/authorize/login', { form: { form_token: token, username: 'alice', password: 'correct horse battery' } });
  t.equal(noCookie.status, 400, 'CSRF: no cookie');
  const otherCookie = await h.request('POST', '/auth/authorize/login', {
    form: { form_token: token, username: 'alice', password: 'correct horse battery' },
    headers: { cookie: 'vellum_authz=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' },
  });
  t.equal(otherCookie.status, 400, "CSRF: another browser's cookie");
  const [payload, mac] = token.split('.');
  const altered = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(payload!, 'base64url').toString()), request: { clientId: app.clientId, redirectUri: 'https://evil.example/', scope: 'user/*.rs', state: 's', codeChallenge: 'x'.repeat(43) } })).toString('base64url');
  const forged = await h.request('POST', '/auth/authorize/login', { form: { form_token: `${altered}.${mac}`, username: 'alice', password: 'correct horse battery' }, headers: { cookie } });
  t.equal(forged.status, 400, 'altered form token');
  const approveWithLoginToken = await h.request('POST', '/auth/authorize/approve', { form: { form_token: token, decision: 'approve' }, headers: { cookie } });
  t.equal(approveWithLoginToken.status, 400, 'a login token cannot approve');
  const garbage = await h.request('POST', '/auth/authorize/login', { body: '%%%', headers: { cookie, 'content-type': 'text/plain' } });
  t.equal(garbage.status, 400);

  h.advance(3600);
  const stale = await h.request('POST', '/auth/authorize/login', { form: { form_token: token, username: 'alice', password: 'correct horse battery' }, headers: { cookie } });
  t.equal(stale.status, 400, 'expired form token');
  h.advance(-3600);

  const login = await h.request('POST', '/auth/authorize/login', { form: { form_token: token, username: 'alice', password: 'correct horse battery' }, headers: { cookie } });
  t.equal(login.status, 200);
  t.match(login.text, /patient\/\*\.rs/, 'the approval page lists scopes');
  const deny = await h.request('POST', '/auth/authorize/approve', { form: { form_token: formToken(login.text), decision: 'deny' }, headers: { cookie } });
  t.equal(deny.status, 303);
  const loc = new URL(String(deny.headers.location));
  t.equal(loc.searchParams.get('error'), 'access_denied', 'A3 denial redirects with error');
  t.equal(loc.searchParams.get('state'), 'st-123');
});

t.test('HTML is escaped', async (t) => {
  const h = await startHarness(t);
  const reg = await h.register(
    { client_name: '<script>alert(1)</script>', token_endpoint_auth_method: 'none', redirect_uris: ['https://a.example/cb'], scope: 'patient/*.rs' },
    await h.adminToken(),
  );
  const page = await h.request('GET', authorizeUrl(h, { ...baseParams(h, { clientId: reg.json.client_id, redirectUri: 'https://a.example/cb' }), scope: 'patient/*.rs' }));
  t.equal(page.status, 200);
  t.notMatch(page.text, /<script>/);
  t.match(page.text, /&#60;script&#62;/);
});
