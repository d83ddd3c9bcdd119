/**
 * SMART scopes, v1 and v2 (https://hl7.org/fhir/smart-app-launch/STU2.2/scopes-and-launch-context.html):
 * parsing, the scope check for one FHIR interaction, and the intersection the token endpoint
 * grants (requested ∩ registered).
 *
 * Resource scopes are `<context>/<type>.<permissions>[?query]`: context `patient`, `user` or
 * `system`; type a resource type or `*`; permissions v1 `read` (= r s), `write` (= c u d), `*`
 * (= c r u d s), or v2 letters `c r u d s` in that order. A v2 query (`?category=laboratory`) is
 * parsed and kept, but `allows()` never counts a restricted scope as a grant: evaluating the
 * restriction needs the resource, which this module does not see (a restricted scope is granted by
 * the token endpoint only when the client's registration covers it, and then merely carried).
 */

export type ScopeContext = 'patient' | 'user' | 'system';
export type Interaction = 'read' | 'vread' | 'search' | 'history' | 'create' | 'update' | 'patch' | 'delete' | 'operation';
export type Permission = 'c' | 'r' | 'u' | 'd' | 's';

/** The non-resource scopes Vellum understands (https://hl7.org/fhir/smart-app-launch/STU2.2/scopes-and-launch-context.html#quick-start). */
export const SPECIAL_SCOPES = [
  'openid',
  'fhirUser',
  'profile',
  'launch',
  'launch/patient',
  'launch/encounter',
  'offline_access',
  'online_access',
] as const;
export type SpecialScopeName = (typeof SPECIAL_SCOPES)[number];

export interface ResourceScope {
  kind: 'resource';
  /** The scope as written (re-serialised by `formatScope`). */
  raw: string;
  context: ScopeContext;
  /** A resource type, or `*`. */
  resourceType: string;
  /** Normalised permissions: v1 `read` → r s, `write` → c u d, `*` → c r u d s. */
  permissions: ReadonlySet<Permission>;
  version: 1 | 2;
  /** v2 query restriction (`?category=laboratory`), as ordered name/value pairs; absent = none. */
  query?: [string, string][];
}

export interface SpecialScope {
  kind: 'special';
  raw: string;
  name: SpecialScopeName;
}

export type Scope = ResourceScope | SpecialScope;

const PERMISSION_ORDER: Permission[] = ['c', 'r', 'u', 'd', 's'];
const RESOURCE_SCOPE = /^(patient|user|system)\/(\*|[A-Z][A-Za-z]{1,63})\.([a-z*]+)(\?.*)?$/;
const V1 = { read: ['r', 's'], write: ['c', 'u', 'd'], '*': PERMISSION_ORDER } as Record<string, Permission[]>;

/** Parse one scope token; undefined when it is not a scope Vellum understands. */
export function parseScope(raw: string): Scope | undefined {
  if ((SPECIAL_SCOPES as readonly string[]).includes(raw)) return { kind: 'special', raw, name: raw as SpecialScopeName };
  const m = RESOURCE_SCOPE.exec(raw);
  if (!m) return undefined;
  const [, context, resourceType, perms, rawQuery] = m as unknown as [string, ScopeContext, string, string, string | undefined];
  let permissions: Permission[];
  let version: 1 | 2;
  if (perms in V1) {
    if (rawQuery !== undefined) return undefined; // query restrictions exist only in v2
    permissions = V1[perms]!;
    version = 1;
  } else {
    // v2: letters from c r u d s, each at most once, in that order (e.g. `rs`, `cruds`).
    if (!/^c?r?u?d?s?$/.test(perms) || perms.length === 0) return undefined;
    permissions = [...perms] as Permission[];
    version = 2;
  }
  let query: [string, string][] | undefined;
  if (rawQuery !== undefined) {
    try {
      query = [...new URLSearchParams(rawQuery.slice(1))];
    } catch {
      return undefined;
    }
    if (query.length === 0 || query.some(([name, value]) => !name || !value)) return undefined;
  }
  return { kind: 'resource', raw, context, resourceType, permissions: new Set(permissions), version, ...(query ? { query } : {}) };
}

/** Split a space-delimited scope string (RFC 6749 §3.3) into understood scopes and unknown tokens. */
export function parseScopes(text: string | undefined): { scopes: Scope[]; unknown: string[] } {
  const scopes: Scope[] = [];
  const unknown: string[] = [];
  const seen = new Set<string>();
  for (const token of (text ?? '').split(/[ ]+/)) {
    if (!token || seen.has(token)) continue;
    seen.add(token);
    const scope = parseScope(token);
    if (scope) scopes.push(scope);
    else unknown.push(token);
  }
  return { scopes, unknown };
}

/** Serialise scopes back to the space-delimited form of a token response. */
export function formatScopes(scopes: Scope[]): string {
  return scopes.map((s) => s.raw).join(' ');
}

/** Whether `scopes` holds the special scope `name`. */
export function hasScope(scopes: Scope[], name: SpecialScopeName): boolean {
  return scopes.some((s) => s.kind === 'special' && s.name === name);
}

/** The permissions an interaction needs (all of them): history and vread are reads; operations need r and s. */
export function requiredPermissions(interaction: Interaction): Permission[] {
  switch (interaction) {
    case 'read':
    case 'vread':
    case 'history':
      return ['r'];
    case 'search':
      return ['s'];
    case 'create':
      return ['c'];
    case 'update':
    case 'patch':
      return ['u'];
    case 'delete':
      return ['d'];
    case 'operation':
      // A generic (read-type) operation such as $everything returns sets of data: it needs r and s.
      // Operations that write should be checked as the write interaction they perform.
      return ['r', 's'];
  }
}

/**
 * Whether the granted scopes allow `interaction` on `resourceType` in `context`
 * (https://hl7.org/fhir/smart-app-launch/STU2.2/scopes-and-launch-context.html#scopes-for-requesting-fhir-resources).
 * One scope must carry every needed permission; scopes with a query restriction never count.
 */
export function allows(granted: Scope[], context: ScopeContext, interaction: Interaction, resourceType: string): boolean {
  const needed = requiredPermissions(interaction);
  return granted.some(
    (s) =>
      s.kind === 'resource' &&
      s.context === context &&
      s.query === undefined &&
      (s.resourceType === '*' || s.resourceType === resourceType) &&
      needed.every((p) => s.permissions.has(p)),
  );
}

/** The contexts (patient, user, system) in which the granted scopes allow the interaction. */
export function allowingContexts(granted: Scope[], interaction: Interaction, resourceType: string): ScopeContext[] {
  return (['system', 'user', 'patient'] as const).filter((c) => allows(granted, c, interaction, resourceType));
}

/** v2 string of a resource scope with the given parts. */
function v2Scope(context: ScopeContext, resourceType: string, permissions: Iterable<Permission>, query?: [string, string][]): ResourceScope {
  const set = new Set(permissions);
  const letters = PERMISSION_ORDER.filter((p) => set.has(p)).join('');
  const q = query?.length ? `?${new URLSearchParams(query).toString()}` : '';
  return {
    kind: 'resource',
    raw: `${context}/${resourceType}.${letters}${q}`,
    context,
    resourceType,
    permissions: new Set(PERMISSION_ORDER.filter((p) => set.has(p))),
    version: 2,
    ...(query?.length ? { query } : {}),
  };
}

function sameQuery(a: [string, string][] | undefined, b: [string, string][] | undefined): boolean {
  return JSON.stringify(a ?? []) === JSON.stringify(b ?? []);
}

/**
 * The part of one requested resource scope that `registered` allows, or undefined: same context,
 * the registered type equal or `*`, permissions intersected, and the registered query restriction
 * (if any) kept. When the registration covers the request entirely, the request is returned as
 * written, so v1 requests get v1 answers (spec: servers SHOULD return v1 scopes for v1 requests).
 */
function intersectOne(requested: ResourceScope, registered: ResourceScope): ResourceScope | undefined {
  if (requested.context !== registered.context) return undefined;
  let type: string;
  if (registered.resourceType === '*') type = requested.resourceType;
  else if (requested.resourceType === '*' || requested.resourceType === registered.resourceType) type = registered.resourceType;
  else return undefined;
  const permissions = [...requested.permissions].filter((p) => registered.permissions.has(p));
  if (permissions.length === 0) return undefined;
  let query = requested.query;
  if (registered.query && !sameQuery(registered.query, requested.query)) query = [...(requested.query ?? []), ...registered.query];
  const whole = type === requested.resourceType && permissions.length === requested.permissions.size && sameQuery(query, requested.query);
  return whole ? requested : v2Scope(requested.context, type, permissions, query);
}

/**
 * Grant = requested ∩ registered (RFC 6749 §3.3: the server may grant less than requested).
 * Special scopes pass when registered too (or always, for `openid`, `fhirUser`, `profile`,
 * `launch/patient`, `online_access`, `offline_access` when `allowSpecial` lists them). Contexts
 * not in `contexts` are dropped. The result is deduplicated by its string form.
 */
export function intersectScopes(
  requested: Scope[],
  registered: Scope[],
  options: { contexts: ScopeContext[]; specials: SpecialScopeName[] },
): Scope[] {
  const out = new Map<string, Scope>();
  for (const req of requested) {
    if (req.kind === 'special') {
      const registeredToo = registered.some((r) => r.kind === 'special' && r.name === req.name);
      if (options.specials.includes(req.name) && registeredToo) out.set(req.raw, req);
      continue;
    }
    if (!options.contexts.includes(req.context)) continue;
    const parts = registered.flatMap((reg) => (reg.kind === 'resource' ? [intersectOne(req, reg)] : [])).filter((s) => s !== undefined);
    // The requested scope itself, if any registration covers it whole; otherwise every partial grant.
    const whole = parts.find((p) => p === req);
    for (const part of whole ? [whole] : parts) out.set(part.raw, part);
  }
  return [...out.values()];
}

/** Whether every scope of `subset` is allowed by `superset` (used for refresh-token narrowing). */
export function isScopeSubset(subset: Scope[], superset: Scope[]): boolean {
  return subset.every((s) => {
    if (s.kind === 'special') return superset.some((t) => t.kind === 'special' && t.name === s.name);
    return superset.some((t) => t.kind === 'resource' && intersectOne(s, t) === s);
  });
}
