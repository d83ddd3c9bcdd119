/**
 * The index on PostgreSQL (migration 3): the tables of src/storage/sqlite/sqlite-index.ts and
 * search-sql.ts with PostgreSQL's types. Text that is compared, sorted or prefix-matched is
 * `COLLATE "C"` (code point order, as SQLite compares), whatever the database's collation, so the
 * search planner's prefix ranges and sort orders mean the same on both.
 */

/** Rows wider than this (ms) are "wide" dates (see search-sql.ts `dateRangeDriver`). */
const SHORT_DATE_MS = 86_400_000;

const RID = 'rid BIGINT NOT NULL REFERENCES resources (rid) ON DELETE CASCADE';
const C = 'TEXT COLLATE "C"';

export const INDEX_SCHEMA = `
CREATE TABLE resources (
  rid BIGSERIAL PRIMARY KEY,
  type ${C} NOT NULL,
  id ${C} NOT NULL,
  version INTEGER NOT NULL,
  last_updated BIGINT NOT NULL,
  deleted SMALLINT NOT NULL DEFAULT 0,
  cid TEXT,
  UNIQUE (type, id)
);
CREATE INDEX resources_type_updated ON resources (type, last_updated);
CREATE INDEX search_resources_type ON resources (type, rid) WHERE deleted = 0;

CREATE TABLE versions (
  seq BIGSERIAL PRIMARY KEY,
  rid BIGINT NOT NULL REFERENCES resources (rid),
  type ${C} NOT NULL,
  id ${C} NOT NULL,
  version INTEGER NOT NULL,
  last_updated BIGINT NOT NULL,
  deleted SMALLINT NOT NULL,
  created SMALLINT NOT NULL,
  method TEXT NOT NULL,
  cid TEXT NOT NULL,
  key_scope TEXT NOT NULL,
  UNIQUE (type, id, version)
);
CREATE INDEX versions_type_seq ON versions (type, seq);
CREATE INDEX versions_updated ON versions (last_updated);

CREATE TABLE anchor_batches (
  id BIGSERIAL PRIMARY KEY,
  root BYTEA NOT NULL UNIQUE,
  leaf_count INTEGER NOT NULL,
  manifest_cid TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('planned', 'anchored')),
  chain_batch_id BIGINT,
  tx_hash TEXT,
  block_number BIGINT,
  block_timestamp BIGINT,
  chain_id BIGINT,
  contract TEXT
);
CREATE TABLE anchor_leaves (
  seq BIGINT PRIMARY KEY REFERENCES versions (seq),
  leaf BYTEA NOT NULL,
  salt BYTEA NOT NULL,
  batch_id BIGINT REFERENCES anchor_batches (id),
  leaf_index INTEGER,
  proof BYTEA,
  locator TEXT
);
CREATE INDEX anchor_leaves_batch ON anchor_leaves (batch_id, leaf_index);
CREATE INDEX anchor_leaves_pending ON anchor_leaves (seq) WHERE batch_id IS NULL;

CREATE TABLE data_keys (
  scope TEXT PRIMARY KEY,
  wrapped BYTEA NOT NULL
);

CREATE TABLE export_jobs (
  id TEXT PRIMARY KEY,
  owner TEXT NOT NULL,
  status TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  expires_at BIGINT,
  spec TEXT NOT NULL,
  progress TEXT NOT NULL
);

CREATE TABLE subscription_events (
  subscription TEXT NOT NULL,
  number BIGINT NOT NULL,
  seq BIGINT NOT NULL,
  at BIGINT NOT NULL,
  notified BIGINT,
  PRIMARY KEY (subscription, number)
);
CREATE INDEX subscription_events_notified ON subscription_events (subscription, notified) WHERE notified IS NOT NULL;
CREATE TABLE subscription_state (
  id TEXT PRIMARY KEY,
  events BIGINT NOT NULL DEFAULT 0,
  owner TEXT,
  delivered BIGINT NOT NULL DEFAULT 0,
  failures INTEGER NOT NULL DEFAULT 0,
  retry_at BIGINT NOT NULL DEFAULT 0,
  handshake SMALLINT NOT NULL DEFAULT 0,
  notified BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE search_string (${RID}, param ${C} NOT NULL, norm ${C} NOT NULL, exact ${C} NOT NULL);
CREATE INDEX search_string_rid ON search_string (rid, param, norm);
CREATE INDEX search_string_value ON search_string (param, norm, rid);

CREATE TABLE search_token (${RID}, param ${C} NOT NULL, system ${C}, code ${C}, text ${C});
CREATE INDEX search_token_rid ON search_token (rid, param, code, system);
CREATE INDEX search_token_value ON search_token (param, code, system, rid);
CREATE INDEX search_token_text ON search_token (param, text, rid) WHERE text IS NOT NULL;

CREATE TABLE search_date (${RID}, param ${C} NOT NULL, low BIGINT NOT NULL, high BIGINT NOT NULL);
CREATE INDEX search_date_rid ON search_date (rid, param, low, high);
CREATE INDEX search_date_low ON search_date (param, low, high, rid);
CREATE INDEX search_date_high ON search_date (param, high, low, rid);
CREATE INDEX search_date_wide ON search_date (param, low, high, rid) WHERE high - low > ${SHORT_DATE_MS};

CREATE TABLE search_reference (${RID}, param ${C} NOT NULL, target_type ${C}, target_id ${C}, url ${C});
CREATE INDEX search_reference_rid ON search_reference (rid, param, target_id, target_type);
CREATE INDEX search_reference_target ON search_reference (param, target_id, target_type, rid);
CREATE INDEX search_reference_url ON search_reference (param, url, rid) WHERE url IS NOT NULL;

CREATE TABLE search_number (${RID}, param ${C} NOT NULL, value DOUBLE PRECISION NOT NULL);
CREATE INDEX search_number_rid ON search_number (rid, param, value);
CREATE INDEX search_number_value ON search_number (param, value, rid);

CREATE TABLE search_quantity (${RID}, param ${C} NOT NULL, value DOUBLE PRECISION NOT NULL, system ${C}, code ${C}, unit ${C});
CREATE INDEX search_quantity_rid ON search_quantity (rid, param, value);
CREATE INDEX search_quantity_value ON search_quantity (param, value, rid);

CREATE TABLE search_uri (${RID}, param ${C} NOT NULL, value ${C} NOT NULL);
CREATE INDEX search_uri_rid ON search_uri (rid, param, value);
CREATE INDEX search_uri_value ON search_uri (param, value, rid);

-- Composite components: numbers in value, every other kind in the columns of its own table
-- (a uri component's value is kept in url: see pg-index.ts compositeValues).
CREATE TABLE search_composite (${RID}, param ${C} NOT NULL, grp INTEGER NOT NULL,
  norm ${C}, exact ${C}, system ${C}, code ${C}, text ${C}, low BIGINT, high BIGINT,
  target_type ${C}, target_id ${C}, url ${C}, value DOUBLE PRECISION, unit ${C});
CREATE INDEX search_composite_rid ON search_composite (rid, param, grp);
CREATE INDEX search_composite_code ON search_composite (param, code, system, rid, grp);
CREATE INDEX search_composite_value ON search_composite (param, value, rid, grp);
`;
