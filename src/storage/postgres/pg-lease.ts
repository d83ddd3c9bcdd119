/**
 * Leases on PostgreSQL — who anchors (chain/batcher.ts) and who delivers rest-hook notifications
 * (fhir/subscriptions/service.ts) among the nodes on one database: a session advisory lock held by
 * one connection of its own. When its holder dies, the server sees the connection close and
 * releases the lock, and another node's next round takes it; a holder whose connection breaks
 * stops at its next round. Two anchors of one root are still impossible: the registry refuses a
 * root it has (AnchorRegistryDuplicateRoot) and the ledger then reads the first anchor's receipt.
 * A notification may be sent twice around a takeover (delivery is at least once).
 */
import pg from 'pg';
import type { BatcherLease } from '../../chain/batcher.ts';

/** Key of the anchoring lease ('vellum anchor'). */
const ANCHOR_LEASE = 0x76616e63;
/** Key of the subscription delivery lease ('vellum subs'). */
export const SUBSCRIPTION_LEASE = 0x76737562;

/** The lease connection's `application_name`: which process holds it. */
export function leaseName(pid = process.pid, what = 'anchor'): string {
  return `vellum ${what} lease ${pid}`;
}

export class PgLease implements BatcherLease {
  readonly #url: string;
  readonly #key: number;
  #client: pg.Client | undefined;
  #held = false;

  readonly #name: string;

  constructor(url: string, key = ANCHOR_LEASE) {
    this.#url = url;
    this.#key = key;
    this.#name = leaseName(process.pid, key === ANCHOR_LEASE ? 'anchor' : 'subscription');
  }

  async hold(): Promise<boolean> {
    try {
      if (!this.#client) {
        // Named, so an operator (and the fault tests) can see which node holds it in pg_stat_activity.
        const client = new pg.Client({ connectionString: this.#url, keepAlive: true, connectionTimeoutMillis: 5_000, application_name: this.#name });
        client.on('error', () => this.#drop(client));
        client.on('end', () => this.#drop(client));
        await client.connect();
        this.#client = client;
      }
      if (this.#held) {
        // Still ours only while the session lives: a round trip proves it.
        await this.#client.query('SELECT 1');
        return this.#held;
      }
      const { rows } = await this.#client.query('SELECT pg_try_advisory_lock($1) AS held', [this.#key]);
      this.#held = (rows[0] as { held: boolean }).held;
      return this.#held;
    } catch {
      if (this.#client) this.#drop(this.#client);
      return false;
    }
  }

  async release(): Promise<void> {
    const client = this.#client;
    this.#client = undefined;
    this.#held = false;
    // Ending the session releases the lock.
    await client?.end().catch(() => undefined);
  }

  #drop(client: pg.Client): void {
    if (this.#client !== client) return;
    this.#client = undefined;
    this.#held = false;
    client.end().catch(() => undefined);
  }
}
