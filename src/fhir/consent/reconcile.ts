/**
 * Consent writes interrupted by a crash (docs/consent.md).
 *
 * A Consent write changes the contract first — its transaction mined — and commits the FHIR version
 * after (write-step.ts). A commit that fails in the process undoes the contract change at once; a
 * process that dies in between leaves the contract ahead of the FHIR store: a permit nobody was
 * told about, or a revocation the store does not show. So each write first notes its Consent ids in
 * an intent journal (appended and fsynced before the transaction is sent), and at the next start,
 * once the consent cache has synced, every noted Consent's contract state is brought back to what
 * the FHIR store holds — the state that was acknowledged — and the journal is emptied.
 *
 * A consent the patient revoked by signature is left alone (it is locked, and the FHIR Consent
 * follows the patient's revocation). Consents the journal does not name are never touched: another
 * site may share the contract.
 */
import fs from 'node:fs';
import type { FhirResource } from '../request.ts';
import type { IndexStore } from '../../storage/index-store.ts';
import { mapConsent, type MappingContext } from './mapping.ts';
import type { ConsentService } from './service.ts';
import type { Rule } from './terms.ts';

/** The ids of Consents whose contract write may not have been followed by their FHIR commit. */
export class ConsentIntentJournal {
  readonly #path: string;

  constructor(path: string) {
    this.#path = path;
  }

  /** Note `fhirIds` durably (before their transactions are sent). */
  note(fhirIds: readonly string[]): void {
    if (fhirIds.length === 0) return;
    const fd = fs.openSync(this.#path, 'a', 0o600);
    try {
      fs.writeSync(fd, fhirIds.map((id) => `${JSON.stringify(id)}\n`).join(''));
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  }

  /** The noted ids, each once (a torn last line, from a crash while noting, is ignored). */
  pending(): string[] {
    let text: string;
    try {
      text = fs.readFileSync(this.#path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    const ids = new Set<string>();
    for (const line of text.split('\n')) {
      try {
        const id = JSON.parse(line) as unknown;
        if (typeof id === 'string') ids.add(id);
      } catch {
        // an empty or torn line
      }
    }
    return [...ids];
  }

  clear(): void {
    fs.rmSync(this.#path, { force: true });
  }
}

export interface ReconcileDeps {
  service: ConsentService;
  journal: ConsentIntentJournal;
  index: IndexStore;
  /** The current FHIR Consent `id` (undefined when absent or deleted). */
  load(id: string): Promise<FhirResource | undefined>;
  /** The mapping context of a Consent (write-step.ts `mappingContext`). */
  context(resource: FhirResource): Promise<MappingContext>;
}

export interface ReconcileReport {
  /** Consents the journal named. */
  checked: number;
  /** Consents whose contract state was put back to the FHIR store's. */
  restored: string[];
  /** Consents left as the patient's signature made them. */
  lockedByPatient: string[];
  /**
   * Consents whose stored terms could not be put back (an actor no longer approved…): revoked on
   * chain instead, or — when even that failed — left noted for the next start.
   */
  failed: string[];
}

/** One string per rule list, for comparing what the contract holds with what the store maps to. */
function rulesKey(rules: readonly Readonly<Rule>[]): string {
  return JSON.stringify(
    rules.map((r) => [
      r.parent,
      r.permit,
      r.actors.map((a) => a.toLowerCase()),
      r.classes.toString(),
      r.actions,
      r.purposes.toString(),
      r.start,
      r.end,
      r.dataStart,
      r.dataEnd,
      r.tokens.map((t) => t.toLowerCase()),
    ]),
  );
}

/**
 * Bring the contract back to the FHIR store for every Consent the journal names, then empty it.
 * Run after the service's first sync and before requests are served.
 */
export async function reconcileConsents(deps: ReconcileDeps): Promise<ReconcileReport> {
  const { service, journal } = deps;
  const report: ReconcileReport = { checked: 0, restored: [], lockedByPatient: [], failed: [] };
  let unresolved = false;
  for (const fhirId of journal.pending()) {
    report.checked++;
    const consentId = service.keyOf(`Consent/${fhirId}`);
    const onChain = service.state.consent(consentId);
    try {
      const resource = await deps.load(fhirId);
      const plan = resource ? mapConsent(resource, await deps.context(resource), fhirId) : ({ action: 'revoke' } as const);
      if (plan.action === 'put') {
        const same =
          onChain?.active && onChain.patient.toLowerCase() === plan.patient.toLowerCase() && rulesKey(onChain.rules) === rulesKey(plan.rules);
        if (same) continue;
        if (onChain?.lockedByPatient) {
          report.lockedByPatient.push(fhirId);
          continue;
        }
        await service.chain.put(consentId, plan.patient, plan.rules);
        report.restored.push(fhirId);
      } else if (onChain?.active) {
        await service.chain.revoke(consentId);
        report.restored.push(fhirId);
      }
    } catch {
      // What the store holds cannot be put back: no permit may stay that the store does not show.
      report.failed.push(fhirId);
      if (onChain?.active) await service.chain.revoke(consentId).catch(() => (unresolved = true));
    }
  }
  if (report.restored.length || report.failed.length) await service.sync().catch(() => undefined);
  if (!unresolved) journal.clear();
  return report;
}
