/**
 * ConsentRegistry on the in-process chain (docs/consent.md): roles, approvals, consent writes
 * and their limits, every rule of `decide` (masks, inclusive periods, actors, inheritance of
 * exception fields, last matching exception, deny-overrides, approval for permits only,
 * break-glass), EIP-712 revocations and grants (nonces, deadlines, signers, domains), the lock
 * a patient's signed revocation puts on a consent, events, and gas. Reverts are asserted by
 * custom error name and arguments, never by message.
 */
import t from 'tap';
import { Interface, Wallet, id as keccakText } from 'ethers';
import { CONSENT_REGISTRY_INTERFACE_ID } from '../../src/chain/generated/consent-registry.ts';
import { rejectsWithCustomError, startChain } from './chain.ts';
import { ZERO32, ZERO_ADDRESS, as, bit, deployConsentRegistry, eventsOf, key, rule } from './consent-helpers.ts';

const CUSTODIAN_ROLE = keccakText('CUSTODIAN_ROLE');
const APPROVER_ROLE = keccakText('APPROVER_ROLE');
const DEFAULT_ADMIN_ROLE = ZERO32;

// Resource classes (indices into R4_RESOURCE_TYPES; any will do here), actions and purposes.
const OBS = 5;
const PAT = 7;
const COND = 9;
const ACCESS = 0;
const COLLECT = 1;
const CORRECT = 4;
const TREAT = 0;
const ETREAT = 1;
const HPAYMT = 2;

const chain = await startChain(t);

t.test('deployment and ERC-165', async (t) => {
  const { registry, admin, custodian } = await deployConsentRegistry(chain);
  const hasRole = registry.getFunction('hasRole');
  t.equal(await registry.getFunction('CUSTODIAN_ROLE')(), CUSTODIAN_ROLE);
  t.equal(await registry.getFunction('APPROVER_ROLE')(), APPROVER_ROLE);
  t.equal(await hasRole(DEFAULT_ADMIN_ROLE, admin.address), true, 'admin administers');
  t.equal(await hasRole(CUSTODIAN_ROLE, custodian.address), true, 'custodian is custodian');
  t.equal(await hasRole(APPROVER_ROLE, custodian.address), true, 'custodian is approver');
  t.equal(await hasRole(CUSTODIAN_ROLE, admin.address), false, 'admin is not custodian');
  t.equal(await hasRole(DEFAULT_ADMIN_ROLE, custodian.address), false, 'custodian is not admin');

  const factory = await chain.ethers.getContractFactory('ConsentRegistry');
  await rejectsWithCustomError(t, factory.deploy(ZERO_ADDRESS, custodian.address), factory, 'ConsentRegistryZeroAdmin');
  const bare = await chain.ethers.deployContract('ConsentRegistry', [admin.address, ZERO_ADDRESS]);
  t.equal(await bare.getFunction('hasRole')(CUSTODIAN_ROLE, ZERO_ADDRESS), false, 'a zero custodian is not granted');

  const artifact = await chain.hre.artifacts.readArtifact('IConsentRegistry');
  let id = 0;
  new Interface(artifact.abi).forEachFunction((f) => {
    id ^= Number.parseInt(f.selector.slice(2), 16);
  });
  const interfaceId = `0x${(id >>> 0).toString(16).padStart(8, '0')}`;
  t.equal(interfaceId, CONSENT_REGISTRY_INTERFACE_ID, 'the generated interface id is the interface’s');
  const supports = registry.getFunction('supportsInterface');
  t.equal(await supports(interfaceId), true, 'IConsentRegistry');
  t.equal(await supports('0x7965db0b'), true, 'IAccessControl');
  t.equal(await supports('0x01ffc9a7'), true, 'IERC165');
  t.equal(await supports('0xffffffff'), false, 'never 0xffffffff');

  const [, name, version, chainId, verifyingContract] = await registry.getFunction('eip712Domain')();
  t.same([name, version, chainId, verifyingContract], ['VellumConsentRegistry', '1', 31337n, await registry.getAddress()], 'EIP-712 domain (ERC-5267)');
});

t.test('roles', async (t) => {
  const f = await deployConsentRegistry(chain);
  const { registry, admin, custodian, others } = f;
  const [outsider, second] = others;
  const A = key('Practitioner/a');
  const P = key('Patient/1');
  const C = key('Consent/1');
  const asWho = (signer: typeof outsider) => (name: string) => as(registry, signer!).getFunction(name);

  for (const signer of [outsider!, admin]) {
    const fn = asWho(signer);
    const unauthorized = (role: string) => [signer.address, role];
    await rejectsWithCustomError(t, fn('approveActor')(A, false), registry, 'AccessControlUnauthorizedAccount', unauthorized(APPROVER_ROLE));
    await rejectsWithCustomError(t, fn('revokeApproval')(A), registry, 'AccessControlUnauthorizedAccount', unauthorized(APPROVER_ROLE));
    await rejectsWithCustomError(t, fn('registerWallet')(P, signer.address), registry, 'AccessControlUnauthorizedAccount', unauthorized(CUSTODIAN_ROLE));
    await rejectsWithCustomError(t, fn('putConsent')(C, P, [rule()]), registry, 'AccessControlUnauthorizedAccount', unauthorized(CUSTODIAN_ROLE));
    await rejectsWithCustomError(t, fn('revokeConsent')(C), registry, 'AccessControlUnauthorizedAccount', unauthorized(CUSTODIAN_ROLE));
    await rejectsWithCustomError(t, fn('recordEmergencyAccess')(P, A, OBS, ETREAT), registry, 'AccessControlUnauthorizedAccount', unauthorized(CUSTODIAN_ROLE));
  }

  // The administrator hands out the roles separately.
  await (await as(registry, admin).getFunction('grantRole')(APPROVER_ROLE, second!.address)).wait();
  await (await asWho(second)('approveActor')(A, true)).wait();
  t.same([...(await registry.getFunction('approvalOf')(A))], [true, true], 'a granted approver approves');
  await rejectsWithCustomError(t, asWho(second)('putConsent')(C, P, [rule()]), registry, 'AccessControlUnauthorizedAccount', [second!.address, CUSTODIAN_ROLE]);
  await rejectsWithCustomError(t, as(registry, custodian).getFunction('grantRole')(CUSTODIAN_ROLE, outsider!.address), registry, 'AccessControlUnauthorizedAccount', [custodian.address, DEFAULT_ADMIN_ROLE]);

  await (await as(registry, admin).getFunction('revokeRole')(APPROVER_ROLE, custodian.address)).wait();
  await rejectsWithCustomError(t, f.call('approveActor')(A, false), registry, 'AccessControlUnauthorizedAccount', [custodian.address, APPROVER_ROLE]);
  await f.send('putConsent', C, P, [rule()]);
  t.pass('without APPROVER_ROLE the custodian still puts consents');
});

t.test('approvals', async (t) => {
  const { registry, send, call } = await deployConsentRegistry(chain);
  const A = key('Practitioner/a');
  const approvalOf = async (actor: string) => [...(await registry.getFunction('approvalOf')(actor))];
  t.same(await approvalOf(A), [false, false], 'nobody is approved at first');
  t.same(eventsOf(registry, await send('approveActor', A, false)), [['ActorApproved', A, 'false']]);
  t.same(await approvalOf(A), [true, false]);
  t.same(eventsOf(registry, await send('approveActor', A, true)), [['ActorApproved', A, 'true']], 'approving again sets the emergency flag');
  t.same(await approvalOf(A), [true, true]);
  t.same(eventsOf(registry, await send('revokeApproval', A)), [['ActorApprovalRevoked', A]]);
  t.same(await approvalOf(A), [false, false], 'revoking clears both flags');
  await rejectsWithCustomError(t, call('approveActor')(ZERO32, false), registry, 'ConsentZeroKey');
});

t.test('putConsent: checks and limits', async (t) => {
  const { registry, send, call } = await deployConsentRegistry(chain);
  const A = key('Practitioner/a');
  const U = key('Practitioner/unapproved');
  const P = key('Patient/1');
  const P2 = key('Patient/2');
  await send('approveActor', A, false);
  const put = call('putConsent');

  await rejectsWithCustomError(t, put(key('Consent/empty'), P, []), registry, 'ConsentNoRules');
  await rejectsWithCustomError(t, put(key('Consent/ten'), P, Array.from({ length: 10 }, () => rule())), registry, 'ConsentTooManyRules', [10, 9]);
  await send('putConsent', key('Consent/nine'), P, Array.from({ length: 9 }, () => rule({ actors: [A] })));
  t.pass('9 rules are accepted');
  const nine = Array.from({ length: 9 }, (_, i) => key(`Organization/${i}`));
  const eight = nine.slice(0, 8);
  await rejectsWithCustomError(t, put(key('Consent/actors'), P, [rule({ permit: false }), rule({ permit: false, actors: nine })]), registry, 'ConsentTooManyActors', [1, 9, 8]);
  await send('putConsent', key('Consent/eight'), P, [rule({ permit: false, actors: eight })]);
  t.pass('8 actors in a deny rule are accepted, approved or not');

  await rejectsWithCustomError(t, put(key('Consent/u'), P, [rule({ actors: [A, U] })]), registry, 'ConsentActorNotApproved', [U]);
  await rejectsWithCustomError(
    t,
    put(key('Consent/u2'), P, [rule({ permit: false, actors: [U] }), rule({ permit: true, classes: bit(OBS) })]),
    registry,
    'ConsentActorNotApproved',
    [U],
    // an exception without actors permits the base's actors, so they must be approved too
  );
  await rejectsWithCustomError(t, put(ZERO32, P, [rule()]), registry, 'ConsentZeroKey');
  await rejectsWithCustomError(t, put(key('Consent/z'), ZERO32, [rule()]), registry, 'ConsentZeroKey');

  const C = key('Consent/1');
  await send('putConsent', C, P, [rule()]);
  await rejectsWithCustomError(t, put(C, P2, [rule()]), registry, 'ConsentPatientMismatch', [C]);

  // At most 64 consents in force per patient: 3 so far.
  for (let i = 3; i < 64; i++) await send('putConsent', key(`Consent/n${i}`), P, [rule({ permit: false })]);
  await rejectsWithCustomError(t, put(key('Consent/65'), P, [rule()]), registry, 'ConsentTooManyConsents', [P, 64]);
  await send('putConsent', C, P, [rule({ permit: false })]);
  t.pass('replacing a consent in force at the limit is fine');
  await send('putConsent', key('Consent/other'), P2, [rule()]);
  t.pass('the limit is per patient');
  await send('revokeConsent', C);
  await send('putConsent', key('Consent/65'), P, [rule()]);
  t.pass('revoking one makes room');
  await rejectsWithCustomError(t, put(C, P, [rule()]), registry, 'ConsentTooManyConsents', [P, 64]);
  t.equal((await registry.getFunction('consentsOf')(P)).length, 65, 'consentsOf lists revoked consents too');
});

t.test('consentOf, consentsOf, revokeConsent and their events', async (t) => {
  const { registry, send, call } = await deployConsentRegistry(chain);
  const A = key('Practitioner/a');
  const P = key('Patient/1');
  const [C1, C2] = [key('Consent/1'), key('Consent/2')];
  await send('approveActor', A, false);
  const unknown = await registry.getFunction('consentOf')(C1);
  t.same([unknown[0], unknown[1], unknown[2], unknown[3].length], [ZERO32, 0n, false, 0], 'an unknown id: status None, nothing else');

  const three = [
    rule({ permit: false, classes: bit(OBS) | bit(PAT), purposes: bit(TREAT), start: 100, end: 200 }),
    rule({ permit: true, actors: [A], actions: 1 << ACCESS }),
    rule({ permit: false, purposes: bit(HPAYMT) }),
  ];
  t.same(eventsOf(registry, await send('putConsent', C2, P, three)), [['ConsentPut', C2, P, 'false']]);
  await send('putConsent', C1, P, [rule()]);
  const [patient, status, locked, rules] = await registry.getFunction('consentOf')(C2);
  t.same([patient, status, locked], [P, 1n, false], 'patient, Active, unlocked');
  t.same(
    rules.map((r: unknown[]) => [...r].map((v) => (Array.isArray(v) ? [...v] : v))),
    three.map((r) => [r.permit, r.actors, r.classes, BigInt(r.actions), r.purposes, BigInt(r.start), BigInt(r.end)]),
    'the rules as written',
  );
  await send('putConsent', C2, P, [rule({ permit: false })]);
  t.equal((await registry.getFunction('consentOf')(C2))[3].length, 1, 'a replacement with fewer rules shrinks the consent');
  t.same([...(await registry.getFunction('consentsOf')(P))], [C2, C1], 'consentsOf: in the order first written');

  t.same(eventsOf(registry, await send('revokeConsent', C2)), [['ConsentRevoked', C2, P, 'false']]);
  t.equal((await registry.getFunction('consentOf')(C2))[1], 2n, 'Revoked');
  t.same(eventsOf(registry, await send('revokeConsent', C2)), [], 'revoking again changes nothing and emits nothing');
  await rejectsWithCustomError(t, call('revokeConsent')(key('Consent/none')), registry, 'ConsentUnknown', [key('Consent/none')]);
  t.same(eventsOf(registry, await send('putConsent', C2, P, [rule({ permit: false })])), [['ConsentPut', C2, P, 'false']], 'the custodian may put back what it revoked');
  t.same([...(await registry.getFunction('consentsOf')(P))], [C2, C1], 'and it keeps its place');
});

t.test('decide: masks, periods and actors of one rule', async (t) => {
  const { send, decide } = await deployConsentRegistry(chain);
  const [A, B, U] = [key('Practitioner/a'), key('Practitioner/b'), key('Practitioner/u')];
  const P = key('Patient/1');
  await send('approveActor', A, false);
  await send('approveActor', B, false);
  t.same(await decide(P, [A], OBS, ACCESS, TREAT), ['NoConsent', undefined], 'no consent at all');
  t.same(await decide(P, [U], OBS, ACCESS, TREAT), ['ActorNotApproved', undefined], 'no approved actor');
  t.same(await decide(P, [], OBS, ACCESS, TREAT), ['ActorNotApproved', undefined], 'no actor at all');

  const cases: [string, Parameters<typeof rule>[0], [number, number, number, number, string], string][] = [
    ['class bit set', { classes: bit(OBS) | bit(COND) }, [OBS, ACCESS, TREAT, 1, 'A'], 'Permit'],
    ['class bit clear', { classes: bit(OBS) | bit(COND) }, [PAT, ACCESS, TREAT, 1, 'A'], 'NoConsent'],
    ['action bit set', { actions: (1 << ACCESS) | (1 << CORRECT) }, [OBS, CORRECT, TREAT, 1, 'A'], 'Permit'],
    ['action bit clear', { actions: (1 << ACCESS) | (1 << CORRECT) }, [OBS, COLLECT, TREAT, 1, 'A'], 'NoConsent'],
    ['purpose bit set', { purposes: bit(TREAT) }, [OBS, ACCESS, TREAT, 1, 'A'], 'Permit'],
    ['purpose bit clear', { purposes: bit(TREAT) }, [OBS, ACCESS, HPAYMT, 1, 'A'], 'NoConsent'],
    ['before start', { start: 1000, end: 2000 }, [OBS, ACCESS, TREAT, 999, 'A'], 'NoConsent'],
    ['at start (inclusive)', { start: 1000, end: 2000 }, [OBS, ACCESS, TREAT, 1000, 'A'], 'Permit'],
    ['at end (inclusive)', { start: 1000, end: 2000 }, [OBS, ACCESS, TREAT, 2000, 'A'], 'Permit'],
    ['after end', { start: 1000, end: 2000 }, [OBS, ACCESS, TREAT, 2001, 'A'], 'NoConsent'],
    ['start only', { start: 1000 }, [OBS, ACCESS, TREAT, 2 ** 40, 'A'], 'Permit'],
    ['end only', { end: 2000 }, [OBS, ACCESS, TREAT, 0, 'A'], 'Permit'],
    ['named actor', { actors: [A] }, [OBS, ACCESS, TREAT, 1, 'A'], 'Permit'],
    ['other approved actor', { actors: [A] }, [OBS, ACCESS, TREAT, 1, 'B'], 'NoConsent'],
    ['named actor among the request actors', { actors: [A] }, [OBS, ACCESS, TREAT, 1, 'BA'], 'Permit'],
    ['zero masks: everything', {}, [255, 15, 19, 1, 'B'], 'Permit'],
  ];
  const actorOf: Record<string, string> = { A, B };
  let n = 0;
  for (const [name, over, [cls, action, purpose, time, who], expected] of cases) {
    const patient = key(`Patient/case${n}`);
    const consent = key(`Consent/case${n++}`);
    await send('putConsent', consent, patient, [rule(over)]);
    const actors = [...who].map((c) => actorOf[c]!);
    t.same(await decide(patient, actors, cls, action, purpose, time), [expected, expected === 'Permit' ? consent : undefined], name);
    // The same rule as a deny: the same match, the other verdict.
    await send('putConsent', consent, patient, [rule({ ...over, permit: false })]);
    t.same(await decide(patient, actors, cls, action, purpose, time), [expected === 'Permit' ? 'Deny' : 'NoConsent', expected === 'Permit' ? consent : undefined], `${name} (deny)`);
  }
});

t.test('decide: exceptions inherit unspecified fields; the last matching one wins', async (t) => {
  const { send, decide } = await deployConsentRegistry(chain);
  const [A, B] = [key('Practitioner/a'), key('Practitioner/b')];
  await send('approveActor', A, false);
  await send('approveActor', B, false);

  // Base permit OBS+PAT for TREAT; exception: deny PAT (purposes inherited).
  const P1 = key('Patient/1');
  const C1 = key('Consent/1');
  await send('putConsent', C1, P1, [rule({ classes: bit(OBS) | bit(PAT), purposes: bit(TREAT) }), rule({ permit: false, classes: bit(PAT) })]);
  t.same(await decide(P1, [A], PAT, ACCESS, TREAT), ['Deny', C1], 'the exception denies PAT');
  t.same(await decide(P1, [A], OBS, ACCESS, TREAT), ['Permit', C1], 'the base permits OBS');
  t.same(await decide(P1, [A], PAT, ACCESS, HPAYMT), ['NoConsent', undefined], 'the exception inherits the base purposes (TREAT only)');

  // Actors are inherited: base deny for A, exception permit OBS (for A, inherited).
  const P2 = key('Patient/2');
  const C2 = key('Consent/2');
  await send('putConsent', C2, P2, [rule({ permit: false, actors: [A] }), rule({ permit: true, classes: bit(OBS) })]);
  t.same(await decide(P2, [A], OBS, ACCESS, TREAT), ['Permit', C2], 'A on OBS: permitted by the exception');
  t.same(await decide(P2, [B], OBS, ACCESS, TREAT), ['NoConsent', undefined], 'B on OBS: the exception is for A only');
  t.same(await decide(P2, [A], PAT, ACCESS, TREAT), ['Deny', C2], 'A on PAT: the base denies');

  // Period inherited.
  const P3 = key('Patient/3');
  const C3 = key('Consent/3');
  await send('putConsent', C3, P3, [rule({ permit: false, start: 100, end: 200 }), rule({ permit: true, classes: bit(OBS) })]);
  t.same(await decide(P3, [A], OBS, ACCESS, TREAT, 150), ['Permit', C3], 'inside the base period');
  t.same(await decide(P3, [A], OBS, ACCESS, TREAT, 250), ['NoConsent', undefined], 'outside it, the exception does not match either');

  // Several exceptions: the last matching one wins.
  const P4 = key('Patient/4');
  const C4 = key('Consent/4');
  await send('putConsent', C4, P4, [
    rule({ permit: false }),
    rule({ permit: true, classes: bit(OBS) }),
    rule({ permit: false, purposes: bit(HPAYMT) }),
    rule({ permit: true, actors: [A], purposes: bit(HPAYMT) }),
  ]);
  t.same(await decide(P4, [B], OBS, ACCESS, TREAT), ['Permit', C4], 'OBS/TREAT: exception 1');
  t.same(await decide(P4, [B], OBS, ACCESS, HPAYMT), ['Deny', C4], 'OBS/HPAYMT by B: exception 2 (3 is for A only)');
  t.same(await decide(P4, [A], OBS, ACCESS, HPAYMT), ['Permit', C4], 'OBS/HPAYMT by A: exception 3, the last');
  t.same(await decide(P4, [A], PAT, ACCESS, TREAT), ['Deny', C4], 'PAT/TREAT: no exception, the base');
  t.same(await decide(P4, [A], PAT, ACCESS, HPAYMT), ['Permit', C4], 'PAT/HPAYMT by A: exception 3 matches any class');
});

t.test('decide: across consents — deny overrides, first permit, revoked ignored, per patient', async (t) => {
  const { send, decide } = await deployConsentRegistry(chain);
  const A = key('Practitioner/a');
  await send('approveActor', A, false);
  const P = key('Patient/1');
  const [C1, C2, C3] = [key('Consent/1'), key('Consent/2'), key('Consent/3')];
  await send('putConsent', C3, P, [rule({ classes: bit(OBS) })]);
  await send('putConsent', C1, P, [rule()]);
  t.same(await decide(P, [A], OBS, ACCESS, TREAT), ['Permit', C3], 'the first permitting consent in write order');
  await send('putConsent', C2, P, [rule({ permit: false, classes: bit(PAT) })]);
  t.same(await decide(P, [A], PAT, ACCESS, TREAT), ['Deny', C2], 'a later deny overrides an earlier permit');
  t.same(await decide(P, [A], OBS, ACCESS, TREAT), ['Permit', C3], 'other classes still permitted');
  await send('putConsent', C3, P, [rule({ classes: bit(OBS), purposes: bit(TREAT) })]);
  t.same(await decide(P, [A], OBS, ACCESS, TREAT), ['Permit', C3], 'a replaced consent keeps its place');
  await send('revokeConsent', C3);
  t.same(await decide(P, [A], OBS, ACCESS, TREAT), ['Permit', C1], 'a revoked consent is ignored');
  await send('revokeConsent', C2);
  t.same(await decide(P, [A], PAT, ACCESS, TREAT), ['Permit', C1], 'so is a revoked deny');
  await send('putConsent', C2, P, [rule({ permit: false, classes: bit(PAT) })]);
  t.same(await decide(P, [A], PAT, ACCESS, TREAT), ['Deny', C2], 'put back in force, it denies again');
  t.same(await decide(key('Patient/2'), [A], OBS, ACCESS, TREAT), ['NoConsent', undefined], "another patient's consents do not apply");
  await send('putConsent', key('Consent/d2'), P, [rule({ permit: false, classes: bit(PAT) })]);
  t.same(await decide(P, [A], PAT, ACCESS, TREAT), ['Deny', C2], 'two denies: the first in write order');
});

t.test('decide: approval is needed for permits only, and unapproval cuts access', async (t) => {
  const { send, decide } = await deployConsentRegistry(chain);
  const [A, B, X] = [key('Practitioner/a'), key('Practitioner/b'), key('Practitioner/x')];
  await send('approveActor', A, false);
  await send('approveActor', B, false);
  const P = key('Patient/1');
  const [C1, C2] = [key('Consent/1'), key('Consent/2')];
  await send('putConsent', C1, P, [rule({ actors: [A] })]);
  await send('putConsent', C2, P, [rule({ permit: false, actors: [X], classes: bit(PAT) })]);
  t.same(await decide(P, [X], PAT, ACCESS, TREAT), ['Deny', C2], 'a deny applies to an unapproved actor');
  t.same(await decide(P, [X], OBS, ACCESS, TREAT), ['ActorNotApproved', undefined], 'an unapproved actor is never permitted');
  t.same(await decide(P, [A], OBS, ACCESS, TREAT), ['Permit', C1]);
  await send('revokeApproval', A);
  t.same(await decide(P, [A], OBS, ACCESS, TREAT), ['ActorNotApproved', undefined], 'unapproval cuts access at once');
  t.same(await decide(P, [A, B], OBS, ACCESS, TREAT), ['NoConsent', undefined], 'an approved co-actor not named does not help');
  await send('approveActor', A, false);
  t.same(await decide(P, [B, A], OBS, ACCESS, TREAT), ['Permit', C1], 're-approved');

  const P2 = key('Patient/2');
  const C3 = key('Consent/3');
  await send('putConsent', C3, P2, [rule()]);
  t.same(await decide(P2, [X], OBS, ACCESS, TREAT), ['ActorNotApproved', undefined], 'a permit for anyone still needs an approved actor');
  t.same(await decide(P2, [X, B], OBS, ACCESS, TREAT), ['Permit', C3], 'which any approved request actor supplies');
});

t.test('decide: break-glass', async (t) => {
  const { send, decide, registry } = await deployConsentRegistry(chain);
  const [E, N, U] = [key('Practitioner/emergency'), key('Practitioner/normal'), key('Practitioner/unapproved')];
  await send('approveActor', E, true);
  await send('approveActor', N, false);
  const isPermitted = (patient: string, actors: string[], cls: number, purpose: number) =>
    registry.getFunction('isPermitted')(patient, actors, cls, ACCESS, purpose, 1_000_000);

  const P0 = key('Patient/0');
  t.same(await decide(P0, [E], OBS, ACCESS, ETREAT), ['BreakGlass', undefined], 'no consent: emergency actor, ETREAT → break-glass');
  t.same(await decide(P0, [E], OBS, ACCESS, TREAT), ['NoConsent', undefined], 'not for another purpose');
  t.same(await decide(P0, [N], OBS, ACCESS, ETREAT), ['NoConsent', undefined], 'not for a non-emergency actor');
  t.same(await decide(P0, [U], OBS, ACCESS, ETREAT), ['ActorNotApproved', undefined]);
  t.same(await decide(P0, [N, E], OBS, ACCESS, ETREAT), ['BreakGlass', undefined], 'any request actor with the flag');

  const P1 = key('Patient/1');
  const C1 = key('Consent/1');
  await send('putConsent', C1, P1, [rule({ permit: false })]);
  t.same(await decide(P1, [E], OBS, ACCESS, ETREAT), ['BreakGlass', undefined], 'a general deny does not stop break-glass');
  t.same(await decide(P1, [N], OBS, ACCESS, ETREAT), ['Deny', C1], 'but it stops a non-emergency actor with ETREAT');
  t.same(await decide(P1, [E], OBS, ACCESS, TREAT), ['Deny', C1], 'and the emergency actor for another purpose');
  const C2 = key('Consent/2');
  await send('putConsent', C2, P1, [rule({ actors: [E], classes: bit(OBS) })]);
  t.same(await decide(P1, [E], OBS, ACCESS, ETREAT), ['Permit', C2], 'an ignored deny lets a permit through (step 2 before 3)');

  const P2 = key('Patient/2');
  const C3 = key('Consent/3');
  await send('putConsent', C3, P2, [rule({ permit: false, purposes: bit(TREAT) | bit(ETREAT) })]);
  t.same(await decide(P2, [E], OBS, ACCESS, ETREAT), ['Deny', C3], 'an explicit deny for ETREAT holds');
  const P3 = key('Patient/3');
  const C4 = key('Consent/4');
  await send('putConsent', C4, P3, [rule({ permit: true, actors: [N], purposes: bit(ETREAT) }), rule({ permit: false, actors: [E] })]);
  t.same(await decide(P3, [E], OBS, ACCESS, ETREAT), ['Deny', C4], 'a deny exception inheriting an ETREAT purpose is explicit too');
  t.same(await decide(P3, [N], OBS, ACCESS, ETREAT), ['Permit', C4], '(its base permits N)');
  const P4 = key('Patient/4');
  const C5 = key('Consent/5');
  await send('putConsent', C5, P4, [rule({ permit: false, purposes: bit(TREAT) | bit(HPAYMT) })]);
  t.same(await decide(P4, [E], OBS, ACCESS, ETREAT), ['BreakGlass', undefined], 'a deny for other purposes does not match ETREAT');

  await send('approveActor', E, false);
  t.same(await decide(P1, [E], PAT, ACCESS, ETREAT), ['Deny', C1], 'without the emergency flag, the deny holds');
  await send('approveActor', E, true);
  await send('revokeApproval', E);
  t.same(await decide(P0, [E], OBS, ACCESS, ETREAT), ['ActorNotApproved', undefined], 'an unapproved actor loses its flag');
  await send('approveActor', E, true);

  t.equal(await isPermitted(P0, [E], OBS, ETREAT), true, 'isPermitted: BreakGlass');
  t.equal(await isPermitted(P1, [E], OBS, ETREAT), true, 'isPermitted: Permit');
  t.equal(await isPermitted(P2, [E], OBS, ETREAT), false, 'isPermitted: Deny');
  t.equal(await isPermitted(P0, [N], OBS, ETREAT), false, 'isPermitted: NoConsent');
  t.equal(await isPermitted(P0, [U], OBS, ETREAT), false, 'isPermitted: ActorNotApproved');
});

t.test('decide: at most 4 request actors', async (t) => {
  const { registry, decide } = await deployConsentRegistry(chain);
  const actors = Array.from({ length: 5 }, (_, i) => key(`Practitioner/${i}`));
  t.same(await decide(key('Patient/1'), actors.slice(0, 4), OBS, ACCESS, TREAT), ['ActorNotApproved', undefined], '4 are fine');
  await rejectsWithCustomError(t, registry.getFunction('decide')(key('Patient/1'), actors, OBS, ACCESS, TREAT, 1), registry, 'ConsentTooManyRequestActors', [5, 4]);
  await rejectsWithCustomError(t, registry.getFunction('isPermitted')(key('Patient/1'), actors, OBS, ACCESS, TREAT, 1), registry, 'ConsentTooManyRequestActors', [5, 4]);
});

t.test('revokeBySig and grantBySig', async (t) => {
  const f = await deployConsentRegistry(chain);
  const { registry, send, call, signRevoke, signGrant, others } = f;
  const relayer = as(registry, others[0]!); // anyone may relay a signature
  const A = key('Practitioner/a');
  const U = key('Practitioner/unapproved');
  await send('approveActor', A, false);
  const [P, P2] = [key('Patient/1'), key('Patient/2')];
  const [C1, C2, C3] = [key('Consent/1'), key('Consent/2'), key('Consent/3')];
  const wallet = Wallet.createRandom();
  const stranger = Wallet.createRandom();
  const now = async () => (await chain.ethers.provider.getBlock('latest'))!.timestamp;
  const later = async () => (await now()) + 3600;
  const nonceOf = async (patient: string) => registry.getFunction('nonces')(patient);
  const revokeBySig = relayer.getFunction('revokeBySig');
  const grantBySig = relayer.getFunction('grantBySig');

  await send('putConsent', C1, P, [rule({ actors: [A] })]);
  await send('putConsent', C2, P, [rule()]);
  let deadline = await later();
  await rejectsWithCustomError(t, revokeBySig(C1, 0, deadline, await signRevoke(wallet, { consentId: C1, nonce: 0, deadline })), registry, 'ConsentNoWallet', [P]);
  t.same(eventsOf(registry, await send('registerWallet', P, wallet.address)), [['WalletRegistered', P, wallet.address]]);
  t.equal(await registry.getFunction('walletOf')(P), wallet.address);
  t.equal(await nonceOf(P), 0n, 'nonces start at 0');

  // Refusals that leave the nonce unused.
  const good = await signRevoke(wallet, { consentId: C1, nonce: 0, deadline });
  await rejectsWithCustomError(t, revokeBySig(C1, 0, deadline, await signRevoke(stranger, { consentId: C1, nonce: 0, deadline })), registry, 'ConsentBadSignature');
  await rejectsWithCustomError(t, revokeBySig(C1, 0, deadline, await signRevoke(wallet, { consentId: C2, nonce: 0, deadline })), registry, 'ConsentBadSignature');
  await rejectsWithCustomError(t, revokeBySig(C1, 0, deadline, await signRevoke(wallet, { consentId: C1, nonce: 0, deadline }, { chainId: 1n })), registry, 'ConsentBadSignature');
  await rejectsWithCustomError(t, revokeBySig(C1, 0, deadline, await signRevoke(wallet, { consentId: C1, nonce: 0, deadline }, { contract: others[1]!.address })), registry, 'ConsentBadSignature');
  await rejectsWithCustomError(t, revokeBySig(C1, 0, deadline + 1, good), registry, 'ConsentBadSignature');
  await rejectsWithCustomError(t, revokeBySig(C1, 0, deadline, good.slice(0, -2)), registry, 'ConsentBadSignature');
  await rejectsWithCustomError(t, revokeBySig(C1, 1, deadline, await signRevoke(wallet, { consentId: C1, nonce: 1, deadline })), registry, 'ConsentBadNonce', [0, 1]);
  const past = (await now()) - 1;
  await rejectsWithCustomError(t, revokeBySig(C1, 0, past, await signRevoke(wallet, { consentId: C1, nonce: 0, deadline: past })), registry, 'ConsentSignatureExpired', [past]);
  await rejectsWithCustomError(t, revokeBySig(C3, 0, deadline, await signRevoke(wallet, { consentId: C3, nonce: 0, deadline })), registry, 'ConsentUnknown', [C3]);
  t.equal(await nonceOf(P), 0n, 'refused signatures use no nonce');

  // The deadline is inclusive.
  await chain.connection.provider.request({ method: 'evm_setNextBlockTimestamp', params: [deadline] });
  t.same(eventsOf(registry, await (await revokeBySig(C1, 0, deadline, good)).wait()), [['ConsentRevoked', C1, P, 'true']], 'revoked at the deadline itself');
  t.equal(await nonceOf(P), 1n, 'the nonce is used up');
  t.same([...(await registry.getFunction('consentOf')(C1))].slice(1, 3), [2n, true], 'Revoked and locked');
  t.same(await f.decide(P, [A], OBS, ACCESS, TREAT, deadline), ['Permit', C2], 'it no longer permits');
  await rejectsWithCustomError(t, revokeBySig(C1, 0, deadline + 7200, good), registry, 'ConsentBadNonce', [1, 0]);
  t.pass('the same signature cannot be replayed');

  // The lock: the custodian cannot put it back; revoking again is harmless.
  await rejectsWithCustomError(t, call('putConsent')(C1, P, [rule({ actors: [A] })]), registry, 'ConsentLockedByPatient', [C1]);
  t.same(eventsOf(registry, await send('revokeConsent', C1)), [], 'a custodian revocation of a locked consent changes nothing');

  // Only the patient's signed grant lifts it.
  deadline = await later();
  const rules = [rule({ actors: [A], classes: bit(OBS) })];
  const grant = await signGrant(wallet, { consentId: C1, patient: P, rules, nonce: 1, deadline });
  await rejectsWithCustomError(t, grantBySig(C1, P, [rule({ actors: [A] })], 1, deadline, grant), registry, 'ConsentBadSignature');
  t.pass('a grant signed for other rules is refused');
  await rejectsWithCustomError(t, grantBySig(C1, P, rules, 1, deadline, await signGrant(stranger, { consentId: C1, patient: P, rules, nonce: 1, deadline })), registry, 'ConsentBadSignature');
  t.same(eventsOf(registry, await (await grantBySig(C1, P, rules, 1, deadline, grant)).wait()), [['ConsentPut', C1, P, 'true']]);
  t.same([...(await registry.getFunction('consentOf')(C1))].slice(1, 3), [1n, false], 'Active and unlocked');
  t.equal(await nonceOf(P), 2n);
  await rejectsWithCustomError(t, grantBySig(C1, P, rules, 1, deadline, grant), registry, 'ConsentBadNonce', [2, 1]);
  await send('putConsent', C1, P, [rule({ actors: [A] })]);
  t.pass('unlocked, the custodian may replace it again');

  // A grant obeys the same rules as a put.
  deadline = await later();
  const bad = [rule({ actors: [U] })];
  await rejectsWithCustomError(t, grantBySig(C3, P, bad, 2, deadline, await signGrant(wallet, { consentId: C3, patient: P, rules: bad, nonce: 2, deadline })), registry, 'ConsentActorNotApproved', [U]);
  const wallet2 = Wallet.createRandom();
  await send('registerWallet', P2, wallet2.address);
  await rejectsWithCustomError(t, grantBySig(C1, P2, rules, 0, deadline, await signGrant(wallet2, { consentId: C1, patient: P2, rules, nonce: 0, deadline })), registry, 'ConsentPatientMismatch', [C1]);
  t.equal(await nonceOf(P2), 0n, 'nonces are per patient, and a refused grant uses none');
  t.same(eventsOf(registry, await (await grantBySig(C3, P2, rules, 0, deadline, await signGrant(wallet2, { consentId: C3, patient: P2, rules, nonce: 0, deadline }))).wait()), [['ConsentPut', C3, P2, 'true']], 'a new consent by grant');
  t.same([...(await registry.getFunction('consentsOf')(P2))], [C3]);

  // A patient may lock a consent the custodian revoked.
  await send('revokeConsent', C2);
  t.same(eventsOf(registry, await (await revokeBySig(C2, 2, deadline, await signRevoke(wallet, { consentId: C2, nonce: 2, deadline }))).wait()), [['ConsentRevoked', C2, P, 'true']]);
  await rejectsWithCustomError(t, call('putConsent')(C2, P, [rule()]), registry, 'ConsentLockedByPatient', [C2]);

  // A new wallet: the old one no longer signs.
  const wallet3 = Wallet.createRandom();
  await send('registerWallet', P, wallet3.address);
  await rejectsWithCustomError(t, revokeBySig(C1, 3, deadline, await signRevoke(wallet, { consentId: C1, nonce: 3, deadline })), registry, 'ConsentBadSignature');
  await (await revokeBySig(C1, 3, deadline, await signRevoke(wallet3, { consentId: C1, nonce: 3, deadline }))).wait();
  t.pass('the new wallet does');
  t.same(eventsOf(registry, await send('registerWallet', P, ZERO_ADDRESS)), [['WalletRegistered', P, ZERO_ADDRESS]]);
  await rejectsWithCustomError(t, revokeBySig(C2, 4, deadline, await signRevoke(wallet3, { consentId: C2, nonce: 4, deadline })), registry, 'ConsentNoWallet', [P]);
  await rejectsWithCustomError(t, call('registerWallet')(ZERO32, wallet.address), registry, 'ConsentZeroKey');
});

t.test('recordEmergencyAccess', async (t) => {
  const { registry, send } = await deployConsentRegistry(chain);
  const [P, E] = [key('Patient/1'), key('Practitioner/e')];
  t.same(eventsOf(registry, await send('recordEmergencyAccess', P, E, OBS, ETREAT)), [['EmergencyAccess', P, E, String(OBS), String(ETREAT)]]);
});

t.test('gas', async (t) => {
  const { registry, send, signRevoke, others } = await deployConsentRegistry(chain);
  const actors = [key('Practitioner/a'), key('PractitionerRole/r'), key('Organization/o')];
  const gas: Record<string, bigint> = {};
  gas['approveActor (first)'] = (await send('approveActor', actors[0], false)).gasUsed;
  await send('approveActor', actors[1], false);
  await send('approveActor', actors[2], true);
  const P = key('Patient/gas');
  gas['putConsent 1 rule, any actor'] = (await send('putConsent', key('Consent/g1'), P, [rule({ classes: bit(OBS), purposes: bit(TREAT) })])).gasUsed;
  gas['putConsent 1 rule, 2 actors'] = (await send('putConsent', key('Consent/g2'), P, [rule({ actors: actors.slice(0, 2), classes: bit(OBS) })])).gasUsed;
  const three = [
    rule({ permit: false, classes: bit(OBS) | bit(PAT) }),
    rule({ permit: true, actors: actors.slice(0, 2), purposes: bit(TREAT) }),
    rule({ permit: true, actors: [actors[2]!], start: 1_700_000_000, end: 1_900_000_000 }),
  ];
  gas['putConsent 3 rules, 3 actors'] = (await send('putConsent', key('Consent/g3'), P, three)).gasUsed;
  gas['putConsent 3 rules, replacing the same'] = (await send('putConsent', key('Consent/g3'), P, three)).gasUsed;
  gas['revokeConsent'] = (await send('revokeConsent', key('Consent/g2'))).gasUsed;
  const wallet = Wallet.createRandom();
  await send('registerWallet', P, wallet.address);
  const deadline = (await chain.ethers.provider.getBlock('latest'))!.timestamp + 3600;
  const sig = await signRevoke(wallet, { consentId: key('Consent/g1'), nonce: 0, deadline });
  gas['revokeBySig'] = (await (await as(registry, others[0]!).getFunction('revokeBySig')(key('Consent/g1'), 0, deadline, sig)).wait()).gasUsed;
  const estimate = await registry.getFunction('decide').estimateGas(P, actors, OBS, ACCESS, TREAT, 1_800_000_000);
  for (const [name, used] of Object.entries(gas)) t.comment(`gas ${name}: ${used}`);
  t.comment(`gas decide (3 consents, 3 request actors, as a transaction): ${estimate}`);
  t.ok(gas['putConsent 1 rule, any actor']! < 175_000n, 'a one-rule consent stays under 175k gas');
  t.ok(gas['putConsent 3 rules, 3 actors']! < 350_000n, 'a three-rule consent stays under 350k gas');
  t.ok(gas['revokeBySig']! < 80_000n, 'revokeBySig stays under 80k gas');
  t.ok(gas['approveActor (first)']! < 60_000n, 'approveActor stays under 60k gas');
});
