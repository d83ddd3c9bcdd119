/**
 * The token endpoint: every RFC 6749 §5.2 error code, client_secret_basic, and SMART Backend
 * Services (client_credentials + private_key_jwt, RS384 and ES384) including the attacks on client
 * assertions (https://hl7.org/fhir/smart-app-launch/STU2.2/client-confidential-asymmetric.html;
 * smart-checks.md B1–B8, T5, T9).
 */
import { createHash } from 'node:crypto';
import { decodeJwt, decodeProtectedHeader, exportSPKI, generateKeyPair, SignJWT, UnsecuredJWT } from 'jose';
import t, { type Test } from 'tap';
import { backendForm, backendKey, basic, clientAssertion, registerBackendClient, startHarness, type Harness } from './harness.ts';

async function expectError(t: Test, res: { status: number; json: any; headers: Record<string, unknown> }, status: number, error: string) {
  t.equal(res.status, status, `status ${status}`);
  t.equal(res.json?.error, error, `error ${error}`);
  t.type(res.json?.error_description, 'string', 'has error_description');
  t.match(String(res.headers['content-type']), /^application\/json/);
  t.match(String(res.headers['cache-control']), /no-store/);
}

t.test('request-level errors', async (t) => {
  const h = await startHarness(t);
  const admin = { authorization: basic(h.admin.clientId, h.admin.secret) };
  await expectError(t, await h.request('POST', '/auth/token', { json: { grant_type: 'client_credentials' }, headers: admin }), 400, 'invalid_request');
  await expectError(t, await h.request('POST', '/auth/token', { body: 'grant_type=client_credentials', headers: { ...admin, 'content-type': 'text/plain' } }), 400, 'invalid_request');
  await expectError(t, await h.request('POST', '/auth/token', { headers: admin }), 400, 'invalid_request');
  await expectError(t, await h.token({ scope: 'system/*.*' }, admin), 400, 'invalid_request');
  await expectError(t, await h.token({ grant_type: 'password', username: 'a', password: 'b' }, admin), 400, 'unsupported_grant_type');
  await expectError(t, await h.token({ grant_type: 'implicit' }, admin), 400, 'unsupported_grant_type');
  await expectError(t, await h.token('grant_type=client_credentials&grant_type=client_credentials&scope=system/*.*', admin), 400, 'invalid_request');
  await expectError(t, await h.token({ grant_type: 'client_credentials' }, admin), 400, 'invalid_request');
  await expectError(t, await h.token({ grant_type: 'client_credentials', scope: 'system/*.*', purpose_of_use: 'SHOPPING' }, admin), 400, 'invalid_request');
  const big = await h.request('POST', '/auth/token', { form: { grant_type: 'client_credentials', scope: 'x'.repeat(100_000) }, headers: admin });
  t.equal(big.status, 413, 'oversized body');
  t.equal(big.json.error, 'invalid_request');
});

t.test('client_secret_basic (the administrator)', async (t) => {
  const h = await startHarness(t);
  const res = await h.token({ grant_type: 'client_credentials', scope: 'system/*.* openid' }, { authorization: basic(h.admin.clientId, h.admin.secret) });
  t.equal(res.status, 200);
  t.match(res.json, { token_type: 'Bearer', expires_in: 3600, scope: 'system/*.*' });
  t.notOk(res.json.refresh_token, 'no refresh token for client_credentials');
  t.match(res.headers['cache-control'], /no-store/, 'T5 Cache-Control');
  t.match(res.headers.pragma, /no-cache/, 'T5 Pragma');
  t.equal(res.headers['access-control-allow-origin'], '*', 'T6 CORS');
  const header = decodeProtectedHeader(res.json.access_token);
  t.match(header, { alg: 'RS256', typ: 'at+jwt', kid: String });
  const claims = decodeJwt(res.json.access_token);
  t.match(claims, {
    iss: 'http://vellum.test/auth',
    aud: 'http://vellum.test/fhir',
    sub: h.admin.clientId,
    client_id: h.admin.clientId,
    scope: 'system/*.*',
    purpose_of_use: 'TREAT',
    vellum_admin: true,
    jti: String,
  });
  t.equal(claims.exp! - claims.iat!, 3600);

  const withPurpose = await h.token({ grant_type: 'client_credentials', scope: 'system/Patient.rs', purpose_of_use: 'ETREAT' }, { authorization: basic(h.admin.clientId, h.admin.secret) });
  t.equal(decodeJwt(withPurpose.json.access_token).purpose_of_use, 'ETREAT');
  t.notOk(decodeJwt(withPurpose.json.access_token).vellum_admin, 'admin only with system/*.*');

  await expectError(t, await h.token({ grant_type: 'client_credentials', scope: 'system/*.*' }, { authorization: basic(h.admin.clientId, 'wrong') }), 401, 'invalid_client');
  const wrong = await h.token({ grant_type: 'client_credentials', scope: 'system/*.*' }, { authorization: basic(h.admin.clientId, 'wrong') });
  t.match(wrong.headers['www-authenticate'], /^Basic/, 'Basic challenge on failed Basic auth');
  await expectError(t, await h.token({ grant_type: 'client_credentials', scope: 'system/*.*' }, { authorization: basic('nobody', h.admin.secret) }), 401, 'invalid_client');
  await expectError(t, await h.token({ grant_type: 'client_credentials', scope: 'system/*.*' }, { authorization: 'Basic !!!' }), 401, 'invalid_client');
  await expectError(t, await h.token({ grant_type: 'client_credentials', scope: 'system/*.*' }, { authorization: `Basic ${Buffer.from('nocolon').toString('base64')}` }), 401, 'invalid_client');
  await expectError(t, await h.token({ grant_type: 'client_credentials', scope: 'system/*.*' }, { authorization: 'Bearer abc' }), 401, 'invalid_client');
  await expectError(t, await h.token({ grant_type: 'client_credentials', scope: 'system/*.*' }), 401, 'invalid_client');
  await expectError(t, await h.token({ grant_type: 'client_credentials', scope: 'system/*.*', client_id: h.admin.clientId, client_secret: h.admin.secret }), 401, 'invalid_client');
  await expectError(
    t,
    await h.token({ grant_type: 'client_credentials', scope: 'system/*.*', client_id: 'someone-else' }, { authorization: basic(h.admin.clientId, h.admin.secret) }),
    401,
    'invalid_client',
  );
  // invalid_scope: nothing grantable, or unparseable.
  await expectError(t, await h.token({ grant_type: 'client_credentials', scope: 'patient/*.rs openid' }, { authorization: basic(h.admin.clientId, h.admin.secret) }), 400, 'invalid_scope');
  await expectError(t, await h.token({ grant_type: 'client_credentials', scope: 'system/*.* banana' }, { authorization: basic(h.admin.clientId, h.admin.secret) }), 400, 'invalid_scope');
  // unauthorized_client: the admin client is not registered for authorization_code.
  await expectError(
    t,
    await h.token({ grant_type: 'authorization_code', code: 'x', redirect_uri: 'https://a/b', code_verifier: 'v'.repeat(43) }, { authorization: basic(h.admin.clientId, h.admin.secret) }),
    400,
    'unauthorized_client',
  );
});

async function backend(t: Test, alg: 'RS384' | 'ES384'): Promise<void> {
  const h = await startHarness(t);
  const client = await registerBackendClient(h, { alg, fhirUser: 'Organization/hie1' });
  const res = await h.token(backendForm(await clientAssertion(h, client), { scope: 'system/Observation.rs system/Patient.read system/Condition.cruds', purpose_of_use: 'HPAYMT' }));
  t.equal(res.status, 200, res.text);
  t.equal(res.json.token_type, 'Bearer');
  t.equal(res.json.expires_in, 3600);
  t.equal(res.json.scope, 'system/Observation.rs system/Patient.read system/Condition.rs', 'requested ∩ registered');
  t.match(decodeJwt(res.json.access_token), { sub: client.clientId, client_id: client.clientId, fhirUser: 'Organization/hie1', purpose_of_use: 'HPAYMT' });
  t.notOk(decodeJwt(res.json.access_token).vellum_admin);
  const principal = await h.auth.verifier.verify(res.json.access_token);
  t.match(principal, { clientId: client.clientId, context: 'system', purposeOfUse: 'HPAYMT', admin: false, fhirUser: 'Organization/hie1' });
}

t.test('Backend Services with ES384', (t) => backend(t, 'ES384'));
t.test('Backend Services with RS384', (t) => backend(t, 'RS384'));

t.test('client assertion attacks → invalid_client', async (t) => {
  const h = await startHarness(t);
  const client = await registerBackendClient(h);
  const send = (assertion: string, extra: Record<string, string> = {}) => h.token(backendForm(assertion, extra));
  const attempt = async (name: string, assertion: string | Promise<string>, status = 401, error = 'invalid_client') => {
    const res = await send(await assertion);
    t.equal(res.status, status, `${name}: status`);
    t.equal(res.json.error, error, `${name}: ${error}`);
  };

  // alg none
  const none = new UnsecuredJWT({ iss: client.clientId, sub: client.clientId, aud: h.tokenUrl, exp: h.now() + 60, jti: 'n1' }).encode();
  await attempt('alg none', none);
  // HS256 with the public key as the secret (key confusion)
  const { publicKey } = await generateKeyPair('RS384', { extractable: true });
  const pem = await exportSPKI(publicKey);
  const hs = await new SignJWT({ iss: client.clientId, sub: client.clientId, aud: h.tokenUrl, exp: h.now() + 60, jti: 'hs1' })
    .setProtectedHeader({ alg: 'HS256', kid: client.kid, typ: 'JWT' })
    .sign(new TextEncoder().encode(pem));
  await attempt('HS256 key confusion', hs);
  const hsJwk = await new SignJWT({ iss: client.clientId, sub: client.clientId, aud: h.tokenUrl, exp: h.now() + 60, jti: 'hs2' })
    .setProtectedHeader({ alg: 'HS384', kid: client.kid, typ: 'JWT' })
    .sign(new TextEncoder().encode(JSON.stringify(client.publicJwk)));
  await attempt('HS384 with the JWK as secret', hsJwk);
  // signed by another key
  const stranger = { ...client, ...(await backendKey('ES384')), kid: client.kid };
  await attempt('signed by an unregistered key', clientAssertion(h, stranger));
  // claims
  await attempt('expired', clientAssertion(h, client, { claims: { exp: h.now() - 120 } }));
  await attempt('exp missing', clientAssertion(h, client, { claims: { exp: undefined } }));
  await attempt('exp more than 5 minutes ahead', clientAssertion(h, client, { claims: { exp: h.now() + 600 } }));
  await attempt('jti missing', clientAssertion(h, client, { claims: { jti: undefined } }));
  await attempt('wrong aud', clientAssertion(h, client, { claims: { aud: 'https://elsewhere.example/token' } }));
  await attempt('aud = FHIR base', clientAssertion(h, client, { claims: { aud: h.fhirBase } }));
  await attempt('iss ≠ sub', clientAssertion(h, client, { claims: { sub: 'someone' } }));
  await attempt('unknown iss', clientAssertion(h, client, { claims: { iss: 'ghost', sub: 'ghost' } }));
  await attempt('typ not JWT', clientAssertion(h, client, { header: { typ: 'at+jwt' } }));
  await attempt('kid missing', clientAssertion(h, client, { header: { kid: undefined } }));
  await attempt('jku not registered', clientAssertion(h, client, { header: { jku: 'https://evil.example/jwks' } }));
  await attempt('not a JWT', Promise.resolve('abc.def'));
  await attempt('garbage segments', Promise.resolve('a.b.c'));
  // tampered payload: re-encode the claims with another sub, keep the signature
  const good = await clientAssertion(h, client);
  const [hd, , sig] = good.split('.');
  const forged = Buffer.from(JSON.stringify({ ...decodeJwt(good), scope: 'x' })).toString('base64url');
  await attempt('tampered payload', Promise.resolve(`${hd}.${forged}.${sig}`));

  // replay: the same jti twice
  const once = await clientAssertion(h, client, { claims: { jti: 'replay-me' } });
  t.equal((await send(once)).status, 200, 'first use');
  await attempt('replayed jti', Promise.resolve(once));
  await attempt('replayed jti in a new assertion', clientAssertion(h, client, { claims: { jti: 'replay-me' } }));

  // wrong assertion type / missing pieces
  const assertion = await clientAssertion(h, client);
  const badType = await h.token({ ...backendForm(assertion), client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:saml2-bearer' });
  t.equal(badType.status, 401, 'B4 wrong assertion type');
  t.equal(badType.json.error, 'invalid_client');
  const missing = await h.token({ grant_type: 'client_credentials', scope: 'system/*.rs', client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer' });
  t.equal(missing.status, 400, 'B8 missing client_assertion');
  t.equal(missing.json.error, 'invalid_request');
  const both = await h.token(backendForm(await clientAssertion(h, client)), { authorization: basic(h.admin.clientId, h.admin.secret) });
  t.equal(both.json.error, 'invalid_request', 'two authentication methods');
  const noScope = await h.token({ ...backendForm(await clientAssertion(h, client)), scope: '' });
  t.equal(noScope.status, 400, 'B8 missing scope');
  const userScope = await h.token(backendForm(await clientAssertion(h, client), { scope: 'user/*.rs patient/*.rs' }));
  t.equal(userScope.json.error, 'invalid_scope', 'B7 only system scopes');
  const mismatch = await h.token(backendForm(await clientAssertion(h, client), { client_id: 'other' }));
  t.equal(mismatch.json.error, 'invalid_client', 'client_id must match the assertion');
});

t.test('client_credentials is refused to clients not registered for it, and to public clients', async (t) => {
  const h = await startHarness(t);
  const reg = await h.register(
    { token_endpoint_auth_method: 'client_secret_basic', grant_types: ['authorization_code'], redirect_uris: ['https://a.example/cb'], scope: 'user/*.rs' },
    await h.adminToken(),
  );
  const res = await h.token({ grant_type: 'client_credentials', scope: 'system/*.rs' }, { authorization: basic(reg.json.client_id, reg.json.client_secret) });
  t.equal(res.status, 400);
  t.equal(res.json.error, 'unauthorized_client');
  const pub = await h.register({ token_endpoint_auth_method: 'none', redirect_uris: ['https://a.example/cb'], scope: 'patient/*.rs' }, await h.adminToken());
  const res2 = await h.token({ grant_type: 'client_credentials', scope: 'system/*.rs', client_id: pub.json.client_id });
  t.equal(res2.json.error, 'unauthorized_client');
  // A confidential client that does not authenticate is not let through as a public one.
  const res3 = await h.token({ grant_type: 'client_credentials', scope: 'system/*.rs', client_id: reg.json.client_id });
  t.equal(res3.status, 401);
  t.equal(res3.json.error, 'invalid_client');
});

t.test('client secrets are stored only as hashes', async (t) => {
  const h: Harness = await startHarness(t);
  const fs = await import('node:fs');
  const db = fs.readFileSync(`${h.dataDir}/auth.db`);
  const wal = fs.existsSync(`${h.dataDir}/auth.db-wal`) ? fs.readFileSync(`${h.dataDir}/auth.db-wal`) : Buffer.alloc(0);
  const all = Buffer.concat([db, wal]);
  t.equal(all.indexOf(h.admin.secret), -1, 'the admin secret is not in the database');
  t.not(all.indexOf(createHash('sha256').update(h.admin.secret).digest('hex')), -1, 'its SHA-256 is');
  t.equal((fs.statSync(`${h.dataDir}/auth.db`).mode & 0o777).toString(8), '600', 'auth.db is private');
});
