/**
 * SMART-on-FHIR authorization. This folder holds the embedded authorization server (a Fastify
 * plugin, plugin.ts, with one file per endpoint: authorize.ts, token-endpoint.ts, introspect.ts,
 * registration.ts), its signing keys (keys.ts), SMART scopes (scopes.ts), discovery documents
 * (discovery.ts), the bootstrap administrator (bootstrap.ts), the configuration (config.ts), and the
 * bearer-token verifier the FHIR request path uses (verify.ts), which also serves resource-server
 * mode with an external authorization server.
 *
 * `openEmbeddedAuth` is the composition root of the embedded mode: it opens the auth store and the
 * key ring in the data dir, bootstraps the administrator, and returns the plugin options and the
 * verifier. `createAuthVerifier` builds the verifier for any mode.
 */
import { join } from 'node:path';
import type { AuthStore } from '../../storage/auth-store.ts';
import { SqliteAuthStore } from '../../storage/sqlite/sqlite-auth-store.ts';
import { bootstrapAdminClient } from './bootstrap.ts';
import type { AuthConfig } from './config.ts';
import { capabilitySecurity, smartConfiguration } from './discovery.ts';
import { SigningKeys } from './keys.ts';
import { authUrls, type AuthUrls } from './oauth.ts';
import type { AuthPluginOptions } from './plugin.ts';
import { createTokenVerifier, type TokenVerifier } from './verify.ts';

export { authPlugin, type AuthPluginOptions } from './plugin.ts';
export { capabilitySecurity, openidConfiguration, smartConfiguration } from './discovery.ts';
export { loadAuthConfig, type AuthConfig } from './config.ts';
export { authError, bearerToken, createTokenVerifier, decide, insufficientScope, type Principal, type TokenVerifier } from './verify.ts';
export { allows, allowingContexts, parseScopes, type Interaction, type Scope, type ScopeContext } from './scopes.ts';

export interface EmbeddedAuth {
  store: AuthStore;
  keys: SigningKeys;
  urls: AuthUrls;
  verifier: TokenVerifier;
  /** Register with `app.register(authPlugin, { prefix: '/auth', ...pluginOptions })` (prefix = path of authUrl). */
  pluginOptions: AuthPluginOptions;
  /** `<dataDir>/admin-client.json`. */
  adminClientFile: string;
  smartConfiguration(): Record<string, unknown>;
  capabilitySecurity(): Record<string, unknown>;
  close(): Promise<void>;
}

/**
 * Open the embedded authorization server's state in `dataDir`: `auth.db` (clients, users, codes,
 * refresh tokens, jtis), `auth/signing-keys.json`, and `admin-client.json` (created on first start).
 * Raises StorageError (VLM_AUTH_STORE_*), SigningKeyError (VLM_AUTH_KEYS_*), AdminBootstrapError.
 */
export async function openEmbeddedAuth(options: {
  dataDir: string;
  config: AuthConfig;
  log?: { info(obj: object, msg: string): void };
  patientExists?: (id: string) => Promise<boolean>;
  now?: () => number;
  /** Where clients, users, codes and refresh tokens live (default: `auth.db` in the data dir). */
  store?: AuthStore;
}): Promise<EmbeddedAuth> {
  const { dataDir, config } = options;
  const urls = authUrls(config.authUrl, config.audience);
  const store = options.store ?? SqliteAuthStore.open(join(dataDir, 'auth.db'));
  try {
    const keys = await SigningKeys.open(config.keysFile ?? join(dataDir, 'auth', 'signing-keys.json'), {
      // A retired key must outlive every token it signed (access and id tokens share the TTL).
      retainSeconds: config.accessTokenTtl + config.clockSkew + 60,
      ...(options.now ? { now: options.now } : {}),
    });
    const adminClientFile = config.adminClientFile ?? join(dataDir, 'admin-client.json');
    await bootstrapAdminClient({ store, file: adminClientFile, tokenUrl: urls.token, ...(options.log ? { log: options.log } : {}), ...(options.now ? { now: options.now } : {}) });
    const verifier = createAuthVerifier({ ...config, mode: 'embedded' }, keys, options.now)!;
    const pluginOptions: AuthPluginOptions = {
      store,
      keys,
      authUrl: urls.issuer,
      fhirBaseUrl: urls.fhirBaseUrl,
      accessTokenTtl: config.accessTokenTtl,
      refreshTokenTtl: config.refreshTokenTtl,
      codeTtl: config.codeTtl,
      clockSkew: config.clockSkew,
      verifier,
      ...(options.patientExists ? { patientExists: options.patientExists } : {}),
      ...(options.now ? { now: options.now } : {}),
    };
    return {
      store,
      keys,
      urls,
      verifier,
      pluginOptions,
      adminClientFile,
      smartConfiguration: () => smartConfiguration(urls),
      capabilitySecurity: () => capabilitySecurity(urls),
      close: () => store.close(),
    };
  } catch (err) {
    await store.close();
    throw err;
  }
}

/**
 * The bearer-token verifier for the configured mode: Vellum's own keys (`embedded`, `keys`
 * required) or the external issuer's JWKS (`external`). Undefined for `off`.
 */
export function createAuthVerifier(config: AuthConfig, keys?: SigningKeys, now?: () => number): TokenVerifier | undefined {
  if (config.mode === 'off') return undefined;
  if (config.mode === 'external') {
    const ext = config.external!;
    return createTokenVerifier({ mode: 'external', issuer: ext.issuer, jwksUrl: ext.jwksUrl, algorithms: ext.algorithms, audience: config.audience, clockSkew: config.clockSkew, ...(now ? { now } : {}) });
  }
  if (!keys) throw new Error('embedded mode needs the signing keys');
  return createTokenVerifier({
    mode: 'embedded',
    keys,
    issuer: config.authUrl,
    audience: config.audience,
    clockSkew: config.clockSkew,
    // Vellum never issues longer-lived tokens: anything else was not made here.
    maxLifetime: config.accessTokenTtl + config.clockSkew,
    ...(now ? { now } : {}),
  });
}
