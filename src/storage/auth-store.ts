/**
 * What the authorization server remembers: registered clients, login users, client-assertion
 * `jti`s already seen (replay protection, RFC 7523 §3), authorization codes and refresh tokens.
 *
 * Secrets never reach the store in clear: client secrets, authorization codes and refresh tokens
 * are high-entropy random strings kept as SHA-256 hashes (`hashSecret`); user passwords are kept as
 * scrypt hashes (`hashPassword`). The store only compares what the caller hashed.
 *
 * Times are seconds since the epoch. Implementations: SqliteAuthStore (src/storage/sqlite).
 */
import { createHash, randomBytes, scrypt, timingSafeEqual } from 'node:crypto';

export type ClientAuthMethod = 'private_key_jwt' | 'client_secret_basic' | 'none';
export type GrantType = 'client_credentials' | 'authorization_code' | 'refresh_token';

export interface ClientRecord {
  clientId: string;
  clientName?: string;
  authMethod: ClientAuthMethod;
  /** SHA-256 (hex) of the client secret; `client_secret_basic` only. */
  secretHash?: string;
  /** Inline JWKS (public keys) for `private_key_jwt`. */
  jwks?: { keys: Record<string, unknown>[] };
  jwksUri?: string;
  grantTypes: GrantType[];
  redirectUris: string[];
  /** Registered scope (space-delimited): the most the client may be granted. */
  scope: string;
  /** FHIR identity the client acts as (`Practitioner/1`, `Organization/2`, …). */
  fhirUser?: string;
  /** The bootstrap administrator client. */
  admin: boolean;
  createdAt: number;
}

export interface UserRecord {
  /** Opaque, stable subject identifier (`sub`). */
  id: string;
  username: string;
  /** scrypt hash in `hashPassword` format. */
  passwordHash: string;
  /** `Patient/…` or `Practitioner/…` (or `PractitionerRole/…`). */
  fhirUser: string;
  createdAt: number;
}

/** What a code was issued for (everything the token endpoint needs to redeem it). */
export interface AuthorizationCodeRecord {
  /** SHA-256 (hex) of the code. */
  codeHash: string;
  clientId: string;
  redirectUri: string;
  /** PKCE S256 challenge (RFC 7636 §4.2). */
  codeChallenge: string;
  scope: string;
  userId: string;
  fhirUser: string;
  /** Patient id in context, when one was established. */
  patient?: string;
  nonce?: string;
  authTime: number;
  expiresAt: number;
}

export interface RefreshTokenRecord {
  /** SHA-256 (hex) of the token. */
  tokenHash: string;
  /** Every token rotated from one grant shares a family: reuse of a rotated token revokes the family. */
  family: string;
  clientId: string;
  scope: string;
  userId: string;
  fhirUser: string;
  patient?: string;
  authTime: number;
  issuedAt: number;
  expiresAt: number;
}

/** Outcome of redeeming a single-use secret. `reused` = it existed but was already redeemed. */
export type Redeemed<T> = { status: 'ok'; record: T } | { status: 'unknown' } | { status: 'expired' } | { status: 'reused'; record: T };

export interface AuthStore {
  createClient(client: ClientRecord): Promise<void>;
  getClient(clientId: string): Promise<ClientRecord | undefined>;
  deleteClient(clientId: string): Promise<void>;
  /** The administrator clients (normally one). */
  adminClients(): Promise<ClientRecord[]>;

  /** Raises StorageError `VLM_AUTH_USER_EXISTS` (conflict) when the username is taken. */
  createUser(user: UserRecord): Promise<void>;
  getUserByName(username: string): Promise<UserRecord | undefined>;
  getUser(id: string): Promise<UserRecord | undefined>;

  /** Record a client-assertion `jti`; false when `clientId` already used it (a replay). Forgets entries past `expiresAt`. */
  useJti(clientId: string, jti: string, expiresAt: number, now: number): Promise<boolean>;

  saveCode(code: AuthorizationCodeRecord): Promise<void>;
  /** Redeem a code once: the first call wins (`ok`), later calls see `reused`. */
  redeemCode(codeHash: string, now: number): Promise<Redeemed<AuthorizationCodeRecord>>;

  saveRefreshToken(token: RefreshTokenRecord): Promise<void>;
  /** Redeem a refresh token once (rotation): later calls see `reused`; revoked families are `unknown`. */
  redeemRefreshToken(tokenHash: string, now: number): Promise<Redeemed<RefreshTokenRecord>>;
  /** Look a refresh token up without redeeming it (introspection); only live tokens. */
  findRefreshToken(tokenHash: string, now: number): Promise<RefreshTokenRecord | undefined>;
  /** Revoke every refresh token of a family (reuse detected, or its code was replayed). */
  revokeFamily(family: string): Promise<void>;

  /** A named random secret of the store (e.g. the form-token HMAC key), created on first use. */
  secret(name: string): Promise<Uint8Array>;
  close(): Promise<void>;
}

/** A fresh high-entropy secret (client secret, code, refresh token): 32 random bytes, base64url. */
export function newSecret(): string {
  return randomBytes(32).toString('base64url');
}

/** SHA-256 (hex) of a high-entropy secret: how the store keeps secrets, codes and refresh tokens. */
export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret, 'utf8').digest('hex');
}

/** Constant-time comparison of a secret with its stored hash. */
export function secretMatches(secret: string, hash: string): boolean {
  const a = Buffer.from(hashSecret(secret), 'hex');
  const b = Buffer.from(hash, 'hex');
  return a.length === b.length && timingSafeEqual(a, b);
}

const SCRYPT = { N: 16384, r: 8, p: 1, keylen: 32 };

function scryptAsync(password: string, salt: Buffer, params: typeof SCRYPT): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scrypt(password, salt, params.keylen, { N: params.N, r: params.r, p: params.p, maxmem: 64 * 1024 * 1024 }, (err, key) =>
      err ? reject(err) : resolve(key),
    ),
  );
}

/** scrypt hash of a password: `scrypt$N$r$p$<salt b64url>$<hash b64url>`. */
export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await scryptAsync(password, salt, SCRYPT);
  return `scrypt$${SCRYPT.N}$${SCRYPT.r}$${SCRYPT.p}$${salt.toString('base64url')}$${key.toString('base64url')}`;
}

/** Check a password against `hashPassword` output in constant time; false for any malformed hash. */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false;
  const [N, r, p] = parts.slice(1, 4).map(Number) as [number, number, number];
  if (![N, r, p].every((n) => Number.isInteger(n) && n > 0) || N > 1 << 20) return false;
  const expected = Buffer.from(parts[5]!, 'base64url');
  const key = await scryptAsync(password, Buffer.from(parts[4]!, 'base64url'), { N, r, p, keylen: expected.length || 32 });
  return key.length === expected.length && timingSafeEqual(key, expected);
}
