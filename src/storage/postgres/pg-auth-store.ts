/**
 * The authorization server's store on PostgreSQL (migration 2), behind the same AuthStore interface
 * as SQLite (sqlite/sqlite-auth-store.ts), so that every node of a deployment knows every client,
 * user, code and refresh token. Records are JSONB; single-use redemption is one conditional
 * UPDATE … RETURNING, so two redemptions — from two nodes — cannot both win.
 */
import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import type { AuthorizationCodeRecord, AuthStore, ClientRecord, Redeemed, RefreshTokenRecord, UserRecord } from '../auth-store.ts';
import { storageError } from '../errors.ts';
import { PgStore } from './pg-store.ts';

/** Redeemed codes are kept this long after expiry, so a replay is recognised as one (and revokes). */
const REPLAY_MEMORY_SECONDS = 3600;
const UNIQUE_VIOLATION = '23505';

export class PgAuthStore extends PgStore implements AuthStore {
  async #query<R extends pg.QueryResultRow = pg.QueryResultRow>(sql: string, params: unknown[] = []): Promise<pg.QueryResult<R>> {
    if (this.closed) throw storageError('VLM_AUTH_STORE_CLOSED', 'unavailable', 'the auth store is closed');
    try {
      return await this.pool.query<R>(sql, params);
    } catch (err) {
      if ((err as { code?: string }).code === UNIQUE_VIOLATION) throw err;
      throw storageError('VLM_AUTH_STORE_UNAVAILABLE', 'unavailable', 'the auth store (PostgreSQL) did not answer', err);
    }
  }

  async createClient(client: ClientRecord): Promise<void> {
    try {
      await this.#query('INSERT INTO auth_clients (client_id, record, admin, created_at) VALUES ($1, $2, $3, $4)', [client.clientId, client, client.admin, client.createdAt]);
    } catch (err) {
      if ((err as { code?: string }).code === UNIQUE_VIOLATION) throw storageError('VLM_AUTH_CLIENT_EXISTS', 'conflict', 'a client with this id exists');
      throw err;
    }
  }

  async getClient(clientId: string): Promise<ClientRecord | undefined> {
    return (await this.#query<{ record: ClientRecord }>('SELECT record FROM auth_clients WHERE client_id = $1', [clientId])).rows[0]?.record;
  }

  async deleteClient(clientId: string): Promise<void> {
    await this.#query('DELETE FROM auth_clients WHERE client_id = $1', [clientId]);
  }

  async adminClients(): Promise<ClientRecord[]> {
    return (await this.#query<{ record: ClientRecord }>('SELECT record FROM auth_clients WHERE admin ORDER BY created_at')).rows.map((r) => r.record);
  }

  async createUser(user: UserRecord): Promise<void> {
    try {
      await this.#query('INSERT INTO auth_users (id, username, record) VALUES ($1, $2, $3)', [user.id, user.username, user]);
    } catch (err) {
      if ((err as { code?: string }).code === UNIQUE_VIOLATION) throw storageError('VLM_AUTH_USER_EXISTS', 'conflict', 'a user with this name exists');
      throw err;
    }
  }

  async getUserByName(username: string): Promise<UserRecord | undefined> {
    return (await this.#query<{ record: UserRecord }>('SELECT record FROM auth_users WHERE username = $1', [username])).rows[0]?.record;
  }

  async getUser(id: string): Promise<UserRecord | undefined> {
    return (await this.#query<{ record: UserRecord }>('SELECT record FROM auth_users WHERE id = $1', [id])).rows[0]?.record;
  }

  async useJti(clientId: string, jti: string, expiresAt: number, now: number): Promise<boolean> {
    await this.#query('DELETE FROM auth_used_jtis WHERE expires_at < $1', [now]);
    const inserted = await this.#query('INSERT INTO auth_used_jtis (client_id, jti, expires_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING', [clientId, jti, expiresAt]);
    return inserted.rowCount === 1;
  }

  async saveCode(code: AuthorizationCodeRecord): Promise<void> {
    await this.#query('INSERT INTO auth_codes (code_hash, record, expires_at) VALUES ($1, $2, $3)', [code.codeHash, code, code.expiresAt]);
  }

  async redeemCode(codeHash: string, now: number): Promise<Redeemed<AuthorizationCodeRecord>> {
    await this.#query('DELETE FROM auth_codes WHERE expires_at < $1', [now - REPLAY_MEMORY_SECONDS]);
    return this.#redeem<AuthorizationCodeRecord>('auth_codes', 'code_hash', codeHash, now, '');
  }

  async saveRefreshToken(token: RefreshTokenRecord): Promise<void> {
    await this.#query('INSERT INTO auth_refresh_tokens (token_hash, family, record, expires_at) VALUES ($1, $2, $3, $4)', [token.tokenHash, token.family, token, token.expiresAt]);
  }

  async redeemRefreshToken(tokenHash: string, now: number): Promise<Redeemed<RefreshTokenRecord>> {
    await this.#query('DELETE FROM auth_refresh_tokens WHERE expires_at < $1', [now]);
    return this.#redeem<RefreshTokenRecord>('auth_refresh_tokens', 'token_hash', tokenHash, now, ' AND NOT revoked');
  }

  async findRefreshToken(tokenHash: string, now: number): Promise<RefreshTokenRecord | undefined> {
    const { rows } = await this.#query<{ record: RefreshTokenRecord }>(
      'SELECT record FROM auth_refresh_tokens WHERE token_hash = $1 AND used_at IS NULL AND NOT revoked AND expires_at >= $2',
      [tokenHash, now],
    );
    return rows[0]?.record;
  }

  async revokeFamily(family: string): Promise<void> {
    await this.#query('UPDATE auth_refresh_tokens SET revoked = true WHERE family = $1', [family]);
  }

  async #redeem<T>(table: string, key: string, hash: string, now: number, extra: string): Promise<Redeemed<T>> {
    // The conditional UPDATE is the single-use guarantee: only one redemption changes the row.
    const won = await this.#query<{ record: T }>(`UPDATE ${table} SET used_at = $2 WHERE ${key} = $1 AND used_at IS NULL AND expires_at >= $2${extra} RETURNING record`, [hash, now]);
    if (won.rows[0]) return { status: 'ok', record: won.rows[0].record };
    const { rows } = await this.#query<{ record: T; used_at: string | null }>(`SELECT record, used_at FROM ${table} WHERE ${key} = $1${extra}`, [hash]);
    const row = rows[0];
    if (!row) return { status: 'unknown' };
    return row.used_at !== null ? { status: 'reused', record: row.record } : { status: 'expired' };
  }

  async secret(name: string): Promise<Uint8Array> {
    await this.#query('INSERT INTO auth_secrets (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING', [name, randomBytes(32)]);
    const { rows } = await this.#query<{ value: Buffer }>('SELECT value FROM auth_secrets WHERE name = $1', [name]);
    return new Uint8Array(rows[0]!.value);
  }

}
