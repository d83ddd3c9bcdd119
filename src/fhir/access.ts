/**
 * Access control on the FHIR request path (SMART scopes and the patient compartment).
 *
 * - Every route's handler is wrapped by `guard`: the caller's SMART scopes must allow the
 *   interaction on the type (403 `VLM_AUTH_SCOPE` otherwise). A grant that comes from `patient/`
 *   scopes (or any token of a patient user) confines the request to that patient's compartment:
 *   `request.restriction`.
 * - Confinement is enforced where records are known: single reads (`assertVisible`), searches (a
 *   compartment clause ANDed into the index query, so totals never count what cannot be seen,
 *   a filter on `_include`d resources, and a key-scope filter on what chains and `_has` traverse:
 *   `linkScopes`), type history (a key-scope filter in the index), and writes (`accessWriteStep`,
 *   which sees every version of every interaction and bundle entry).
 * - A resource is in a patient's compartment when its key scope (src/server.ts `keyScope`: the
 *   first Patient it references through an R4 Patient CompartmentDefinition parameter) is that
 *   patient's. Resources of types outside the compartment (Organization, Practitioner,
 *   Medication…) are governed by scopes only.
 * - AuditEvents: clients never update or delete them (405); only administrators and patients (for
 *   their own) read and search them. `guard` refuses their type to anyone else (403
 *   `VLM_AUDIT_FORBIDDEN`); on every other path that can return one (system and type history,
 *   system search, `_include`/`_revinclude`, `$everything`, bundle entries, conditional matching,
 *   chains and `_has` through them) `visible`/`assertVisible`, `restrictionClause`, `linkScopes`
 *   and `auditHidden` make them as if absent.
 *
 * Routes called inside a batch or transaction go through the same guard, with the principal of the
 * bundle's request.
 */
import type { Principal } from './auth/verify.ts';
import { decide, insufficientScope } from './auth/verify.ts';
import type { Interaction } from './auth/scopes.ts';
import { fhirError } from './errors.ts';
import type { FhirRequest, FhirResource } from './request.ts';
import type { Route } from './routes.ts';
import type { FhirServices } from './services.ts';
import type { IndexClause, KeyScopeFilter } from '../storage/search-types.ts';
import type { VersionRecord } from '../storage/index-store.ts';
import type { WriteStep } from './writer.ts';
import { CONSENT_ACCESS, type ConsentGate } from './consent/service.ts';
import { CONSENT_ACTIONS } from './consent/terms.ts';
import { SHARED_SCOPE } from '../storage/keys.ts';

/** The compartment a request is confined to. */
export interface Restriction {
  patient: string;
  /** The patient's key scope (what its compartment's records carry). */
  keyScope: string;
}

/** What the FHIR layer needs to know about the caller's patient compartment. */
export interface AccessServices {
  /** The caller of a request from its `Authorization` header; raises a 401 FhirError (auth/verify.ts). */
  authenticate(authorization: string | string[] | undefined): Promise<Principal>;
  /** Key scope of `Patient/{id}` (src/storage/keys.ts keyScoper). */
  patientScope(patientId: string): string;
}

/** The SMART interaction a route stands for (undefined: no scope needed, e.g. /metadata). */
function scopeInteraction(route: Route, request: FhirRequest): Interaction | undefined {
  switch (route.interaction) {
    case 'capabilities':
    case 'topics': // the SubscriptionTopics the server publishes: public, like the CapabilityStatement
    case 'transaction': // every entry is checked on its own
      return undefined;
    case 'read':
      return 'read';
    case 'vread':
      return 'vread';
    case 'search-type':
    case 'search-system':
    case 'search-compartment':
      return 'search';
    case 'history-instance':
    case 'history-type':
    case 'history-system':
      return 'history';
    case 'create':
      return 'create';
    case 'update':
    case 'conditional-update':
      return 'update';
    case 'patch':
    case 'conditional-patch':
      return 'patch';
    case 'delete':
    case 'conditional-delete':
      return 'delete';
    case 'operation':
      // $verify and $everything disclose data: they need read access; $validate stores nothing.
      return request.resourceType === undefined || /\$validate$/.test(route.path) ? undefined : 'read';
    default:
      return 'operation';
  }
}

/** The audit trail's type: administrators see it all, patient-confined requests their own, nobody else any. */
export const AUDIT_TYPE = 'AuditEvent';

const auditForbidden = () => fhirError(403, 'forbidden', 'VLM_AUDIT_FORBIDDEN', 'Only administrators, and patients for their own, read AuditEvents');

/**
 * Interactions that change an AuditEvent, refused outright. An update (PUT) may create one under a
 * new id (IHE BALP record repositories load AuditEvents by id): the write step refuses it when the
 * id exists.
 */
const AUDIT_WRITES = new Set(['patch', 'conditional-patch', 'delete', 'conditional-delete']);

/** Wrap a route's handler with the scope check and the compartment restriction. */
export function guard(route: Route): Route {
  return {
    ...route,
    handler: async (services, request, context) => {
      const principal = request.principal;
      if (services.access && principal) {
        const type = request.compartmentType ?? request.resourceType;
        if (type === 'AuditEvent' && AUDIT_WRITES.has(route.interaction)) {
          throw fhirError(405, 'not-supported', 'VLM_AUDIT_IMMUTABLE', 'AuditEvents cannot be updated or deleted');
        }
        if (route.path === '/$verify' && !principal.admin) {
          throw fhirError(403, 'forbidden', 'VLM_AUTH_ADMIN_ONLY', 'The store-wide $verify sweep is for administrators');
        }
        const interaction = scopeInteraction(route, request);
        if (interaction !== undefined) {
          const decision = decideFor(principal, interaction, type);
          if (!decision.allowed) throw insufficientScope(interaction, type ?? '*');
          if (type === AUDIT_TYPE && !principal.admin && decision.patient === undefined && interaction !== 'create') throw auditForbidden();
          const confinedTo = decision.patient ?? boundPatient(principal);
          if (confinedTo !== undefined) {
            request = { ...request, restriction: { patient: confinedTo, keyScope: services.access.patientScope(confinedTo) } };
          }
          const gate = await consentGate(services, principal, request.consentLog ?? []);
          if (gate) request = { ...request, consent: gate };
        }
      }
      return route.handler(services, request, context);
    },
  };
}

/**
 * Scope decision; at system level (no type) every type of the search or history must be allowed,
 * which `*` expresses.
 */
function decideFor(principal: Principal, interaction: Interaction, type: string | undefined): { allowed: boolean; patient?: string } {
  return decide(principal, interaction, type ?? '*');
}

/** Whether records of `type` belong to patient compartments (governed by the restriction). */
export function inCompartmentType(services: FhirServices, type: string): boolean {
  return type === 'Patient' || services.definitions.patientCompartmentParams(type).length > 0;
}

/**
 * The patient a client bound to `Patient/{id}` (its fhirUser) is confined to, whatever its scopes:
 * a patient's own client sees that patient's compartment, like a patient user.
 */
function boundPatient(principal: Principal): string | undefined {
  return principal.fhirUser?.startsWith('Patient/') && !principal.admin ? principal.fhirUser.slice('Patient/'.length) : undefined;
}

/**
 * Whether a caller's requests are gated by patients' consents: practitioners, related persons,
 * devices and organisations — everyone but the administrator (the data custodian: audited, not
 * gated) and a patient (who sees its own compartment through the restriction).
 */
export function consentGated(principal: Principal): boolean {
  return !principal.admin && !principal.fhirUser?.startsWith('Patient/') && principal.context !== 'patient';
}

/**
 * The consent gate of a request by `principal` (undefined when consent is off or the caller is not
 * gated). Waits until the decision cache is fresh (503 otherwise).
 */
export async function consentGate(
  services: FhirServices,
  principal: Principal,
  log: NonNullable<FhirRequest['consentLog']>,
): Promise<ConsentGate | undefined> {
  const consent = services.consent;
  if (!consent || !consentGated(principal)) return undefined;
  await consent.service.ensureFresh();
  const actors = await consent.actorsOf(principal);
  return consent.service.gate(actors, principal, log);
}

/**
 * Whether the consent of `record`'s patient lets the request see it (true when not gated). With
 * the loaded `resource`, data conditions are decided on its facts (consent/facts.ts), and a
 * Consent that names the caller among its actors is visible to it (a practitioner sees its own
 * requests and their answers); without it, a decision that needs them is a refusal.
 */
function consented(services: FhirServices, gate: ConsentGate | undefined, record: VersionRecord, action?: number, resource?: FhirResource): boolean {
  if (!gate || record.keyScope === SHARED_SCOPE || !inCompartmentType(services, record.type)) return true;
  const facts = resource ? () => gate.factsOf(resource, record.lastUpdated) : undefined;
  if (gate.allowed(record.type, record.keyScope, action, facts)) return true;
  return record.type === 'Consent' && resource !== undefined && (action === undefined || action === CONSENT_ACCESS) && gate.namesCaller(resource);
}

/**
 * Whether deciding `record` for the request needs the resource itself: the patient's consents
 * have data conditions that apply (code, label, custodian, data…), or it is a Consent the caller
 * may be named in. Callers that can load it (`screenRecords`, `assertVisibleLoaded`) do.
 */
function needsResource(services: FhirServices, request: FhirRequest, record: VersionRecord): boolean {
  const gate = request.consent;
  if (!gate || record.deleted || record.keyScope === SHARED_SCOPE || !inCompartmentType(services, record.type)) return false;
  if (record.type === AUDIT_TYPE && auditHidden(request)) return false;
  const restriction = request.restriction;
  if (restriction && record.keyScope !== restriction.keyScope) return false;
  if (gate.needsFacts(record.type, record.keyScope)) return true;
  return record.type === 'Consent' && !gate.allowed(record.type, record.keyScope);
}

/**
 * The records of `records` the request may see, each with its resource when deciding it needed
 * the resource (so the caller need not load it again): the one filter every bundle's records pass.
 */
export async function screenRecords(
  services: FhirServices,
  request: FhirRequest,
  records: readonly VersionRecord[],
): Promise<{ record: VersionRecord; resource?: FhirResource }[]> {
  const out: { record: VersionRecord; resource?: FhirResource }[] = [];
  for (const record of records) {
    if (!needsResource(services, request, record)) {
      if (visible(services, request, record)) out.push({ record });
      continue;
    }
    const resource = await services.loadResource(record, request.signal);
    if (resource && visible(services, request, record, resource)) out.push({ record, resource });
  }
  return out;
}

/**
 * `assertVisible` for a single record, loading the resource when the decision needs it; resolves
 * to the resource when it was loaded (undefined otherwise: the caller loads it if it needs it).
 */
export async function assertVisibleLoaded(services: FhirServices, request: FhirRequest, record: VersionRecord): Promise<FhirResource | undefined> {
  const resource = needsResource(services, request, record) ? await services.loadResource(record, request.signal) : undefined;
  assertVisible(services, request, record, resource);
  return resource;
}

/**
 * Whether AuditEvents are withheld from the request: an authenticated caller that is neither the
 * administrator (`principal.admin`) nor confined to a patient's compartment (whose own AuditEvents
 * the restriction lets through) — consent-gated practitioners and non-admin system clients alike.
 * For them AuditEvents are as if absent wherever records leave (a direct access is 403).
 */
export function auditHidden(request: FhirRequest): boolean {
  const principal = request.principal;
  return principal !== undefined && !principal.admin && request.restriction === undefined;
}

/**
 * Whether the records an index query finds for the request must each pass `visible` (consent
 * decides them one by one, or AuditEvents are withheld); a patient confinement alone is a clause
 * of the query itself (`restrictionClause`).
 */
export function screened(request: FhirRequest): boolean {
  // Subscriptions belong to their owners: every caller's records pass `visible` (administrators' too, cheaply).
  return request.consent !== undefined || auditHidden(request) || request.principal !== undefined;
}

/** Whether the request may see `record`: the patient confinement, the audit trail's rule and consent. */
export function visible(services: FhirServices, request: FhirRequest, record: VersionRecord, resource?: FhirResource): boolean {
  if (record.type === AUDIT_TYPE && auditHidden(request)) return false;
  if (record.type === 'Subscription' && services.subscriptions?.hidden(request.principal, record.id)) return false;
  const restriction = request.restriction;
  if (restriction && inCompartmentType(services, record.type) && record.keyScope !== restriction.keyScope) return false;
  return consented(services, request.consent, record, undefined, resource);
}

/**
 * The request as conditional matching (If-None-Exist, conditional update/patch/delete, conditional
 * references) must see the store: with the patient confinement and consent gate the guard gives
 * a request — computed here for a transaction's entries, whose transaction is not confined (each
 * entry is). Resources the caller may not see are then as if absent: a 200 or 412 must not tell
 * it that another patient has a match.
 */
export async function matchingRequest(services: FhirServices, request: FhirRequest, type: string, interaction: Interaction): Promise<FhirRequest> {
  const principal = request.principal;
  if (!services.access || !principal || request.restriction || request.consent) return request;
  let out = request;
  const confinedTo = decide(principal, interaction, type).patient ?? boundPatient(principal);
  if (confinedTo !== undefined) out = { ...out, restriction: { patient: confinedTo, keyScope: services.access.patientScope(confinedTo) } };
  const gate = await consentGate(services, principal, request.consentLog ?? []);
  return gate ? { ...out, consent: gate } : out;
}

/** The VLM code of a consent refusal. */
const REFUSAL: Record<string, string> = {
  deny: 'VLM_CONSENT_DENIED',
  'no-consent': 'VLM_CONSENT_NONE',
  'actor-not-approved': 'VLM_CONSENT_ACTOR_NOT_APPROVED',
};

/** 403 `VLM_AUDIT_FORBIDDEN`, `VLM_AUTH_COMPARTMENT` or `VLM_CONSENT_*` unless the request may see `record`. */
export function assertVisible(services: FhirServices, request: FhirRequest, record: VersionRecord, resource?: FhirResource): void {
  if (record.type === AUDIT_TYPE && auditHidden(request)) throw auditForbidden();
  // Another owner's Subscription is as if absent (administrators see all).
  if (record.type === 'Subscription' && services.subscriptions?.hidden(request.principal, record.id)) {
    throw fhirError(404, 'not-found', 'VLM_FHIR_NOT_FOUND', `Subscription/${record.id} is not known`);
  }
  const restriction = request.restriction;
  if (restriction && inCompartmentType(services, record.type) && record.keyScope !== restriction.keyScope) {
    throw fhirError(403, 'forbidden', 'VLM_AUTH_COMPARTMENT', "The resource is outside the patient's compartment this token is confined to");
  }
  assertConsented(services, request.consent, record, undefined, resource);
}

function assertConsented(services: FhirServices, gate: ConsentGate | undefined, record: VersionRecord, action?: number, resource?: FhirResource): void {
  if (consented(services, gate, record, action, resource)) return;
  const facts = resource ? () => gate!.factsOf(resource, record.lastUpdated) : undefined;
  const decision = gate!.decide(record.type, record.keyScope, action, facts).decision;
  throw fhirError(403, 'forbidden', REFUSAL[decision] ?? 'VLM_CONSENT_DENIED', "The patient's consent does not permit this access");
}

/**
 * Whether a search's `total` may be given: not to a consent-gated caller searching patient data,
 * whose matches are filtered one by one (a total would reveal how many were withheld). A search of
 * a type outside the compartments counts its matches in the index; what its chains and `_has`
 * traverse is filtered there (`linkScopes`), so the total counts nothing found through withheld data.
 */
export function totalDisclosed(services: FhirServices, request: FhirRequest, type: string | null): boolean {
  // Other owners' Subscriptions are as if absent (`visible`): the index's count would include them.
  if (subscriptionsScreened(request, type) && services.subscriptions?.othersExist(request.principal)) return false;
  if (!request.consent) return true;
  return type !== null && !inCompartmentType(services, type);
}

/**
 * Whether a search may match Subscriptions the caller does not own: a non-administrator's search
 * of Subscription, or a system-level one whose `_type` does not leave Subscription out. Its
 * matches are decided one by one (`visible`), so the index's total is not given.
 */
function subscriptionsScreened(request: FhirRequest, type: string | null): boolean {
  const principal = request.principal;
  if (!principal || principal.admin) return false;
  if (type !== null) return type === 'Subscription';
  const types = request.query.filter(([name]) => name === '_type').flatMap(([, value]) => value.split(','));
  return types.length === 0 || types.some((t) => t.trim() === 'Subscription');
}

/** Resource types a search's chains and `_has` traverse, at any depth. */
function linkedTypes(where: readonly IndexClause[], out = new Set<string>()): Set<string> {
  for (const clause of where) {
    for (const c of clause.anyOf) {
      if (c.kind === 'chain') {
        for (const target of c.targets) {
          out.add(target.resourceType);
          linkedTypes(target.where, out);
        }
      } else if (c.kind === 'has') {
        out.add(c.source.resourceType);
        linkedTypes(c.source.where, out);
      }
    }
  }
  return out;
}

/** Page size of the one-off read of the stored Consents' key scopes. */
const CONSENT_SCAN_PAGE = 1_000;

/**
 * The visibility of what a search's chains and `_has` traverse (IndexQuery.linkScopes), for a
 * consent-gated or patient-confined request: every resource a nested search selects that lies in
 * a patient compartment must itself be visible to the caller, or a visible match could be found
 * through data the caller may not see (`Observation?has-member:Observation.code=…` matching a
 * permitted Observation because a withheld one has the code; `Practitioner?_has:Observation:…`
 * finding a practitioner through a withheld patient's Observations).
 *
 * For each compartment type the nested searches reach: a patient-confined request sees its own
 * compartment only (when its consent, if gated, permits the type); a consent-gated request sees
 * the key scopes whose patient permits it for that class, action `access`, its purpose
 * (ConsentGate.linkScopes, from the mirrored consent state). The key scopes of patients with
 * consents are learnt as Consents are written through Vellum, and once from the stored Consents
 * when some are unknown (after a restart). Under break-glass, where every patient is visible
 * except those that deny, a denying patient whose key scope is still unknown cannot be excluded:
 * the search is refused (403 `VLM_CONSENT_CHAIN_REFUSED`) rather than run unfiltered.
 *
 * A request AuditEvents are withheld from (`auditHidden`) traverses none: `{ only: [] }`.
 *
 * Undefined when nothing needs filtering (not gated, no chain or `_has` into a compartment type).
 */
export async function linkScopes(
  services: FhirServices,
  request: FhirRequest,
  where: readonly IndexClause[],
): Promise<Record<string, KeyScopeFilter> | undefined> {
  const restriction = request.restriction;
  const gate = request.consent;
  const hideAudit = auditHidden(request);
  if (!restriction && !gate && !hideAudit) return undefined;
  let types = [...linkedTypes(where)].filter((type) => inCompartmentType(services, type));
  const filters: Record<string, KeyScopeFilter> = {};
  if (hideAudit && types.includes(AUDIT_TYPE)) {
    // Withheld AuditEvents are traversed by no chain or `_has` (`Patient?_has:AuditEvent:patient:…`).
    filters[AUDIT_TYPE] = { only: [] };
    types = types.filter((type) => type !== AUDIT_TYPE);
  }
  if (types.length === 0 || (!restriction && !gate)) return Object.keys(filters).length ? filters : undefined;
  const service = services.consent?.service;
  if (gate && !restriction && service?.scopesIncomplete) {
    const index = services.repository.index;
    await service.loadScopesOnce(async () => {
      const scopes: string[] = [];
      for (let offset = 0; ; offset += CONSENT_SCAN_PAGE) {
        const page = await index.search({ resourceType: 'Consent', where: [], sort: [], count: CONSENT_SCAN_PAGE, offset, wantTotal: false });
        for (const record of page.records) if (record.keyScope !== SHARED_SCOPE) scopes.push(record.keyScope);
        if (page.records.length < CONSENT_SCAN_PAGE) break;
      }
      return scopes;
    });
  }
  for (const type of types) {
    if (restriction) {
      filters[type] = { only: !gate || gate.allowed(type, restriction.keyScope) ? [restriction.keyScope] : [] };
      continue;
    }
    const filter = gate!.linkScopes(type);
    if (filter === undefined) {
      throw fhirError(
        403,
        'forbidden',
        'VLM_CONSENT_CHAIN_REFUSED',
        `A chain or _has through ${type} cannot be limited to the patients whose consent permits this access`,
      );
    }
    filters[type] = filter;
  }
  return filters;
}

/**
 * The clause confining a search of `type` to `Patient/{patient}`'s compartment (R4 Patient
 * CompartmentDefinition): undefined when the type is outside any patient compartment.
 */
export function compartmentClause(services: FhirServices, type: string, patient: string): IndexClause | undefined {
  if (type === 'Patient') {
    return { negate: false, anyOf: [{ kind: 'id', id: patient }, { kind: 'reference', param: 'link', id: patient, types: ['Patient'] }] };
  }
  const params = services.definitions.patientCompartmentParams(type).filter((p) => services.registry.get(type, p)?.kind === 'reference');
  if (params.length === 0) return undefined;
  return { negate: false, anyOf: params.map((param) => ({ kind: 'reference' as const, param, id: patient, types: ['Patient'] })) };
}

/**
 * The search clause a restricted request adds to a search of `type` (the system level is refused),
 * and the one that leaves AuditEvents out of a system-level search when they are withheld from
 * the request (`auditHidden`: then totals and pages never count them either).
 */
export function restrictionClause(services: FhirServices, request: FhirRequest, type: string | null): IndexClause | undefined {
  const restriction = request.restriction;
  if (!restriction) {
    return type === null && auditHidden(request) ? { negate: true, anyOf: [{ kind: 'type', type: AUDIT_TYPE }] } : undefined;
  }
  if (type === null) {
    throw fhirError(403, 'forbidden', 'VLM_AUTH_COMPARTMENT', 'A patient-confined token searches one type at a time (or uses Patient/$everything)');
  }
  return compartmentClause(services, type, restriction.patient);
}

const WRITE_INTERACTION: Record<string, Interaction> = { create: 'create', update: 'update', patch: 'patch', delete: 'delete' };

/**
 * The write step enforcing scopes and the compartment on every version (single interactions and
 * bundle entries alike): the caller's scopes must allow the write, AuditEvents are never changed,
 * and a patient-confined caller writes only inside its patient's compartment — both the version
 * written and the one it replaces.
 */
export function accessWriteStep(services: () => FhirServices): WriteStep {
  return {
    name: 'access',
    async beforeCommit(versions, context) {
      const principal = context.principal;
      const svc = services();
      if (!principal || !svc.access) return;
      let gate: ConsentGate | undefined;
      for (const version of versions) {
        const { type, method } = version.write;
        // An AuditEvent is only ever created: by POST, or by PUT of an id not yet used (its first version).
        if (type === 'AuditEvent' && !(method === 'create' || (method === 'update' && version.write.versionId === 1))) {
          throw fhirError(405, 'not-supported', 'VLM_AUDIT_IMMUTABLE', 'AuditEvents cannot be updated or deleted');
        }
        const interaction = WRITE_INTERACTION[method]!;
        const decision = decide(principal, interaction, type);
        if (!decision.allowed) throw insufficientScope(interaction, type);
        // A practitioner's Consent writes are access requests, governed by the consent write step
        // (consent/write-step.ts `checkRequestRules`): it asks for what it has not been granted.
        if (svc.consent && consentGated(principal) && type !== 'Consent') {
          // A practitioner writes patient data only as the patient's consent allows: create is
          // `collect`, the rest `correct` — for the version written and the one it replaces, each
          // decided on its own facts where the patient's consents have data conditions.
          gate ??= await consentGate(svc, principal, context.consentLog ?? []);
          const action = CONSENT_ACTIONS.indexOf(method === 'create' ? 'collect' : 'correct');
          if (method !== 'delete') {
            const written = { type, id: version.write.id, keyScope: version.write.keyScope, lastUpdated: version.write.lastUpdated } as VersionRecord;
            assertConsented(svc, gate, written, action, version.resource);
          }
          if (version.write.expectedVersion > 0) {
            const previous = await svc.repository.index.version(type, version.write.id, version.write.expectedVersion);
            if (previous && !previous.deleted) {
              const resource = gate?.needsFacts(type, previous.keyScope, action) ? await svc.loadResource(previous) : undefined;
              assertConsented(svc, gate, previous, action, resource);
            }
          }
        }
        const confinedTo = decision.patient ?? boundPatient(principal);
        if (confinedTo === undefined) continue;
        const keyScope = svc.access.patientScope(confinedTo);
        const outside = () =>
          fhirError(403, 'forbidden', 'VLM_AUTH_COMPARTMENT', "A patient-confined token writes only inside its patient's compartment");
        if (!inCompartmentType(svc, type)) throw outside();
        if (method !== 'delete' && version.write.keyScope !== keyScope) throw outside();
        if (version.write.expectedVersion > 0) {
          const previous = await svc.repository.index.version(type, version.write.id, version.write.expectedVersion);
          if (previous && !previous.deleted && previous.keyScope !== keyScope) throw outside();
        }
      }
    },
  };
}
