/**
 * Authorization configuration from the environment (to be merged into src/config.ts). A bad value
 * raises ConfigError naming the variable.
 *
 * | variable | default | meaning |
 * |---|---|---|
 * | `VELLUM_AUTH` | `embedded` | `embedded` authorization server, `external` resource-server mode, `off` open server |
 * | `VELLUM_AUTH_URL` | FHIR base with `/fhir` → `/auth` | public URL of the embedded authorization server (its issuer) |
 * | `VELLUM_OAUTH_ISSUER` | — | external mode: the authorization server's issuer (`iss` of its tokens) |
 * | `VELLUM_OAUTH_JWKS_URL` | — | external mode: its JWKS |
 * | `VELLUM_OAUTH_AUDIENCE` | the FHIR base URL | `aud` that access tokens must carry |
 * | `VELLUM_OAUTH_ALGORITHMS` | `RS256,RS384,RS512,PS256,PS384,PS512,ES256,ES384,ES512` | external mode: accepted JWS algorithms (asymmetric only) |
 * | `VELLUM_AUTH_ACCESS_TOKEN_TTL` | `3600` | access and id token lifetime, seconds |
 * | `VELLUM_AUTH_REFRESH_TOKEN_TTL` | `2592000` (30 days) | refresh token lifetime (absolute, across rotations), seconds |
 * | `VELLUM_AUTH_CODE_TTL` | `60` | authorization code lifetime, seconds |
 * | `VELLUM_AUTH_CLOCK_SKEW` | `30` | tolerated clock difference when checking `exp` / `nbf`, seconds |
 */
import { ConfigError } from '../../config.ts';
import { resolve } from 'node:path';

export type AuthMode = 'embedded' | 'external' | 'off';

export interface AuthConfig {
  mode: AuthMode;
  /** Public URL of the embedded authorization server: issuer, and prefix of /token, /authorize… */
  authUrl: string;
  /** `aud` every access token must carry (default: the FHIR base URL). */
  audience: string;
  /** External mode only. */
  external?: { issuer: string; jwksUrl: string; algorithms: string[] };
  accessTokenTtl: number;
  refreshTokenTtl: number;
  codeTtl: number;
  clockSkew: number;
  /**
   * The token signing key ring (VELLUM_AUTH_KEYS_FILE; default `<data dir>/auth/signing-keys.json`)
   * and the administrator client's credentials (VELLUM_ADMIN_CLIENT_FILE; default
   * `<data dir>/admin-client.json`): several nodes on one database share both (docs/deploy.md).
   */
  keysFile?: string;
  adminClientFile?: string;
}

const ASYMMETRIC = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'];

function seconds(env: NodeJS.ProcessEnv, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name]?.trim();
  if (!raw) return fallback;
  if (!/^\d+$/.test(raw)) throw new ConfigError(name, `must be a whole number of seconds, got "${raw}"`);
  const value = Number(raw);
  if (value < min || value > max) throw new ConfigError(name, `must be between ${min} and ${max}, got ${value}`);
  return value;
}

function httpUrl(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const raw = env[name]?.trim();
  if (!raw) return undefined;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError(name, `is not an absolute URL: "${raw}"`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new ConfigError(name, 'must be http or https');
  if (url.hash) throw new ConfigError(name, 'must not have a fragment');
  return raw;
}

/** The embedded authorization server's URL for a FHIR base: `…/fhir` → `…/auth`, else `<origin>/auth`. */
export function defaultAuthUrl(fhirBaseUrl: string): string {
  const base = fhirBaseUrl.replace(/\/+$/, '');
  return base.endsWith('/fhir') ? `${base.slice(0, -'/fhir'.length)}/auth` : `${new URL(base).origin}/auth`;
}

/** Read and validate the authorization settings; `fhirBaseUrl` is the validated VELLUM_BASE_URL. Raises ConfigError. */
export function loadAuthConfig(env: NodeJS.ProcessEnv, fhirBaseUrl: string): AuthConfig {
  const mode = (env.VELLUM_AUTH?.trim() || 'embedded') as AuthMode;
  if (!['embedded', 'external', 'off'].includes(mode)) throw new ConfigError('VELLUM_AUTH', 'must be embedded, external or off');
  const authUrl = (httpUrl(env, 'VELLUM_AUTH_URL') ?? defaultAuthUrl(fhirBaseUrl)).replace(/\/+$/, '');
  const audience = httpUrl(env, 'VELLUM_OAUTH_AUDIENCE') ?? fhirBaseUrl.replace(/\/+$/, '');
  const config: AuthConfig = {
    mode,
    authUrl,
    audience,
    accessTokenTtl: seconds(env, 'VELLUM_AUTH_ACCESS_TOKEN_TTL', 3600, 60, 86_400),
    refreshTokenTtl: seconds(env, 'VELLUM_AUTH_REFRESH_TOKEN_TTL', 30 * 86_400, 300, 365 * 86_400),
    codeTtl: seconds(env, 'VELLUM_AUTH_CODE_TTL', 60, 10, 600),
    clockSkew: seconds(env, 'VELLUM_AUTH_CLOCK_SKEW', 30, 0, 300),
  };
  const keysFile = env.VELLUM_AUTH_KEYS_FILE?.trim();
  if (keysFile) config.keysFile = resolve(keysFile);
  const adminClientFile = env.VELLUM_ADMIN_CLIENT_FILE?.trim();
  if (adminClientFile) config.adminClientFile = resolve(adminClientFile);
  if (mode === 'external') {
    const issuer = env.VELLUM_OAUTH_ISSUER?.trim();
    if (!issuer) throw new ConfigError('VELLUM_OAUTH_ISSUER', 'is required when VELLUM_AUTH=external');
    const jwksUrl = httpUrl(env, 'VELLUM_OAUTH_JWKS_URL');
    if (!jwksUrl) throw new ConfigError('VELLUM_OAUTH_JWKS_URL', 'is required when VELLUM_AUTH=external');
    const algorithms = (env.VELLUM_OAUTH_ALGORITHMS?.trim() || ASYMMETRIC.slice(0, 9).join(','))
      .split(',')
      .map((a) => a.trim())
      .filter(Boolean);
    // Symmetric algorithms would let anyone holding the (public) verification material mint tokens.
    const bad = algorithms.find((a) => !ASYMMETRIC.includes(a));
    if (bad !== undefined || algorithms.length === 0) {
      throw new ConfigError('VELLUM_OAUTH_ALGORITHMS', `must list asymmetric JWS algorithms only (${ASYMMETRIC.join(', ')})`);
    }
    config.external = { issuer, jwksUrl, algorithms };
  }
  return config;
}
