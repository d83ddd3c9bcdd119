/**
 * Test harness for the embedded authorization server: the auth plugin mounted on a bare Fastify
 * app (no src/server.ts) over a temporary data dir, plus a stub FHIR route guarded by the verifier
 * (`GET /fhir/:type/:id`), the discovery document and the CapabilityStatement fragment, the way the
 * FHIR layer is meant to wire them. The clock can be moved (`h.advance(seconds)`).
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';
import type { Test } from 'tap';
import { loadAuthConfig } from '../../../src/fhir/auth/config.ts';
import { authPlugin, bearerToken, decide, insufficientScope, openEmbeddedAuth, type EmbeddedAuth } from '../../../src/fhir/auth/index.ts';
import { FhirError, operationOutcome } from '../../../src/fhir/errors.ts';
import type { TestServer } from '../../helpers/server.ts';

export interface Injected {
  status: number;
  headers: Record<string, string | string[] | number | undefined>;
  json: any;
  text: string;
}

export interface Harness {
  app: FastifyInstance;
  auth: EmbeddedAuth;
  dataDir: string;
  origin: string;
  fhirBase: string;
  tokenUrl: string;
  admin: { clientId: string; secret: string };
  /** Seconds since the epoch, as the server sees it. */
  now(): number;
  advance(seconds: number): void;
  request(method: string, url: string, options?: { form?: Record<string, string> | string; json?: unknown; body?: string; headers?: Record<string, string> }): Promise<Injected>;
  token(form: Record<string, string> | string, headers?: Record<string, string>): Promise<Injected>;
  adminToken(scope?: string): Promise<string>;
  register(metadata: Record<string, unknown>, token?: string): Promise<Injected>;
  createUser(user: { username: string; password: string; fhir_user: string }): Promise<Injected>;
}

export function basic(id: string, secret: string): string {
  return `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;
}

export interface HarnessOptions {
  /** Listen on this port (real HTTP tests); default: inject only, origin http://vellum.test. */
  port?: number;
  dataDir?: string;
  env?: Record<string, string>;
}

export async function startHarness(t: Test, options: HarnessOptions = {}): Promise<Harness> {
  const owned = options.dataDir === undefined;
  const dataDir = options.dataDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-auth-'));
  const origin = options.port ? `http://127.0.0.1:${options.port}` : 'http://vellum.test';
  const fhirBase = `${origin}/fhir`;
  let offset = 0;
  const now = () => Math.floor(Date.now() / 1000) + offset;
  const config = loadAuthConfig(options.env ?? {}, fhirBase);
  const logged: object[] = [];
  const auth = await openEmbeddedAuth({ dataDir, config, now, log: { info: (obj) => logged.push(obj) } });
  const adminFile = JSON.parse(fs.readFileSync(auth.adminClientFile, 'utf8')) as { client_id: string; client_secret: string };

  const app = Fastify({ logger: false });
  await app.register(authPlugin, { prefix: '/auth', ...auth.pluginOptions });
  // What the FHIR layer is expected to do with the auth module's exports.
  await app.register(async (fhir) => {
    fhir.get('/.well-known/smart-configuration', async (_req, reply) => {
      reply.header('Access-Control-Allow-Origin', '*').type('application/json');
      return auth.smartConfiguration();
    });
    fhir.get('/metadata', async () => ({ resourceType: 'CapabilityStatement', rest: [{ mode: 'server', security: auth.capabilitySecurity() }] }));
    fhir.get('/:type/:id', async (request, reply) => {
      const { type, id } = request.params as { type: string; id: string };
      try {
        const principal = await auth.verifier.verify(bearerToken(request.headers.authorization));
        const decision = decide(principal, 'read', type);
        if (!decision.allowed) throw insufficientScope('read', type);
        if (decision.patient && !(type === 'Patient' && id === decision.patient)) throw insufficientScope('read', type);
        return { resourceType: type, id, meta: { tag: [{ code: principal.clientId }] } };
      } catch (err) {
        if (!(err instanceof FhirError)) throw err;
        reply.code(err.status).headers(err.headers).type('application/fhir+json');
        return operationOutcome(err.issues);
      }
    });
  }, { prefix: '/fhir' });
  if (options.port) await app.listen({ port: options.port, host: '127.0.0.1' });

  t.teardown(async () => {
    await app.close();
    await auth.close();
    if (owned) fs.rmSync(dataDir, { recursive: true, force: true });
  });

  const h: Harness = {
    app,
    auth,
    dataDir,
    origin,
    fhirBase,
    tokenUrl: auth.urls.token,
    admin: { clientId: adminFile.client_id, secret: adminFile.client_secret },
    now,
    advance(seconds) {
      offset += seconds;
    },
    async request(method, url, o = {}) {
      const headers: Record<string, string> = { ...(o.headers ?? {}) };
      let payload: string | undefined = o.body;
      if (o.form !== undefined) {
        headers['content-type'] ??= 'application/x-www-form-urlencoded';
        payload = typeof o.form === 'string' ? o.form : new URLSearchParams(o.form).toString();
      } else if (o.json !== undefined) {
        headers['content-type'] ??= 'application/json';
        payload = JSON.stringify(o.json);
      }
      const res = await app.inject({ method: method as 'GET', url, headers, ...(payload !== undefined ? { payload } : {}) });
      let json: unknown;
      try {
        json = JSON.parse(res.body);
      } catch {
        json = undefined;
      }
      return { status: res.statusCode, headers: res.headers, json, text: res.body };
    },
    token(form, headers) {
      return h.request('POST', '/auth/token', { form, ...(headers ? { headers } : {}) });
    },
    async adminToken(scope = 'system/*.*') {
      const res = await h.token({ grant_type: 'client_credentials', scope }, { authorization: basic(h.admin.clientId, h.admin.secret) });
      if (res.status !== 200) throw new Error(`admin token: ${res.status} ${res.text}`);
      return res.json.access_token as string;
    },
    async register(metadata, token) {
      return h.request('POST', '/auth/register', { json: metadata, headers: token ? { authorization: `Bearer ${token}` } : {} });
    },
    async createUser(user) {
      return h.request('POST', '/auth/users', { json: user, headers: { authorization: `Bearer ${await h.adminToken()}` } });
    },
  };
  (h as Harness & { logged: object[] }).logged = logged;
  return h;
}

/** A Backend Services client key pair and its registration. */
export interface BackendClient {
  clientId: string;
  alg: 'RS384' | 'ES384';
  kid: string;
  privateKey: CryptoKey;
  publicJwk: JWK;
  privateJwk: JWK;
}

export async function backendKey(alg: 'RS384' | 'ES384' = 'ES384'): Promise<Omit<BackendClient, 'clientId'>> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const kid = randomBytes(8).toString('hex');
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg };
  const privateJwk = { ...(await exportJWK(privateKey)), kid, alg };
  return { alg, kid, privateKey, publicJwk, privateJwk };
}

/** Register a private_key_jwt client for client_credentials. */
export async function registerBackendClient(h: Harness, options: { alg?: 'RS384' | 'ES384'; scope?: string; fhirUser?: string } = {}): Promise<BackendClient> {
  const key = await backendKey(options.alg);
  const res = await h.register(
    {
      client_name: 'HIE back end',
      token_endpoint_auth_method: 'private_key_jwt',
      grant_types: ['client_credentials'],
      jwks: { keys: [key.publicJwk] },
      scope: options.scope ?? 'system/*.rs system/Observation.cruds',
      ...(options.fhirUser ? { fhir_user: options.fhirUser } : {}),
    },
    await h.adminToken(),
  );
  if (res.status !== 201) throw new Error(`register: ${res.status} ${res.text}`);
  return { ...key, clientId: res.json.client_id };
}

/** A client assertion (RFC 7523) with overridable header and claims (`undefined` values delete a claim). */
export async function clientAssertion(
  h: Harness,
  client: BackendClient,
  override: { header?: Record<string, unknown>; claims?: Record<string, unknown> } = {},
): Promise<string> {
  const claims: Record<string, unknown> = {
    iss: client.clientId,
    sub: client.clientId,
    aud: h.tokenUrl,
    exp: h.now() + 240,
    jti: randomBytes(16).toString('hex'),
    ...override.claims,
  };
  for (const [k, v] of Object.entries(claims)) if (v === undefined) delete claims[k];
  return new SignJWT(claims)
    .setProtectedHeader({ alg: client.alg, kid: client.kid, typ: 'JWT', ...override.header } as { alg: string })
    .sign(client.privateKey);
}

export function backendForm(assertion: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    grant_type: 'client_credentials',
    scope: 'system/Observation.rs',
    client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
    client_assertion: assertion,
    ...extra,
  };
}

export function pkce(): { verifier: string; challenge: string } {
  const verifier = randomBytes(48).toString('base64url');
  return { verifier, challenge: createHash('sha256').update(verifier).digest('base64url') };
}

/** The hidden form_token of a login or approval page. */
export function formToken(html: string): string {
  const m = /name="form_token" value="([^"]+)"/.exec(html);
  if (!m) throw new Error('no form_token in page');
  return m[1]!;
}

export function cookieOf(headers: Injected['headers']): string {
  const set = headers['set-cookie'];
  const first = Array.isArray(set) ? set[0] : set;
  if (typeof first !== 'string') throw new Error('no cookie set');
  return first.split(';')[0]!;
}

export interface FlowOptions {
  clientId: string;
  redirectUri: string;
  scope: string;
  username: string;
  password: string;
  patient?: string;
  nonce?: string;
  state?: string;
  challenge?: string;
  extra?: Record<string, string>;
}

/** Drive the standalone launch through the login and approval pages; returns the redirect's code and state. */
export async function authorizeThroughPages(h: Harness, o: FlowOptions): Promise<{ code: string; state: string; verifier: string; location: URL }> {
  const { verifier, challenge } = pkce();
  const state = o.state ?? randomBytes(8).toString('hex');
  const query = new URLSearchParams({
    response_type: 'code',
    client_id: o.clientId,
    redirect_uri: o.redirectUri,
    scope: o.scope,
    state,
    aud: h.fhirBase,
    code_challenge: o.challenge ?? challenge,
    code_challenge_method: 'S256',
    ...(o.nonce ? { nonce: o.nonce } : {}),
    ...o.extra,
  });
  const page = await h.request('GET', `/auth/authorize?${query}`);
  if (page.status !== 200) throw new Error(`authorize: ${page.status} ${page.headers.location ?? page.text}`);
  const cookie = cookieOf(page.headers);
  const login = await h.request('POST', '/auth/authorize/login', {
    form: { form_token: formToken(page.text), username: o.username, password: o.password },
    headers: { cookie },
  });
  if (login.status !== 200) throw new Error(`login: ${login.status}`);
  const approve = await h.request('POST', '/auth/authorize/approve', {
    form: { form_token: formToken(login.text), decision: 'approve', ...(o.patient ? { patient: o.patient } : {}) },
    headers: { cookie },
  });
  if (approve.status !== 303) throw new Error(`approve: ${approve.status} ${approve.text}`);
  const location = new URL(String(approve.headers.location));
  return { code: location.searchParams.get('code') ?? '', state: location.searchParams.get('state') ?? '', verifier, location };
}

/** Register a public SMART app and a patient and a practitioner user. */
export async function appAndUsers(h: Harness, options: { authMethod?: 'none' | 'client_secret_basic'; scope?: string } = {}) {
  const redirectUri = 'https://app.example.org/callback';
  const reg = await h.register(
    {
      client_name: 'Patient app',
      token_endpoint_auth_method: options.authMethod ?? 'none',
      grant_types: ['authorization_code', 'refresh_token'],
      redirect_uris: [redirectUri],
      scope: options.scope ?? 'openid fhirUser launch/patient offline_access online_access patient/*.rs user/*.rs',
    },
    await h.adminToken(),
  );
  if (reg.status !== 201) throw new Error(`register app: ${reg.status} ${reg.text}`);
  const pat = await h.createUser({ username: 'alice', password: 'correct horse battery', fhir_user: 'Patient/p1' });
  const doc = await h.createUser({ username: 'drbob', password: 'another good password', fhir_user: 'Practitioner/d1' });
  if (pat.status !== 201 || doc.status !== 201) throw new Error('users');
  return {
    clientId: reg.json.client_id as string,
    clientSecret: reg.json.client_secret as string | undefined,
    redirectUri,
    patient: { username: 'alice', password: 'correct horse battery', id: pat.json.id as string },
    practitioner: { username: 'drbob', password: 'another good password', id: doc.json.id as string },
  };
}

/** The auth test harness's interface over the real server (same app, same inject). */
export function harnessOf(s: TestServer, admin: { clientId: string; secret: string }): Harness {
  const h = {
    app: s.app,
    dataDir: s.dataDir,
    origin: 'http://vellum.test',
    fhirBase: 'http://vellum.test/fhir',
    tokenUrl: 'http://vellum.test/auth/token',
    admin,
    now: () => Math.floor(Date.now() / 1000),
    advance() {
      throw new Error('no clock control on the real server');
    },
    async request(method: string, url: string, o: { form?: Record<string, string> | string; json?: unknown; body?: string; headers?: Record<string, string> } = {}) {
      const headers: Record<string, string> = { ...(o.headers ?? {}) };
      let payload: string | undefined = o.body;
      if (o.form !== undefined) {
        headers['content-type'] ??= 'application/x-www-form-urlencoded';
        payload = typeof o.form === 'string' ? o.form : new URLSearchParams(o.form).toString();
      } else if (o.json !== undefined) {
        headers['content-type'] ??= 'application/json';
        payload = JSON.stringify(o.json);
      }
      const res = await s.app.inject({ method: method as 'GET', url, headers, ...(payload !== undefined ? { payload } : {}) });
      let json: unknown;
      try {
        json = JSON.parse(res.body);
      } catch {
        json = undefined;
      }
      return { status: res.statusCode, headers: res.headers, json, text: res.body };
    },
    token(form: Record<string, string> | string, headers?: Record<string, string>) {
      return h.request('POST', '/auth/token', { form, ...(headers ? { headers } : {}) });
    },
    async adminToken(scope = 'system/*.*') {
      const res = await h.token({ grant_type: 'client_credentials', scope }, { authorization: basic(admin.clientId, admin.secret) });
      if (res.status !== 200) throw new Error(`admin token: ${res.status} ${res.text}`);
      return (res.json as any).access_token as string;
    },
    async register(metadata: Record<string, unknown>, token?: string) {
      return h.request('POST', '/auth/register', { json: metadata, headers: token ? { authorization: `Bearer ${token}` } : {} });
    },
    async createUser(user: { username: string; password: string; fhir_user: string }) {
      return h.request('POST', '/auth/users', { json: user, headers: { authorization: `Bearer ${await h.adminToken()}` } });
    },
  };
  return h as unknown as Harness;
}

