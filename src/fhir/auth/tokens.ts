/**
 * Minting: JWT access tokens (RFC 9068 profile, `typ: at+jwt`), OpenID Connect id tokens, and opaque
 * refresh tokens, all signed (JWTs) with the current key of keys.ts. Also the v3 PurposeOfUse codes
 * a token may carry (http://terminology.hl7.org/ValueSet/v3-PurposeOfUse).
 */
import { randomUUID } from 'node:crypto';
import { SignJWT } from 'jose';
import { hashSecret, newSecret, type RefreshTokenRecord } from '../../storage/auth-store.ts';
import type { AuthContext } from './oauth.ts';

/** v3 ActReason codes of the PurposeOfUse value set (http://terminology.hl7.org/CodeSystem/v3-ActReason). */
export const PURPOSE_OF_USE = new Set([
  'HMARKT',
  'HOPERAT',
  'CAREMGT',
  'DONAT',
  'FRAUD',
  'GOV',
  'HACCRED',
  'HCOMPL',
  'HDECD',
  'HDIRECT',
  'HDM',
  'HLEGAL',
  'HOUTCOMS',
  'HPRGRP',
  'HQUALIMP',
  'HSYSADMIN',
  'LABELING',
  'METAMGT',
  'MEMADMIN',
  'MILCDM',
  'PATADMIN',
  'PATSFTY',
  'PERFMSR',
  'RECORDMGT',
  'SYSDEV',
  'HTEST',
  'TRAIN',
  'HPAYMT',
  'CLMATTCH',
  'COVAUTH',
  'COVERAGE',
  'ELIGDTRM',
  'ELIGVER',
  'ENROLLM',
  'MILDCRG',
  'REMITADV',
  'HRESCH',
  'BIORCH',
  'CLINTRCH',
  'CLINTRCHNPC',
  'CLINTRCHPC',
  'PRECLINTRCH',
  'DSRCH',
  'POARCH',
  'TRANSRCH',
  'PATRQT',
  'FAMRQT',
  'PWATRNY',
  'SUPNWK',
  'PUBHLTH',
  'DISASTER',
  'THREAT',
  'TREAT',
  'CLINTRL',
  'COC',
  'ETREAT',
  'BTG',
  'ERTREAT',
  'POPHLTH',
]);

export const DEFAULT_PURPOSE_OF_USE = 'TREAT';

export interface AccessTokenClaims {
  clientId: string;
  subject: string;
  scope: string;
  fhirUser?: string;
  patient?: string;
  purposeOfUse: string;
  admin?: boolean;
}

/** Sign an access token (`aud` = FHIR base, `iss` = this server). */
export async function mintAccessToken(ctx: AuthContext, c: AccessTokenClaims): Promise<{ token: string; expiresIn: number; jti: string }> {
  const now = ctx.now();
  const key = ctx.keys.current();
  const jti = randomUUID();
  const token = await new SignJWT({
    client_id: c.clientId,
    scope: c.scope,
    purpose_of_use: c.purposeOfUse,
    ...(c.fhirUser ? { fhirUser: c.fhirUser } : {}),
    ...(c.patient ? { patient: c.patient } : {}),
    ...(c.admin ? { vellum_admin: true } : {}),
  })
    .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'at+jwt' })
    .setIssuer(ctx.urls.issuer)
    .setAudience(ctx.urls.fhirBaseUrl)
    .setSubject(c.subject)
    .setJti(jti)
    .setIssuedAt(now)
    .setExpirationTime(now + ctx.accessTokenTtl)
    .sign(key.privateKey);
  return { token, expiresIn: ctx.accessTokenTtl, jti };
}

/** Sign an OpenID Connect id token (https://openid.net/specs/openid-connect-core-1_0.html#IDToken): `aud` = client. */
export async function mintIdToken(
  ctx: AuthContext,
  c: { clientId: string; subject: string; fhirUser?: string; nonce?: string; authTime: number },
): Promise<string> {
  const now = ctx.now();
  const key = ctx.keys.current();
  return new SignJWT({
    auth_time: c.authTime,
    azp: c.clientId,
    ...(c.fhirUser ? { fhirUser: c.fhirUser } : {}),
    ...(c.nonce ? { nonce: c.nonce } : {}),
  })
    .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'JWT' })
    .setIssuer(ctx.urls.issuer)
    .setAudience(c.clientId)
    .setSubject(c.subject)
    .setIssuedAt(now)
    .setExpirationTime(now + ctx.accessTokenTtl)
    .sign(key.privateKey);
}

/** Issue and store a refresh token (only its hash is stored); returns the token itself. */
export async function issueRefreshToken(ctx: AuthContext, record: Omit<RefreshTokenRecord, 'tokenHash' | 'issuedAt'>): Promise<string> {
  const token = newSecret();
  await ctx.store.saveRefreshToken({ ...record, tokenHash: hashSecret(token), issuedAt: ctx.now() });
  return token;
}
