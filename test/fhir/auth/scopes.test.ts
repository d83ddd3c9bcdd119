/**
 * SMART scopes v1 and v2 (https://hl7.org/fhir/smart-app-launch/STU2.2/scopes-and-launch-context.html):
 * parsing, `allows` per interaction, and the requested ∩ registered intersection.
 */
import t from 'tap';
import {
  allowingContexts,
  allows,
  formatScopes,
  intersectScopes,
  isScopeSubset,
  parseScope,
  parseScopes,
  type Interaction,
  type ResourceScope,
} from '../../../src/fhir/auth/scopes.ts';

const perms = (raw: string) => [...(parseScope(raw) as ResourceScope).permissions].sort().join('');

t.test('v1 scopes', async (t) => {
  t.equal(perms('patient/Observation.read'), 'rs');
  t.equal(perms('user/*.write'), 'cdu');
  t.equal(perms('system/*.*'), 'cdrsu');
  const s = parseScope('patient/Observation.read') as ResourceScope;
  t.match(s, { kind: 'resource', context: 'patient', resourceType: 'Observation', version: 1 });
  t.equal(parseScope('patient/Observation.read?category=lab'), undefined, 'v1 scopes take no query');
});

t.test('v2 scopes', async (t) => {
  t.equal(perms('patient/Observation.rs'), 'rs');
  t.equal(perms('user/*.cruds'), 'cdrsu');
  t.equal(perms('system/Patient.r'), 'r');
  t.equal(perms('user/Encounter.cud'), 'cdu');
  t.match(parseScope('system/Observation.rs?category=laboratory'), {
    version: 2,
    query: [['category', 'laboratory']],
  });
  t.match(parseScope('patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory'), {
    query: [['category', 'http://terminology.hl7.org/CodeSystem/observation-category|laboratory']],
  });
});

t.test('special scopes', async (t) => {
  for (const name of ['openid', 'fhirUser', 'launch/patient', 'offline_access', 'online_access', 'launch', 'profile', 'launch/encounter']) {
    t.match(parseScope(name), { kind: 'special', name }, name);
  }
});

t.test('invalid scopes are rejected', async (t) => {
  for (const raw of [
    '',
    'patient',
    'patient/',
    'patient/Observation',
    'patient/Observation.',
    'patient/Observation.sr', // v2 letters out of order
    'patient/Observation.rr',
    'patient/Observation.x',
    'patient/Observation.READ',
    'admin/Observation.read',
    'patient/observation.read',
    'patient/*.rs?',
    'patient/*.rs?category',
    'Patient/*.read',
    'system/*',
    'openid2',
    'launch/patient2',
  ]) {
    t.equal(parseScope(raw), undefined, JSON.stringify(raw));
  }
});

t.test('parseScopes splits, dedupes and reports unknown tokens', async (t) => {
  const { scopes, unknown } = parseScopes('openid  fhirUser patient/*.rs openid bogus');
  t.same(scopes.map((s) => s.raw), ['openid', 'fhirUser', 'patient/*.rs']);
  t.same(unknown, ['bogus']);
  t.same(parseScopes(undefined), { scopes: [], unknown: [] });
  t.equal(formatScopes(scopes), 'openid fhirUser patient/*.rs');
});

const ALL: Interaction[] = ['read', 'vread', 'search', 'history', 'create', 'update', 'patch', 'delete', 'operation'];
function allowed(scope: string, context: 'patient' | 'user' | 'system', type = 'Observation'): Interaction[] {
  const granted = parseScopes(scope).scopes;
  return ALL.filter((i) => allows(granted, context, i, type));
}

t.test('allows: v1 read = r + s (history and vread are reads)', async (t) => {
  t.same(allowed('patient/Observation.read', 'patient'), ['read', 'vread', 'search', 'history', 'operation']);
  t.same(allowed('patient/Observation.write', 'patient'), ['create', 'update', 'patch', 'delete']);
  t.same(allowed('system/*.*', 'system'), ALL);
  t.same(allowed('user/*.read', 'user', 'Patient'), ['read', 'vread', 'search', 'history', 'operation']);
});

t.test('allows: v2 letters', async (t) => {
  t.same(allowed('patient/Observation.r', 'patient'), ['read', 'vread', 'history']);
  t.same(allowed('patient/Observation.s', 'patient'), ['search']);
  t.same(allowed('patient/Observation.rs', 'patient'), ['read', 'vread', 'search', 'history', 'operation']);
  t.same(allowed('user/*.c', 'user'), ['create']);
  t.same(allowed('user/*.u', 'user'), ['update', 'patch']);
  t.same(allowed('user/*.d', 'user'), ['delete']);
  t.same(allowed('user/*.cruds', 'user'), ALL);
});

t.test('allows: context, type and restrictions must match', async (t) => {
  t.same(allowed('patient/Observation.rs', 'user'), [], 'patient scope does not give user access');
  t.same(allowed('user/*.cruds', 'system'), [], 'user scope does not give system access');
  t.same(allowed('system/*.cruds', 'patient'), []);
  t.same(allowed('patient/Observation.rs', 'patient', 'Condition'), [], 'other type');
  t.same(allowed('patient/*.rs', 'patient', 'Condition'), ['read', 'vread', 'search', 'history', 'operation'], 'wildcard type');
  t.same(allowed('system/Observation.rs?category=laboratory', 'system'), [], 'query-restricted scopes never count');
  t.same(allowed('openid fhirUser launch/patient offline_access', 'patient'), [], 'special scopes grant no data');
  t.same(allowed('', 'patient'), []);
  // Permissions come from one scope: r from one and s from another do not make an operation.
  t.same(allowed('patient/Observation.r patient/Observation.s', 'patient'), ['read', 'vread', 'search', 'history']);
});

t.test('allowingContexts', async (t) => {
  const granted = parseScopes('patient/Observation.rs user/Patient.r').scopes;
  t.same(allowingContexts(granted, 'read', 'Observation'), ['patient']);
  t.same(allowingContexts(granted, 'read', 'Patient'), ['user']);
  t.same(allowingContexts(granted, 'create', 'Patient'), []);
});

t.test('intersectScopes: requested ∩ registered', async (t) => {
  const reg = parseScopes('system/*.rs system/Observation.cruds openid').scopes;
  const grant = (req: string, contexts: ('patient' | 'user' | 'system')[] = ['system']) =>
    formatScopes(intersectScopes(parseScopes(req).scopes, reg, { contexts, specials: ['openid'] }));
  t.equal(grant('system/Patient.read'), 'system/Patient.read', 'fully covered v1 stays v1');
  t.equal(grant('system/Patient.rs'), 'system/Patient.rs');
  t.equal(grant('system/Observation.cruds'), 'system/Observation.cruds');
  t.equal(grant('system/Patient.cruds'), 'system/Patient.rs', 'narrowed to the registered permissions');
  t.equal(grant('system/*.*'), 'system/*.rs system/Observation.cruds', 'wildcard request narrowed to each registration');
  t.equal(grant('system/Patient.write'), '', 'nothing of write is registered for Patient');
  t.equal(grant('user/Patient.rs'), '', 'user context not allowed here');
  t.equal(grant('user/Patient.rs', ['user']), '', 'not registered');
  t.equal(grant('openid fhirUser', []), 'openid', 'special scopes pass when registered and allowed');
  t.equal(grant('system/Observation.rs?category=laboratory'), 'system/Observation.rs?category=laboratory', 'restriction kept');
  const restricted = parseScopes('system/Observation.rs?category=laboratory').scopes;
  t.equal(
    formatScopes(intersectScopes(parseScopes('system/Observation.rs').scopes, restricted, { contexts: ['system'], specials: [] })),
    'system/Observation.rs?category=laboratory',
    'the registered restriction is imposed',
  );
});

t.test('isScopeSubset', async (t) => {
  const orig = parseScopes('openid patient/*.rs offline_access').scopes;
  t.ok(isScopeSubset(parseScopes('patient/Observation.rs').scopes, orig));
  t.ok(isScopeSubset(parseScopes('patient/Observation.read openid').scopes, orig));
  t.notOk(isScopeSubset(parseScopes('patient/Observation.cruds').scopes, orig));
  t.notOk(isScopeSubset(parseScopes('user/Observation.rs').scopes, orig));
  t.notOk(isScopeSubset(parseScopes('fhirUser').scopes, orig));
});
