/**
 * Discovery documents: SMART's `.well-known/smart-configuration`
 * (https://hl7.org/fhir/smart-app-launch/STU2.2/conformance.html#using-well-known), the
 * CapabilityStatement `rest.security` fragment with the oauth-uris extension
 * (http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris), and the OpenID Provider
 * metadata (https://openid.net/specs/openid-connect-discovery-1_0.html#ProviderMetadata).
 */
import { ASSERTION_ALGORITHMS } from './client-auth.ts';
import { SIGNING_ALG } from './keys.ts';
import { authUrls, type AuthUrls } from './oauth.ts';

export const OAUTH_URIS_EXTENSION = 'http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris';

const SCOPES_SUPPORTED = [
  'openid',
  'fhirUser',
  'launch/patient',
  'offline_access',
  'online_access',
  'patient/*.rs',
  'patient/*.cruds',
  'patient/*.read',
  'patient/*.write',
  'patient/*.*',
  'user/*.rs',
  'user/*.cruds',
  'user/*.read',
  'user/*.write',
  'user/*.*',
  'system/*.rs',
  'system/*.cruds',
  'system/*.read',
  'system/*.write',
  'system/*.*',
];

const CAPABILITIES = [
  'launch-standalone',
  'authorize-post',
  'client-public',
  'client-confidential-symmetric',
  'client-confidential-asymmetric',
  'context-standalone-patient',
  'permission-patient',
  'permission-user',
  'permission-offline',
  'permission-v1',
  'permission-v2',
  'sso-openid-connect',
];

type Urls = AuthUrls | { issuer: string; fhirBaseUrl: string };

function resolve(urls: Urls): AuthUrls {
  return 'token' in urls ? urls : authUrls(urls.issuer, urls.fhirBaseUrl);
}

/** The `.well-known/smart-configuration` document (serve as application/json with `Access-Control-Allow-Origin: *`). */
export function smartConfiguration(urls: Urls): Record<string, unknown> {
  const u = resolve(urls);
  return {
    issuer: u.issuer,
    jwks_uri: u.jwks,
    authorization_endpoint: u.authorize,
    token_endpoint: u.token,
    introspection_endpoint: u.introspect,
    registration_endpoint: u.register,
    token_endpoint_auth_methods_supported: ['private_key_jwt', 'client_secret_basic', 'none'],
    token_endpoint_auth_signing_alg_values_supported: ASSERTION_ALGORITHMS,
    grant_types_supported: ['authorization_code', 'client_credentials', 'refresh_token'],
    scopes_supported: SCOPES_SUPPORTED,
    response_types_supported: ['code'],
    code_challenge_methods_supported: ['S256'],
    capabilities: CAPABILITIES,
  };
}

/** The CapabilityStatement `rest[0].security` element (R4 CapabilityStatement.rest.security). */
export function capabilitySecurity(urls: Urls): Record<string, unknown> {
  const u = resolve(urls);
  return {
    cors: true,
    service: [
      {
        coding: [{ system: 'http://terminology.hl7.org/CodeSystem/restful-security-service', code: 'SMART-on-FHIR', display: 'SMART-on-FHIR' }],
        text: 'OAuth 2.0 with the SMART App Launch and Backend Services profiles',
      },
    ],
    extension: [
      {
        url: OAUTH_URIS_EXTENSION,
        extension: [
          { url: 'authorize', valueUri: u.authorize },
          { url: 'token', valueUri: u.token },
          { url: 'introspect', valueUri: u.introspect },
          { url: 'register', valueUri: u.register },
        ],
      },
    ],
  };
}

/** OpenID Provider metadata, served at `<issuer>/.well-known/openid-configuration`. */
export function openidConfiguration(urls: Urls): Record<string, unknown> {
  const u = resolve(urls);
  return {
    issuer: u.issuer,
    authorization_endpoint: u.authorize,
    token_endpoint: u.token,
    jwks_uri: u.jwks,
    registration_endpoint: u.register,
    introspection_endpoint: u.introspect,
    response_types_supported: ['code'],
    subject_types_supported: ['public'],
    id_token_signing_alg_values_supported: [SIGNING_ALG],
    scopes_supported: ['openid', 'fhirUser'],
    claims_supported: ['iss', 'sub', 'aud', 'exp', 'iat', 'auth_time', 'nonce', 'fhirUser'],
    grant_types_supported: ['authorization_code', 'client_credentials', 'refresh_token'],
    token_endpoint_auth_methods_supported: ['private_key_jwt', 'client_secret_basic', 'none'],
    token_endpoint_auth_signing_alg_values_supported: ASSERTION_ALGORITHMS,
    code_challenge_methods_supported: ['S256'],
  };
}
