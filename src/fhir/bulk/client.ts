/**
 * A FHIR client for bulk exchange: SMART Backend Services tokens (client_credentials with a
 * signed assertion, `private_key_jwt`, or a client secret, as Vellum's administrator file holds),
 * and a Bulk Data export run end to end — kick-off, polling as the server asks (`Retry-After`),
 * download of every file into a directory, decryption of files encrypted to our key (JWE).
 *
 * It speaks plain HTTP to any FHIR server; nothing in it knows Vellum beyond the manifest's
 * proofs extension, which it downloads when present.
 */
import { createHash, randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { SignJWT, compactDecrypt, importJWK, type JWK } from 'jose';

/** How a client gets its access token (none: the server does not ask for one). */
export type ClientCredentials =
  | { kind: 'assertion'; tokenUrl: string; clientId: string; key: JWK; scope: string }
  | { kind: 'secret'; tokenUrl: string; clientId: string; secret: string; scope: string }
  | { kind: 'none' };

export class BulkClientError extends Error {
  override readonly name = 'BulkClientError';
  constructor(
    message: string,
    readonly status?: number,
  ) {
    super(message);
  }
}

/** The Bulk Data manifest (the fields this client uses). */
export interface Manifest {
  transactionTime: string;
  request: string;
  requiresAccessToken: boolean;
  output: { type: string; url: string; count?: number }[];
  deleted?: { type: string; url: string; count?: number }[];
  error?: { type: string; url: string; count?: number }[];
  extension?: Record<string, unknown>;
}

export const PROOFS_EXTENSION = 'https://vellum.dev/fhir/bulk/proofs';

/**
 * Cross-site provenance: `vellum import` records, for each version it imports that was anchored
 * at the source, a Provenance with this id (from the version's reference on the importing site)
 * and this extension (source, the source's version, digest, leaf, root, transaction, block,
 * chain id, contract); `$verify` of that version reports it as `origin`.
 */
export const CROSS_SITE_EXTENSION = 'https://vellum.dev/fhir/StructureDefinition/cross-site-anchor';

/** The id of the cross-site Provenance of `Type/id/_history/n` on the importing site. */
export function crossSiteProvenanceId(reference: string): string {
  return `xsite-${createHash('sha256').update(reference).digest('hex').slice(0, 40)}`;
}

const ASSERTION_ALG: Record<string, string> = { EC: 'ES384', RSA: 'RS384' };

export class FhirClient {
  readonly base: string;
  readonly #credentials: ClientCredentials;
  #token: { value: string; until: number } | undefined;
  /** Waits between polls are the server's to choose (Retry-After); this caps them. */
  readonly maxWaitMs: number;

  constructor(base: string, credentials: ClientCredentials = { kind: 'none' }, options: { maxWaitMs?: number } = {}) {
    this.base = base.replace(/\/+$/, '');
    this.#credentials = credentials;
    this.maxWaitMs = options.maxWaitMs ?? 10_000;
  }

  async #accessToken(): Promise<string | undefined> {
    const c = this.#credentials;
    if (c.kind === 'none') return undefined;
    if (this.#token && this.#token.until > Date.now()) return this.#token.value;
    const form = new URLSearchParams({ grant_type: 'client_credentials', scope: c.scope });
    const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' };
    if (c.kind === 'assertion') {
      const alg = c.key.alg ?? ASSERTION_ALG[c.key.kty ?? ''] ?? 'ES384';
      const assertion = await new SignJWT({})
        .setProtectedHeader({ alg, typ: 'JWT', kid: c.key.kid ?? '' })
        .setIssuer(c.clientId)
        .setSubject(c.clientId)
        .setAudience(c.tokenUrl)
        .setJti(randomUUID())
        .setExpirationTime('4m')
        .sign(await importJWK(c.key, alg));
      form.set('client_assertion_type', 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
      form.set('client_assertion', assertion);
    } else {
      headers.authorization = `Basic ${Buffer.from(`${encodeURIComponent(c.clientId)}:${encodeURIComponent(c.secret)}`).toString('base64')}`;
    }
    const response = await fetch(c.tokenUrl, { method: 'POST', headers, body: form });
    const body = (await response.json().catch(() => ({}))) as { access_token?: string; expires_in?: number; error?: string };
    if (!response.ok || typeof body.access_token !== 'string') {
      throw new BulkClientError(`the token endpoint ${c.tokenUrl} refused: ${body.error ?? `HTTP ${response.status}`}`, response.status);
    }
    this.#token = { value: body.access_token, until: Date.now() + Math.max(0, (body.expires_in ?? 300) - 30) * 1000 };
    return body.access_token;
  }

  /** A request to `url` (absolute, or relative to the base) with the access token. */
  async fetch(url: string, init: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Response> {
    const token = await this.#accessToken();
    const target = /^https?:\/\//.test(url) ? url : `${this.base}/${url.replace(/^\/+/, '')}`;
    return fetch(target, {
      method: init.method ?? 'GET',
      headers: { accept: 'application/fhir+json', ...(token ? { authorization: `Bearer ${token}` } : {}), ...(init.headers ?? {}) },
      ...(init.body !== undefined ? { body: init.body } : {}),
    });
  }

  /**
   * JSON request; raises BulkClientError (with the OperationOutcome's codes) on an error status.
   * A string body is sent as it is (JSON text with exact decimals), anything else as JSON.
   */
  async json<T = Record<string, unknown>>(url: string, init: { method?: string; body?: unknown } = {}): Promise<T> {
    const response = await this.fetch(url, {
      method: init.method ?? 'GET',
      ...(init.body !== undefined
        ? { body: typeof init.body === 'string' ? init.body : JSON.stringify(init.body), headers: { 'content-type': 'application/fhir+json' } }
        : {}),
    });
    const text = await response.text();
    if (!response.ok) throw new BulkClientError(`${init.method ?? 'GET'} ${url.split('?')[0]} → HTTP ${response.status} ${codesOf(text)}`, response.status);
    return (text ? JSON.parse(text) : {}) as T;
  }

  #wait(response: Response): Promise<void> {
    const seconds = Number(response.headers.get('retry-after'));
    const ms = Number.isFinite(seconds) && seconds >= 0 ? Math.min(seconds * 1000, this.maxWaitMs) : 1000;
    return new Promise((resolve) => setTimeout(resolve, Math.max(ms, 100)));
  }

  /**
   * Run an export (`kickOff`: `$export?…`, `Patient/$export?…`…) and wait for its manifest. A
   * 429 is retried after the server's Retry-After.
   */
  async export(kickOff: string, onProgress?: (progress: string) => void): Promise<{ manifest: Manifest; status: string }> {
    let kicked: Response;
    for (;;) {
      kicked = await this.fetch(kickOff, { headers: { prefer: 'respond-async' } });
      if (kicked.status !== 429) break;
      await this.#wait(kicked);
    }
    if (kicked.status !== 202) throw new BulkClientError(`export kick-off → HTTP ${kicked.status} ${codesOf(await kicked.text())}`, kicked.status);
    const status = kicked.headers.get('content-location');
    if (!status) throw new BulkClientError('the export kick-off answered without Content-Location');
    await kicked.arrayBuffer();
    for (;;) {
      const polled = await this.fetch(status, { headers: { accept: 'application/json' } });
      if (polled.status === 202) {
        onProgress?.(polled.headers.get('x-progress') ?? '');
        await polled.arrayBuffer();
        await this.#wait(polled);
        continue;
      }
      const text = await polled.text();
      if (polled.status !== 200) throw new BulkClientError(`export status → HTTP ${polled.status} ${codesOf(text)}`, polled.status);
      return { manifest: JSON.parse(text) as Manifest, status };
    }
  }

  /**
   * Download every file of `manifest` into `dir` (created), decrypting JWE files with
   * `decryptionKey`; writes `manifest.json` last, so a directory with one is complete. Files are
   * named by their URL's last segment.
   */
  async download(manifest: Manifest, dir: string, decryptionKey?: JWK): Promise<void> {
    await fs.mkdir(dir, { recursive: true, mode: 0o700 });
    const proofs = (manifest.extension?.[PROOFS_EXTENSION] ?? []) as { url: string }[];
    const urls = [...manifest.output, ...(manifest.deleted ?? []), ...(manifest.error ?? []), ...proofs].map((f) => f.url);
    const key = decryptionKey ? await importJWK(decryptionKey, 'ECDH-ES+A256KW') : undefined;
    for (const url of urls) {
      const response = await this.fetch(url, { headers: { accept: 'application/fhir+ndjson' } });
      if (!response.ok) throw new BulkClientError(`download ${fileName(url)} → HTTP ${response.status}`, response.status);
      let data: Uint8Array = new Uint8Array(await response.arrayBuffer());
      if ((response.headers.get('content-type') ?? '').startsWith('application/jose')) {
        if (!key) throw new BulkClientError(`${fileName(url)} is encrypted to a key: give the private encryption key`);
        data = (await compactDecrypt(Buffer.from(data).toString('ascii'), key)).plaintext;
      }
      await fs.writeFile(path.join(dir, fileName(url)), data, { mode: 0o600 });
    }
    await fs.writeFile(path.join(dir, 'manifest.json.partial'), JSON.stringify(manifest, null, 2) + '\n', { mode: 0o600 });
    await fs.rename(path.join(dir, 'manifest.json.partial'), path.join(dir, 'manifest.json'));
  }

  /** Ask the server to remove an export's files (DELETE on the status URL); errors are ignored. */
  async discard(status: string): Promise<void> {
    await this.fetch(status, { method: 'DELETE' }).then((r) => r.arrayBuffer(), () => undefined);
  }
}

/** The local name of a downloaded file: its URL's last path segment. */
export function fileName(url: string): string {
  const name = decodeURIComponent(new URL(url).pathname.split('/').pop() ?? '');
  if (!/^[A-Za-z0-9._-]{1,200}$/.test(name) || name === 'manifest.json') throw new BulkClientError(`the file name of ${url.slice(0, 200)} is not usable`);
  return name;
}

/** The Vellum error codes of an OperationOutcome body (for messages), or ''. */
function codesOf(text: string): string {
  try {
    const outcome = JSON.parse(text) as { issue?: { code?: string; details?: { coding?: { code?: string }[] } }[] };
    return (outcome.issue ?? []).map((i) => i.details?.coding?.[0]?.code ?? i.code).filter(Boolean).join(', ');
  } catch {
    return '';
  }
}
