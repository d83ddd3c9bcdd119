/**
 * The bearer-token verifier of the FHIR request path: attacks on access tokens (alg none, HS/RS key
 * confusion, expired, wrong audience / issuer, tampered, too long-lived, id token as access token),
 * resource-server mode against an external issuer's JWKS over HTTP, and the scope decision.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { decodeJwt, exportJWK, exportSPKI, generateKeyPair, SignJWT, UnsecuredJWT } from 'jose';
import t, { type Test } from 'tap';
import { loadAuthConfig } from '../../../src/fhir/auth/config.ts';
import { createAuthVerifier } from '../../../src/fhir/auth/index.ts';
import { parseScopes } from '../../../src/fhir/auth/scopes.ts';
import { bearerToken, createTokenVerifier, decide, insufficientScope, type Principal } from '../../../src/fhir/auth/verify.ts';
import { FhirError } from '../../../src/fhir/errors.ts';
import { basic, startHarness, type Harness } from './harness.ts';

async function rejects(t: Test, promise: Promise<unknown>, vellumCode: string, status = 401, name = vellumCode): Promise<void> {
  try {
    await promise;
    t.fail(`${name}: accepted`);
  } catch (err) {
    t.ok(err instanceof FhirError, `${name}: a FhirError`);
    const e = err as FhirError;
    t.equal(e.status, status, `${name}: status ${status}`);
    t.equal(e.issues[0]?.vellumCode, vellumCode, `${name}: ${vellumCode}`);
    if (status === 401) t.match(e.headers['WWW-Authenticate'], /^Bearer realm="vellum"/, `${name}: challenge`);
  }
}

/** Sign a token with the server's own current key (for claims the server would never issue). */
async function serverSigned(h: Harness, claims: Record<string, unknown>, header: Record<string, unknown> = {}): Promise<string> {
  const key = h.auth.keys.current();
  const payload: Record<string, unknown> = {
    iss: 'http://vellum.test/auth',
    aud: 'http://vellum.test/fhir',
    sub: 'c1',
    iat: h.now(),
    exp: h.now() + 600,
    client_id: 'c1',
    scope: 'system/*.rs',
    ...claims,
  };
  return new SignJWT(payload).setProtectedHeader({ alg: 'RS256', kid: key.kid, typ: 'at+jwt', ...header }).sign(key.privateKey);
}

t.test('access token attacks at the verifier (embedded mode)', async (t) => {
  const h = await startHarness(t);
  const good = await h.adminToken('system/Patient.rs');
  const v = h.auth.verifier;
  t.match(await v.verify(good), { clientId: h.admin.clientId, context: 'system', admin: false });
  t.match(await v.verify(await serverSigned(h, {})), { clientId: 'c1', subject: 'c1' }, 'a well-formed server token passes');

  const claims = decodeJwt(good);
  await rejects(t, v.verify(new UnsecuredJWT(claims).encode()), 'VLM_AUTH_TOKEN_ALG', 401, 'alg none');
  // HS256 keyed with the public key in every form an attacker might try (RS/HS key confusion).
  const jwk = h.auth.keys.jwks().keys[0]!;
  const { importJWK } = await import('jose');
  const pem = await exportSPKI((await importJWK(jwk, 'RS256', { extractable: true })) as Parameters<typeof exportSPKI>[0]);
  for (const [name, secret] of [
    ['PEM', pem],
    ['JWK JSON', JSON.stringify(jwk)],
    ['modulus', String(jwk.n)],
  ] as const) {
    const forged = await new SignJWT(claims).setProtectedHeader({ alg: 'HS256', kid: jwk.kid, typ: 'at+jwt' }).sign(new TextEncoder().encode(secret));
    await rejects(t, v.verify(forged), 'VLM_AUTH_TOKEN_ALG', 401, `HS256 with the public key (${name})`);
  }
  const es = await generateKeyPair('ES256');
  await rejects(t, v.verify(await new SignJWT(claims).setProtectedHeader({ alg: 'ES256', typ: 'at+jwt' }).sign(es.privateKey)), 'VLM_AUTH_TOKEN_ALG', 401, 'ES256 not on the list');
  const otherRsa = await generateKeyPair('RS256');
  await rejects(
    t,
    v.verify(await new SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid: jwk.kid, typ: 'at+jwt' }).sign(otherRsa.privateKey)),
    'VLM_AUTH_TOKEN_INVALID',
    401,
    'signed by a stranger with our kid',
  );
  const [hd, , sig] = good.split('.');
  const tampered = Buffer.from(JSON.stringify({ ...claims, scope: 'system/*.*', vellum_admin: true })).toString('base64url');
  await rejects(t, v.verify(`${hd}.${tampered}.${sig}`), 'VLM_AUTH_TOKEN_INVALID', 401, 'tampered payload');
  await rejects(t, v.verify(await serverSigned(h, { aud: 'https://other.example/fhir' })), 'VLM_AUTH_TOKEN_AUDIENCE', 401, 'wrong audience');
  await rejects(t, v.verify(await serverSigned(h, { iss: 'https://evil.example/auth' })), 'VLM_AUTH_TOKEN_ISSUER', 401, 'wrong issuer');
  await rejects(t, v.verify(await serverSigned(h, {}, { typ: 'JWT' })), 'VLM_AUTH_TOKEN_CLAIMS', 401, 'not typed at+jwt (an id token)');
  await rejects(t, v.verify(await serverSigned(h, { client_id: undefined })), 'VLM_AUTH_TOKEN_CLAIMS', 401, 'no client_id');
  await rejects(t, v.verify(await serverSigned(h, { exp: h.now() + 30 * 86_400 })), 'VLM_AUTH_TOKEN_CLAIMS', 401, 'exp too far ahead');
  await rejects(t, v.verify(await serverSigned(h, { nbf: h.now() + 600 })), 'VLM_AUTH_TOKEN_CLAIMS', 401, 'not yet valid');
  await rejects(t, v.verify('abc'), 'VLM_AUTH_TOKEN_MALFORMED', 401, 'not a JWT');
  await rejects(t, v.verify('a.b.c'), 'VLM_AUTH_TOKEN_MALFORMED', 401, 'garbage JWT');
  await rejects(t, v.verify('x'.repeat(20_000)), 'VLM_AUTH_TOKEN_MALFORMED', 401, 'huge');
  await rejects(t, v.verify(undefined), 'VLM_AUTH_TOKEN_MISSING', 401, 'missing');

  // Expiry with clock skew: 30 s of grace, no more.
  h.advance(3600 + 10);
  t.ok(await v.verify(good), 'within the clock skew');
  h.advance(60);
  await rejects(t, v.verify(good), 'VLM_AUTH_TOKEN_EXPIRED', 401, 'expired');
  const introspected = await h.request('POST', '/auth/introspect', { form: { token: good }, headers: { authorization: basic(h.admin.clientId, h.admin.secret) } });
  t.same(introspected.json, { active: false }, 'an expired token introspects inactive, nothing more');

  // The stub FHIR route answers 401 with an OperationOutcome and WWW-Authenticate.
  const res = await h.request('GET', '/fhir/Patient/1');
  t.equal(res.status, 401);
  t.equal(res.json.resourceType, 'OperationOutcome');
  t.equal(res.json.issue[0].code, 'login');
  t.match(res.headers['www-authenticate'], /^Bearer/);
});

t.test('key rotation keeps old tokens valid and publishes both keys', async (t) => {
  const h = await startHarness(t);
  const before = await h.adminToken();
  const oldKid = h.auth.keys.current().kid;
  const newKid = await h.auth.keys.rotate();
  t.not(newKid, oldKid);
  const jwks = (await h.request('GET', '/auth/jwks')).json;
  t.same(jwks.keys.map((k: { kid: string }) => k.kid), [newKid, oldKid], 'both keys published, new first');
  for (const k of jwks.keys) {
    t.notOk('d' in k || 'p' in k || 'q' in k, 'public parts only');
    t.match(k, { kty: 'RSA', alg: 'RS256', use: 'sig' });
  }
  t.ok(await h.auth.verifier.verify(before), 'a token of the old key still verifies');
  const after = await h.adminToken();
  const { decodeProtectedHeader } = await import('jose');
  t.equal(decodeProtectedHeader(after).kid, newKid, 'new tokens use the new key');
  t.ok(await h.auth.verifier.verify(after));
});

t.test('bearerToken parses the Authorization header', async (t) => {
  t.equal(bearerToken('Bearer abc.def.ghi'), 'abc.def.ghi');
  t.equal(bearerToken('bearer abc'), 'abc');
  for (const [header, code] of [
    [undefined, 'VLM_AUTH_TOKEN_MISSING'],
    ['', 'VLM_AUTH_TOKEN_MISSING'],
    ['Basic abc', 'VLM_AUTH_TOKEN_MALFORMED'],
    ['Bearer', 'VLM_AUTH_TOKEN_MALFORMED'],
    ['Bearer a b', 'VLM_AUTH_TOKEN_MALFORMED'],
    [['Bearer a', 'Bearer b'], 'VLM_AUTH_TOKEN_MALFORMED'],
  ] as const) {
    try {
      bearerToken(header as string | string[] | undefined);
      t.fail(`accepted ${JSON.stringify(header)}`);
    } catch (err) {
      t.equal((err as FhirError).issues[0]?.vellumCode, code, JSON.stringify(header));
      t.equal((err as FhirError).status, 401);
    }
  }
  const missing = (() => {
    try {
      bearerToken(undefined);
    } catch (err) {
      return err as FhirError;
    }
  })();
  t.equal(missing?.headers['WWW-Authenticate'], 'Bearer realm="vellum"', 'RFC 6750 §3.1: no error code when the token is absent');
});

t.test('decide: scope decision per context', async (t) => {
  const p = (scope: string, extra: Partial<Principal> = {}): Principal => ({
    clientId: 'c',
    subject: 's',
    scopes: parseScopes(scope).scopes,
    scope,
    context: 'user',
    purposeOfUse: 'TREAT',
    admin: false,
    expiresAt: 0,
    ...extra,
  });
  t.same(decide(p('system/*.rs', { context: 'system' }), 'read', 'Patient'), { allowed: true });
  t.same(decide(p('system/*.rs', { context: 'system' }), 'create', 'Patient'), { allowed: false });
  t.same(decide(p('user/*.rs'), 'search', 'Observation'), { allowed: true });
  t.same(decide(p('patient/*.rs', { patient: 'p1' }), 'search', 'Observation'), { allowed: true, patient: 'p1' }, 'practitioner with a patient in context');
  t.same(decide(p('patient/*.rs'), 'search', 'Observation'), { allowed: false }, 'patient scope without a patient grants nothing');
  t.same(decide(p('patient/*.rs user/*.rs', { context: 'patient', patient: 'p1' }), 'read', 'Observation'), { allowed: true, patient: 'p1' }, 'patient users stay in their compartment');
  t.same(decide(p('user/*.rs', { context: 'patient', patient: 'p1' }), 'read', 'Observation'), { allowed: true, patient: 'p1' });
  t.same(decide(p('user/*.rs', { context: 'system' }), 'read', 'Observation'), { allowed: false });
  const e = insufficientScope('delete', 'Patient');
  t.equal(e.status, 403);
  t.equal(e.issues[0]?.vellumCode, 'VLM_AUTH_SCOPE_INSUFFICIENT');
  t.match(e.headers['WWW-Authenticate'], /insufficient_scope/);
});

t.test('resource-server mode: an external issuer and its JWKS over HTTP', async (t) => {
  const { privateKey, publicKey } = await generateKeyPair('RS384');
  const jwk = { ...(await exportJWK(publicKey)), kid: 'ext-1', alg: 'RS384', use: 'sig' };
  let fetches = 0;
  const server = http.createServer((req, res) => {
    fetches++;
    if (req.url === '/jwks') res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [jwk] }));
    else res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const port = (server.address() as AddressInfo).port;
  const issuer = 'https://idp.example.org/realms/hie';
  const config = loadAuthConfig(
    { VELLUM_AUTH: 'external', VELLUM_OAUTH_ISSUER: issuer, VELLUM_OAUTH_JWKS_URL: `http://127.0.0.1:${port}/jwks` },
    'https://fhir.example.org/fhir',
  );
  const v = createAuthVerifier(config)!;
  const sign = (claims: Record<string, unknown>, alg = 'RS384', key: Parameters<SignJWT['sign']>[0] = privateKey) =>
    new SignJWT({
      iss: issuer,
      aud: 'https://fhir.example.org/fhir',
      sub: 'u-9',
      iat: Math.floor(Date.now() / 1000),
      exp: Math.floor(Date.now() / 1000) + 300,
      scope: 'user/*.rs launch/patient',
      azp: 'ext-app',
      fhirUser: 'Practitioner/9',
      ...claims,
    })
      .setProtectedHeader({ alg, kid: 'ext-1' })
      .sign(key);
  const principal = await v.verify(await sign({ purpose_of_use: 'HPAYMT' }));
  t.match(principal, { clientId: 'ext-app', subject: 'u-9', context: 'user', fhirUser: 'Practitioner/9', purposeOfUse: 'HPAYMT', admin: false });
  t.equal((await v.verify(await sign({ vellum_admin: true }))).admin, false, 'external tokens never make an administrator');
  const scp = await v.verify(await sign({ scope: undefined, scp: ['system/*.rs'] }));
  t.equal(scp.context, 'system', 'scp array accepted');
  t.ok(fetches >= 1, 'the JWKS was fetched over HTTP');

  await rejects(t, v.verify(await sign({ iss: 'https://evil.example' })), 'VLM_AUTH_TOKEN_ISSUER');
  await rejects(t, v.verify(await sign({ aud: 'https://other.example/fhir' })), 'VLM_AUTH_TOKEN_AUDIENCE');
  await rejects(t, v.verify(await sign({ exp: Math.floor(Date.now() / 1000) - 3600 })), 'VLM_AUTH_TOKEN_EXPIRED');
  const pem = await exportSPKI(publicKey);
  await rejects(t, v.verify(await sign({}, 'HS256', new TextEncoder().encode(pem))), 'VLM_AUTH_TOKEN_ALG', 401, 'HS256 keyed with the public key');
  await rejects(t, v.verify(new UnsecuredJWT({ iss: issuer, aud: 'https://fhir.example.org/fhir', sub: 'x', scope: 'user/*.rs', azp: 'a', exp: 9e9 }).encode()), 'VLM_AUTH_TOKEN_ALG');
  const stranger = await generateKeyPair('RS384');
  await rejects(t, v.verify(await sign({}, 'RS384', stranger.privateKey)), 'VLM_AUTH_TOKEN_INVALID', 401, 'signed by another key');

  // The issuer's JWKS unreachable → 503, not 401.
  const down = createTokenVerifier({ mode: 'external', issuer, jwksUrl: 'http://127.0.0.1:9/jwks', audience: 'https://fhir.example.org/fhir', algorithms: ['RS384'] });
  await rejects(t, down.verify(await sign({})), 'VLM_AUTH_ISSUER_UNAVAILABLE', 503);
});
