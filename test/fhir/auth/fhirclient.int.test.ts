/**
 * A real SMART client library, fhirclient.js 2.6.3 (its Node adapter), completes a standalone
 * launch against the auth plugin listening on a real port: discovery, the authorize redirect with
 * PKCE S256, the login and approval pages (driven over HTTP like a browser would), the code
 * exchange, a FHIR request with the token, and a refresh. A hand-written Backend Services client
 * (https://hl7.org/fhir/smart-app-launch/STU2.2/backend-services.html) does the same over HTTP.
 */
import net from 'node:net';
import { randomUUID } from 'node:crypto';
import smart from 'fhirclient';
import t from 'tap';
import { backendKey, clientAssertion, startHarness } from './harness.ts';

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/** fhirclient's storage interface, in memory (the Node adapter's default keeps it in a session). */
function memoryStorage() {
  const data = new Map<string, unknown>();
  return {
    async get(key: string) {
      return data.get(key);
    },
    async set(key: string, value: unknown) {
      data.set(key, value);
      return value;
    },
    async unset(key: string) {
      return data.delete(key);
    },
  };
}

/** Just enough of IncomingMessage / ServerResponse for fhirclient's NodeAdapter. */
function fakeHttp(url: string, host: string) {
  const req = { url, headers: { host }, socket: {} };
  const res = {
    location: undefined as string | undefined,
    writeHead(_status: number, headers: { location?: string }) {
      this.location = headers.location;
    },
    end() {},
  };
  return { req, res };
}

function formTokenOf(html: string): string {
  const m = /name="form_token" value="([^"]+)"/.exec(html);
  if (!m) throw new Error('no form token');
  return m[1]!;
}

t.test('fhirclient.js standalone launch with PKCE, openid fhirUser launch/patient offline_access, then refresh', async (t) => {
  const port = await freePort();
  const h = await startHarness(t, { port });
  const appHost = '127.0.0.1:65000'; // the app's own origin; fhirclient only uses it to build URLs
  const redirectUri = `http://${appHost}/callback`;
  const reg = await h.register(
    {
      client_name: 'fhirclient app',
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code', 'refresh_token'],
      redirect_uris: [redirectUri],
      scope: 'openid fhirUser launch/patient offline_access patient/*.rs',
    },
    await h.adminToken(),
  );
  t.equal(reg.status, 201);
  t.equal((await h.createUser({ username: 'alice', password: 'correct horse battery', fhir_user: 'Patient/p1' })).status, 201);

  const storage = memoryStorage();
  // 1. authorize(): discovery + redirect to the authorization endpoint.
  const launch = fakeHttp('/launch', appHost);
  await smart(launch.req as never, launch.res as never, storage as never).authorize({
    iss: h.fhirBase,
    clientId: reg.json.client_id,
    scope: 'openid fhirUser launch/patient offline_access patient/*.rs',
    redirectUri,
    pkceMode: 'required',
  });
  t.ok(launch.res.location, 'fhirclient redirected');
  const authorizeUrl = new URL(launch.res.location!);
  t.equal(`${authorizeUrl.origin}${authorizeUrl.pathname}`, `${h.origin}/auth/authorize`);
  t.equal(authorizeUrl.searchParams.get('code_challenge_method'), 'S256', 'fhirclient used PKCE S256');
  t.equal(authorizeUrl.searchParams.get('aud'), h.fhirBase);

  // 2. The "browser": login page, credentials, approval.
  const page = await fetch(authorizeUrl);
  t.equal(page.status, 200);
  const cookie = page.headers.get('set-cookie')!.split(';')[0]!;
  const login = await fetch(`${h.origin}/auth/authorize/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', cookie },
    body: new URLSearchParams({ form_token: formTokenOf(await page.text()), username: 'alice', password: 'correct horse battery' }),
  });
  t.equal(login.status, 200);
  const approve = await fetch(`${h.origin}/auth/authorize/approve`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', cookie },
    body: new URLSearchParams({ form_token: formTokenOf(await login.text()), decision: 'approve' }),
    redirect: 'manual',
  });
  t.equal(approve.status, 303);
  const callback = new URL(approve.headers.get('location')!);
  t.equal(`${callback.origin}${callback.pathname}`, redirectUri);

  // 3. ready(): fhirclient exchanges the code (with its code_verifier) at the token endpoint.
  const back = fakeHttp(`${callback.pathname}${callback.search}`, appHost);
  const client = await smart(back.req as never, back.res as never, storage as never).ready();
  t.equal(client.patient.id, 'p1', 'patient in context');
  t.equal(client.getFhirUser(), 'Patient/p1', 'fhirUser from the id token');
  t.equal(client.getState('tokenResponse.token_type'), 'Bearer');
  t.match(client.getState('tokenResponse.scope'), /offline_access/);

  // 4. A FHIR request with the token (the stub route enforces it), then a refresh.
  const patient = (await client.request('Patient/p1')) as { resourceType: string; id: string };
  t.match(patient, { resourceType: 'Patient', id: 'p1' });
  const denied = await client.request('Patient/p2').then(
    () => undefined,
    (err: { status?: number }) => err,
  );
  t.equal(denied?.status, 403, 'another patient is forbidden');
  const before = client.getState('tokenResponse.access_token');
  await client.refresh();
  t.not(client.getState('tokenResponse.access_token'), before, 'refreshed');
  t.match(await client.request('Patient/p1'), { id: 'p1' });
});

t.test('hand-written Backend Services client over HTTP', async (t) => {
  const port = await freePort();
  const h = await startHarness(t, { port });
  const key = await backendKey('RS384');
  const reg = await h.register(
    { token_endpoint_auth_method: 'private_key_jwt', grant_types: ['client_credentials'], jwks: { keys: [key.publicJwk] }, scope: 'system/*.rs' },
    await h.adminToken(),
  );
  const config = (await (await fetch(`${h.fhirBase}/.well-known/smart-configuration`)).json()) as { token_endpoint: string };
  const assertion = await clientAssertion(h, { ...key, clientId: reg.json.client_id }, { claims: { aud: config.token_endpoint, jti: randomUUID() } });
  const res = await fetch(config.token_endpoint, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
    body: new URLSearchParams({
      grant_type: 'client_credentials',
      scope: 'system/Patient.rs',
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: assertion,
    }),
  });
  t.equal(res.status, 200);
  const token = (await res.json()) as { access_token: string; token_type: string; scope: string; expires_in: number };
  t.match(token, { token_type: 'Bearer', scope: 'system/Patient.rs', expires_in: 3600 });
  const fhir = await fetch(`${h.fhirBase}/Patient/42`, { headers: { authorization: `Bearer ${token.access_token}` } });
  t.equal(fhir.status, 200);
  const denied = await fetch(`${h.fhirBase}/Observation/1`, { headers: { authorization: `Bearer ${token.access_token}` } });
  t.equal(denied.status, 403, 'scope enforced');
});
