/**
 * Token introspection (RFC 7662; https://hl7.org/fhir/smart-app-launch/STU2.2/token-introspection.html).
 * The caller authenticates with the administrator's bearer token (sees every token) or as a
 * confidential client (sees only its own tokens; any other token is reported inactive). Inactive
 * tokens get `{active: false}` and nothing more (§2.2).
 */
import { hashSecret } from '../../storage/auth-store.ts';
import { authenticateClient, type JwksCache } from './client-auth.ts';
import { formParams, invalidClient, NO_STORE, oauthError, type AuthContext, type AuthResponse } from './oauth.ts';
import { requireAdmin } from './registration.ts';
import type { TokenVerifier } from './verify.ts';

const INACTIVE: AuthResponse = { status: 200, headers: NO_STORE, body: { active: false } };

/** POST /introspect with `token` (an access token or a refresh token). */
export async function handleIntrospect(
  ctx: AuthContext,
  verifier: TokenVerifier,
  body: unknown,
  authorization: string | undefined,
  jwksCache: JwksCache,
): Promise<AuthResponse> {
  const params = formParams(body);
  let callerClient: string | undefined; // undefined = administrator
  if (authorization !== undefined && /^bearer /i.test(authorization)) {
    await requireAdmin(verifier, authorization);
  } else {
    const rest = new Map([...params].filter(([name]) => name !== 'token' && name !== 'token_type_hint'));
    const { client, method } = await authenticateClient(ctx, rest, authorization, jwksCache);
    if (method === 'none') throw invalidClient('Introspection needs an authenticated (confidential) client or the administrator token');
    callerClient = client.clientId;
  }
  const token = params.get('token');
  if (!token) throw oauthError(400, 'invalid_request', 'token is required');
  if (token.length > 16 * 1024) return INACTIVE;

  if (token.split('.').length === 3) {
    try {
      const p = await verifier.verify(token);
      if (callerClient !== undefined && p.clientId !== callerClient) return INACTIVE;
      return {
        status: 200,
        headers: NO_STORE,
        body: {
          active: true,
          token_type: 'Bearer',
          scope: p.scope,
          client_id: p.clientId,
          sub: p.subject,
          iss: ctx.urls.issuer,
          aud: ctx.urls.fhirBaseUrl,
          exp: p.expiresAt,
          ...(p.patient ? { patient: p.patient } : {}),
          ...(p.fhirUser ? { fhirUser: p.fhirUser } : {}),
          purpose_of_use: p.purposeOfUse,
          ...(p.tokenId ? { jti: p.tokenId } : {}),
        },
      };
    } catch {
      return INACTIVE;
    }
  }
  const refresh = await ctx.store.findRefreshToken(hashSecret(token), ctx.now());
  if (!refresh || (callerClient !== undefined && refresh.clientId !== callerClient)) return INACTIVE;
  return {
    status: 200,
    headers: NO_STORE,
    body: {
      active: true,
      token_type: 'refresh_token',
      scope: refresh.scope,
      client_id: refresh.clientId,
      sub: refresh.userId,
      iss: ctx.urls.issuer,
      exp: refresh.expiresAt,
      ...(refresh.patient ? { patient: refresh.patient } : {}),
      fhirUser: refresh.fhirUser,
    },
  };
}
