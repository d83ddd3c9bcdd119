/**
 * The write step that mirrors FHIR Consents into the consent registry (docs/consent.md).
 *
 * - A Consent create or update is mapped (mapping.ts; 422 when something cannot be represented)
 *   and written to the contract BEFORE the FHIR version is committed: the FHIR write waits for the
 *   transaction to be mined, so a Consent is never active in FHIR while absent on chain. If the FHIR
 *   commit then fails, the contract write is undone (the previous terms put back, or the consent
 *   revoked) by `abort`.
 * - A deletion, or a status that is not in force (inactive, rejected, entered-in-error, draft,
 *   proposed), revokes the consent on chain when it is in force there.
 * - The consent cache is synced to the write's block before the response, so the next request is
 *   decided with it, whatever polls are in flight (`ConsentService.syncTo`).
 * - Versions written back from the chain (a patient's signed change, `reflect`) skip the step.
 * - Each write's Consent ids are noted in the intent journal before the contract is touched, so a
 *   process that dies between the transaction and the FHIR commit is put right at the next start
 *   (reconcile.ts).
 */
import { fhirError, FhirError } from '../errors.ts';
import type { FhirResource } from '../request.ts';
import type { WriteContext, WriteStep, Writer } from '../writer.ts';
import type { ConsentService } from './service.ts';
import { mapConsent, relatedDataReferences, type ConsentMapping, type MappingContext } from './mapping.ts';
import { consentGated } from '../access.ts';
import type { Principal } from '../auth/verify.ts';
import type { Rule } from './terms.ts';
import type { IndexStore } from '../../storage/index-store.ts';
import type { ConsentIntentJournal } from './reconcile.ts';

export interface ConsentWriteDeps {
  consent(): ConsentService | undefined;
  /** Where each write notes its Consents before changing the contract (reconcile.ts). */
  journal?: ConsentIntentJournal;
  /** Key scope of `Patient/{id}` (keys.ts keyScoper). */
  patientScope(reference: string): string;
  /** The operator's policy URI → base effect table (VELLUM_CONSENT_POLICIES). */
  policies?: Readonly<Record<string, 'permit' | 'deny'>>;
  /** Seconds an access request stays open (VELLUM_CONSENT_REQUEST_TTL). */
  requestTtlSeconds?: number;
  /** The references held by the current versions of `references` (for `related` data). */
  relatedOf?(references: readonly string[]): Promise<Map<string, string[]>>;
  /** A version of a Consent, as stored (the one a write replaces). */
  previous?(id: string, versionId: number): Promise<{ resource: FhirResource; lastUpdated: number } | undefined>;
  /** The consent keys of a principal's identities (server.ts `actorsOf`). */
  actorsOf?(principal: Principal): Promise<string[]>;
}

/** The mapping context of a Consent write (mapping.ts), with the `related` data it names read from the store. */
export async function mappingContext(
  service: ConsentService,
  deps: Pick<ConsentWriteDeps, 'patientScope' | 'policies' | 'relatedOf'>,
  resource?: unknown,
): Promise<MappingContext> {
  const refs = resource ? relatedDataReferences(resource) : [];
  return {
    keyOf: consentKeys(service, deps.patientScope),
    tokenOf: service.tokenOf,
    ...(deps.policies ? { policies: deps.policies } : {}),
    ...(refs.length && deps.relatedOf ? { related: await deps.relatedOf(refs) } : {}),
  };
}

/** Contexts of versions written back from the chain: the step leaves them alone. */
const FROM_CHAIN = new WeakSet<WriteContext>();

/** Undo actions of writes whose FHIR commit has not finished yet. */
const PENDING = new WeakMap<WriteContext, (() => Promise<unknown>)[]>();

/**
 * The keyed pseudonym function the mapping uses: a patient's key is derived from its key scope,
 * which the service remembers (patient key → key scope) for searches' chain and `_has` filters.
 */
export function consentKeys(service: ConsentService, patientScope: (reference: string) => string): (reference: string) => string {
  return (reference) => (reference.startsWith('Patient/') ? service.patientKeyOfScope(patientScope(reference), true) : service.keyOf(reference));
}

/** A chain failure as the FHIR client sees it. */
export function consentChainError(err: unknown): unknown {
  if (err instanceof FhirError) return err;
  const code = (err as { code?: string }).code ?? '';
  switch (code) {
    case 'VLM_CONSENT_ACTOR_NOT_APPROVED':
      return fhirError(422, 'business-rule', code, 'A permitted actor has not been approved by an administrator', ['Consent.provision.actor']);
    case 'VLM_CONSENT_LOCKED':
      return fhirError(409, 'conflict', code, 'The patient revoked this consent by signature; only the patient can grant it again');
    case 'VLM_CONSENT_PATIENT_MISMATCH':
      return fhirError(422, 'business-rule', code, 'A consent cannot move to another patient', ['Consent.patient']);
    case 'VLM_CONSENT_LIMIT':
      return fhirError(422, 'business-rule', code, 'The consent exceeds the registry limits (rules, actors or consents per patient)');
    case 'VLM_CONSENT_UNKNOWN':
      return fhirError(404, 'not-found', code, 'The consent is not in the registry');
    case 'VLM_CONSENT_BAD_SIGNATURE':
    case 'VLM_CONSENT_EXPIRED':
    case 'VLM_CONSENT_BAD_NONCE':
      return fhirError(422, 'business-rule', code, 'The signed consent change was refused by the registry');
    case 'VLM_CHAIN_UNAVAILABLE':
    case 'VLM_CHAIN_ABORTED':
    case 'VLM_CHAIN_CLOSED':
      return fhirError(503, 'transient', 'VLM_CONSENT_UNAVAILABLE', 'The consent registry cannot be reached; nothing was changed');
    default:
      return err;
  }
}

/** Run the undo actions, newest first; the last block one was mined in (−1: none was). */
async function undoAll(undo: (() => Promise<unknown>)[]): Promise<number> {
  let mined = -1;
  for (const action of undo.reverse()) {
    const receipt = (await action().catch(() => undefined)) as { blockNumber?: number } | undefined;
    if (typeof receipt?.blockNumber === 'number') mined = Math.max(mined, receipt.blockNumber);
  }
  return mined;
}

export function consentWriteStep(deps: ConsentWriteDeps): WriteStep & { abort(context: WriteContext): Promise<void> } {
  return {
    name: 'consent',
    async beforeCommit(versions, context) {
      const service = deps.consent();
      if (!service || FROM_CHAIN.has(context)) return;
      const undo: (() => Promise<unknown>)[] = [];
      let mined = -1;
      const consents = versions.filter((v) => v.write.type === 'Consent');
      if (consents.length === 0) return;
      // Who may write what (access requests): checked before anything reaches the chain.
      const plans = [];
      for (const version of consents) {
        const id = version.write.id;
        const plan = version.write.deleted
          ? ({ action: 'revoke', consentId: service.keyOf(`Consent/${id}`) } as const)
          : mapConsent(version.resource as FhirResource, await mappingContext(service, deps, version.resource), id);
        const previous = version.write.expectedVersion > 0 ? await deps.previous?.(id, version.write.expectedVersion) : undefined;
        await checkRequestRules(service, deps, context, plan, version.resource, previous);
        plans.push({ id, plan, previous, status: (version.resource as FhirResource | undefined)?.['status'] });
      }
      // Noted durably before any transaction: a crash between the contract write and the FHIR
      // commit is put right at the next start (reconcile.ts).
      deps.journal?.note(consents.map((v) => v.write.id));
      const note = (receipt: { blockNumber: number }) => (mined = Math.max(mined, receipt.blockNumber));
      try {
        for (const { id, plan, previous, status } of plans) {
          const consentId = plan.consentId;
          const before = service.state.consent(consentId);
          const restore = before?.active
            ? () => service.chain.put(consentId, before.patient, before.rules)
            : () => service.chain.revoke(consentId);
          const wasRequest = previous?.resource['status'] === 'proposed';
          if (plan.action === 'request') {
            // A request grants nothing: an event names who asks (pseudonymously), and a consent
            // this id put in force before is taken out of it.
            const requester = plan.recipients[0] ?? service.keyOf(context.principal?.fhirUser ?? `Client/${context.principal?.clientId ?? 'unknown'}`);
            if (!wasRequest) note(await service.chain.requestAccess(consentId, plan.patient, requester));
            if (before?.active) {
              note(await service.chain.revoke(consentId));
              undo.push(restore);
            }
          } else if (plan.action === 'put') {
            if (wasRequest) note(await service.chain.answerRequest(consentId, plan.patient, true));
            note(await service.chain.put(consentId, plan.patient, plan.rules as Rule[]));
            undo.push(restore);
          } else {
            if (wasRequest && status === 'rejected') {
              const patient = consentKeys(service, deps.patientScope)(String((previous!.resource['patient'] as { reference?: string } | undefined)?.reference ?? ''));
              note(await service.chain.answerRequest(consentId, patient, false));
            }
            if (before?.active) {
              note(await service.chain.revoke(consentId));
              undo.push(restore);
            }
          }
          service.fhirIds.set(consentId, id);
        }
      } catch (err) {
        await undoAll(undo);
        throw consentChainError(err);
      }
      if (mined < 0) return;
      PENDING.set(context, undo);
      // The next request is decided with this change: the cache reaches the block it was mined in
      // (a poll in flight may have read an older head). If the chain stops answering now, gated
      // requests wait for that block or get 503 (`ensureFresh`), never a decision without it.
      await service.syncTo(mined).catch(() => undefined);
    },
    async afterCommit(_written, context) {
      PENDING.delete(context);
    },
    async abort(context) {
      const undo = PENDING.get(context);
      if (!undo) return;
      PENDING.delete(context);
      const mined = await undoAll(undo);
      if (mined >= 0) await deps.consent()?.syncTo(mined).catch(() => undefined);
    },
  };
}

/**
 * The rules of access requests (docs/consent.md §Access requests), checked before the chain is
 * touched:
 * - a consent-gated caller (practitioner, related person, device, organisation) writes only its
 *   own requests: a `proposed` Consent naming one of its identities as a recipient, new or
 *   replacing a request of its own still pending — never an active one (403 VLM_CONSENT_REQUEST_ONLY);
 * - a request older than VELLUM_CONSENT_REQUEST_TTL can no longer be approved (422
 *   VLM_CONSENT_REQUEST_EXPIRED);
 * - an administrator approving a request acts for the patient: the AuditEvent says so.
 */
async function checkRequestRules(
  service: ConsentService,
  deps: ConsentWriteDeps,
  context: WriteContext,
  plan: ConsentMapping | { action: 'revoke'; consentId: string },
  resource: FhirResource | undefined,
  previous: { resource: FhirResource; lastUpdated: number } | undefined,
): Promise<void> {
  const principal = context.principal;
  if (!principal) return;
  const pending = previous?.resource['status'] === 'proposed';
  if (consentGated(principal)) {
    const own = new Set(await (deps.actorsOf?.(principal) ?? Promise.resolve([])));
    const mine = async (r: FhirResource) => {
      const p = mapConsent({ ...r, status: 'proposed' }, await mappingContext(service, deps), String(r['id']));
      return p.action === 'request' && p.recipients.length > 0 && p.recipients.every((k) => own.has(k));
    };
    const allowed =
      plan.action === 'request' &&
      resource !== undefined &&
      (await mine(resource)) &&
      (previous === undefined || (pending && (await mine(previous.resource))));
    if (!allowed) {
      throw fhirError(403, 'forbidden', 'VLM_CONSENT_REQUEST_ONLY', 'A practitioner writes only its own access requests (Consent.status proposed); the patient answers them');
    }
    return;
  }
  if (pending && plan.action === 'put') {
    const ttl = deps.requestTtlSeconds ?? 30 * 86_400;
    if (Date.now() - previous!.lastUpdated > ttl * 1000) {
      throw fhirError(422, 'business-rule', 'VLM_CONSENT_REQUEST_EXPIRED', 'The access request has expired; the practitioner must ask again', ['Consent.status']);
    }
    if (principal.admin) {
      context.consentLog?.push({ decision: 'permit', resourceType: 'Consent', consentId: plan.consentId, onBehalfOfPatient: true });
    }
  }
}

/**
 * Write a consent change a patient signed and sent straight to the contract back into the FHIR
 * Consent, as a new version (`status` inactive after a revocation, active after a signed grant).
 */
export async function reflect(
  deps: { writer: Writer; index: IndexStore; load(type: string, id: string): Promise<FhirResource | undefined> },
  fhirId: string,
  active: boolean,
): Promise<void> {
  const current = await deps.index.current('Consent', fhirId);
  if (!current || current.deleted) return;
  const resource = await deps.load('Consent', fhirId);
  if (!resource) return;
  const status = active ? 'active' : 'inactive';
  if (resource.status === status) return;
  const context: WriteContext = { agent: { display: 'consent registry: change signed by the patient' } };
  FROM_CHAIN.add(context);
  await deps.writer.commit(
    [{ method: 'update', type: 'Consent', id: fhirId, resource: { ...resource, status }, expectedVersion: current.versionId }],
    context,
  );
}
