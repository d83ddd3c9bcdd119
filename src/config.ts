/**
 * Configuration from the environment, validated once at start. A bad value stops the
 * server with a message naming the variable (never its value when it is a secret).
 */
import path from 'node:path';
import { parseMasterKey } from './storage/keys.ts';
import { loadAuthConfig, type AuthConfig } from './fhir/auth/config.ts';

export interface Config {
  host: string;
  port: number;
  dataDir: string;
  /** Public FHIR base URL used in links, without trailing slash (e.g. http://127.0.0.1:8080/fhir). */
  baseUrl: string;
  bodyLimit: number;
  masterKey: string | undefined;
  logLevel: string;
  /** Kubo / IPFS Cluster RPC API (VELLUM_IPFS_URL); absent = the embedded block store. */
  ipfsUrl: string | undefined;
  /** PostgreSQL for the index, blocks and auth store (VELLUM_DATABASE_URL); absent = the embedded SQLite file. */
  databaseUrl: string | undefined;
  /** Most connections of this node's PostgreSQL pool (VELLUM_DATABASE_POOL_MAX, default 10). */
  databasePoolMax: number;
  /** Most entries a batch or transaction Bundle may carry (VELLUM_BUNDLE_MAX_ENTRIES); more → 413. */
  bundleMaxEntries: number;
  chain: ChainConfig;
  /** SMART authorization (VELLUM_AUTH=embedded|external|off and its variables, src/fhir/auth/config.ts). */
  auth: AuthConfig;
  /** An AuditEvent for every interaction (VELLUM_AUDIT=on|off, default on). */
  audit: boolean;
  /** What a response waits for (VELLUM_AUDIT_DURABILITY): its audit record fsynced (default) or in the WAL. */
  auditDurability: 'fsync' | 'wal';
  /**
   * How long audit records wait before a conversion round makes them AuditEvents
   * (VELLUM_AUDIT_BATCH_MS, default 1000): larger rounds cost less per AuditEvent; searches of
   * AuditEvents convert what is queued first, so the wait only delays their anchoring.
   */
  auditBatchMs: number;
  /** Consent enforcement through the consent registry (docs/consent.md). */
  consent: ConsentConfig;
  /** Bulk Data export (docs/bulk-data.md). */
  export: ExportConfig;
  /** Subscriptions (docs/subscriptions.md). */
  subscriptions: SubscriptionConfig;
}

export interface SubscriptionConfig {
  /** VELLUM_SUBSCRIPTION_ENDPOINTS_ALLOW: `host:port` list of endpoints allowed whatever their scheme and address. */
  allow: string[];
  /** VELLUM_SUBSCRIPTION_MAX_FAILURES: failed deliveries in a row before `error` (default 10). */
  maxFailures: number;
  /** VELLUM_SUBSCRIPTION_RETRY_MS: first retry delay, doubled each failure up to 5 minutes (default 1000). */
  retryMs: number;
  /** VELLUM_SUBSCRIPTION_MAX_PER_OWNER: most subscriptions per client (default 100). */
  maxPerOwner: number;
  /** VELLUM_SUBSCRIPTION_PAYLOAD_MAX: largest notification body in bytes; larger ones leave the resources out (default 1 MiB). */
  payloadMax: number;
  /** VELLUM_SUBSCRIPTION_SOCKETS_MAX: most open subscription websockets (default 10,000). */
  socketsMax: number;
}

export interface ExportConfig {
  /** VELLUM_EXPORT_FILE_MAX: most resources per file (default 100,000). */
  fileMax: number;
  /** VELLUM_EXPORT_FILE_BYTES: most bytes per file (default 8 MiB; a file is built in memory, several copies at once while it is encrypted). */
  fileBytes: number;
  /** VELLUM_EXPORT_TTL: seconds a finished export's files are kept (default 24 h). */
  ttlSeconds: number;
  /** VELLUM_EXPORT_CONCURRENCY: most queued or running exports per client (default 2). */
  concurrency: number;
}

/**
 * VELLUM_CONSENT=on|off: on by default whenever both the chain and authorization are on (consent
 * is enforced by contract, for callers a token identifies); `on` with either off is an error.
 */
export interface ConsentConfig {
  enabled: boolean;
  /** VELLUM_CONSENT_FRESHNESS_MS: oldest chain sync a decision may rest on (default 5000). */
  freshnessMs: number;
  /** VELLUM_CONSENT_POLL_MS: how often the chain is polled for consent events (default 500). */
  pollMs: number;
  /**
   * VELLUM_CONSENT_MODEL: `opt-in` (default; no consent → no access) or `opt-out` (approved actors
   * read for TREAT and ETREAT unless the patient's consents deny). Recorded on chain.
   */
  model: 'opt-in' | 'opt-out';
  /** VELLUM_CONSENT_MODEL_FORCE=1: replace a model already recorded on chain (audited). */
  forceModel: boolean;
  /** VELLUM_CONSENT_POLICIES: JSON object, policy URI → `permit` | `deny` (a Consent's base policy). */
  policies: Record<string, 'permit' | 'deny'>;
  /** VELLUM_CONSENT_REQUEST_TTL: seconds an access request stays open (default 30 days). */
  requestTtlSeconds: number;
}

/** Where versions are anchored: the in-process chain (default), an external JSON-RPC node, or nowhere. */
export interface ChainConfig {
  mode: 'embedded' | 'rpc' | 'off';
  rpcUrl?: string;
  /** Anchoring account key: from VELLUM_CHAIN_PRIVATE_KEY, or read from VELLUM_CHAIN_KEY_FILE at start. */
  privateKey?: string;
  keyFile?: string;
  /** Registry address; absent = deploy on first start (and remember it in the data dir). */
  contract?: string;
  /** ConsentRegistry address (VELLUM_CONSENT_CONTRACT); absent = deploy on first start (and remember it). */
  consentContract?: string;
  chainId?: number;
  confirmations: number;
  anchorIntervalMs: number;
  anchorMaxLeaves: number;
}

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(readonly variable: string, message: string) {
    super(`${variable}: ${message}`);
  }
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

function integer(env: NodeJS.ProcessEnv, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!/^\d+$/.test(raw.trim())) throw new ConfigError(name, `must be a whole number, got "${raw}"`);
  const value = Number(raw.trim());
  if (value < min || value > max) throw new ConfigError(name, `must be between ${min} and ${max}, got ${value}`);
  return value;
}

/** Read and validate the configuration; raises ConfigError naming the bad variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const host = (env.HOST ?? '127.0.0.1').trim();
  if (!host || /\s/.test(host)) throw new ConfigError('HOST', 'must be a host name or address');
  const port = integer(env, 'PORT', 8080, 0, 65535);
  const dataDir = path.resolve(env.VELLUM_DATA_DIR?.trim() || './data');
  const bodyLimit = integer(env, 'VELLUM_BODY_LIMIT', 16 * 1024 * 1024, 1024, 1024 * 1024 * 1024);
  const bundleMaxEntries = integer(env, 'VELLUM_BUNDLE_MAX_ENTRIES', 10_000, 1, 1_000_000);
  const logLevel = (env.VELLUM_LOG_LEVEL ?? 'info').trim();
  if (!LOG_LEVELS.includes(logLevel)) throw new ConfigError('VELLUM_LOG_LEVEL', `must be one of ${LOG_LEVELS.join(', ')}`);

  let baseUrl: string;
  const rawBase = env.VELLUM_BASE_URL?.trim();
  if (rawBase) {
    let url: URL;
    try {
      url = new URL(rawBase);
    } catch {
      throw new ConfigError('VELLUM_BASE_URL', `is not an absolute URL: "${rawBase}"`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new ConfigError('VELLUM_BASE_URL', 'must be http or https');
    if (url.search || url.hash) throw new ConfigError('VELLUM_BASE_URL', 'must not have a query or fragment');
    baseUrl = url.toString().replace(/\/+$/, '');
  } else {
    const shownHost = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
    baseUrl = `http://${shownHost}:${port}/fhir`;
  }
  // An empty or malformed VELLUM_MASTER_KEY is an error, not "use the key file". Never echo it.
  const masterKey = env.VELLUM_MASTER_KEY;
  if (masterKey !== undefined) {
    try {
      parseMasterKey(masterKey, 'VELLUM_MASTER_KEY');
    } catch {
      throw new ConfigError('VELLUM_MASTER_KEY', 'must be 32 bytes as 64 hex digits or base64/base64url');
    }
  }
  const ipfsUrl = env.VELLUM_IPFS_URL?.trim() || undefined;
  if (ipfsUrl) {
    let url: URL | undefined;
    try {
      url = new URL(ipfsUrl);
    } catch {
      url = undefined;
    }
    if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) throw new ConfigError('VELLUM_IPFS_URL', 'must be an http(s) URL');
  }
  const databaseUrl = env.VELLUM_DATABASE_URL?.trim() || undefined;
  if (databaseUrl) {
    let url: URL | undefined;
    try {
      url = new URL(databaseUrl);
    } catch {
      url = undefined;
    }
    // The URL carries the password: the message never quotes it.
    if (!url || (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:')) throw new ConfigError('VELLUM_DATABASE_URL', 'must be a postgres:// URL');
  }
  const auditRaw = (env.VELLUM_AUDIT ?? 'on').trim();
  if (auditRaw !== 'on' && auditRaw !== 'off') throw new ConfigError('VELLUM_AUDIT', 'must be on or off');
  const durability = (env.VELLUM_AUDIT_DURABILITY ?? 'fsync').trim();
  if (durability !== 'fsync' && durability !== 'wal') throw new ConfigError('VELLUM_AUDIT_DURABILITY', 'must be fsync or wal');
  const chain = chainConfig(env);
  const auth = loadAuthConfig(env, baseUrl);
  const consentRaw = env.VELLUM_CONSENT?.trim() || undefined;
  if (consentRaw !== undefined && consentRaw !== 'on' && consentRaw !== 'off') throw new ConfigError('VELLUM_CONSENT', 'must be on or off');
  const consentPossible = chain.mode !== 'off' && auth.mode !== 'off';
  if (consentRaw === 'on' && !consentPossible) throw new ConfigError('VELLUM_CONSENT', 'needs the chain and authorization on');
  const consent: ConsentConfig = {
    enabled: consentRaw === undefined ? consentPossible : consentRaw === 'on',
    freshnessMs: integer(env, 'VELLUM_CONSENT_FRESHNESS_MS', 5_000, 100, 3_600_000),
    pollMs: integer(env, 'VELLUM_CONSENT_POLL_MS', 500, 10, 60_000),
    model: consentModel(env),
    forceModel: ['1', 'true', 'yes'].includes(env.VELLUM_CONSENT_MODEL_FORCE?.trim() ?? ''),
    policies: consentPolicies(env),
    requestTtlSeconds: integer(env, 'VELLUM_CONSENT_REQUEST_TTL', 30 * 86_400, 60, 10 * 365 * 86_400),
  };
  return {
    host,
    port,
    dataDir,
    baseUrl,
    bodyLimit,
    masterKey,
    logLevel,
    ipfsUrl,
    databaseUrl,
    databasePoolMax: integer(env, 'VELLUM_DATABASE_POOL_MAX', 10, 1, 1_000),
    bundleMaxEntries,
    chain,
    auth,
    audit: auditRaw === 'on',
    auditDurability: durability,
    auditBatchMs: integer(env, 'VELLUM_AUDIT_BATCH_MS', 1_000, 0, 60_000),
    consent,
    subscriptions: {
      allow: (env.VELLUM_SUBSCRIPTION_ENDPOINTS_ALLOW ?? '')
        .split(',')
        .map((s) => s.trim().toLowerCase())
        .filter(Boolean)
        .map((entry) => {
          if (!/^[a-z0-9.\-\[\]:]+:\d{1,5}$/.test(entry)) throw new ConfigError('VELLUM_SUBSCRIPTION_ENDPOINTS_ALLOW', `entries are host:port, got "${entry}"`);
          return entry;
        }),
      maxFailures: integer(env, 'VELLUM_SUBSCRIPTION_MAX_FAILURES', 10, 1, 1000),
      retryMs: integer(env, 'VELLUM_SUBSCRIPTION_RETRY_MS', 1000, 1, 3_600_000),
      maxPerOwner: integer(env, 'VELLUM_SUBSCRIPTION_MAX_PER_OWNER', 100, 1, 100_000),
      payloadMax: integer(env, 'VELLUM_SUBSCRIPTION_PAYLOAD_MAX', 1_048_576, 1024, 67_108_864),
      socketsMax: integer(env, 'VELLUM_SUBSCRIPTION_SOCKETS_MAX', 10_000, 1, 1_000_000),
    },
    export: {
      fileMax: integer(env, 'VELLUM_EXPORT_FILE_MAX', 100_000, 1, 10_000_000),
      fileBytes: integer(env, 'VELLUM_EXPORT_FILE_BYTES', 8 * 1024 * 1024, 1024, 1024 * 1024 * 1024),
      ttlSeconds: integer(env, 'VELLUM_EXPORT_TTL', 86_400, 1, 365 * 86_400),
      concurrency: integer(env, 'VELLUM_EXPORT_CONCURRENCY', 2, 1, 100),
    },
  };
}

function chainConfig(env: NodeJS.ProcessEnv): ChainConfig {
  const rpcUrl = env.VELLUM_CHAIN_RPC_URL?.trim() || undefined;
  const rawMode = env.VELLUM_CHAIN?.trim() || (rpcUrl ? 'rpc' : 'embedded');
  if (!['embedded', 'rpc', 'off'].includes(rawMode)) throw new ConfigError('VELLUM_CHAIN', 'must be embedded, rpc or off');
  const mode = rawMode as ChainConfig['mode'];
  const base = {
    mode,
    confirmations: integer(env, 'VELLUM_CHAIN_CONFIRMATIONS', 1, 1, 1000),
    anchorIntervalMs: integer(env, 'VELLUM_ANCHOR_INTERVAL_MS', 1000, 10, 3_600_000),
    anchorMaxLeaves: integer(env, 'VELLUM_ANCHOR_MAX_LEAVES', 1000, 1, 1_000_000),
  };
  if (mode !== 'rpc') return base;
  if (!rpcUrl) throw new ConfigError('VELLUM_CHAIN_RPC_URL', 'is required when VELLUM_CHAIN=rpc');
  try {
    const url = new URL(rpcUrl);
    if (!['http:', 'https:'].includes(url.protocol)) throw new Error('protocol');
  } catch {
    throw new ConfigError('VELLUM_CHAIN_RPC_URL', 'must be an http(s) URL');
  }
  const privateKey = env.VELLUM_CHAIN_PRIVATE_KEY?.trim() || undefined;
  const keyFile = env.VELLUM_CHAIN_KEY_FILE?.trim() || undefined;
  if (!privateKey && !keyFile) throw new ConfigError('VELLUM_CHAIN_PRIVATE_KEY', 'or VELLUM_CHAIN_KEY_FILE is required when VELLUM_CHAIN=rpc');
  if (privateKey && !/^(0x)?[0-9a-fA-F]{64}$/.test(privateKey)) throw new ConfigError('VELLUM_CHAIN_PRIVATE_KEY', 'must be 32 bytes of hex');
  const contract = env.VELLUM_CHAIN_CONTRACT?.trim() || undefined;
  if (contract && !/^0x[0-9a-fA-F]{40}$/.test(contract)) throw new ConfigError('VELLUM_CHAIN_CONTRACT', 'must be a 0x-prefixed address');
  const consentContract = env.VELLUM_CONSENT_CONTRACT?.trim() || undefined;
  if (consentContract && !/^0x[0-9a-fA-F]{40}$/.test(consentContract)) throw new ConfigError('VELLUM_CONSENT_CONTRACT', 'must be a 0x-prefixed address');
  const rawChainId = env.VELLUM_CHAIN_ID?.trim();
  const chainId = rawChainId ? integer(env, 'VELLUM_CHAIN_ID', 0, 1, 2 ** 53 - 1) : undefined;
  return { ...base, rpcUrl, privateKey, keyFile, contract, consentContract, chainId };
}

function consentModel(env: NodeJS.ProcessEnv): 'opt-in' | 'opt-out' {
  const raw = env.VELLUM_CONSENT_MODEL?.trim() || 'opt-in';
  if (raw !== 'opt-in' && raw !== 'opt-out') throw new ConfigError('VELLUM_CONSENT_MODEL', 'must be opt-in or opt-out');
  return raw;
}

function consentPolicies(env: NodeJS.ProcessEnv): Record<string, 'permit' | 'deny'> {
  const raw = env.VELLUM_CONSENT_POLICIES?.trim();
  if (!raw) return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw new ConfigError('VELLUM_CONSENT_POLICIES', 'must be a JSON object of policy URI → "permit" or "deny"');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new ConfigError('VELLUM_CONSENT_POLICIES', 'must be a JSON object of policy URI → "permit" or "deny"');
  }
  const out: Record<string, 'permit' | 'deny'> = {};
  for (const [uri, effect] of Object.entries(parsed)) {
    if (effect !== 'permit' && effect !== 'deny') throw new ConfigError('VELLUM_CONSENT_POLICIES', 'every policy maps to "permit" or "deny"');
    out[uri] = effect;
  }
  return out;
}
