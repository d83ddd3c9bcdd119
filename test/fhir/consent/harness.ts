/**
 * The real server (src/server.ts) with the embedded authorization server, the embedded chain and
 * consent enforcement on, and helpers to act as the administrator, a practitioner (a Backend
 * Services client bound to a FHIR identity, with a purpose of use) or a patient.
 */
import fs from 'node:fs';
import type { Test } from 'tap';
import { startTestServer, type TestServer } from '../../helpers/server.ts';
import { authorizeThroughPages, backendForm, clientAssertion, harnessOf, registerBackendClient, type Harness } from '../auth/harness.ts';
import type { Rule } from '../../../src/fhir/consent/terms.ts';

export const CONSENT_BASE = 'http://vellum.test/fhir';

export interface ConsentHarness {
  s: TestServer;
  h: Harness;
  admin: string;
  /** A token for a client acting as `fhirUser` for `purpose` (default TREAT). */
  tokenFor(fhirUser: string, options?: { purpose?: string; scope?: string }): Promise<string>;
  as(token: string, method: string, url: string, body?: unknown, headers?: Record<string, string>): Promise<{ status: number; body: any; headers: Record<string, unknown> }>;
  /** PUT a resource as the administrator; fails the test unless 200/201. */
  put(resource: Record<string, any>): Promise<any>;
  approve(reference: string, emergency?: boolean): Promise<void>;
}

export async function startConsentServer(t: Test, env: Record<string, string> = {}): Promise<ConsentHarness> {
  const s = await startTestServer(t, {
    VELLUM_AUTH: 'embedded',
    VELLUM_AUDIT: 'on',
    VELLUM_CHAIN: 'embedded',
    VELLUM_ANCHOR_INTERVAL_MS: '50',
    VELLUM_BASE_URL: CONSENT_BASE,
    ...env,
  });
  const adminFile = JSON.parse(fs.readFileSync(`${s.dataDir}/admin-client.json`, 'utf8'));
  const h = harnessOf(s, { clientId: adminFile.client_id, secret: adminFile.client_secret });
  const admin = await h.adminToken();
  const as: ConsentHarness['as'] = async (token, method, url, body, headers = {}) => {
    const res = await s.fhir(method, url.replace(/^\//, ''), body, { authorization: `Bearer ${token}`, ...headers });
    return { status: res.status, body: res.json, headers: res.headers };
  };
  return {
    s,
    h,
    admin,
    async tokenFor(fhirUser, options = {}) {
      const scope = options.scope ?? 'system/*.cruds';
      const client = await registerBackendClient(h, { scope, fhirUser });
      const res = await h.token(backendForm(await clientAssertion(h, client), { scope, purpose_of_use: options.purpose ?? 'TREAT' }));
      if (res.status !== 200) throw new Error(`token for ${fhirUser}: ${res.status} ${res.text}`);
      return res.json.access_token as string;
    },
    as,
    async put(resource) {
      const res = await as(admin, 'PUT', `/${resource.resourceType}/${resource.id}`, resource);
      if (res.status !== 200 && res.status !== 201) throw new Error(`PUT ${resource.resourceType}/${resource.id}: ${res.status} ${JSON.stringify(res.body)}`);
      return res.body;
    },
    async approve(reference, emergency = false) {
      const res = await as(admin, 'POST', `/${reference}/$approve`, {
        resourceType: 'Parameters',
        parameter: [{ name: 'emergency', valueBoolean: emergency }],
      });
      if (res.status !== 200) throw new Error(`approve ${reference}: ${res.status} ${JSON.stringify(res.body)}`);
    },
  };
}

/** A patient-privacy Consent of `patient` with one provision (and optional nested ones). */
export function consent(id: string, patient: string, provision: Record<string, unknown>, status = 'active'): Record<string, unknown> {
  return {
    resourceType: 'Consent',
    id,
    status,
    scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] },
    category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }],
    patient: { reference: `Patient/${patient}` },
    provision,
  };
}

/**
 * A full registry Rule with no condition (every field open), overridden by `fields`; `effect`
 * sets `permit` (default permit). For fake chains whose `consentOf` returns rules.
 */
export function openProvision(fields: Partial<Rule> & { effect?: 'permit' | 'deny' } = {}): Rule {
  const { effect, ...rest } = fields;
  return {
    parent: 0,
    permit: effect === undefined ? true : effect === 'permit',
    actors: [],
    classes: 0n,
    actions: 0,
    purposes: 0n,
    start: 0,
    end: 0,
    dataStart: 0,
    dataEnd: 0,
    tokens: [],
    ...rest,
  };
}

export const actor = (reference: string) => ({
  role: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'PRCP' }] },
  reference: { reference },
});
export const classes = (...types: string[]) => types.map((code) => ({ system: 'http://hl7.org/fhir/resource-types', code }));
export const purposes = (...codes: string[]) => codes.map((code) => ({ system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code }));

const PATIENT_APP_REDIRECT = 'https://app.example.org/callback';
const patientApps = new WeakMap<ConsentHarness, Promise<string>>();

/**
 * A token of a patient USER (SMART standalone launch through the login and approval pages, scope
 * `patient/*.rs` by default): the login user is created for `Patient/{patientId}` on the way.
 * Backend Services clients cannot hold patient/ scopes, hence the user flow.
 */
export async function patientToken(c: ConsentHarness, patientId: string, scope = 'openid fhirUser launch/patient patient/*.rs'): Promise<string> {
  let app = patientApps.get(c);
  if (!app) {
    app = (async () => {
      const reg = await c.h.register(
        {
          client_name: 'Consent matrix patient app',
          token_endpoint_auth_method: 'none',
          grant_types: ['authorization_code'],
          redirect_uris: [PATIENT_APP_REDIRECT],
          scope: 'openid fhirUser launch/patient patient/*.rs patient/*.cruds',
        },
        await c.h.adminToken(),
      );
      if (reg.status !== 201) throw new Error(`register patient app: ${reg.status} ${reg.text}`);
      return reg.json.client_id as string;
    })();
    patientApps.set(c, app);
  }
  const clientId = await app;
  const username = `patient-${patientId}`;
  const password = `a long password for ${patientId}`;
  const user = await c.h.createUser({ username, password, fhir_user: `Patient/${patientId}` });
  if (user.status !== 201 && user.status !== 409) throw new Error(`create user: ${user.status} ${user.text}`);
  const flow = await authorizeThroughPages(c.h, { clientId, redirectUri: PATIENT_APP_REDIRECT, scope, username, password });
  const res = await c.h.token({ grant_type: 'authorization_code', code: flow.code, redirect_uri: PATIENT_APP_REDIRECT, code_verifier: flow.verifier, client_id: clientId });
  if (res.status !== 200) throw new Error(`patient token: ${res.status} ${res.text}`);
  return res.json.access_token as string;
}
