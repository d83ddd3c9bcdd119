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
 * - The consent cache is synced before the response, so the next request is decided with it.
 * - Versions written back from the chain (a patient's signed change, `reflect`) skip the step.
 * - Each write's Consent ids are noted in the intent journal before the contract is touched, so a
 *   process that dies between the transaction and the FHIR commit is put right at the next start
 *   (reconcile.ts).
 */
import { fhirError, FhirError } from '../errors.ts';
import type { FhirResource } from '../request.ts';
import type { WriteContext, WriteStep, Writer } from '../writer.ts';
import type { ConsentService } from './service.ts';
import { mapConsent } from './mapping.ts';
import type { Rule } from './terms.ts';
import type { IndexStore } from '../../storage/index-store.ts';
import type { ConsentIntentJournal } from './reconcile.ts';

export interface ConsentWriteDeps {
  consent(): ConsentService | undefined;
  /** Where each write notes its Consents before changing the contract (reconcile.ts). */
  journal?: ConsentIntentJournal;
  /** Key scope of `Patient/{id}` (keys.ts keyScoper). */
  patientScope(reference: string): string;
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

async function undoAll(undo: (() => Promise<unknown>)[]): Promise<void> {
  for (const action of undo.reverse()) await action().catch(() => undefined);
}

export function consentWriteStep(deps: ConsentWriteDeps): WriteStep & { abort(context: WriteContext): Promise<void> } {
  return {
    name: 'consent',
    async beforeCommit(versions, context) {
      const service = deps.consent();
      if (!service || FROM_CHAIN.has(context)) return;
      const keyOf = consentKeys(service, deps.patientScope);
      const undo: (() => Promise<unknown>)[] = [];
      let changed = false;
      // Noted durably before any transaction: a crash between the contract write and the FHIR
      // commit is put right at the next start (reconcile.ts).
      deps.journal?.note(versions.filter((v) => v.write.type === 'Consent').map((v) => v.write.id));
      try {
        for (const version of versions) {
          if (version.write.type !== 'Consent') continue;
          const id = version.write.id;
          const consentId = service.keyOf(`Consent/${id}`);
          const before = service.state.consent(consentId);
          const plan = version.write.deleted ? { action: 'revoke' as const } : mapConsent(version.resource as FhirResource, keyOf, id);
          const restore = before?.active
            ? () => service.chain.put(consentId, before.patient, before.rules)
            : () => service.chain.revoke(consentId);
          if (plan.action === 'put') {
            await service.chain.put(consentId, plan.patient, plan.rules as Rule[]);
            undo.push(restore);
            changed = true;
          } else if (before?.active) {
            await service.chain.revoke(consentId);
            undo.push(restore);
            changed = true;
          }
          service.fhirIds.set(consentId, id);
        }
      } catch (err) {
        await undoAll(undo);
        throw consentChainError(err);
      }
      if (!changed) return;
      PENDING.set(context, undo);
      // The next request is decided with this change (the cache may lag by one poll otherwise).
      await service.sync().catch(() => undefined);
    },
    async afterCommit(_written, context) {
      PENDING.delete(context);
    },
    async abort(context) {
      const undo = PENDING.get(context);
      if (!undo) return;
      PENDING.delete(context);
      await undoAll(undo);
      await deps.consent()?.sync().catch(() => undefined);
    },
  };
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
