/**
 * The authorization server's store in SQLite (`node:sqlite`), one file (`<dataDir>/auth.db`, or
 * ':memory:' in tests), WAL mode, synchronous=FULL: issued codes and rotated refresh tokens must
 * not come back to life after a crash. Single-use redemption is one conditional UPDATE, so two
 * concurrent redemptions cannot both win.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync } from 'node:fs';
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import type {
  AuthorizationCodeRecord,
  AuthStore,
  ClientRecord,
  Redeemed,
  RefreshTokenRecord,
  UserRecord,
} from '../auth-store.ts';
import { storageError } from '../errors.ts';

const DDL = `
CREATE TABLE IF NOT EXISTS clients (
  client_id TEXT PRIMARY KEY,
  client_name TEXT,
  auth_method TEXT NOT NULL CHECK (auth_method IN ('private_key_jwt', 'client_secret_basic', 'none')),
  secret_hash TEXT,
  jwks TEXT,
  jwks_uri TEXT,
  grant_types TEXT NOT NULL,
  redirect_uris TEXT NOT NULL,
  scope TEXT NOT NULL,
  fhir_user TEXT,
  admin INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
  id TEXT PRIMARY KEY,
  username TEXT NOT NULL UNIQUE,
  password_hash TEXT NOT NULL,
  fhir_user TEXT NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS used_jtis (
  client_id TEXT NOT NULL,
  jti TEXT NOT NULL,
  expires_at INTEGER NOT NULL,
  PRIMARY KEY (client_id, jti)
);
CREATE INDEX IF NOT EXISTS used_jtis_expiry ON used_jtis (expires_at);
CREATE TABLE IF NOT EXISTS auth_codes (
  code_hash TEXT PRIMARY KEY,
  record TEXT NOT NULL,
  expires_at INTEGER NOT NULL,
  used_at INTEGER
);
CREATE INDEX IF NOT EXISTS auth_codes_expiry ON auth_codes (expires_at);
CREATE TABLE IF NOT EXISTS refresh_tokens (
  token_hash TEXT PRIMARY KEY,
  family TEXT NOT NULL,
  client_id TEXT NOT NULL,
  record TEXT NOT NULL,
  expires_at INTEGER NOT NULL,
  used_at INTEGER,
  revoked INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS refresh_tokens_family ON refresh_tokens (family);
CREATE INDEX IF NOT EXISTS refresh_tokens_expiry ON refresh_tokens (expires_at);
CREATE TABLE IF NOT EXISTS secrets (
  name TEXT PRIMARY KEY,
  value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
`;

const SCHEMA_VERSION = '1';

/** Redeemed codes are kept this long after expiry, so a replay is recognised as one (and revokes). */
const REPLAY_MEMORY_SECONDS = 3600;

interface ClientRow {
  client_id: string;
  client_name: string | null;
  auth_method: string;
  secret_hash: string | null;
  jwks: string | null;
  jwks_uri: string | null;
  grant_types: string;
  redirect_uris: string;
  scope: string;
  fhir_user: string | null;
  admin: number;
  created_at: number;
}

function toClient(row: ClientRow): ClientRecord {
  return {
    clientId: row.client_id,
    ...(row.client_name !== null ? { clientName: row.client_name } : {}),
    authMethod: row.auth_method as ClientRecord['authMethod'],
    ...(row.secret_hash !== null ? { secretHash: row.secret_hash } : {}),
    ...(row.jwks !== null ? { jwks: JSON.parse(row.jwks) as ClientRecord['jwks'] } : {}),
    ...(row.jwks_uri !== null ? { jwksUri: row.jwks_uri } : {}),
    grantTypes: JSON.parse(row.grant_types) as ClientRecord['grantTypes'],
    redirectUris: JSON.parse(row.redirect_uris) as string[],
    scope: row.scope,
    ...(row.fhir_user !== null ? { fhirUser: row.fhir_user } : {}),
    admin: row.admin === 1,
    createdAt: Number(row.created_at),
  };
}

interface UserRow {
  id: string;
  username: string;
  password_hash: string;
  fhir_user: string;
  created_at: number;
}

function toUser(row: UserRow): UserRecord {
  return { id: row.id, username: row.username, passwordHash: row.password_hash, fhirUser: row.fhir_user, createdAt: Number(row.created_at) };
}

export class SqliteAuthStore implements AuthStore {
  #db: DatabaseSync;
  #statements = new Map<string, StatementSync>();
  #closed = false;

  private constructor(db: DatabaseSync) {
    this.#db = db;
  }

  /** Open (creating when absent, mode 0600) the auth database at `path`. Raises `VLM_AUTH_STORE_OPEN` / `VLM_AUTH_STORE_SCHEMA`. */
  static open(path: string): SqliteAuthStore {
    let db: DatabaseSync;
    try {
      db = new DatabaseSync(path);
      if (path !== ':memory:') chmodSync(path, 0o600);
      db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;');
      db.exec('BEGIN IMMEDIATE');
      db.exec(DDL);
      const row = db.prepare("SELECT value FROM meta WHERE key = 'schema_version'").get() as { value: string } | undefined;
      if (!row) db.prepare("INSERT INTO meta (key, value) VALUES ('schema_version', ?)").run(SCHEMA_VERSION);
      else if (row.value !== SCHEMA_VERSION) {
        if (db.isTransaction) db.exec('ROLLBACK');
        throw storageError('VLM_AUTH_STORE_SCHEMA', 'fault', `auth store schema version ${row.value} is not ${SCHEMA_VERSION}`);
      }
      db.exec('COMMIT');
    } catch (err) {
      if ((err as { name?: string }).name === 'StorageError') throw err;
      throw storageError('VLM_AUTH_STORE_OPEN', 'unavailable', 'cannot open the auth database', err);
    }
    return new SqliteAuthStore(db);
  }

  #stmt(sql: string): StatementSync {
    if (this.#closed) throw storageError('VLM_AUTH_STORE_CLOSED', 'unavailable', 'the auth store is closed');
    let statement = this.#statements.get(sql);
    if (!statement) {
      statement = this.#db.prepare(sql);
      this.#statements.set(sql, statement);
    }
    return statement;
  }

  async createClient(c: ClientRecord): Promise<void> {
    try {
      this.#stmt(
        `INSERT INTO clients (client_id, client_name, auth_method, secret_hash, jwks, jwks_uri, grant_types, redirect_uris, scope, fhir_user, admin, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ).run(
        c.clientId,
        c.clientName ?? null,
        c.authMethod,
        c.secretHash ?? null,
        c.jwks ? JSON.stringify(c.jwks) : null,
        c.jwksUri ?? null,
        JSON.stringify(c.grantTypes),
        JSON.stringify(c.redirectUris),
        c.scope,
        c.fhirUser ?? null,
        c.admin ? 1 : 0,
        c.createdAt,
      );
    } catch (err) {
      if (isConstraint(err)) throw storageError('VLM_AUTH_CLIENT_EXISTS', 'conflict', 'a client with this id exists');
      throw err;
    }
  }

  async getClient(clientId: string): Promise<ClientRecord | undefined> {
    const row = this.#stmt('SELECT * FROM clients WHERE client_id = ?').get(clientId) as ClientRow | undefined;
    return row && toClient(row);
  }

  async deleteClient(clientId: string): Promise<void> {
    this.#stmt('DELETE FROM clients WHERE client_id = ?').run(clientId);
  }

  async adminClients(): Promise<ClientRecord[]> {
    return (this.#stmt('SELECT * FROM clients WHERE admin = 1 ORDER BY created_at').all() as unknown as ClientRow[]).map(toClient);
  }

  async createUser(u: UserRecord): Promise<void> {
    try {
      this.#stmt('INSERT INTO users (id, username, password_hash, fhir_user, created_at) VALUES (?, ?, ?, ?, ?)').run(
        u.id,
        u.username,
        u.passwordHash,
        u.fhirUser,
        u.createdAt,
      );
    } catch (err) {
      if (isConstraint(err)) throw storageError('VLM_AUTH_USER_EXISTS', 'conflict', 'a user with this name exists');
      throw err;
    }
  }

  async getUserByName(username: string): Promise<UserRecord | undefined> {
    const row = this.#stmt('SELECT * FROM users WHERE username = ?').get(username) as UserRow | undefined;
    return row && toUser(row);
  }

  async getUser(id: string): Promise<UserRecord | undefined> {
    const row = this.#stmt('SELECT * FROM users WHERE id = ?').get(id) as UserRow | undefined;
    return row && toUser(row);
  }

  async useJti(clientId: string, jti: string, expiresAt: number, now: number): Promise<boolean> {
    this.#stmt('DELETE FROM used_jtis WHERE expires_at < ?').run(now);
    const result = this.#stmt('INSERT OR IGNORE INTO used_jtis (client_id, jti, expires_at) VALUES (?, ?, ?)').run(clientId, jti, expiresAt);
    return Number(result.changes) === 1;
  }

  async saveCode(code: AuthorizationCodeRecord): Promise<void> {
    this.#stmt('INSERT INTO auth_codes (code_hash, record, expires_at) VALUES (?, ?, ?)').run(code.codeHash, JSON.stringify(code), code.expiresAt);
  }

  async redeemCode(codeHash: string, now: number): Promise<Redeemed<AuthorizationCodeRecord>> {
    this.#stmt('DELETE FROM auth_codes WHERE expires_at < ?').run(now - REPLAY_MEMORY_SECONDS);
    return this.#redeem('auth_codes', 'code_hash', codeHash, now, '') as Promise<Redeemed<AuthorizationCodeRecord>>;
  }

  async saveRefreshToken(t: RefreshTokenRecord): Promise<void> {
    this.#stmt('INSERT INTO refresh_tokens (token_hash, family, client_id, record, expires_at) VALUES (?, ?, ?, ?, ?)').run(
      t.tokenHash,
      t.family,
      t.clientId,
      JSON.stringify(t),
      t.expiresAt,
    );
  }

  async redeemRefreshToken(tokenHash: string, now: number): Promise<Redeemed<RefreshTokenRecord>> {
    this.#stmt('DELETE FROM refresh_tokens WHERE expires_at < ?').run(now);
    return this.#redeem('refresh_tokens', 'token_hash', tokenHash, now, ' AND revoked = 0') as Promise<Redeemed<RefreshTokenRecord>>;
  }

  async findRefreshToken(tokenHash: string, now: number): Promise<RefreshTokenRecord | undefined> {
    const row = this.#stmt('SELECT record FROM refresh_tokens WHERE token_hash = ? AND used_at IS NULL AND revoked = 0 AND expires_at >= ?').get(
      tokenHash,
      now,
    ) as { record: string } | undefined;
    return row && (JSON.parse(row.record) as RefreshTokenRecord);
  }

  async revokeFamily(family: string): Promise<void> {
    this.#stmt('UPDATE refresh_tokens SET revoked = 1 WHERE family = ?').run(family);
  }

  async #redeem(table: string, key: string, hash: string, now: number, extra: string): Promise<Redeemed<unknown>> {
    const row = this.#stmt(`SELECT record, expires_at, used_at FROM ${table} WHERE ${key} = ?${extra}`).get(hash) as
      | { record: string; expires_at: number; used_at: number | null }
      | undefined;
    if (!row) return { status: 'unknown' };
    const record = JSON.parse(row.record) as unknown;
    if (row.used_at !== null) return { status: 'reused', record };
    if (Number(row.expires_at) < now) return { status: 'expired' };
    // The conditional UPDATE is the single-use guarantee: only one redemption changes the row.
    const changed = this.#stmt(`UPDATE ${table} SET used_at = ? WHERE ${key} = ? AND used_at IS NULL${extra}`).run(now, hash);
    return Number(changed.changes) === 1 ? { status: 'ok', record } : { status: 'reused', record };
  }

  async secret(name: string): Promise<Uint8Array> {
    this.#stmt('INSERT OR IGNORE INTO secrets (name, value) VALUES (?, ?)').run(name, randomBytes(32));
    const row = this.#stmt('SELECT value FROM secrets WHERE name = ?').get(name) as { value: Uint8Array };
    return new Uint8Array(row.value);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#statements.clear();
    this.#db.close();
  }
}

function isConstraint(err: unknown): boolean {
  const e = err as { code?: string; errcode?: number; message?: string };
  return e.code === 'ERR_SQLITE_ERROR' && /constraint/i.test(e.message ?? '');
}

