/**
 * The auth store (SQLite), the signing key ring, and the authorization configuration.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { ConfigError } from '../../../src/config.ts';
import { defaultAuthUrl, loadAuthConfig } from '../../../src/fhir/auth/config.ts';
import { SigningKeys } from '../../../src/fhir/auth/keys.ts';
import { hashPassword, hashSecret, secretMatches, verifyPassword, type AuthorizationCodeRecord, type RefreshTokenRecord } from '../../../src/storage/auth-store.ts';
import { isStorageError } from '../../../src/storage/errors.ts';
import { SqliteAuthStore } from '../../../src/storage/sqlite/sqlite-auth-store.ts';

const tmp = (t: { teardown(fn: () => void): void }) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-auth-unit-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
};

t.test('store: clients and users', async (t) => {
  const store = SqliteAuthStore.open(':memory:');
  t.teardown(() => store.close());
  const client = {
    clientId: 'c1',
    clientName: 'C',
    authMethod: 'private_key_jwt' as const,
    jwks: { keys: [{ kty: 'EC' }] },
    grantTypes: ['client_credentials' as const],
    redirectUris: [],
    scope: 'system/*.rs',
    fhirUser: 'Organization/o',
    admin: false,
    createdAt: 1,
  };
  await store.createClient(client);
  t.same(await store.getClient('c1'), client);
  t.equal(await store.getClient('nope'), undefined);
  await t.rejects(store.createClient(client), { code: 'VLM_AUTH_CLIENT_EXISTS' });
  t.same(await store.adminClients(), []);
  await store.deleteClient('c1');
  t.equal(await store.getClient('c1'), undefined);

  const user = { id: 'u1', username: 'alice', passwordHash: await hashPassword('pw-pw-pw-pw'), fhirUser: 'Patient/p1', createdAt: 2 };
  await store.createUser(user);
  t.same(await store.getUserByName('alice'), user);
  t.same(await store.getUser('u1'), user);
  try {
    await store.createUser({ ...user, id: 'u2' });
    t.fail('duplicate accepted');
  } catch (err) {
    t.ok(isStorageError(err, 'VLM_AUTH_USER_EXISTS'));
  }
  t.ok(await verifyPassword('pw-pw-pw-pw', user.passwordHash));
  t.notOk(await verifyPassword('wrong', user.passwordHash));
  t.notOk(await verifyPassword('x', 'not-a-hash'));
  t.notOk(await verifyPassword('x', 'scrypt$99999999$8$1$AA$AA'), 'absurd cost refused');
  t.ok(secretMatches('s3cret', hashSecret('s3cret')));
  t.notOk(secretMatches('s3cret', hashSecret('other')));
  t.notOk(secretMatches('s3cret', 'short'));
});

t.test('store: jti replay, single-use codes, refresh rotation and families', async (t) => {
  const store = SqliteAuthStore.open(':memory:');
  t.teardown(() => store.close());
  t.ok(await store.useJti('c1', 'j1', 1000, 500));
  t.notOk(await store.useJti('c1', 'j1', 1000, 600), 'replay');
  t.ok(await store.useJti('c2', 'j1', 1000, 600), 'per client');
  t.ok(await store.useJti('c1', 'j1', 3000, 2000), 'forgotten after expiry');

  const code: AuthorizationCodeRecord = { codeHash: 'h1', clientId: 'c', redirectUri: 'https://a/cb', codeChallenge: 'x', scope: 's', userId: 'u', fhirUser: 'Patient/p', authTime: 1, expiresAt: 100 };
  await store.saveCode(code);
  t.same(await store.redeemCode('h1', 50), { status: 'ok', record: code });
  t.match(await store.redeemCode('h1', 51), { status: 'reused' });
  t.same(await store.redeemCode('nope', 50), { status: 'unknown' });
  await store.saveCode({ ...code, codeHash: 'h2' });
  t.same(await store.redeemCode('h2', 101), { status: 'expired' });

  const rt: RefreshTokenRecord = { tokenHash: 'r1', family: 'f', clientId: 'c', scope: 's', userId: 'u', fhirUser: 'Patient/p', authTime: 1, issuedAt: 1, expiresAt: 1000 };
  await store.saveRefreshToken(rt);
  await store.saveRefreshToken({ ...rt, tokenHash: 'r2' });
  t.same(await store.findRefreshToken('r1', 10), rt);
  t.same(await store.redeemRefreshToken('r1', 10), { status: 'ok', record: rt });
  t.equal(await store.findRefreshToken('r1', 10), undefined, 'used tokens are not live');
  t.match(await store.redeemRefreshToken('r1', 11), { status: 'reused' });
  await store.revokeFamily('f');
  t.same(await store.redeemRefreshToken('r2', 12), { status: 'unknown' }, 'revoked family');

  const a = await store.secret('form');
  t.equal(a.length, 32);
  t.same(await store.secret('form'), a, 'stable');
  t.notSame(await store.secret('other'), a);
  await store.close();
  await t.rejects(store.getClient('c'), { code: 'VLM_AUTH_STORE_CLOSED' });
});

t.test('store: open errors are coded', async (t) => {
  const dir = tmp(t);
  t.throws(() => SqliteAuthStore.open(path.join(dir, 'missing', 'auth.db')), { code: 'VLM_AUTH_STORE_OPEN' });
});

t.test('signing keys: created 0600, reused, rotated, pruned', async (t) => {
  const dir = tmp(t);
  const file = path.join(dir, 'auth', 'signing-keys.json');
  let now = 1_000_000;
  const keys = await SigningKeys.open(file, { retainSeconds: 3600, now: () => now });
  t.equal((fs.statSync(file).mode & 0o777).toString(8), '600');
  t.equal((fs.statSync(path.dirname(file)).mode & 0o777).toString(8), '700');
  const first = keys.current().kid;
  t.equal(keys.jwks().keys.length, 1);
  t.equal((await SigningKeys.open(file, { retainSeconds: 3600 })).current().kid, first, 'reused on the next start');

  now += 10;
  const second = await keys.rotate();
  t.same(keys.jwks().keys.map((k) => k.kid), [second, first]);
  t.equal((fs.statSync(file).mode & 0o777).toString(8), '600', 'still 0600 after rotation');
  const reopened = await SigningKeys.open(file, { retainSeconds: 3600 });
  t.equal(reopened.current().kid, second, 'rotation persisted');
  t.same(reopened.jwks().keys.map((k) => k.kid), [second, first]);

  now += 3601;
  const third = await keys.rotate();
  t.same(keys.jwks().keys.map((k) => k.kid), [third, second], 'keys retired longer than the retention are dropped');
  t.notMatch(JSON.stringify(keys.jwks()), /"d":/, 'JWKS has no private parts');

  fs.writeFileSync(file, '{"version":1,"keys":[]}');
  await t.rejects(SigningKeys.open(file, { retainSeconds: 1 }), { code: 'VLM_AUTH_KEYS_INVALID' });
});

t.test('config', async (t) => {
  const base = 'http://127.0.0.1:8080/fhir';
  t.match(loadAuthConfig({}, base), { mode: 'embedded', authUrl: 'http://127.0.0.1:8080/auth', audience: base, accessTokenTtl: 3600, codeTtl: 60, clockSkew: 30 });
  t.equal(defaultAuthUrl('https://x.example/r4'), 'https://x.example/auth');
  t.equal(defaultAuthUrl('https://x.example/tenant/fhir/'), 'https://x.example/tenant/auth');
  t.equal(loadAuthConfig({ VELLUM_AUTH: 'off' }, base).mode, 'off');
  t.equal(loadAuthConfig({ VELLUM_AUTH_URL: 'https://login.example/auth/' }, base).authUrl, 'https://login.example/auth');
  t.equal(loadAuthConfig({ VELLUM_OAUTH_AUDIENCE: 'https://fhir.example/r4' }, base).audience, 'https://fhir.example/r4');
  t.match(
    loadAuthConfig({ VELLUM_AUTH: 'external', VELLUM_OAUTH_ISSUER: 'https://idp.example', VELLUM_OAUTH_JWKS_URL: 'https://idp.example/jwks', VELLUM_OAUTH_ALGORITHMS: 'RS256, ES256' }, base),
    { mode: 'external', external: { issuer: 'https://idp.example', jwksUrl: 'https://idp.example/jwks', algorithms: ['RS256', 'ES256'] } },
  );
  const bad: [Record<string, string>, string][] = [
    [{ VELLUM_AUTH: 'maybe' }, 'VELLUM_AUTH'],
    [{ VELLUM_AUTH: 'external' }, 'VELLUM_OAUTH_ISSUER'],
    [{ VELLUM_AUTH: 'external', VELLUM_OAUTH_ISSUER: 'https://idp.example' }, 'VELLUM_OAUTH_JWKS_URL'],
    [{ VELLUM_AUTH: 'external', VELLUM_OAUTH_ISSUER: 'https://idp.example', VELLUM_OAUTH_JWKS_URL: 'ftp://x/jwks' }, 'VELLUM_OAUTH_JWKS_URL'],
    [{ VELLUM_AUTH: 'external', VELLUM_OAUTH_ISSUER: 'https://idp.example', VELLUM_OAUTH_JWKS_URL: 'https://idp.example/jwks', VELLUM_OAUTH_ALGORITHMS: 'RS256,HS256' }, 'VELLUM_OAUTH_ALGORITHMS'],
    [{ VELLUM_AUTH: 'external', VELLUM_OAUTH_ISSUER: 'https://idp.example', VELLUM_OAUTH_JWKS_URL: 'https://idp.example/jwks', VELLUM_OAUTH_ALGORITHMS: 'none' }, 'VELLUM_OAUTH_ALGORITHMS'],
    [{ VELLUM_AUTH_ACCESS_TOKEN_TTL: '10' }, 'VELLUM_AUTH_ACCESS_TOKEN_TTL'],
    [{ VELLUM_AUTH_ACCESS_TOKEN_TTL: 'soon' }, 'VELLUM_AUTH_ACCESS_TOKEN_TTL'],
    [{ VELLUM_AUTH_URL: 'not a url' }, 'VELLUM_AUTH_URL'],
  ];
  for (const [env, variable] of bad) {
    try {
      loadAuthConfig(env, base);
      t.fail(`accepted ${JSON.stringify(env)}`);
    } catch (err) {
      t.ok(err instanceof ConfigError, variable);
      t.equal((err as ConfigError).variable, variable);
    }
  }
});
