/**
 * Behaviour every AuthStore must show; run by each backend's test file with its own factory
 * (SQLite: sqlite-auth-store.test.ts; PostgreSQL: pg-auth-store.int.test.ts).
 */
import type { Test } from 'tap';
import type { AuthorizationCodeRecord, AuthStore, ClientRecord, RefreshTokenRecord } from '../../src/storage/auth-store.ts';

/** Makes a fresh, empty store; the suite closes it. */
export type AuthStoreFactory = () => Promise<AuthStore>;

const client = (clientId: string, extra: Partial<ClientRecord> = {}): ClientRecord => ({
  clientId,
  clientName: `client ${clientId}`,
  authMethod: 'private_key_jwt',
  jwks: { keys: [{ kty: 'EC', crv: 'P-384', x: 'x', y: 'y', kid: 'k1' }] },
  grantTypes: ['client_credentials'],
  redirectUris: [],
  scope: 'system/*.rs',
  fhirUser: 'Practitioner/dr-ada',
  admin: false,
  createdAt: 1_800_000_000,
  ...extra,
});

const code = (codeHash: string, expiresAt: number): AuthorizationCodeRecord => ({
  codeHash,
  clientId: 'app',
  redirectUri: 'https://app.example/cb',
  codeChallenge: 'challenge',
  scope: 'openid patient/*.rs',
  userId: 'u1',
  fhirUser: 'Patient/p1',
  patient: 'p1',
  authTime: 1_800_000_000,
  expiresAt,
});

const refresh = (tokenHash: string, family: string, expiresAt: number): RefreshTokenRecord => ({
  tokenHash,
  family,
  clientId: 'app',
  scope: 'openid offline_access patient/*.rs',
  userId: 'u1',
  fhirUser: 'Patient/p1',
  authTime: 1_800_000_000,
  issuedAt: 1_800_000_000,
  expiresAt,
});

/** Register the shared AuthStore behaviour subtests on `t`. */
export function authStoreBehavior(t: Test, makeStore: AuthStoreFactory): void {
  const withStore = (name: string, fn: (t: Test, store: AuthStore) => Promise<void>) =>
    t.test(name, async (t) => {
      const store = await makeStore();
      t.teardown(() => store.close());
      await fn(t, store);
    });

  withStore('clients: created, read back as written, unique, deleted; administrators listed oldest first', async (t, store) => {
    const app = client('app', { authMethod: 'client_secret_basic', secretHash: 'ab'.repeat(32), jwks: undefined, redirectUris: ['https://app.example/cb'] });
    delete (app as Partial<ClientRecord>).jwks;
    await store.createClient(app);
    await store.createClient(client('dr'));
    t.same(await store.getClient('app'), app, 'read back as written');
    t.same(await store.getClient('dr'), client('dr'));
    await t.rejects(store.createClient(client('app')), { code: 'VLM_AUTH_CLIENT_EXISTS', category: 'conflict' });
    t.equal(await store.getClient('nobody'), undefined);
    await store.createClient(client('admin-2', { admin: true, createdAt: 1_800_000_010 }));
    await store.createClient(client('admin-1', { admin: true, createdAt: 1_800_000_005 }));
    t.same((await store.adminClients()).map((c) => c.clientId), ['admin-1', 'admin-2']);
    await store.deleteClient('dr');
    t.equal(await store.getClient('dr'), undefined, 'deleted');
  });

  withStore('users: unique names, found by name and by id', async (t, store) => {
    const user = { id: 'u1', username: 'pat', passwordHash: 'scrypt$16384$8$1$salt$hash', fhirUser: 'Patient/p1', createdAt: 1_800_000_000 };
    await store.createUser(user);
    t.same(await store.getUserByName('pat'), user);
    t.same(await store.getUser('u1'), user);
    await t.rejects(store.createUser({ ...user, id: 'u2' }), { code: 'VLM_AUTH_USER_EXISTS', category: 'conflict' });
    t.equal(await store.getUserByName('nobody'), undefined);
  });

  withStore('client-assertion jtis: a replay is refused until the jti expires', async (t, store) => {
    t.equal(await store.useJti('app', 'j1', 1000, 500), true, 'first use');
    t.equal(await store.useJti('app', 'j1', 1000, 600), false, 'replay');
    t.equal(await store.useJti('other', 'j1', 1000, 600), true, 'another client may use the same jti');
    t.equal(await store.useJti('app', 'j1', 2000, 1001), true, 'forgotten once expired');
  });

  withStore('authorization codes: redeemed once, whoever asks first; unknown, expired, reused', async (t, store) => {
    await store.saveCode(code('c1', 1000));
    const attempts = await Promise.all(Array.from({ length: 8 }, () => store.redeemCode('c1', 500)));
    t.equal(attempts.filter((a) => a.status === 'ok').length, 1, 'exactly one of eight concurrent redemptions wins');
    t.ok(attempts.every((a) => a.status === 'ok' || a.status === 'reused'), 'the others see it reused');
    t.same((attempts.find((a) => a.status === 'ok') as { record: unknown }).record, code('c1', 1000), 'with what it was issued for');
    t.same(await store.redeemCode('nope', 500), { status: 'unknown' });
    await store.saveCode(code('c2', 1000));
    t.same(await store.redeemCode('c2', 1001), { status: 'expired' });
  });

  withStore('refresh tokens: found while live, redeemed once, a family revoked at once', async (t, store) => {
    await store.saveRefreshToken(refresh('r1', 'f1', 5000));
    await store.saveRefreshToken(refresh('r2', 'f1', 5000));
    await store.saveRefreshToken(refresh('r3', 'f2', 5000));
    t.same(await store.findRefreshToken('r1', 100), refresh('r1', 'f1', 5000));
    t.same(await store.redeemRefreshToken('r1', 100), { status: 'ok', record: refresh('r1', 'f1', 5000) });
    t.equal(await store.findRefreshToken('r1', 100), undefined, 'a redeemed token is no longer live');
    t.match(await store.redeemRefreshToken('r1', 101), { status: 'reused' });
    await store.revokeFamily('f1');
    t.same(await store.redeemRefreshToken('r2', 102), { status: 'unknown' }, 'revoked with its family');
    t.equal(await store.findRefreshToken('r2', 102), undefined);
    t.same(await store.redeemRefreshToken('r3', 5001), { status: 'unknown' }, 'expired tokens are forgotten');
  });

  withStore('named secrets: random, 32 bytes, the same on every call', async (t, store) => {
    const a = await store.secret('form-token');
    t.equal(a.byteLength, 32);
    t.same(Buffer.from(await store.secret('form-token')), Buffer.from(a));
    t.notSame(Buffer.from(await store.secret('other')), Buffer.from(a));
  });

  withStore('a closed store refuses', async (t, store) => {
    await store.close();
    await t.rejects(store.getClient('app'), { code: 'VLM_AUTH_STORE_CLOSED' });
  });
}
