/**
 * A plain-`fetch` FHIR client for the checks: every request goes to the base URL given on the
 * command line with `Accept: application/fhir+json` (and `Content-Type: application/fhir+json`
 * when there is a body), plus `Authorization: Bearer <token>` when a token was given — and only to
 * that base URL's origin, so a server's paging link cannot make the suite leak the token.
 */

export const FHIR_JSON = 'application/fhir+json';

export interface RequestOptions {
  method?: string;
  /** An object is sent as JSON; a string is sent as it is. */
  body?: unknown;
  /** Extra headers; `null` removes one of the defaults (e.g. `{ accept: null }`). */
  headers?: Record<string, string | null>;
}

export interface FhirResponse {
  method: string;
  /** The absolute URL requested. */
  url: string;
  status: number;
  headers: Headers;
  text: string;
  /** The parsed body when it is JSON, else undefined. */
  json: any;
}

/** Search / query parameters: a value list repeats the parameter (`date=ge2000&date=lt2001`). */
export type Params = Record<string, string | string[]>;

/**
 * Encode search parameters the way FHIR clients usually write them: values percent-encoded, but
 * the FHIR syntax characters `|` `,` `:` `/` `$` left readable (servers decode either form).
 */
export function queryString(params: Params | [string, string][]): string {
  const pairs = Array.isArray(params)
    ? params
    : Object.entries(params).flatMap(([k, v]) => (Array.isArray(v) ? v.map((x) => [k, x] as [string, string]) : [[k, v] as [string, string]]));
  return pairs
    .map(([k, v]) => `${encodeURIComponent(k).replace(/%3A/gi, ':')}=${encodeValue(v)}`)
    .join('&');
}

function encodeValue(value: string): string {
  return encodeURIComponent(value).replace(/%(7C|2C|3A|2F|24)/gi, (m) => decodeURIComponent(m));
}

export class FhirClient {
  readonly baseUrl: string;
  readonly #origin: string;
  readonly #token: string | undefined;

  constructor(baseUrl: string, token?: string) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    this.#origin = new URL(this.baseUrl).origin;
    this.#token = token;
  }

  /** An absolute URL: `path` relative to the base (`Patient/1`, `Patient?x=y`) or already absolute. */
  url(path: string): string {
    if (/^https?:\/\//i.test(path)) return path;
    return path === '' ? this.baseUrl : `${this.baseUrl}/${path.replace(/^\/+/, '')}`;
  }

  /** A short form of a URL for messages: relative to the base when it is under it. */
  shortUrl(url: string): string {
    return url.startsWith(`${this.baseUrl}/`) ? url.slice(this.baseUrl.length + 1) : url;
  }

  async request(path: string, options: RequestOptions, signal: AbortSignal): Promise<FhirResponse> {
    const url = this.url(path);
    const method = options.method ?? 'GET';
    const headers: Record<string, string | null> = { accept: FHIR_JSON };
    let body: string | undefined;
    if (options.body !== undefined) {
      body = typeof options.body === 'string' ? options.body : JSON.stringify(options.body);
      headers['content-type'] = FHIR_JSON;
    }
    if (this.#token !== undefined && new URL(url).origin === this.#origin) headers['authorization'] = `Bearer ${this.#token}`;
    for (const [name, value] of Object.entries(options.headers ?? {})) headers[name.toLowerCase()] = value;
    const sent: Record<string, string> = {};
    for (const [name, value] of Object.entries(headers)) if (value !== null) sent[name] = value;

    const res = await fetch(url, { method, headers: sent, body, signal, redirect: 'manual' });
    const text = await res.text();
    let json: unknown;
    if (text.trim() !== '') {
      try {
        json = JSON.parse(text);
      } catch {
        json = undefined;
      }
    }
    return { method, url, status: res.status, headers: res.headers, text, json };
  }
}
