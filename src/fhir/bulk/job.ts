/**
 * What an export job records (the JSON of its `export_jobs` row, storage/index-store.ts): the
 * request as resolved at kick-off (`ExportSpec`) and how far the runner got (`ExportProgress`).
 */
import type { JWK } from 'jose';
import type { Principal } from '../auth/verify.ts';
import { parseScopes } from '../auth/scopes.ts';

/** The caller as the job keeps it: enough to decide every resource again when the job runs. */
export interface StoredPrincipal {
  clientId: string;
  subject: string;
  scope: string;
  context: Principal['context'];
  patient?: string;
  fhirUser?: string;
  purposeOfUse: string;
  admin: boolean;
}

export interface ExportSpec {
  level: 'system' | 'patient' | 'group';
  /** The kick-off request URL (the manifest's `request`). */
  request: string;
  /** The snapshot: versions with seq <= snapshotSeq, the versions current at `transactionTime`. */
  snapshotSeq: number;
  /** ms; every version written after the snapshot has a later lastUpdated (Writer.snapshotInstant). */
  transactionTime: number;
  /** The types exported, in order. */
  types: string[];
  /** Only versions changed after this instant (ms), and the resources deleted since. */
  since?: number;
  /** `_typeFilter` search queries by type (several are OR'ed). */
  typeFilters?: Record<string, string[]>;
  /** `_elements`: element names for every type (`*`) or one type. */
  elements?: Record<string, string[]>;
  /** Only the compartments of these patients' key scopes (Group members, `patient`). */
  keyScopes?: string[];
  /** Only resources in some patient's compartment (Patient- and Group-level exports). */
  patientScoped: boolean;
  /** includeAssociatedData=LatestProvenanceResources: the Provenance of each exported version. */
  provenance: boolean;
  /** The caller (absent when authorization is off). */
  principal?: StoredPrincipal;
  /** The registered encryption key files are encrypted to (JWE), when the client has one. */
  recipient?: JWK;
}

export interface ExportPart {
  /** `output`: resources of `type`; `deleted`: Bundles of deletions; `error`: OperationOutcomes; `proofs`: proofs of part `of`. */
  kind: 'output' | 'deleted' | 'error' | 'proofs';
  type: string;
  name: string;
  count: number;
  /** For proofs: the output file they prove. */
  of?: string;
}

export interface ExportProgress {
  /** Position: the type being exported and the last seq written into a finished part. */
  typeIndex: number;
  afterSeq: number;
  /** Files finished (written whole), in order. */
  parts: ExportPart[];
  fileNo: number;
  exported: number;
  /** Why the job failed. */
  failure?: string;
}

export function storePrincipal(p: Principal): StoredPrincipal {
  return {
    clientId: p.clientId,
    subject: p.subject,
    scope: p.scope,
    context: p.context,
    ...(p.patient ? { patient: p.patient } : {}),
    ...(p.fhirUser ? { fhirUser: p.fhirUser } : {}),
    purposeOfUse: p.purposeOfUse,
    admin: p.admin,
  };
}

export function principalOf(stored: StoredPrincipal): Principal {
  return {
    clientId: stored.clientId,
    subject: stored.subject,
    scopes: parseScopes(stored.scope).scopes,
    scope: stored.scope,
    context: stored.context,
    ...(stored.patient ? { patient: stored.patient } : {}),
    ...(stored.fhirUser ? { fhirUser: stored.fhirUser } : {}),
    purposeOfUse: stored.purposeOfUse,
    admin: stored.admin,
    expiresAt: Number.MAX_SAFE_INTEGER,
  };
}

export const ANONYMOUS_OWNER = 'anonymous';
