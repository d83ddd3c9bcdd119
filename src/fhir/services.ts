/**
 * The narrow set of components the FHIR interactions use, built once by the composition root
 * (`src/server.ts`) and passed in. No module-level state.
 */
import type { Repository } from '../storage/repository.ts';
import type { VersionRecord } from '../storage/index-store.ts';
import type { ResourceDefinitions } from './definitions.ts';
import type { FhirResource } from './request.ts';
import type { SearchRegistry } from './search/registry.ts';
import type { Validator } from './validation/validator.ts';
import type { Writer } from './writer.ts';

export interface FhirServices {
  repository: Repository;
  writer: Writer;
  validator: Validator;
  registry: SearchRegistry;
  definitions: ResourceDefinitions;
  resourceTypes: ReadonlySet<string>;
  baseUrl: string;
  /** The stored resource of a version record (undefined for a deletion). */
  loadResource(record: VersionRecord, signal?: AbortSignal): Promise<FhirResource | undefined>;
}
