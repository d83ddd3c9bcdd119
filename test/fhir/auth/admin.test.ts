/**
 * Administration and discovery: the bootstrap administrator file, RFC 7591 registration, login
 * users, RFC 7662 introspection, the SMART configuration, the CapabilityStatement security
 * fragment, OpenID metadata and the JWKS (smart-checks.md D1–D10, I1–I4).
 */
import fs from 'node:fs';
import { decodeJwt } from 'jose';
import t from 'tap';
import { appAndUsers, authorizeThroughPages, backendKey, basic, clientAssertion, registerBackendClient, startHarness } from './harness.ts';

t.test('admin-client.json: created 0600 on first start, reused later, path logged without the secret', async (t) => {
  const dataDir = fs.mkdtempSync(`${(await import('node:os')).tmpdir()}/vellum-auth-admin-`);
  t.teardown(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  const first = await startHarness(t, { dataDir });
  const file = `${dataDir}/admin-client.json`;
  t.equal((fs.statSync(file).mode & 0o777).toString(8), '600', 'mode 0600');
  const content = JSON.parse(fs.readFileSync(file, 'utf8'));
  t.match(content, { client_id: String, client_secret: String, token_url: 'http://vellum.test/auth/token', scope: 'system/*.* user/*.*' });
  const logged = (first as unknown as { logged: object[] }).logged;
  t.match(logged, [{ file }], 'the path is logged');
  t.notMatch(JSON.stringify(logged), content.client_secret, 'the secret is not');
  t.equal((fs.statSync(`${dataDir}/auth/signing-keys.json`).mode & 0o777).toString(8), '600', 'signing keys 0600');
  const kid = first.auth.keys.current().kid;
  const token = await first.adminToken();
  await first.app.close();
  await first.auth.close();

  const second = await startHarness(t, { dataDir });
  t.same(JSON.parse(fs.readFileSync(file, 'utf8')), content, 'reused unchanged');
  t.equal(second.admin.clientId, content.client_id);
  t.equal(second.auth.keys.current().kid, kid, 'signing key reused');
  t.ok(await second.auth.verifier.verify(token), 'tokens survive a restart');
  t.ok(await second.adminToken(), 'the same credentials still work');
});

t.test('admin-client.json is restored or replaced', async (t) => {
  const os = await import('node:os');
  const dataDir = fs.mkdtempSync(`${os.tmpdir()}/vellum-auth-admin-`);
  t.teardown(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  const a = await startHarness(t, { dataDir });
  const original = JSON.parse(fs.readFileSync(`${dataDir}/admin-client.json`, 'utf8'));
  await a.app.close();
  await a.auth.close();
  // The file lost: a new administrator replaces the old one, whose secret nobody holds.
  fs.rmSync(`${dataDir}/admin-client.json`);
  const b = await startHarness(t, { dataDir });
  const replaced = JSON.parse(fs.readFileSync(`${dataDir}/admin-client.json`, 'utf8'));
  t.not(replaced.client_id, original.client_id);
  t.equal((await b.auth.store.getClient(original.client_id)), undefined, 'the old administrator is gone');
  await b.app.close();
  await b.auth.close();
  // The database lost: the administrator is restored from the file.
  for (const f of fs.readdirSync(dataDir)) if (f.startsWith('auth.db')) fs.rmSync(`${dataDir}/${f}`);
  const c = await startHarness(t, { dataDir });
  t.equal(c.admin.clientId, replaced.client_id);
  t.ok(await c.adminToken(), 'restored administrator works');
});

t.test('registration (RFC 7591) needs the administrator token', async (t) => {
  const h = await startHarness(t);
  const key = await backendKey('RS384');
  const metadata = {
    client_name: 'Regional HIE',
    token_endpoint_auth_method: 'private_key_jwt',
    grant_types: ['client_credentials'],
    jwks: { keys: [key.publicJwk] },
    scope: 'system/*.rs',
    fhir_user: 'Organization/hie-1',
  };
  const none = await h.register(metadata);
  t.equal(none.status, 401, 'no token');
  t.equal(none.json.error, 'invalid_token');
  t.match(none.headers['www-authenticate'], /^Bearer/);
  const bad = await h.register(metadata, 'not-a-token');
  t.equal(bad.status, 401, 'garbage token');
  const weak = await h.register(metadata, await h.adminToken('system/Patient.rs'));
  t.equal(weak.status, 403, 'admin client without system/*.*');
  t.equal(weak.json.error, 'insufficient_scope');
  const backend = await registerBackendClient(h);
  const tok = await h.token({
    grant_type: 'client_credentials',
    scope: 'system/*.rs',
    client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
    client_assertion: await clientAssertion(h, backend),
  });
  const other = await h.register(metadata, tok.json.access_token);
  t.equal(other.status, 403, 'another client with system scopes is no administrator');

  const ok = await h.register(metadata, await h.adminToken());
  t.equal(ok.status, 201);
  t.match(ok.json, {
    client_id: String,
    client_id_issued_at: Number,
    client_name: 'Regional HIE',
    token_endpoint_auth_method: 'private_key_jwt',
    grant_types: ['client_credentials'],
    scope: 'system/*.rs',
    fhir_user: 'Organization/hie-1',
    jwks: { keys: [{ kid: key.kid }] },
  });
  t.notOk(ok.json.client_secret, 'no secret for private_key_jwt');
  // The registered client works.
  const res = await h.token({
    grant_type: 'client_credentials',
    scope: 'system/Patient.rs',
    client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
    client_assertion: await clientAssertion(h, { ...key, clientId: ok.json.client_id }),
  });
  t.equal(res.status, 200);
  t.equal(decodeJwt(res.json.access_token).fhirUser, 'Organization/hie-1');

  const basicClient = await h.register({ token_endpoint_auth_method: 'client_secret_basic', grant_types: ['client_credentials'], scope: 'system/Observation.rs' }, await h.adminToken());
  t.equal(basicClient.status, 201);
  t.match(basicClient.json, { client_secret: String, client_secret_expires_at: 0 });
  const res2 = await h.token({ grant_type: 'client_credentials', scope: 'system/Observation.rs' }, { authorization: basic(basicClient.json.client_id, basicClient.json.client_secret) });
  t.equal(res2.status, 200);
});

t.test('invalid client metadata → 400 invalid_client_metadata / invalid_redirect_uri', async (t) => {
  const h = await startHarness(t);
  const token = await h.adminToken();
  const key = await backendKey();
  const rsaKey = await backendKey('RS384');
  const { privateJwk } = key;
  const cases: [string, unknown, string][] = [
    ['not an object', [1, 2], 'invalid_client_metadata'],
    ['unknown auth method', { token_endpoint_auth_method: 'client_secret_post', scope: 'system/*.rs', grant_types: ['client_credentials'] }, 'invalid_client_metadata'],
    ['unknown grant', { grant_types: ['password'], scope: 'system/*.rs' }, 'invalid_client_metadata'],
    ['refresh without code', { grant_types: ['refresh_token'], scope: 'user/*.rs', redirect_uris: ['https://a.example/cb'] }, 'invalid_client_metadata'],
    ['public client_credentials', { token_endpoint_auth_method: 'none', grant_types: ['client_credentials'], scope: 'system/*.rs' }, 'invalid_client_metadata'],
    ['code without redirect_uris', { grant_types: ['authorization_code'], scope: 'user/*.rs' }, 'invalid_redirect_uri'],
    ['http redirect off loopback', { redirect_uris: ['http://app.example/cb'], scope: 'user/*.rs' }, 'invalid_redirect_uri'],
    ['redirect with fragment', { redirect_uris: ['https://app.example/cb#x'], scope: 'user/*.rs' }, 'invalid_redirect_uri'],
    ['javascript: redirect', { redirect_uris: ['javascript:alert(1)'], scope: 'user/*.rs' }, 'invalid_redirect_uri'],
    ['relative redirect', { redirect_uris: ['/cb'], scope: 'user/*.rs' }, 'invalid_redirect_uri'],
    ['no scope', { grant_types: ['client_credentials'] }, 'invalid_client_metadata'],
    ['bad scope', { grant_types: ['client_credentials'], scope: 'system/*.rs banana' }, 'invalid_client_metadata'],
    ['bad fhir_user', { grant_types: ['client_credentials'], scope: 'system/*.rs', fhir_user: 'Observation/1' }, 'invalid_client_metadata'],
    ['private_key_jwt without keys', { token_endpoint_auth_method: 'private_key_jwt', grant_types: ['client_credentials'], scope: 'system/*.rs' }, 'invalid_client_metadata'],
    ['private key in jwks', { token_endpoint_auth_method: 'private_key_jwt', grant_types: ['client_credentials'], scope: 'system/*.rs', jwks: { keys: [privateJwk] } }, 'invalid_client_metadata'],
    ['symmetric key in jwks', { token_endpoint_auth_method: 'private_key_jwt', grant_types: ['client_credentials'], scope: 'system/*.rs', jwks: { keys: [{ kty: 'oct', k: 'c2VjcmV0', kid: 'x' }] } }, 'invalid_client_metadata'],
    ['key without kid', { token_endpoint_auth_method: 'private_key_jwt', grant_types: ['client_credentials'], scope: 'system/*.rs', jwks: { keys: [{ ...key.publicJwk, kid: undefined }] } }, 'invalid_client_metadata'],
    ['HS alg in jwks', { token_endpoint_auth_method: 'private_key_jwt', grant_types: ['client_credentials'], scope: 'system/*.rs', jwks: { keys: [{ ...rsaKey.publicJwk, alg: 'HS256' }] } }, 'invalid_client_metadata'],
    ['jwks and jwks_uri', { token_endpoint_auth_method: 'private_key_jwt', grant_types: ['client_credentials'], scope: 'system/*.rs', jwks: { keys: [key.publicJwk] }, jwks_uri: 'https://a.example/jwks' }, 'invalid_client_metadata'],
    ['jwks for a secret client', { token_endpoint_auth_method: 'client_secret_basic', grant_types: ['client_credentials'], scope: 'system/*.rs', jwks: { keys: [key.publicJwk] } }, 'invalid_client_metadata'],
    ['empty jwks', { token_endpoint_auth_method: 'private_key_jwt', grant_types: ['client_credentials'], scope: 'system/*.rs', jwks: { keys: [] } }, 'invalid_client_metadata'],
    ['garbage key', { token_endpoint_auth_method: 'private_key_jwt', grant_types: ['client_credentials'], scope: 'system/*.rs', jwks: { keys: [{ kty: 'EC', crv: 'P-384', x: 'AAAA', y: 'BBBB', kid: 'k' }] } }, 'invalid_client_metadata'],
    ['response_type token', { response_types: ['token'], redirect_uris: ['https://a.example/cb'], scope: 'user/*.rs' }, 'invalid_client_metadata'],
  ];
  for (const [name, body, error] of cases) {
    const res = await h.register(body as Record<string, unknown>, token);
    t.equal(res.status, 400, `${name}: 400`);
    t.equal(res.json?.error, error, `${name}: ${error}`);
  }
  const notJson = await h.request('POST', '/auth/register', { body: '{oops', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' } });
  t.equal(notJson.status, 400);
  t.equal(notJson.json.error, 'invalid_client_metadata');
  const loopback = await h.register({ redirect_uris: ['http://127.0.0.1:9999/cb', 'com.example.app:/oauth'], token_endpoint_auth_method: 'none', scope: 'patient/*.rs' }, token);
  t.equal(loopback.status, 201, 'loopback http and private-use schemes are fine');
});

t.test('login users (admin API)', async (t) => {
  const h = await startHarness(t);
  const token = await h.adminToken();
  const post = (body: unknown, auth = token) => h.request('POST', '/auth/users', { json: body, headers: auth ? { authorization: `Bearer ${auth}` } : {} });
  const ok = await post({ username: 'carol', password: 'long enough pw', fhir_user: 'Patient/c1' });
  t.equal(ok.status, 201);
  t.match(ok.json, { id: String, username: 'carol', fhir_user: 'Patient/c1' });
  t.notOk('password' in ok.json);
  t.equal((await post({ username: 'carol', password: 'another long one', fhir_user: 'Patient/c2' })).status, 409, 'duplicate');
  t.equal((await post({ username: 'dave', password: 'short', fhir_user: 'Patient/d' })).status, 400, 'short password');
  t.equal((await post({ username: 'dave', password: 'long enough pw', fhir_user: 'Organization/o' })).status, 400, 'not a user type');
  t.equal((await post({ username: 'da ve', password: 'long enough pw', fhir_user: 'Patient/d' })).status, 400, 'bad username');
  t.equal((await post({ username: 'dave', password: 'long enough pw', fhir_user: 'Patient/d' }, '')).status, 401, 'no token');
  const stored = await h.auth.store.getUserByName('carol');
  t.match(stored?.passwordHash, /^scrypt\$/, 'scrypt hash');
  t.notMatch(stored?.passwordHash, /long enough pw/);
});

t.test('introspection (RFC 7662)', async (t) => {
  const h = await startHarness(t);
  const app = await appAndUsers(h, { authMethod: 'client_secret_basic' });
  const flow = await authorizeThroughPages(h, { clientId: app.clientId, redirectUri: app.redirectUri, scope: 'openid fhirUser launch/patient patient/*.rs offline_access', username: 'alice', password: 'correct horse battery' });
  const tokens = (await h.token({ grant_type: 'authorization_code', code: flow.code, redirect_uri: app.redirectUri, code_verifier: flow.verifier }, { authorization: basic(app.clientId, app.clientSecret!) })).json;
  const admin = { authorization: `Bearer ${await h.adminToken()}` };
  const active = await h.request('POST', '/auth/introspect', { form: { token: tokens.access_token }, headers: admin });
  t.equal(active.status, 200);
  t.match(active.headers['cache-control'], /no-store/);
  t.match(active.json, {
    active: true,
    scope: tokens.scope,
    client_id: app.clientId,
    sub: decodeJwt(tokens.id_token).sub,
    exp: decodeJwt(tokens.access_token).exp,
    patient: 'p1',
    fhirUser: 'Patient/p1',
    purpose_of_use: 'TREAT',
    iss: 'http://vellum.test/auth',
  });
  const refresh = await h.request('POST', '/auth/introspect', { form: { token: tokens.refresh_token }, headers: admin });
  t.match(refresh.json, { active: true, token_type: 'refresh_token', client_id: app.clientId });
  // The client itself may introspect its own tokens, not others'.
  const own = await h.request('POST', '/auth/introspect', { form: { token: tokens.access_token }, headers: { authorization: basic(app.clientId, app.clientSecret!) } });
  t.equal(own.json.active, true);
  const backend = await registerBackendClient(h);
  const foreign = await h.request('POST', '/auth/introspect', {
    form: { token: tokens.access_token, client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: await clientAssertion(h, backend) },
  });
  t.same(foreign.json, { active: false }, "another client's token is inactive to it");
  // Invalid, expired, missing, unauthenticated
  t.same((await h.request('POST', '/auth/introspect', { form: { token: 'garbage' }, headers: admin })).json, { active: false });
  t.same((await h.request('POST', '/auth/introspect', { form: { token: `${tokens.access_token.slice(0, -4)}AAAA` }, headers: admin })).json, { active: false });
  const missing = await h.request('POST', '/auth/introspect', { form: {}, headers: admin });
  t.equal(missing.status, 400);
  t.equal(missing.json.error, 'invalid_request');
  const anon = await h.request('POST', '/auth/introspect', { form: { token: tokens.access_token } });
  t.equal(anon.status, 401, 'I4 authentication required');
  const publicApp = await h.request('POST', '/auth/introspect', { form: { token: tokens.access_token, client_id: app.clientId } });
  t.equal(publicApp.status, 401);
  const nonAdminBearer = await h.request('POST', '/auth/introspect', { form: { token: tokens.access_token }, headers: { authorization: `Bearer ${tokens.access_token}` } });
  t.equal(nonAdminBearer.status, 403);
  h.advance(3700);
  const adminLater = { authorization: basic(h.admin.clientId, h.admin.secret) };
  t.same((await h.request('POST', '/auth/introspect', { form: { token: tokens.access_token }, headers: adminLater })).json, { active: false }, 'expired → inactive');
});

t.test('discovery: smart-configuration, CapabilityStatement security, OpenID metadata, JWKS', async (t) => {
  const h = await startHarness(t);
  const res = await h.request('GET', '/fhir/.well-known/smart-configuration', { headers: { accept: 'application/json', origin: 'https://app.example' } });
  t.equal(res.status, 200, 'D1');
  t.match(res.headers['content-type'], /^application\/json/, 'D2');
  t.equal(res.headers['access-control-allow-origin'], '*', 'D9');
  const c = res.json;
  for (const field of ['authorization_endpoint', 'token_endpoint', 'issuer', 'jwks_uri', 'introspection_endpoint', 'registration_endpoint']) {
    t.type(c[field], 'string', `${field} is a string`);
    t.ok(new URL(c[field]).protocol.startsWith('http'), `D7 ${field} absolute`);
  }
  t.ok(Array.isArray(c.capabilities) && c.capabilities.every((x: unknown) => typeof x === 'string'), 'D3 capabilities');
  t.ok(c.grant_types_supported.includes('authorization_code') && c.grant_types_supported.includes('client_credentials'), 'D4');
  t.same(c.code_challenge_methods_supported, ['S256'], 'D5 S256, no plain');
  for (const cap of [
    'launch-standalone',
    'client-public',
    'client-confidential-symmetric',
    'client-confidential-asymmetric',
    'context-standalone-patient',
    'permission-patient',
    'permission-user',
    'permission-v1',
    'permission-v2',
    'sso-openid-connect',
    'authorize-post',
  ]) {
    t.ok(c.capabilities.includes(cap), `capability ${cap}`);
  }
  t.ok(c.token_endpoint_auth_methods_supported.includes('private_key_jwt'), 'D8');
  t.ok(c.token_endpoint_auth_methods_supported.includes('client_secret_basic'));
  t.same(c.token_endpoint_auth_signing_alg_values_supported, ['RS384', 'ES384'], 'D8 algorithms');
  t.ok(c.scopes_supported.includes('system/*.rs') && c.scopes_supported.includes('openid'), 'scopes_supported');
  t.same(c.response_types_supported, ['code']);
  t.equal(c.issuer, 'http://vellum.test/auth');
  t.equal(c.token_endpoint, 'http://vellum.test/auth/token');

  const cs = (await h.request('GET', '/fhir/metadata')).json;
  const security = cs.rest[0].security;
  t.equal(security.service[0].coding[0].code, 'SMART-on-FHIR');
  const ext = security.extension.find((e: { url: string }) => e.url === 'http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris');
  const uri = (name: string) => ext.extension.find((e: { url: string }) => e.url === name)?.valueUri;
  t.equal(uri('authorize'), c.authorization_endpoint, 'CapabilityStatement matches the well-known document');
  t.equal(uri('token'), c.token_endpoint);
  t.equal(uri('introspect'), c.introspection_endpoint);
  t.equal(uri('register'), c.registration_endpoint);

  const oidc = await h.request('GET', '/auth/.well-known/openid-configuration');
  t.equal(oidc.status, 200);
  t.match(oidc.json, { issuer: c.issuer, jwks_uri: c.jwks_uri, subject_types_supported: ['public'], id_token_signing_alg_values_supported: ['RS256'] });
  const jwks = await h.request('GET', '/auth/jwks');
  t.equal(jwks.status, 200);
  t.match(jwks.json.keys[0], { kty: 'RSA', alg: 'RS256', kid: String, n: String, e: 'AQAB' });
  t.notOk(jwks.json.keys[0].d, 'no private part');
  t.equal(jwks.headers['access-control-allow-origin'], '*');
});

t.test('bad input never yields a 500', async (t) => {
  const h = await startHarness(t);
  const routes: [string, string][] = [
    ['POST', '/auth/token'],
    ['POST', '/auth/introspect'],
    ['POST', '/auth/register'],
    ['POST', '/auth/users'],
    ['POST', '/auth/authorize'],
    ['POST', '/auth/authorize/login'],
    ['POST', '/auth/authorize/approve'],
    ['GET', '/auth/authorize'],
  ];
  const bodies: { body?: string; type?: string; auth?: string }[] = [
    {},
    { body: '', type: 'application/x-www-form-urlencoded' },
    { body: '%zz=%%&a', type: 'application/x-www-form-urlencoded' },
    { body: 'grant_type=authorization_code&code=%00&redirect_uri=%ff&code_verifier=', type: 'application/x-www-form-urlencoded' },
    { body: '{"a":', type: 'application/json' },
    { body: 'null', type: 'application/json' },
    { body: '"str"', type: 'application/json' },
    { body: '<xml/>', type: 'application/xml' },
    { body: 'x', type: 'multipart/form-data; boundary=b' },
    { body: 'token=abc', type: 'application/x-www-form-urlencoded', auth: 'Basic Og==' },
    { body: 'token=abc', type: 'application/x-www-form-urlencoded', auth: 'Bearer a.b.c' },
    { body: 'form_token=a.b', type: 'application/x-www-form-urlencoded' },
  ];
  for (const [method, url] of routes) {
    for (const b of bodies) {
      const res = await h.request(method, method === 'GET' ? `${url}?client_id=%ff&redirect_uri=` : url, {
        ...(b.body !== undefined && method !== 'GET' ? { body: b.body } : {}),
        headers: { ...(b.type && method !== 'GET' ? { 'content-type': b.type } : {}), ...(b.auth ? { authorization: b.auth } : {}) },
      });
      t.ok(res.status >= 400 && res.status < 500, `${method} ${url} ${b.type ?? ''} ${b.body ?? ''} → ${res.status}`);
    }
  }
});
