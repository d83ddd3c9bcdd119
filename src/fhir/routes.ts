/**
 * The route table: method, path and interaction, in the order of http://hl7.org/fhir/R4/http.html.
 * Paths are relative to the FHIR base (`/fhir`).
 */
import type { FhirRequest, FhirResponse } from './request.ts';
import type { FhirServices } from './services.ts';
import type { WriteContext } from './writer.ts';
import { guard } from './access.ts';
import { bundle } from './interactions/bundle.ts';
import { capabilities } from './interactions/capabilities.ts';
import { create } from './interactions/create.ts';
import { conditionalDelete, deleteInteraction } from './interactions/delete.ts';
import { history } from './interactions/history.ts';
import { conditionalPatch, patch } from './interactions/patch.ts';
import { read } from './interactions/read.ts';
import { search } from './interactions/search.ts';
import { conditionalUpdate, update } from './interactions/update.ts';
import { vread } from './interactions/vread.ts';
import { validate } from './operations/validate.ts';
import { verify, verifySweep } from './operations/verify.ts';
import { everything } from './operations/everything.ts';
import { exportCancel, exportFile, exportKickOff, exportStatus } from './bulk/export.ts';
import { bindingToken, subscriptionEvents, subscriptionStatus } from './subscriptions/operations.ts';
import { readTopic, searchTopics } from './subscriptions/topics.ts';
import { approve, grantRequest, grantSigned, registerWallet, revocationRequest, revokeApproval, revokeSigned } from './operations/consent.ts';

export type Handler = (services: FhirServices, request: FhirRequest, context: WriteContext) => Promise<FhirResponse>;

export interface Route {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE' | 'PATCH' | 'HEAD';
  path: string;
  interaction: string;
  handler: Handler;
  /** The response is not FHIR JSON (an export file): the Accept header does not decide it. */
  anyAccept?: boolean;
}

export interface RouteOptions {
  /** Most entries of a batch or transaction Bundle (VELLUM_BUNDLE_MAX_ENTRIES). */
  bundleMaxEntries?: number;
}

/** The FHIR REST routes. `statement` is the CapabilityStatement served at /metadata. */
export function fhirRoutes(statement: Record<string, unknown>, options: RouteOptions = {}): Route[] {
  // Every handler is guarded (access.ts): scopes and the patient compartment.
  let guarded: Route[] = [];
  const routes: Route[] = [
    // batch and transaction: GET entries run the (guarded) GET routes of this same table.
    { method: 'POST', path: '/', interaction: 'transaction', handler: bundle({ maxEntries: options.bundleMaxEntries ?? 10_000, routes: () => guarded }) },
    { method: 'GET', path: '/', interaction: 'search-system', handler: search },
    { method: 'GET', path: '/metadata', interaction: 'capabilities', handler: capabilities(statement) },
    { method: 'GET', path: '/_history', interaction: 'history-system', handler: history },
    { method: 'GET', path: '/$verify', interaction: 'operation', handler: verifySweep },
    // Bulk Data export (bulk/export.ts): the job id is `:id`, a file's name `:vid`.
    { method: 'GET', path: '/$export', interaction: 'operation', handler: exportKickOff },
    { method: 'POST', path: '/$export', interaction: 'operation', handler: exportKickOff },
    { method: 'GET', path: '/$export-status/:id', interaction: 'operation', handler: exportStatus },
    { method: 'DELETE', path: '/$export-status/:id', interaction: 'operation', handler: exportCancel },
    { method: 'GET', path: '/$export-file/:id/:vid', interaction: 'operation', handler: exportFile, anyAccept: true },
    { method: 'GET', path: '/:type/$export', interaction: 'operation', handler: exportKickOff },
    { method: 'POST', path: '/:type/$export', interaction: 'operation', handler: exportKickOff },
    { method: 'GET', path: '/:type/:id/$export', interaction: 'operation', handler: exportKickOff },
    { method: 'POST', path: '/:type/:id/$export', interaction: 'operation', handler: exportKickOff },
    // The SubscriptionTopics Vellum publishes (built in, public like the CapabilityStatement).
    { method: 'GET', path: '/SubscriptionTopic', interaction: 'topics', handler: searchTopics },
    { method: 'GET', path: '/SubscriptionTopic/:id', interaction: 'topics', handler: readTopic },
    { method: 'GET', path: '/:type/$status', interaction: 'operation', handler: subscriptionStatus },
    { method: 'GET', path: '/:type', interaction: 'search-type', handler: search },
    { method: 'POST', path: '/:type', interaction: 'create', handler: create },
    { method: 'PUT', path: '/:type', interaction: 'conditional-update', handler: conditionalUpdate },
    { method: 'PATCH', path: '/:type', interaction: 'conditional-patch', handler: conditionalPatch },
    { method: 'DELETE', path: '/:type', interaction: 'conditional-delete', handler: conditionalDelete },
    { method: 'POST', path: '/:type/_search', interaction: 'search-type', handler: search },
    { method: 'GET', path: '/:type/_history', interaction: 'history-type', handler: history },
    { method: 'POST', path: '/:type/$validate', interaction: 'operation', handler: validate },
    { method: 'GET', path: '/:type/:id', interaction: 'read', handler: read },
    { method: 'PUT', path: '/:type/:id', interaction: 'update', handler: update },
    { method: 'PATCH', path: '/:type/:id', interaction: 'patch', handler: patch },
    { method: 'DELETE', path: '/:type/:id', interaction: 'delete', handler: deleteInteraction },
    { method: 'GET', path: '/:type/:id/_history', interaction: 'history-instance', handler: history },
    { method: 'GET', path: '/:type/:id/$everything', interaction: 'operation', handler: everything },
    { method: 'GET', path: '/:type/:id/$status', interaction: 'operation', handler: subscriptionStatus },
    { method: 'GET', path: '/:type/:id/$events', interaction: 'operation', handler: subscriptionEvents },
    { method: 'GET', path: '/:type/:id/$get-ws-binding-token', interaction: 'operation', handler: bindingToken },
    { method: 'POST', path: '/:type/:id/$get-ws-binding-token', interaction: 'operation', handler: bindingToken },
    { method: 'POST', path: '/:type/:id/$approve', interaction: 'operation', handler: approve },
    { method: 'POST', path: '/:type/:id/$revoke-approval', interaction: 'operation', handler: revokeApproval },
    { method: 'POST', path: '/:type/:id/$register-wallet', interaction: 'operation', handler: registerWallet },
    { method: 'GET', path: '/:type/:id/$revocation-request', interaction: 'operation', handler: revocationRequest },
    { method: 'POST', path: '/:type/:id/$revoke-signed', interaction: 'operation', handler: revokeSigned },
    { method: 'GET', path: '/:type/:id/$grant-request', interaction: 'operation', handler: grantRequest },
    { method: 'POST', path: '/:type/:id/$grant-signed', interaction: 'operation', handler: grantSigned },
    { method: 'GET', path: '/:type/:id/:ctype', interaction: 'search-compartment', handler: search },
    { method: 'GET', path: '/:type/:id/_history/:vid', interaction: 'vread', handler: vread },
    { method: 'GET', path: '/:type/:id/$verify', interaction: 'operation', handler: verify },
    { method: 'GET', path: '/:type/:id/_history/:vid/$verify', interaction: 'operation', handler: verify },
    { method: 'POST', path: '/:type/:id/$validate', interaction: 'operation', handler: validate },
  ];
  guarded = routes.map(guard);
  return guarded;
}
