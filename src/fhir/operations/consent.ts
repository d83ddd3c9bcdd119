/**
 * Consent operations (docs/consent.md):
 *
 * - `POST [base]/{Practitioner|PractitionerRole|Organization|RelatedPerson|Device}/{id}/$approve`
 *   (`emergency` boolean, default false) and `.../$revoke-approval`: an administrator approves an
 *   actor on chain (only approved actors can be granted consent; `emergency` lets it use
 *   break-glass). Answered once the transaction is mined.
 * - `POST [base]/Patient/{id}/$register-wallet` (`address`): the patient (or an administrator)
 *   registers the Ethereum address whose EIP-712 signatures the registry accepts for the patient.
 * - `GET [base]/Consent/{id}/$revocation-request`: the EIP-712 typed data a patient's wallet signs to
 *   revoke the consent (with the current nonce and a one-hour deadline).
 * - `POST [base]/Consent/{id}/$revoke-signed` (`signature`, `nonce`, `deadline`): Vellum relays the
 *   patient's signed revocation to the contract; anyone could send it straight to the contract
 *   instead. Either way the FHIR Consent gets a new, inactive version.
 * - `GET [base]/Consent/{id}/$grant-request` and `POST .../$grant-signed`: the same for a signed
 *   grant of the current FHIR Consent's terms (the only way to lift a signed revocation). The FHIR
 *   Consent gets a new, active version.
 */
import { getAddress } from 'ethers';
import { fhirError } from '../errors.ts';
import type { FhirRequest, FhirResource, FhirResponse } from '../request.ts';
import type { FhirServices } from '../services.ts';
import { requireCurrent } from '../interactions/common.ts';
import { consentChainError, consentKeys } from '../consent/write-step.ts';
import { mapConsent } from '../consent/mapping.ts';
import type { Rule } from '../consent/terms.ts';
import { consentTypedData } from '../../chain/consent-registry.ts';

export const ACTOR_TYPES = new Set(['Practitioner', 'PractitionerRole', 'Organization', 'RelatedPerson', 'Device']);

/** A Parameters parameter's value (`valueBoolean`, `valueString`, …) or the query parameter. */
function param(request: FhirRequest, name: string): unknown {
  const body = request.body as { resourceType?: string; parameter?: { name?: string; [key: string]: unknown }[] } | undefined;
  if (body?.resourceType === 'Parameters') {
    const found = body.parameter?.find((p) => p.name === name);
    if (found) {
      const key = Object.keys(found).find((k) => k.startsWith('value'));
      return key ? found[key] : undefined;
    }
  }
  const raw = request.query.find(([n]) => n === name)?.[1];
  return raw;
}

function consentOf(services: FhirServices) {
  const consent = services.consent;
  if (!consent) throw fhirError(501, 'not-supported', 'VLM_CONSENT_OFF', 'Consent enforcement is off on this server');
  return consent.service;
}

function requireAdmin(request: FhirRequest): void {
  if (request.principal && !request.principal.admin) {
    throw fhirError(403, 'forbidden', 'VLM_AUTH_ADMIN_ONLY', 'Only an administrator approves actors');
  }
}

function parameters(values: Record<string, string | boolean | number>): Record<string, unknown> {
  return {
    resourceType: 'Parameters',
    parameter: Object.entries(values).map(([name, value]) =>
      typeof value === 'boolean'
        ? { name, valueBoolean: value }
        : typeof value === 'number'
          ? { name, valueInteger: value }
          : { name, valueString: value },
    ),
  };
}

function approval(approve: boolean) {
  return async (services: FhirServices, request: FhirRequest): Promise<FhirResponse> => {
    const type = request.resourceType!;
    if (!ACTOR_TYPES.has(type)) throw fhirError(404, 'not-supported', 'VLM_FHIR_NO_ROUTE', `Only ${[...ACTOR_TYPES].join(', ')} are approved`);
    requireAdmin(request);
    const service = consentOf(services);
    await requireCurrent(services, type, request.id!);
    const reference = `${type}/${request.id}`;
    const raw = param(request, 'emergency');
    if (raw !== undefined && raw !== true && raw !== false && raw !== 'true' && raw !== 'false') {
      throw fhirError(400, 'invalid', 'VLM_FHIR_BAD_PARAMETER', 'emergency must be true or false', ['emergency']);
    }
    const emergency = raw === true || raw === 'true';
    try {
      const mined = approve ? await service.chain.approve(service.keyOf(reference), emergency) : await service.chain.revokeApproval(service.keyOf(reference));
      await service.syncTo(mined.blockNumber).catch(() => undefined);
      // The topics practitioner-approved / practitioner-approval-revoked (subscriptions/topics.ts).
      await services.subscriptions?.emitApproval(reference, approve).catch(() => undefined);
      return {
        status: 200,
        resource: parameters({ actor: reference, approved: approve, ...(approve ? { emergency } : {}), transaction: mined.txHash, block: mined.blockNumber }),
      };
    } catch (err) {
      throw consentChainError(err);
    }
  };
}

export const approve = approval(true);
export const revokeApproval = approval(false);

export async function registerWallet(services: FhirServices, request: FhirRequest): Promise<FhirResponse> {
  if (request.resourceType !== 'Patient') throw fhirError(404, 'not-supported', 'VLM_FHIR_NO_ROUTE', '$register-wallet is defined on Patient');
  const service = consentOf(services);
  const principal = request.principal;
  if (principal && !principal.admin && principal.fhirUser !== `Patient/${request.id}`) {
    throw fhirError(403, 'forbidden', 'VLM_CONSENT_NOT_PATIENT', 'Only the patient (or an administrator) registers its wallet');
  }
  await requireCurrent(services, 'Patient', request.id!);
  const raw = param(request, 'address');
  let address: string;
  try {
    address = getAddress(String(raw));
  } catch {
    throw fhirError(400, 'invalid', 'VLM_FHIR_BAD_PARAMETER', 'address must be an Ethereum address', ['address']);
  }
  const keyOf = consentKeys(service, (ref) => services.access!.patientScope(ref.slice('Patient/'.length)));
  try {
    const mined = await service.chain.registerWallet(keyOf(`Patient/${request.id}`), address);
    return { status: 200, resource: parameters({ patient: `Patient/${request.id}`, address, transaction: mined.txHash, block: mined.blockNumber }) };
  } catch (err) {
    throw consentChainError(err);
  }
}

/** The current FHIR Consent of the request, after checking that the caller is its patient or an administrator. */
async function ownFhirConsent(services: FhirServices, request: FhirRequest): Promise<FhirResource> {
  if (request.resourceType !== 'Consent') throw fhirError(404, 'not-supported', 'VLM_FHIR_NO_ROUTE', 'This operation is defined on Consent');
  consentOf(services);
  const record = await requireCurrent(services, 'Consent', request.id!);
  const resource = await services.loadResource(record, request.signal);
  const patientRef = (resource?.patient as { reference?: string } | undefined)?.reference;
  const principal = request.principal;
  if (principal && !principal.admin && (!patientRef || principal.fhirUser !== patientRef)) {
    throw fhirError(403, 'forbidden', 'VLM_CONSENT_NOT_PATIENT', "Only the consent's patient (or an administrator) asks for this");
  }
  return resource!;
}

/** The consent's patient key, after checking that the caller is that patient or an administrator. */
async function ownConsent(services: FhirServices, request: FhirRequest): Promise<{ consentId: string; patient: string }> {
  await ownFhirConsent(services, request);
  const service = consentOf(services);
  const consentId = service.keyOf(`Consent/${request.id}`);
  const onChain = service.state.consent(consentId);
  if (!onChain) throw fhirError(409, 'conflict', 'VLM_CONSENT_NOT_ON_CHAIN', 'This Consent is not in force in the registry');
  return { consentId, patient: onChain.patient };
}

/**
 * What a patient's signed grant grants: the terms of the current FHIR Consent, as if it were active
 * (after a signed revocation the FHIR Consent is inactive; granting puts its terms back in force).
 */
async function grantTerms(services: FhirServices, request: FhirRequest): Promise<{ consentId: string; patient: string; rules: Rule[] }> {
  const resource = await ownFhirConsent(services, request);
  const service = consentOf(services);
  let plan: ReturnType<typeof mapConsent>;
  try {
    plan = mapConsent({ ...resource, status: 'active' }, await services.consent!.mappingContext(resource), request.id!);
  } catch (err) {
    throw consentChainError(err);
  }
  if (plan.action !== 'put') throw fhirError(409, 'conflict', 'VLM_CONSENT_NOTHING_TO_GRANT', 'This Consent grants nothing the registry can hold');
  return { consentId: plan.consentId, patient: plan.patient, rules: plan.rules };
}

/** The typed data as a wallet's eth_signTypedData_v4 takes it (MetaMask): the domain's own type listed too. */
function walletTypedData(td: ReturnType<typeof consentTypedData>, extra: Record<string, string | number>): Record<string, unknown> {
  const typedData = {
    types: {
      EIP712Domain: [
        { name: 'name', type: 'string' },
        { name: 'version', type: 'string' },
        { name: 'chainId', type: 'uint256' },
        { name: 'verifyingContract', type: 'address' },
      ],
      ...td.types,
    },
    primaryType: td.primaryType,
    domain: td.domain,
    message: td.message,
  };
  return parameters({ typedData: JSON.stringify(typedData, (_k, v) => (typeof v === 'bigint' ? v.toString() : v)), ...extra });
}

/** How long a signature request stays valid. */
const SIGNATURE_WINDOW_S = 3600;

export async function revocationRequest(services: FhirServices, request: FhirRequest): Promise<FhirResponse> {
  const service = consentOf(services);
  const { consentId, patient } = await ownConsent(services, request);
  const nonce = await service.chain.nonces(patient);
  const deadline = Math.floor(Date.now() / 1000) + SIGNATURE_WINDOW_S;
  const td = consentTypedData(service.chain.chainId, service.chain.contract, 'Revoke', { consentId, nonce, deadline });
  return { status: 200, resource: walletTypedData(td, { consentId, nonce: nonce.toString(), deadline }) };
}

export async function grantRequest(services: FhirServices, request: FhirRequest): Promise<FhirResponse> {
  const service = consentOf(services);
  const { consentId, patient, rules } = await grantTerms(services, request);
  const nonce = await service.chain.nonces(patient);
  const deadline = Math.floor(Date.now() / 1000) + SIGNATURE_WINDOW_S;
  const td = consentTypedData(service.chain.chainId, service.chain.contract, 'Grant', { consentId, patient, rules, nonce, deadline });
  return { status: 200, resource: walletTypedData(td, { consentId, nonce: nonce.toString(), deadline }) };
}

/** The `signature`, `nonce` and `deadline` of a signed change (400 when malformed). */
function signedParameters(request: FhirRequest): { signature: string; nonce: bigint; deadline: bigint } {
  const signature = String(param(request, 'signature') ?? '');
  const nonceRaw = String(param(request, 'nonce') ?? '');
  const deadlineRaw = String(param(request, 'deadline') ?? '');
  if (!/^0x[0-9a-fA-F]{130}$/.test(signature)) throw fhirError(400, 'invalid', 'VLM_FHIR_BAD_PARAMETER', 'signature must be a 65-byte hex signature', ['signature']);
  if (!/^\d{1,30}$/.test(nonceRaw)) throw fhirError(400, 'invalid', 'VLM_FHIR_BAD_PARAMETER', 'nonce must be a whole number', ['nonce']);
  if (!/^\d{1,15}$/.test(deadlineRaw)) throw fhirError(400, 'invalid', 'VLM_FHIR_BAD_PARAMETER', 'deadline must be unix seconds', ['deadline']);
  return { signature, nonce: BigInt(nonceRaw), deadline: BigInt(deadlineRaw) };
}

export async function revokeSigned(services: FhirServices, request: FhirRequest): Promise<FhirResponse> {
  const service = consentOf(services);
  if (request.resourceType !== 'Consent') throw fhirError(404, 'not-supported', 'VLM_FHIR_NO_ROUTE', 'This operation is defined on Consent');
  await requireCurrent(services, 'Consent', request.id!);
  const consentId = service.keyOf(`Consent/${request.id}`);
  const { signature, nonce, deadline } = signedParameters(request);
  try {
    const mined = await service.chain.relayRevokeBySig(consentId, nonce, deadline, signature);
    // The sync applies the revocation and writes it back into the FHIR Consent.
    await service.syncTo(mined.blockNumber);
    return { status: 200, resource: parameters({ consent: `Consent/${request.id}`, revoked: true, transaction: mined.txHash, block: mined.blockNumber }) };
  } catch (err) {
    throw consentChainError(err);
  }
}

/**
 * Relay a patient's signed grant of the current FHIR Consent's terms. Anyone may relay a signature
 * (it is the patient's), so the caller need not be the patient; the terms are read again here, and
 * a signature over other terms (the Consent changed since the request) is refused by the contract.
 */
export async function grantSigned(services: FhirServices, request: FhirRequest): Promise<FhirResponse> {
  const service = consentOf(services);
  const { signature, nonce, deadline } = signedParameters(request);
  const { consentId, patient, rules } = await grantTerms(services, request);
  // A signed grant of a pending access request answers it: not once the request has expired.
  const current = await requireCurrent(services, 'Consent', request.id!);
  const pending = (await services.loadResource(current, request.signal))?.status === 'proposed';
  if (pending && Date.now() - current.lastUpdated > services.consent!.requestTtlSeconds * 1000) {
    throw fhirError(422, 'business-rule', 'VLM_CONSENT_REQUEST_EXPIRED', 'The access request has expired; the practitioner must ask again', ['Consent.status']);
  }
  try {
    if (pending) await service.chain.answerRequest(consentId, patient, true);
    const mined = await service.chain.relayGrantBySig(consentId, patient, rules, nonce, deadline, signature);
    // The sync applies the grant (lifting a signed revocation's lock) and writes it back into the FHIR Consent.
    await service.syncTo(mined.blockNumber);
    return { status: 200, resource: parameters({ consent: `Consent/${request.id}`, granted: true, transaction: mined.txHash, block: mined.blockNumber }) };
  } catch (err) {
    throw consentChainError(err);
  }
}
