/**
 * The narrow set of components the FHIR interactions use, built once by the composition root
 * (`src/server.ts`) and passed in. No module-level state.
 */
import type { AccessServices } from './access.ts';
import type { Repository } from '../storage/repository.ts';
import type { VersionRecord } from '../storage/index-store.ts';
import type { ResourceDefinitions } from './definitions.ts';
import type { FhirResource } from './request.ts';
import type { SearchRegistry } from './search/registry.ts';
import type { Validator } from './validation/validator.ts';
import type { Writer } from './writer.ts';
import type { Principal } from './auth/verify.ts';
import type { ConsentService } from './consent/service.ts';
import type { MappingContext } from './consent/mapping.ts';
import type { BulkServices } from './bulk/export.ts';
import type { SubscriptionService } from './subscriptions/service.ts';

/** The anchor pipeline as the FHIR layer sees it (absent when anchoring is off). */
export interface AnchoringServices {
  /** The server's pseudonym key for leaves. */
  leafKey: Uint8Array;
  chainId: number;
  contract: string;
  /** Resolve once version `seq` is in an anchored batch. */
  waitFor(seq: number, signal?: AbortSignal): Promise<void>;
  /** Versions written but not yet anchored. */
  backlog(): Promise<number>;
  /** Ask the contract (not the local index) whether and when a root was anchored. */
  anchoredAt(root: Uint8Array): Promise<{ batchId: number; timestamp: number; blockNumber: number } | undefined>;
  /** Ask the contract to check a leaf's inclusion proof against an anchored root. */
  verifyLeaf(root: Uint8Array, leaf: Uint8Array, proof: Uint8Array[]): Promise<boolean>;
}

export interface FhirServices {
  repository: Repository;
  writer: Writer;
  validator: Validator;
  registry: SearchRegistry;
  definitions: ResourceDefinitions;
  resourceTypes: ReadonlySet<string>;
  baseUrl: string;
  anchoring?: AnchoringServices;
  /** Present when authorization is on: requests carry a principal and are checked (access.ts). */
  access?: AccessServices;
  /** MAC key of page cursors (interactions/paging.ts); a random per-process key when absent. */
  cursorKey?: Uint8Array;
  /** Subscriptions (subscriptions/service.ts): whose each one is, `$status`, `$events`, approval events. */
  subscriptions?: Pick<SubscriptionService, 'hidden' | 'othersExist' | 'status' | 'events' | 'parsed' | 'emitApproval'>;
  /** The subscription websocket (subscriptions/websocket.ts): its URL and binding tokens. */
  subscriptionSockets?: { url: string; bindingToken(ids: readonly string[]): { token: string; expires: number } };
  /** Bulk Data export (bulk/export.ts). */
  bulk?: BulkServices;
  /** Present when consent is enforced (authorization and the chain on): consent/service.ts. */
  consent?: ConsentServices;
  /** The stored bundle (the resource version and its Provenance) of a version record, with plain numbers. */
  loadBundle(record: VersionRecord, signal?: AbortSignal): Promise<FhirResource>;
  /** The stored resource of a version record (undefined for a deletion). */
  loadResource(record: VersionRecord, signal?: AbortSignal): Promise<FhirResource | undefined>;
}

/** Consent enforcement as the FHIR layer sees it. */
export interface ConsentServices {
  service: ConsentService;
  /** The consent keys of everyone the caller acts as (its fhirUser, and a PractitionerRole's practitioner and organisation). */
  actorsOf(principal: Principal): Promise<string[]>;
  /** The mapping context of a Consent (policies, related data), as the write step maps it. */
  mappingContext(resource: FhirResource): Promise<MappingContext>;
  /** Seconds an access request (a proposed Consent) stays open (VELLUM_CONSENT_REQUEST_TTL). */
  requestTtlSeconds: number;
}
