/**
 * ConsentRegistry on the in-process chain (docs/consent.md, contracts/IConsentRegistry.sol):
 * roles, approvals, the consent model (opt-in / opt-out, forced changes), access requests,
 * consent writes and their limits (rules, actors, tokens, nesting, token kinds), every rule of
 * `decide` (masks, inclusive periods and data periods, several purposes, actors, data tokens per
 * kind with class tokens or'ed into the class mask, nested rules — the most deeply nested
 * matching rules decide, deny winning among equals —, deny-overrides across consents, approval
 * checked at decision time for permits only, break-glass — a deny it sets aside makes the answer
 * BreakGlass whatever permits, a deny with ETREAT named on its path holds —, Implied under
 * opt-out), EIP-712 revocations and grants (domain version 2, the Rule type with
 * parents and tokens, nonces, deadlines, signers, domains), the lock a patient's signed
 * revocation puts on a consent, events, and gas. Reverts are asserted by custom error name and
 * arguments, never by message.
 */
import t from 'tap';
import { Interface, TypedDataEncoder, Wallet, id as keccakText } from 'ethers';
import { CONSENT_TYPES, type Rule } from '../../src/chain/consent-registry.ts';
import { CONSENT_REGISTRY_INTERFACE_ID } from '../../src/chain/generated/consent-registry.ts';
import { rejectsWithCustomError, startChain } from './chain.ts';
import { ZERO32, ZERO_ADDRESS, as, bit, deployConsentRegistry, eventsOf, key, mask, request, rule, token } from './consent-helpers.ts';

const CUSTODIAN_ROLE = keccakText('CUSTODIAN_ROLE');
const APPROVER_ROLE = keccakText('APPROVER_ROLE');
const DEFAULT_ADMIN_ROLE = ZERO32;

// Resource classes (indices into R4_RESOURCE_TYPES; any will do here), actions and purposes.
const OBS = 5;
const PAT = 7;
const COND = 9;
const HIGH = 200; // a class beyond the mask's first 32 bits
const ACCESS = 0;
const COLLECT = 1;
const CORRECT = 4;
const TREAT = 0;
const ETREAT = 1;
const HPAYMT = 2;
const HRESCH = 3;
// Models.
const OPT_IN = 0;
const OPT_OUT = 1;
// Token kinds.
const CUSTODIAN = 1;
const AUTHOR = 2;
const CLASS = 3;
const CODE = 4;
const LABEL = 5;
const DATA = 6;

const chain = await startChain(t);

/** A rule's tuple as `consentOf` returns it, with every number a bigint. */
const stored = (r: Rule): unknown[] => [
  BigInt(r.parent),
  r.permit,
  r.actors,
  r.classes,
  BigInt(r.actions),
  r.purposes,
  BigInt(r.start),
  BigInt(r.end),
  BigInt(r.dataStart),
  BigInt(r.dataEnd),
  r.tokens,
];
const plain = (rules: unknown[][]): unknown[][] => rules.map((r) => [...r].map((v) => (Array.isArray(v) ? [...v] : v)));

t.test('deployment, constants and ERC-165', async (t) => {
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
  t.same([name, version, chainId, verifyingContract], ['VellumConsentRegistry', '2', 31337n, await registry.getAddress()], 'EIP-712 domain (ERC-5267), version 2');
  const grantTypes = TypedDataEncoder.from(CONSENT_TYPES.Grant);
  t.equal(
    grantTypes.encodeType('Rule'),
    'Rule(uint8 parent,bool permit,bytes32[] actors,uint256 classes,uint16 actions,uint64 purposes,uint64 start,uint64 end,uint64 dataStart,uint64 dataEnd,bytes32[] tokens)',
    'the Rule type (parent, data period, tokens)',
  );
  t.equal(await registry.getFunction('RULE_TYPEHASH')(), keccakText(grantTypes.encodeType('Rule')), 'RULE_TYPEHASH is the codec’s Rule type');
  t.equal(await registry.getFunction('GRANT_TYPEHASH')(), keccakText(grantTypes.encodeType('Grant')), 'GRANT_TYPEHASH is the codec’s Grant type');
  t.equal(await registry.getFunction('REVOKE_TYPEHASH')(), keccakText(TypedDataEncoder.from(CONSENT_TYPES.Revoke).encodeType('Revoke')), 'REVOKE_TYPEHASH');

  const constants: [string, bigint][] = [
    ['MAX_RULES', 32n],
    ['MAX_RULE_ACTORS', 8n],
    ['MAX_RULE_TOKENS', 32n],
    ['MAX_ACTIVE_CONSENTS', 64n],
    ['MAX_REQUEST_ACTORS', 4n],
    ['TREAT', 0n],
    ['ETREAT', 1n],
    ['TOKEN_KIND_MAX', 6n],
  ];
  for (const [constant, value] of constants) t.equal(await registry.getFunction(constant)(), value, constant);
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
    await rejectsWithCustomError(t, fn('setModel')(OPT_OUT, false), registry, 'AccessControlUnauthorizedAccount', unauthorized(CUSTODIAN_ROLE));
    await rejectsWithCustomError(t, fn('setModel')(OPT_OUT, true), registry, 'AccessControlUnauthorizedAccount', unauthorized(CUSTODIAN_ROLE));
    await rejectsWithCustomError(t, fn('requestAccess')(C, P, A), registry, 'AccessControlUnauthorizedAccount', unauthorized(CUSTODIAN_ROLE));
    await rejectsWithCustomError(t, fn('answerRequest')(C, P, true), registry, 'AccessControlUnauthorizedAccount', unauthorized(CUSTODIAN_ROLE));
  }
  t.same([...(await registry.getFunction('model')())], [BigInt(OPT_IN), false], 'no refused setModel set the model');

  // The administrator hands out the roles separately.
  await (await as(registry, admin).getFunction('grantRole')(APPROVER_ROLE, second!.address)).wait();
  await (await asWho(second)('approveActor')(A, true)).wait();
  t.same([...(await registry.getFunction('approvalOf')(A))], [true, true], 'a granted approver approves');
  await rejectsWithCustomError(t, asWho(second)('putConsent')(C, P, [rule()]), registry, 'AccessControlUnauthorizedAccount', [second!.address, CUSTODIAN_ROLE]);
  await rejectsWithCustomError(t, asWho(second)('setModel')(OPT_OUT, false), registry, 'AccessControlUnauthorizedAccount', [second!.address, CUSTODIAN_ROLE]);
  await rejectsWithCustomError(t, as(registry, custodian).getFunction('grantRole')(CUSTODIAN_ROLE, outsider!.address), registry, 'AccessControlUnauthorizedAccount', [custodian.address, DEFAULT_ADMIN_ROLE]);

  await (await as(registry, admin).getFunction('revokeRole')(APPROVER_ROLE, custodian.address)).wait();
  await rejectsWithCustomError(t, f.call('approveActor')(A, false), registry, 'AccessControlUnauthorizedAccount', [custodian.address, APPROVER_ROLE]);
  await f.send('putConsent', C, P, [rule()]);
  await f.send('setModel', OPT_OUT, false);
  t.pass('without APPROVER_ROLE the custodian still puts consents and sets the model');
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
  t.same(eventsOf(registry, await send('approveActor', A, false)), [['ActorApproved', A, 'false']], 'and clears it');
  t.same(await approvalOf(A), [true, false]);
  t.same(eventsOf(registry, await send('revokeApproval', A)), [['ActorApprovalRevoked', A]]);
  t.same(await approvalOf(A), [false, false], 'revoking clears both flags');
  await rejectsWithCustomError(t, call('approveActor')(ZERO32, false), registry, 'ConsentZeroKey');
});

t.test('the consent model: set once, changed only by force, with its events', async (t) => {
  const { registry, send, call, decide } = await deployConsentRegistry(chain);
  const model = async () => [...(await registry.getFunction('model')())];
  const A = key('Practitioner/a');
  const P = key('Patient/1');
  await send('approveActor', A, false);
  t.same(await model(), [BigInt(OPT_IN), false], 'unset: opt-in');
  t.same(await decide(P, [A], OBS, ACCESS, bit(TREAT)), ['NoConsent', undefined], 'unset: no consent, no access');

  t.same(eventsOf(registry, await send('setModel', OPT_OUT, false)), [['ConsentModelSet', String(OPT_OUT), 'false']], 'the first call sets it, unforced');
  t.same(await model(), [BigInt(OPT_OUT), true]);
  t.same(await decide(P, [A], OBS, ACCESS, bit(TREAT)), ['Implied', undefined], 'opt-out implies treatment');
  t.same(eventsOf(registry, await send('setModel', OPT_OUT, false)), [], 'the same model again: nothing happens');
  t.same(eventsOf(registry, await send('setModel', OPT_OUT, true)), [], 'even forced');
  await rejectsWithCustomError(t, call('setModel')(OPT_IN, false), registry, 'ConsentModelChange', [OPT_OUT]);
  t.same(await model(), [BigInt(OPT_OUT), true], 'a refused change changes nothing');
  t.same(eventsOf(registry, await send('setModel', OPT_IN, true)), [['ConsentModelSet', String(OPT_IN), 'true']], 'a forced change, public');
  t.same(await model(), [BigInt(OPT_IN), true]);
  t.same(await decide(P, [A], OBS, ACCESS, bit(TREAT)), ['NoConsent', undefined], 'back to opt-in');
  await rejectsWithCustomError(t, call('setModel')(OPT_OUT, false), registry, 'ConsentModelChange', [OPT_IN]);
  await t.rejects(call('setModel')(2, true), 'no model 2');

  // Setting opt-in explicitly also counts as set.
  const other = await deployConsentRegistry(chain);
  t.same(eventsOf(other.registry, await other.send('setModel', OPT_IN, false)), [['ConsentModelSet', String(OPT_IN), 'false']], 'opt-in set explicitly');
  t.same([...(await other.registry.getFunction('model')())], [BigInt(OPT_IN), true]);
  await rejectsWithCustomError(t, other.call('setModel')(OPT_OUT, false), other.registry, 'ConsentModelChange', [OPT_IN]);
  const third = await deployConsentRegistry(chain);
  t.same(eventsOf(third.registry, await third.send('setModel', OPT_OUT, true)), [['ConsentModelSet', String(OPT_OUT), 'false']], 'force on the first call replaces nothing: not reported as forced');
});

t.test('access requests: events only, nothing in force', async (t) => {
  const { registry, send, call, decide } = await deployConsentRegistry(chain);
  const [R, P, C] = [key('Practitioner/requester'), key('Patient/1'), key('Consent/proposed')];
  await send('approveActor', R, false);
  t.same(eventsOf(registry, await send('requestAccess', C, P, R)), [['AccessRequested', C, P, R]]);
  t.same([...(await registry.getFunction('consentsOf')(P))], [], 'a request is no consent');
  t.equal((await registry.getFunction('consentOf')(C))[1], 0n, 'its id stays unwritten');
  t.same(await decide(P, [R], OBS, ACCESS, bit(TREAT)), ['NoConsent', undefined], 'and grants nothing');
  t.same(eventsOf(registry, await send('answerRequest', C, P, false)), [['AccessRequestAnswered', C, P, 'false']], 'rejected');
  t.same(eventsOf(registry, await send('answerRequest', C, P, true)), [['AccessRequestAnswered', C, P, 'true']], 'approved');
  t.same(await decide(P, [R], OBS, ACCESS, bit(TREAT)), ['NoConsent', undefined], 'an answer grants nothing either');
  t.same(eventsOf(registry, await send('putConsent', C, P, [rule({ actors: [R] })])), [['ConsentPut', C, P, 'false']], 'the custodian then puts it in force');
  t.same(await decide(P, [R], OBS, ACCESS, bit(TREAT)), ['Permit', C]);

  for (const [args, what] of [
    [[ZERO32, P, R], 'id'],
    [[C, ZERO32, R], 'patient'],
    [[C, P, ZERO32], 'requester'],
  ] as const) {
    await rejectsWithCustomError(t, call('requestAccess')(...args), registry, 'ConsentZeroKey');
    t.pass(`requestAccess: zero ${what}`);
  }
  await rejectsWithCustomError(t, call('answerRequest')(ZERO32, P, true), registry, 'ConsentZeroKey');
  await rejectsWithCustomError(t, call('answerRequest')(C, ZERO32, false), registry, 'ConsentZeroKey');
});

t.test('putConsent: checks and limits', async (t) => {
  const { registry, send, call, decide } = await deployConsentRegistry(chain);
  const A = key('Practitioner/a');
  const U = key('Practitioner/unapproved');
  const P = key('Patient/1');
  const P2 = key('Patient/2');
  await send('approveActor', A, false);
  const put = call('putConsent');
  const consentsOf = async (patient: string) => [...(await registry.getFunction('consentsOf')(patient))];

  await rejectsWithCustomError(t, put(key('Consent/empty'), P, []), registry, 'ConsentNoRules');
  // 33 rules, each nested in the one before: depth 32.
  const chainOf = (n: number) => Array.from({ length: n }, (_, i) => rule({ parent: Math.max(0, i - 1), actors: [A] }));
  await rejectsWithCustomError(t, put(key('Consent/33'), P, chainOf(33)), registry, 'ConsentTooManyRules', [33, 32]);
  await send('putConsent', key('Consent/32'), P, chainOf(32));
  t.pass('32 rules, nested 31 deep, are accepted');
  t.same(await decide(P, [A], OBS, ACCESS, bit(TREAT)), ['Permit', key('Consent/32')], 'and decide walks them');
  const nine = Array.from({ length: 9 }, (_, i) => key(`Organization/${i}`));
  await rejectsWithCustomError(t, put(key('Consent/actors'), P, [rule({ permit: false }), rule({ permit: false, actors: nine })]), registry, 'ConsentTooManyActors', [1, 9, 8]);
  await send('putConsent', key('Consent/eight'), P, [rule({ permit: false, actors: nine.slice(0, 8) })]);
  t.pass('8 actors in a deny rule are accepted, approved or not');
  const tokens33 = Array.from({ length: 33 }, (_, i) => token(1 + (i % 6), `token ${i}`));
  await rejectsWithCustomError(t, put(key('Consent/tokens'), P, [rule({ permit: false }), rule({ permit: false, tokens: tokens33 })]), registry, 'ConsentTooManyTokens', [1, 33, 32]);
  await send('putConsent', key('Consent/t32'), P, [rule({ permit: false, tokens: tokens33.slice(0, 32) })]);
  t.pass('32 tokens are accepted');

  // Nesting: a parent must come before its child.
  await rejectsWithCustomError(t, put(key('Consent/self'), P, [rule(), rule({ parent: 1 })]), registry, 'ConsentBadRule', [1]);
  await rejectsWithCustomError(t, put(key('Consent/later'), P, [rule(), rule(), rule({ parent: 3 }), rule()]), registry, 'ConsentBadRule', [2]);
  await rejectsWithCustomError(t, put(key('Consent/far'), P, [rule(), rule({ parent: 255 })]), registry, 'ConsentBadRule', [1]);
  const rootParent = key('Consent/root-parent');
  await send('putConsent', rootParent, P, [rule({ parent: 9 }), rule({ parent: 0 }), rule({ parent: 1 }), rule({ parent: 0 }), rule({ parent: 2 })]);
  const [, , , rootRules] = await registry.getFunction('consentOf')(rootParent);
  t.same(plain(rootRules).map((r) => r[0]), [0n, 0n, 1n, 0n, 2n], "the root's parent is ignored (stored 0); other parents as written");

  // Token kinds: 1 (custodian) to 6 (data); 0 and anything above 6 are no kind.
  for (const kind of [0, 7, 8, 0x80, 0xff]) {
    await rejectsWithCustomError(t, put(key(`Consent/kind${kind}`), P, [rule(), rule({ tokens: [token(CODE, 'ok'), token(kind, 'bad')] })]), registry, 'ConsentBadRule', [1]);
    await rejectsWithCustomError(t, put(key(`Consent/kind${kind}`), P, [rule({ tokens: [token(kind, 'bad')] })]), registry, 'ConsentBadRule', [0]);
  }
  t.pass('kinds 0, 7, 8, 0x80 and 0xff are refused, in the root as in a nested rule');
  await send('putConsent', key('Consent/kinds'), P, [rule({ tokens: [1, 2, 3, 4, 5, 6].map((k) => token(k, `kind ${k}`)) })]);
  t.pass('kinds 1 to 6 are accepted');

  // A permit may name actors not approved (yet); decide does not permit them.
  const unapproved = key('Consent/u');
  t.same(eventsOf(registry, await send('putConsent', unapproved, P2, [rule({ actors: [U] })])), [['ConsentPut', unapproved, P2, 'false']], 'a permit naming an unapproved actor is accepted');
  t.same(await decide(P2, [U], OBS, ACCESS, bit(TREAT)), ['ActorNotApproved', undefined], 'but decide permits it nothing');
  await send('putConsent', key('Consent/u2'), P2, [rule({ permit: false, actors: [U] }), rule({ permit: true, classes: bit(OBS) })]);
  t.pass('so is an unapproved actor a nested permit inherits');
  t.same(await decide(P2, [U], OBS, ACCESS, bit(TREAT)), ['Deny', key('Consent/u2')], 'the nested permit does not match it: its parent denies');

  await rejectsWithCustomError(t, put(ZERO32, P, [rule()]), registry, 'ConsentZeroKey');
  await rejectsWithCustomError(t, put(key('Consent/z'), ZERO32, [rule()]), registry, 'ConsentZeroKey');

  const C = key('Consent/1');
  await send('putConsent', C, P, [rule()]);
  await rejectsWithCustomError(t, put(C, P2, [rule()]), registry, 'ConsentPatientMismatch', [C]);
  const before = await consentsOf(P);
  t.equal(before.length, 6, 'refused puts wrote nothing');

  // At most 64 consents in force per patient: 6 so far.
  for (let i = before.length; i < 64; i++) await send('putConsent', key(`Consent/n${i}`), P, [rule({ permit: false })]);
  await rejectsWithCustomError(t, put(key('Consent/65'), P, [rule()]), registry, 'ConsentTooManyConsents', [P, 64]);
  await send('putConsent', C, P, [rule({ permit: false })]);
  t.pass('replacing a consent in force at the limit is fine');
  await send('putConsent', key('Consent/other'), P2, [rule()]);
  t.pass('the limit is per patient');
  await send('revokeConsent', C);
  await send('putConsent', key('Consent/65'), P, [rule()]);
  t.pass('revoking one makes room');
  await rejectsWithCustomError(t, put(C, P, [rule()]), registry, 'ConsentTooManyConsents', [P, 64]);
  t.equal((await consentsOf(P)).length, 65, 'consentsOf lists revoked consents too');
});

t.test('consentOf, consentsOf, revokeConsent and their events', async (t) => {
  const { registry, send, call } = await deployConsentRegistry(chain);
  const A = key('Practitioner/a');
  const P = key('Patient/1');
  const [C1, C2] = [key('Consent/1'), key('Consent/2')];
  await send('approveActor', A, false);
  const consentOf = registry.getFunction('consentOf');
  const unknown = await consentOf(C1);
  t.same([unknown[0], unknown[1], unknown[2], unknown[3].length], [ZERO32, 0n, false, 0], 'an unknown id: status None, nothing else');

  const three = [
    rule({ permit: false, classes: bit(OBS) | bit(PAT) | bit(HIGH), purposes: bit(TREAT), start: 100, end: 200, dataStart: 50, dataEnd: 150, tokens: [token(CUSTODIAN, 'org')] }),
    rule({ parent: 0, permit: true, actors: [A], actions: 1 << ACCESS, tokens: [token(CODE, 'c1'), token(CLASS, 'profile'), token(CODE, 'c2')] }),
    rule({ parent: 1, permit: false, purposes: bit(HPAYMT) | bit(40), dataEnd: 2 ** 40 }),
  ];
  t.same(eventsOf(registry, await send('putConsent', C2, P, three)), [['ConsentPut', C2, P, 'false']]);
  await send('putConsent', C1, P, [rule()]);
  const [patient, status, locked, rules] = await consentOf(C2);
  t.same([patient, status, locked], [P, 1n, false], 'patient, Active, unlocked');
  t.same(plain(rules), three.map(stored), 'the rules as written: parents, masks, periods, data periods, tokens in their order');

  await send('putConsent', C2, P, [rule({ permit: false })]);
  t.same(plain((await consentOf(C2))[3]), [stored(rule({ permit: false }))], 'a replacement with fewer rules shrinks the consent, and clears actors and tokens');
  const grown = [rule(), rule({ parent: 0, permit: false }), rule({ parent: 1, actors: [A] }), rule({ parent: 2, tokens: [token(LABEL, 'R')] })];
  await send('putConsent', C2, P, grown);
  t.same(plain((await consentOf(C2))[3]), grown.map(stored), 'growing again: nothing stale shows through');
  t.same([...(await registry.getFunction('consentsOf')(P))], [C2, C1], 'consentsOf: in the order first written');

  t.same(eventsOf(registry, await send('revokeConsent', C2)), [['ConsentRevoked', C2, P, 'false']]);
  t.equal((await consentOf(C2))[1], 2n, 'Revoked');
  t.same(plain((await consentOf(C2))[3]), grown.map(stored), 'a revoked consent keeps its rules');
  t.same(eventsOf(registry, await send('revokeConsent', C2)), [], 'revoking again changes nothing and emits nothing');
  await rejectsWithCustomError(t, call('revokeConsent')(key('Consent/none')), registry, 'ConsentUnknown', [key('Consent/none')]);
  t.same(eventsOf(registry, await send('putConsent', C2, P, [rule({ permit: false })])), [['ConsentPut', C2, P, 'false']], 'the custodian may put back what it revoked');
  t.same([...(await registry.getFunction('consentsOf')(P))], [C2, C1], 'and it keeps its place');
});

t.test('decide: masks, periods, data periods, purposes and actors of one rule', async (t) => {
  const { send, decide } = await deployConsentRegistry(chain);
  const [A, B, U] = [key('Practitioner/a'), key('Practitioner/b'), key('Practitioner/u')];
  const P = key('Patient/1');
  await send('approveActor', A, false);
  await send('approveActor', B, false);
  t.same(await decide(P, [A], OBS, ACCESS, bit(TREAT)), ['NoConsent', undefined], 'no consent at all');
  t.same(await decide(P, [U], OBS, ACCESS, bit(TREAT)), ['ActorNotApproved', undefined], 'no approved actor');
  t.same(await decide(P, [], OBS, ACCESS, bit(TREAT)), ['ActorNotApproved', undefined], 'no actor at all');

  // [name, rule, [class, action, purposes, time, actors, dataTime], expected]
  const cases: [string, Partial<Rule>, [number, number, bigint, number, string, number?], string][] = [
    ['class bit set', { classes: bit(OBS) | bit(COND) }, [OBS, ACCESS, bit(TREAT), 1, 'A'], 'Permit'],
    ['class bit clear', { classes: bit(OBS) | bit(COND) }, [PAT, ACCESS, bit(TREAT), 1, 'A'], 'NoConsent'],
    ['high class bit set', { classes: bit(HIGH) }, [HIGH, ACCESS, bit(TREAT), 1, 'A'], 'Permit'],
    ['high class bit clear', { classes: bit(HIGH) }, [HIGH - 32, ACCESS, bit(TREAT), 1, 'A'], 'NoConsent'],
    ['action bit set', { actions: (1 << ACCESS) | (1 << CORRECT) }, [OBS, CORRECT, bit(TREAT), 1, 'A'], 'Permit'],
    ['action bit clear', { actions: (1 << ACCESS) | (1 << CORRECT) }, [OBS, COLLECT, bit(TREAT), 1, 'A'], 'NoConsent'],
    ['action beyond the mask', { actions: 0xffff }, [OBS, 16, bit(TREAT), 1, 'A'], 'NoConsent'],
    ['purpose bit set', { purposes: bit(TREAT) }, [OBS, ACCESS, bit(TREAT), 1, 'A'], 'Permit'],
    ['purpose bit clear', { purposes: bit(TREAT) }, [OBS, ACCESS, bit(HPAYMT), 1, 'A'], 'NoConsent'],
    ['one of several request purposes', { purposes: bit(TREAT) | bit(HRESCH) }, [OBS, ACCESS, bit(HPAYMT) | bit(HRESCH), 1, 'A'], 'Permit'],
    ['none of several request purposes', { purposes: bit(TREAT) | bit(HRESCH) }, [OBS, ACCESS, bit(HPAYMT) | bit(ETREAT), 1, 'A'], 'NoConsent'],
    ['no request purpose, a rule naming some', { purposes: bit(TREAT) }, [OBS, ACCESS, 0n, 1, 'A'], 'NoConsent'],
    ['no request purpose, a rule naming none', {}, [OBS, ACCESS, 0n, 1, 'A'], 'Permit'],
    ['before start', { start: 1000, end: 2000 }, [OBS, ACCESS, bit(TREAT), 999, 'A'], 'NoConsent'],
    ['at start (inclusive)', { start: 1000, end: 2000 }, [OBS, ACCESS, bit(TREAT), 1000, 'A'], 'Permit'],
    ['at end (inclusive)', { start: 1000, end: 2000 }, [OBS, ACCESS, bit(TREAT), 2000, 'A'], 'Permit'],
    ['after end', { start: 1000, end: 2000 }, [OBS, ACCESS, bit(TREAT), 2001, 'A'], 'NoConsent'],
    ['start only', { start: 1000 }, [OBS, ACCESS, bit(TREAT), 2 ** 40, 'A'], 'Permit'],
    ['end only', { end: 2000 }, [OBS, ACCESS, bit(TREAT), 0, 'A'], 'Permit'],
    ['data before dataStart', { dataStart: 1000, dataEnd: 2000 }, [OBS, ACCESS, bit(TREAT), 1, 'A', 999], 'NoConsent'],
    ['data at dataStart (inclusive)', { dataStart: 1000, dataEnd: 2000 }, [OBS, ACCESS, bit(TREAT), 1, 'A', 1000], 'Permit'],
    ['data at dataEnd (inclusive)', { dataStart: 1000, dataEnd: 2000 }, [OBS, ACCESS, bit(TREAT), 1, 'A', 2000], 'Permit'],
    ['data after dataEnd', { dataStart: 1000, dataEnd: 2000 }, [OBS, ACCESS, bit(TREAT), 1, 'A', 2001], 'NoConsent'],
    ['dataStart only', { dataStart: 1000 }, [OBS, ACCESS, bit(TREAT), 1, 'A', 2 ** 40], 'Permit'],
    ['dataStart only, data time unknown (0)', { dataStart: 1000 }, [OBS, ACCESS, bit(TREAT), 1, 'A', 0], 'NoConsent'],
    ['dataEnd only, data time unknown (0)', { dataEnd: 2000 }, [OBS, ACCESS, bit(TREAT), 1, 'A', 0], 'Permit'],
    ['the data period is not the period', { dataStart: 1000, dataEnd: 2000 }, [OBS, ACCESS, bit(TREAT), 5000, 'A', 1500], 'Permit'],
    ['the period is not the data period', { start: 1000, end: 2000 }, [OBS, ACCESS, bit(TREAT), 1500, 'A', 5000], 'Permit'],
    ['named actor', { actors: [A] }, [OBS, ACCESS, bit(TREAT), 1, 'A'], 'Permit'],
    ['other approved actor', { actors: [A] }, [OBS, ACCESS, bit(TREAT), 1, 'B'], 'NoConsent'],
    ['named actor among the request actors', { actors: [A] }, [OBS, ACCESS, bit(TREAT), 1, 'BA'], 'Permit'],
    ['zero masks: everything', {}, [255, 15, mask(...Array.from({ length: 20 }, (_, i) => i)), 1, 'B'], 'Permit'],
  ];
  const actorOf: Record<string, string> = { A, B };
  let n = 0;
  for (const [name, over, [cls, action, purposes, time, who, dataTime], expected] of cases) {
    const patient = key(`Patient/case${n}`);
    const consent = key(`Consent/case${n++}`);
    await send('putConsent', consent, patient, [rule(over)]);
    const actors = [...who].map((c) => actorOf[c]!);
    const extras = { dataTime: dataTime ?? 0 };
    t.same(await decide(patient, actors, cls, action, purposes, time, extras), [expected, expected === 'Permit' ? consent : undefined], name);
    // The same rule as a deny: the same match, the other verdict.
    await send('putConsent', consent, patient, [rule({ ...over, permit: false })]);
    t.same(await decide(patient, actors, cls, action, purposes, time, extras), [expected === 'Permit' ? 'Deny' : 'NoConsent', expected === 'Permit' ? consent : undefined], `${name} (deny)`);
  }
});

t.test('decide: nested rules — the most deeply nested matching rules decide, deny winning among equals', async (t) => {
  const { send, decide } = await deployConsentRegistry(chain);
  const [A, B] = [key('Practitioner/a'), key('Practitioner/b')];
  await send('approveActor', A, false);
  await send('approveActor', B, false);
  const X = token(CODE, 'code X');

  // A chain four deep: permit → deny PAT → permit PAT for A → deny it for HPAYMT → permit with code X.
  const P1 = key('Patient/1');
  const C1 = key('Consent/1');
  await send('putConsent', C1, P1, [
    rule(),
    rule({ parent: 0, permit: false, classes: bit(PAT) }),
    rule({ parent: 1, permit: true, actors: [A] }),
    rule({ parent: 2, permit: false, purposes: bit(HPAYMT) }),
    rule({ parent: 3, permit: true, tokens: [X] }),
  ]);
  t.same(await decide(P1, [B], OBS, ACCESS, bit(TREAT)), ['Permit', C1], 'depth 0: the root');
  t.same(await decide(P1, [B], PAT, ACCESS, bit(TREAT)), ['Deny', C1], 'depth 1: deny PAT');
  t.same(await decide(P1, [A], PAT, ACCESS, bit(TREAT)), ['Permit', C1], 'depth 2: but permit A');
  t.same(await decide(P1, [A], PAT, ACCESS, bit(HPAYMT)), ['Deny', C1], 'depth 3: not for payment');
  t.same(await decide(P1, [A], PAT, ACCESS, bit(HPAYMT), 1_000_000, { facts: [X] }), ['Permit', C1], 'depth 4: unless the data has code X');
  t.same(await decide(P1, [B], PAT, ACCESS, bit(HPAYMT), 1_000_000, { facts: [X] }), ['Deny', C1], 'a rule applies only where its parent does (B: depth 1)');
  t.same(await decide(P1, [A], OBS, ACCESS, bit(HPAYMT), 1_000_000, { facts: [X] }), ['Permit', C1], 'OBS: no deny PAT, so nothing below it applies (the root permits)');

  // Siblings at one depth: deny wins, whatever their order; a deeper rule wins over both.
  const P2 = key('Patient/2');
  const C2 = key('Consent/2');
  await send('putConsent', C2, P2, [
    rule({ permit: false }),
    rule({ parent: 0, permit: true, classes: bit(OBS) }),
    rule({ parent: 0, permit: false, purposes: bit(HPAYMT) }),
    rule({ parent: 2, permit: true, actors: [A] }),
  ]);
  t.same(await decide(P2, [B], OBS, ACCESS, bit(TREAT)), ['Permit', C2], 'one permit at depth 1');
  t.same(await decide(P2, [B], OBS, ACCESS, bit(HPAYMT)), ['Deny', C2], 'a permit and a deny at depth 1: deny wins');
  t.same(await decide(P2, [A], OBS, ACCESS, bit(HPAYMT)), ['Permit', C2], 'a permit at depth 2 wins over both');
  t.same(await decide(P2, [A], PAT, ACCESS, bit(HPAYMT)), ['Permit', C2], 'depth 2 beats the deny at depth 1 in its own branch');
  t.same(await decide(P2, [B], PAT, ACCESS, bit(TREAT)), ['Deny', C2], 'nothing below the root: the root denies');
  const P3 = key('Patient/3');
  const C3 = key('Consent/3');
  await send('putConsent', C3, P3, [rule({ permit: false }), rule({ parent: 0, permit: false, purposes: bit(HPAYMT) }), rule({ parent: 0, permit: true, classes: bit(OBS) })]);
  t.same(await decide(P3, [B], OBS, ACCESS, bit(HPAYMT)), ['Deny', C3], 'deny wins among equals listed before the permit too');
  const P4 = key('Patient/4');
  const C4 = key('Consent/4');
  await send('putConsent', C4, P4, [rule(), rule({ parent: 0 }), rule({ parent: 0, classes: bit(PAT) }), rule({ parent: 0, permit: false, actors: [B] }), rule({ parent: 0, classes: bit(OBS) })]);
  t.same(await decide(P4, [B], PAT, ACCESS, bit(TREAT)), ['Deny', C4], 'one deny among several permits at a depth');
  t.same(await decide(P4, [A], PAT, ACCESS, bit(TREAT)), ['Permit', C4], 'which it does not match');

  // The deepest matching rule in any branch decides, parents listed anywhere before.
  const P5 = key('Patient/5');
  const C5 = key('Consent/5');
  await send('putConsent', C5, P5, [
    rule({ permit: true }), // 0
    rule({ parent: 0, permit: false, classes: bit(PAT) }), // 1: depth 1
    rule({ parent: 0, permit: true, actors: [A] }), // 2: depth 1
    rule({ parent: 2, permit: true, purposes: bit(TREAT) }), // 3: depth 2, under 2
    rule({ parent: 1, permit: false, purposes: bit(HRESCH) }), // 4: depth 2, under 1
    rule({ parent: 4, permit: true, actors: [B] }), // 5: depth 3, under 4
  ]);
  t.same(await decide(P5, [A], PAT, ACCESS, bit(TREAT)), ['Permit', C5], 'deny PAT at depth 1, permit at depth 2 in another branch: depth 2');
  t.same(await decide(P5, [A], PAT, ACCESS, bit(HPAYMT)), ['Deny', C5], 'deny PAT and permit A, both at depth 1: deny');
  t.same(await decide(P5, [A], PAT, ACCESS, bit(TREAT) | bit(HRESCH)), ['Deny', C5], 'a permit and a deny at depth 2 (two branches): deny');
  t.same(await decide(P5, [B], PAT, ACCESS, bit(HRESCH)), ['Permit', C5], 'depth 3 under the research deny');
  t.same(await decide(P5, [A, B], PAT, ACCESS, bit(TREAT) | bit(HRESCH)), ['Permit', C5], 'depth 3 beats both at depth 2');

  // A consent whose root does not match has no verdict, whatever its nested rules.
  const P6 = key('Patient/6');
  const C6 = key('Consent/6');
  await send('putConsent', C6, P6, [rule({ permit: false, classes: bit(COND) }), rule({ parent: 0, permit: false }), rule({ parent: 1, permit: true })]);
  t.same(await decide(P6, [A], OBS, ACCESS, bit(TREAT)), ['NoConsent', undefined], 'the root does not match: no verdict');
  t.same(await decide(P6, [A], COND, ACCESS, bit(TREAT)), ['Permit', C6], 'it does: the deepest rule');

  // A permit deeper down needs an approved actor like any permit; a deny does not.
  const P7 = key('Patient/7');
  const C7 = key('Consent/7');
  const U = key('Practitioner/unapproved');
  await send('putConsent', C7, P7, [rule({ permit: false }), rule({ parent: 0, permit: true, actors: [U] }), rule({ parent: 1, permit: false, classes: bit(PAT) })]);
  t.same(await decide(P7, [U], PAT, ACCESS, bit(TREAT)), ['Deny', C7], 'U is not approved: the nested permit (and what it holds) does not match; the root denies');
  await send('approveActor', U, false);
  t.same(await decide(P7, [U], OBS, ACCESS, bit(TREAT)), ['Permit', C7], 'approved, the nested permit applies');
  t.same(await decide(P7, [U], PAT, ACCESS, bit(TREAT)), ['Deny', C7], 'and the deny below it');
});

t.test('decide: data tokens by kind, class tokens or’ed with the class mask', async (t) => {
  const { send, decide } = await deployConsentRegistry(chain);
  const A = key('Practitioner/a');
  await send('approveActor', A, false);
  let n = 0;
  /** A fresh patient with one consent of `rules`; its decide for `cls` and `facts`. */
  const consent = async (rules: Rule[]) => {
    const [patient, id] = [key(`Patient/t${n}`), key(`Consent/t${n++}`)];
    await send('putConsent', id, patient, rules);
    return async (cls: number, facts: string[]) => {
      const [decision, consentId] = await decide(patient, [A], cls, ACCESS, bit(TREAT), 1_000_000, { facts });
      t.equal(consentId, decision === 'Permit' || decision === 'Deny' ? id : undefined, 'the deciding consent');
      return decision;
    };
  };

  // Custodian, author, code, label, data: a token of that kind must be among the facts.
  for (const [kind, name] of [
    [CUSTODIAN, 'custodian'],
    [AUTHOR, 'author'],
    [CODE, 'code'],
    [LABEL, 'label'],
    [DATA, 'data'],
  ] as const) {
    const mine = token(kind, `${name} 1`);
    const other = token(kind, `${name} 2`);
    const otherKind = token(kind === DATA ? CODE : kind + 1, `${name} 1`);
    const permit = await consent([rule({ tokens: [mine] })]);
    t.equal(await permit(OBS, [mine]), 'Permit', `${name}: the token among the facts`);
    t.equal(await permit(OBS, [other, otherKind, mine]), 'Permit', `${name}: among others`);
    t.equal(await permit(OBS, []), 'NoConsent', `${name}: no facts`);
    t.equal(await permit(OBS, [other]), 'NoConsent', `${name}: another token of the kind`);
    t.equal(await permit(OBS, [otherKind]), 'NoConsent', `${name}: the same key of another kind`);
    const deny = await consent([rule({ permit: false, tokens: [mine] })]);
    t.equal(await deny(OBS, [mine]), 'Deny', `${name}: a deny matches the same`);
    t.equal(await deny(OBS, [other]), 'NoConsent', `${name}: and only that`);
  }

  const [code1, code2, code3] = [token(CODE, 'c1'), token(CODE, 'c2'), token(CODE, 'c3')];
  const [org1, org2] = [token(CUSTODIAN, 'o1'), token(CUSTODIAN, 'o2')];
  const anyOf = await consent([rule({ tokens: [code1, code2] })]);
  t.equal(await anyOf(OBS, [code2]), 'Permit', 'tokens of one kind: any of them');
  t.equal(await anyOf(OBS, [code3]), 'NoConsent', 'none of them');
  const allKinds = await consent([rule({ tokens: [org1, code1, org2, code2] })]);
  t.equal(await allKinds(OBS, [org2, code1]), 'Permit', 'tokens of several kinds: one of each kind');
  t.equal(await allKinds(OBS, [org1, org2]), 'NoConsent', 'one kind only is not enough');
  t.equal(await allKinds(OBS, [code1, code2, code3]), 'NoConsent', 'nor is the other');

  // Class tokens (profiles, content types) are or'ed with the class mask.
  const profile = token(CLASS, 'profile');
  const profile2 = token(CLASS, 'profile 2');
  const classOrToken = await consent([rule({ classes: bit(OBS), tokens: [profile] })]);
  t.equal(await classOrToken(OBS, []), 'Permit', 'the class bit, no class token needed');
  t.equal(await classOrToken(PAT, [profile]), 'Permit', 'another class with the class token');
  t.equal(await classOrToken(PAT, [profile2]), 'NoConsent', 'another class, another class token');
  t.equal(await classOrToken(PAT, []), 'NoConsent', 'another class, no token');
  const tokenOnly = await consent([rule({ tokens: [profile, profile2] })]);
  t.equal(await tokenOnly(OBS, []), 'NoConsent', 'a class token without classes is a class condition');
  t.equal(await tokenOnly(HIGH, [profile2]), 'Permit', 'met by any of the class tokens');
  const classAndCode = await consent([rule({ classes: bit(OBS), tokens: [profile, code1] })]);
  t.equal(await classAndCode(PAT, [profile]), 'NoConsent', 'class by token, but no code');
  t.equal(await classAndCode(PAT, [profile, code1]), 'Permit', 'class by token, and the code');
  t.equal(await classAndCode(OBS, [code1]), 'Permit', 'class by bit, and the code');
  t.equal(await classAndCode(OBS, [profile]), 'NoConsent', 'the class token does not stand for the code');

  // Tokens in nested rules, with a data period.
  const nested = await consent([
    rule({ permit: true, tokens: [org1] }),
    rule({ parent: 0, permit: false, tokens: [token(LABEL, 'R')] }),
    rule({ parent: 1, permit: true, tokens: [token(AUTHOR, 'me')], dataStart: 0, dataEnd: 0 }),
  ]);
  t.equal(await nested(OBS, [org1]), 'Permit', 'the custodian’s data: the root permits');
  t.equal(await nested(OBS, [org2, token(LABEL, 'R')]), 'NoConsent', 'another custodian: the root does not match, nor its children');
  t.equal(await nested(OBS, [org1, token(LABEL, 'R')]), 'Deny', 'restricted data is denied');
  t.equal(await nested(OBS, [org1, token(LABEL, 'R'), token(AUTHOR, 'me')]), 'Permit', 'unless authored by me');
  const period = await consent([rule({ permit: true }), rule({ parent: 0, permit: false, dataEnd: 1000, tokens: [code1] })]);
  t.equal(await period(OBS, [code1]), 'Deny', 'data time 0 is within a data period with no start');
  const [P, C] = [key(`Patient/t${n - 1}`), key(`Consent/t${n - 1}`)];
  t.same(await decide(P, [A], OBS, ACCESS, bit(TREAT), 1, { facts: [code1], dataTime: 1000 }), ['Deny', C], 'recorded at the end of the data period');
  t.same(await decide(P, [A], OBS, ACCESS, bit(TREAT), 1, { facts: [code1], dataTime: 1001 }), ['Permit', C], 'recorded after it: the deny does not match');
});

t.test('decide: across consents — deny overrides, first permit, revoked ignored, per patient', async (t) => {
  const { send, decide } = await deployConsentRegistry(chain);
  const A = key('Practitioner/a');
  await send('approveActor', A, false);
  const P = key('Patient/1');
  const [C1, C2, C3] = [key('Consent/1'), key('Consent/2'), key('Consent/3')];
  await send('putConsent', C3, P, [rule({ classes: bit(OBS) })]);
  await send('putConsent', C1, P, [rule()]);
  t.same(await decide(P, [A], OBS, ACCESS, bit(TREAT)), ['Permit', C3], 'the first permitting consent in write order');
  await send('putConsent', C2, P, [rule({ permit: false, classes: bit(PAT) })]);
  t.same(await decide(P, [A], PAT, ACCESS, bit(TREAT)), ['Deny', C2], 'a later deny overrides an earlier permit');
  t.same(await decide(P, [A], OBS, ACCESS, bit(TREAT)), ['Permit', C3], 'other classes still permitted');
  await send('putConsent', C3, P, [rule({ classes: bit(OBS), purposes: bit(TREAT) })]);
  t.same(await decide(P, [A], OBS, ACCESS, bit(TREAT)), ['Permit', C3], 'a replaced consent keeps its place');
  await send('revokeConsent', C3);
  t.same(await decide(P, [A], OBS, ACCESS, bit(TREAT)), ['Permit', C1], 'a revoked consent is ignored');
  await send('revokeConsent', C2);
  t.same(await decide(P, [A], PAT, ACCESS, bit(TREAT)), ['Permit', C1], 'so is a revoked deny');
  await send('putConsent', C2, P, [rule({ permit: false, classes: bit(PAT) })]);
  t.same(await decide(P, [A], PAT, ACCESS, bit(TREAT)), ['Deny', C2], 'put back in force, it denies again');
  t.same(await decide(key('Patient/2'), [A], OBS, ACCESS, bit(TREAT)), ['NoConsent', undefined], "another patient's consents do not apply");
  await send('putConsent', key('Consent/d2'), P, [rule({ permit: false, classes: bit(PAT) })]);
  t.same(await decide(P, [A], PAT, ACCESS, bit(TREAT)), ['Deny', C2], 'two denies: the first in write order');

  // Several purposes: a deny for any one of them denies the request.
  const Q = key('Patient/q');
  const [Q1, Q2] = [key('Consent/q1'), key('Consent/q2')];
  await send('putConsent', Q1, Q, [rule({ purposes: bit(TREAT) | bit(HRESCH) })]);
  await send('putConsent', Q2, Q, [rule({ permit: false, purposes: bit(HRESCH) })]);
  t.same(await decide(Q, [A], OBS, ACCESS, bit(TREAT)), ['Permit', Q1], 'treatment alone: permitted');
  t.same(await decide(Q, [A], OBS, ACCESS, bit(TREAT) | bit(HRESCH)), ['Deny', Q2], 'treatment and research: the research deny matches');
});

t.test('decide: approval is checked at decision time, for permits only', async (t) => {
  const { send, decide } = await deployConsentRegistry(chain);
  const [A, B, X] = [key('Practitioner/a'), key('Practitioner/b'), key('Practitioner/x')];
  await send('approveActor', A, false);
  await send('approveActor', B, false);
  const P = key('Patient/1');
  const [C1, C2] = [key('Consent/1'), key('Consent/2')];
  await send('putConsent', C1, P, [rule({ actors: [A] })]);
  await send('putConsent', C2, P, [rule({ permit: false, actors: [X], classes: bit(PAT) })]);
  t.same(await decide(P, [X], PAT, ACCESS, bit(TREAT)), ['Deny', C2], 'a deny applies to an unapproved actor');
  t.same(await decide(P, [X], OBS, ACCESS, bit(TREAT)), ['ActorNotApproved', undefined], 'an unapproved actor is never permitted');
  t.same(await decide(P, [A], OBS, ACCESS, bit(TREAT)), ['Permit', C1]);
  await send('revokeApproval', A);
  t.same(await decide(P, [A], OBS, ACCESS, bit(TREAT)), ['ActorNotApproved', undefined], 'unapproval cuts access at once');
  t.same(await decide(P, [A, B], OBS, ACCESS, bit(TREAT)), ['NoConsent', undefined], 'an approved co-actor not named does not help');
  await send('approveActor', A, false);
  t.same(await decide(P, [B, A], OBS, ACCESS, bit(TREAT)), ['Permit', C1], 're-approved');

  const P2 = key('Patient/2');
  const C3 = key('Consent/3');
  await send('putConsent', C3, P2, [rule()]);
  t.same(await decide(P2, [X], OBS, ACCESS, bit(TREAT)), ['ActorNotApproved', undefined], 'a permit for anyone still needs an approved actor');
  t.same(await decide(P2, [X, B], OBS, ACCESS, bit(TREAT)), ['Permit', C3], 'which any approved request actor supplies');

  // A permit naming an actor not approved yet: accepted at put time, effective once approved.
  const P3 = key('Patient/3');
  const C4 = key('Consent/4');
  const Y = key('Practitioner/y');
  await send('putConsent', C4, P3, [rule({ actors: [Y, X] })]);
  t.same(await decide(P3, [Y], OBS, ACCESS, bit(TREAT)), ['ActorNotApproved', undefined], 'named but not approved');
  t.same(await decide(P3, [Y, A], OBS, ACCESS, bit(TREAT)), ['NoConsent', undefined], 'an approved co-actor not named does not stand in');
  await send('approveActor', Y, false);
  t.same(await decide(P3, [Y], OBS, ACCESS, bit(TREAT)), ['Permit', C4], 'approved later: permitted');
  t.same(await decide(P3, [X], OBS, ACCESS, bit(TREAT)), ['ActorNotApproved', undefined], 'the other named actor still is not');
  t.same(await decide(P3, [X, Y], OBS, ACCESS, bit(TREAT)), ['Permit', C4], 'an approved named request actor suffices');
});

t.test('decide: break-glass, the denies it sets aside and those it cannot', async (t) => {
  const { send, decide, isPermitted } = await deployConsentRegistry(chain);
  const [E, N, U] = [key('Practitioner/emergency'), key('Practitioner/normal'), key('Practitioner/unapproved')];
  await send('approveActor', E, true);
  await send('approveActor', N, false);
  const ET = bit(ETREAT);

  const P0 = key('Patient/0');
  t.same(await decide(P0, [E], OBS, ACCESS, ET), ['BreakGlass', undefined], 'no consent: emergency actor, ETREAT → break-glass');
  t.same(await decide(P0, [E], OBS, ACCESS, bit(TREAT) | ET | bit(HPAYMT)), ['BreakGlass', undefined], 'ETREAT among several purposes');
  t.same(await decide(P0, [E], OBS, ACCESS, bit(TREAT)), ['NoConsent', undefined], 'not for another purpose');
  t.same(await decide(P0, [N], OBS, ACCESS, ET), ['NoConsent', undefined], 'not for a non-emergency actor');
  t.same(await decide(P0, [U], OBS, ACCESS, ET), ['ActorNotApproved', undefined]);
  t.same(await decide(P0, [N, E], OBS, ACCESS, ET), ['BreakGlass', undefined], 'any request actor with the flag');

  const P1 = key('Patient/1');
  const C1 = key('Consent/1');
  await send('putConsent', C1, P1, [rule({ permit: false })]);
  t.same(await decide(P1, [E], OBS, ACCESS, ET), ['BreakGlass', undefined], 'a general deny does not stop break-glass');
  t.same(await decide(P1, [N], OBS, ACCESS, ET), ['Deny', C1], 'but it stops a non-emergency actor with ETREAT');
  t.same(await decide(P1, [E], OBS, ACCESS, bit(TREAT)), ['Deny', C1], 'and the emergency actor for another purpose');
  const C2 = key('Consent/2');
  await send('putConsent', C2, P1, [rule({ actors: [E], classes: bit(OBS) })]);
  t.same(await decide(P1, [E], OBS, ACCESS, ET), ['BreakGlass', undefined], 'a deny set aside makes it break-glass, whatever permits');
  t.same(await decide(P1, [E], OBS, ACCESS, bit(TREAT)), ['Deny', C1], 'without ETREAT the deny holds over the permit');
  const P1b = key('Patient/1b');
  const C2b = key('Consent/2b');
  await send('putConsent', C2b, P1b, [rule({ actors: [E], classes: bit(OBS) })]);
  t.same(await decide(P1b, [E], OBS, ACCESS, ET), ['Permit', C2b], 'with no deny to set aside, a permit is a permit');

  // A deny whose path names ETREAT holds.
  const cases: [string, Rule[], string][] = [
    ['an explicit deny for ETREAT (among others)', [rule({ permit: false, purposes: bit(TREAT) | ET })], 'Deny'],
    ['a deny for ETREAT alone', [rule({ permit: false, purposes: ET })], 'Deny'],
    ['a deny nested in a permit for ETREAT', [rule({ permit: true, purposes: ET }), rule({ parent: 0, permit: false, actors: [E] })], 'Deny'],
    ['a deny nested two deep under a rule for ETREAT', [rule({ permit: false, purposes: ET }), rule({ parent: 0, permit: true, classes: bit(OBS) }), rule({ parent: 1, permit: false })], 'Deny'],
    ['a nested deny for ETREAT', [rule({ permit: true }), rule({ parent: 0, permit: false, purposes: ET })], 'Deny'],
    ['a deny nested in a deny, neither naming purposes', [rule({ permit: false }), rule({ parent: 0, permit: false, classes: bit(OBS) })], 'BreakGlass'],
    ['a deny for TREAT and HPAYMT (matching by TREAT) names no ETREAT', [rule({ permit: false, purposes: bit(TREAT) | bit(HPAYMT) })], 'BreakGlass'],
    ['a deny nested in a permit naming other purposes only', [rule({ permit: true, purposes: bit(TREAT) | bit(HRESCH) }), rule({ parent: 0, permit: false })], 'BreakGlass'],
    ['a general deny beside a deny for ETREAT at one depth', [rule(), rule({ parent: 0, permit: false }), rule({ parent: 0, permit: false, purposes: ET })], 'Deny'],
    ['a deny for ETREAT beside a general deny at one depth', [rule(), rule({ parent: 0, permit: false, purposes: ET }), rule({ parent: 0, permit: false })], 'Deny'],
    ['a permit for ETREAT beside a general deny does not make the deny explicit', [rule(), rule({ parent: 0, permit: true, purposes: ET }), rule({ parent: 0, permit: false })], 'BreakGlass'],
    ['a general deny nested under a deny for ETREAT still names it', [rule(), rule({ parent: 0, permit: false, purposes: ET }), rule({ parent: 1, permit: true }), rule({ parent: 2, permit: false })], 'Deny'],
  ];
  let n = 2;
  for (const [name, rules, expected] of cases) {
    const [patient, id] = [key(`Patient/bg${n}`), key(`Consent/bg${n++}`)];
    await send('putConsent', id, patient, rules);
    // With several purposes (ETREAT among them) the deny must name ETREAT itself: naming another
    // of the request's purposes makes it match, not explicit.
    t.same(await decide(patient, [E], OBS, ACCESS, ET | bit(TREAT) | bit(HRESCH)), [expected, expected === 'Deny' ? id : undefined], name);
  }
  const P9 = key('Patient/bg-treat');
  const C9 = key('Consent/bg-treat');
  await send('putConsent', C9, P9, [rule({ permit: false, purposes: bit(TREAT) })]);
  t.same(await decide(P9, [E], OBS, ACCESS, bit(TREAT) | ET), ['BreakGlass', undefined], 'a deny for TREAT matches TREAT+ETREAT, but names no ETREAT: set aside');
  t.same(await decide(P9, [N], OBS, ACCESS, bit(TREAT) | ET), ['Deny', C9], 'for a non-emergency actor it holds');

  await send('approveActor', E, false);
  t.same(await decide(P1, [E], PAT, ACCESS, ET), ['Deny', C1], 'without the emergency flag, the deny holds');
  await send('approveActor', E, true);
  await send('revokeApproval', E);
  t.same(await decide(P0, [E], OBS, ACCESS, ET), ['ActorNotApproved', undefined], 'an unapproved actor loses its flag');
  await send('approveActor', E, true);

  const P2 = key('Patient/bg2');
  t.equal(await isPermitted(request(P0, [E], OBS, ACCESS, ET)), true, 'isPermitted: BreakGlass');
  t.equal(await isPermitted(request(P1, [E], OBS, ACCESS, ET)), true, 'isPermitted: BreakGlass over a deny');
  t.equal(await isPermitted(request(P1b, [E], OBS, ACCESS, ET)), true, 'isPermitted: Permit');
  t.equal(await isPermitted(request(P2, [E], OBS, ACCESS, ET)), false, 'isPermitted: Deny');
  t.equal(await isPermitted(request(P0, [N], OBS, ACCESS, ET)), false, 'isPermitted: NoConsent');
  t.equal(await isPermitted(request(P0, [U], OBS, ACCESS, ET)), false, 'isPermitted: ActorNotApproved');
});

t.test('decide: the opt-out model implies treatment for approved actors', async (t) => {
  const { send, decide, isPermitted } = await deployConsentRegistry(chain);
  const [A, E, U] = [key('Practitioner/a'), key('Practitioner/emergency'), key('Practitioner/unapproved')];
  await send('approveActor', A, false);
  await send('approveActor', E, true);
  const P = key('Patient/1');
  t.same(await decide(P, [A], OBS, ACCESS, bit(TREAT)), ['NoConsent', undefined], 'opt-in (unset): nothing implied');
  await send('setModel', OPT_OUT, false);

  const purposeCases: [string, bigint, string][] = [
    ['TREAT', bit(TREAT), 'Implied'],
    ['ETREAT', bit(ETREAT), 'Implied'],
    ['TREAT and ETREAT', bit(TREAT) | bit(ETREAT), 'Implied'],
    ['TREAT and HPAYMT', bit(TREAT) | bit(HPAYMT), 'NoConsent'],
    ['HRESCH', bit(HRESCH), 'NoConsent'],
    ['no purpose', 0n, 'NoConsent'],
  ];
  for (const [name, purposes, expected] of purposeCases) t.same(await decide(P, [A], OBS, ACCESS, purposes), [expected, undefined], `opt-out, ${name}`);
  t.same(await decide(P, [U], OBS, ACCESS, bit(TREAT)), ['ActorNotApproved', undefined], 'only for approved actors');
  t.same(await decide(P, [U, A], OBS, ACCESS, bit(TREAT)), ['Implied', undefined], 'any approved request actor');
  t.same(await decide(P, [E], OBS, ACCESS, bit(ETREAT)), ['Implied', undefined], 'Implied comes before BreakGlass');
  t.same(await decide(P, [E], OBS, ACCESS, bit(ETREAT) | bit(HPAYMT)), ['BreakGlass', undefined], 'beyond treatment, break-glass still applies');
  t.equal(await isPermitted(request(P, [A], OBS, ACCESS, bit(TREAT))), true, 'isPermitted: Implied');
  t.equal(await isPermitted(request(P, [A], OBS, ACCESS, bit(HPAYMT))), false, 'isPermitted: NoConsent under opt-out');

  // Consents still decide first.
  const [C1, C2, C3] = [key('Consent/1'), key('Consent/2'), key('Consent/3')];
  await send('putConsent', C1, P, [rule({ permit: false, classes: bit(PAT) })]);
  await send('putConsent', C2, P, [rule({ actors: [A], classes: bit(COND) })]);
  t.same(await decide(P, [A], PAT, ACCESS, bit(TREAT)), ['Deny', C1], 'the patient opted out of PAT: denied');
  t.same(await decide(P, [A], COND, ACCESS, bit(TREAT)), ['Permit', C2], 'a permit: Permit, with its consent');
  t.same(await decide(P, [A], OBS, ACCESS, bit(TREAT)), ['Implied', undefined], 'no consent matches: implied');
  t.same(await decide(P, [E], PAT, ACCESS, bit(ETREAT)), ['BreakGlass', undefined], 'a deny set aside by break-glass: BreakGlass, not Implied');
  t.same(await decide(P, [A], PAT, ACCESS, bit(ETREAT)), ['Deny', C1], 'without the emergency flag the deny holds');
  await send('putConsent', C3, P, [rule({ permit: false, purposes: bit(ETREAT) })]);
  t.same(await decide(P, [E], OBS, ACCESS, bit(ETREAT)), ['Deny', C3], 'a deny for ETREAT holds under opt-out too');

  await send('setModel', OPT_IN, true);
  t.same(await decide(key('Patient/2'), [A], OBS, ACCESS, bit(TREAT)), ['NoConsent', undefined], 'forced back to opt-in: nothing implied');
});

t.test('decide: at most 4 request actors', async (t) => {
  const { registry, decide } = await deployConsentRegistry(chain);
  const actors = Array.from({ length: 5 }, (_, i) => key(`Practitioner/${i}`));
  t.same(await decide(key('Patient/1'), actors.slice(0, 4), OBS, ACCESS, bit(TREAT)), ['ActorNotApproved', undefined], '4 are fine');
  const five = request(key('Patient/1'), actors, OBS, ACCESS, bit(TREAT));
  await rejectsWithCustomError(t, registry.getFunction('decide')(five), registry, 'ConsentTooManyRequestActors', [5, 4]);
  await rejectsWithCustomError(t, registry.getFunction('isPermitted')(five), registry, 'ConsentTooManyRequestActors', [5, 4]);
});

t.test('revokeBySig and grantBySig', async (t) => {
  const f = await deployConsentRegistry(chain);
  const { registry, send, call, signRevoke, signGrant, others } = f;
  const relayer = as(registry, others[0]!); // anyone may relay a signature
  const A = key('Practitioner/a');
  const U = key('Practitioner/unapproved');
  await send('approveActor', A, false);
  const [P, P2] = [key('Patient/1'), key('Patient/2')];
  const [C1, C2, C3, C4] = [key('Consent/1'), key('Consent/2'), key('Consent/3'), key('Consent/4')];
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
  const version1 = { name: 'VellumConsentRegistry', version: '1', chainId: f.chainId, verifyingContract: f.address };
  await rejectsWithCustomError(t, revokeBySig(C1, 0, deadline, await wallet.signTypedData(version1, CONSENT_TYPES.Revoke, { consentId: C1, nonce: 0, deadline })), registry, 'ConsentBadSignature');
  t.pass('a signature for domain version 1 is refused');
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
  t.same(await f.decide(P, [A], OBS, ACCESS, bit(TREAT), deadline), ['Permit', C2], 'it no longer permits');
  await rejectsWithCustomError(t, revokeBySig(C1, 0, deadline + 7200, good), registry, 'ConsentBadNonce', [1, 0]);
  t.pass('the same signature cannot be replayed');

  // The lock: the custodian cannot put it back; revoking again is harmless.
  await rejectsWithCustomError(t, call('putConsent')(C1, P, [rule({ actors: [A] })]), registry, 'ConsentLockedByPatient', [C1]);
  t.same(eventsOf(registry, await send('revokeConsent', C1)), [], 'a custodian revocation of a locked consent changes nothing');

  // Only the patient's signed grant lifts it: nested rules, data period and tokens are all signed.
  deadline = await later();
  const profile = token(CLASS, 'profile');
  const rules = [
    rule({ permit: false, actors: [A], dataStart: 10, dataEnd: 2 ** 40 }),
    rule({ parent: 0, permit: true, classes: bit(OBS), tokens: [profile] }),
    rule({ parent: 1, permit: false, purposes: bit(HPAYMT), tokens: [token(LABEL, 'R')] }),
  ];
  const grant = await signGrant(wallet, { consentId: C1, patient: P, rules, nonce: 1, deadline });
  const tampered: [string, Rule[]][] = [
    ['another parent', rules.map((r, i) => (i === 2 ? { ...r, parent: 0 } : r))],
    ['another data period', rules.map((r, i) => (i === 0 ? { ...r, dataStart: 11 } : r))],
    ['another token', rules.map((r, i) => (i === 1 ? { ...r, tokens: [token(CLASS, 'profile 2')] } : r))],
    ['one rule fewer', rules.slice(0, 2)],
  ];
  for (const [name, other] of tampered) {
    await rejectsWithCustomError(t, grantBySig(C1, P, other, 1, deadline, grant), registry, 'ConsentBadSignature');
    t.pass(`a grant signed for other rules is refused: ${name}`);
  }
  await rejectsWithCustomError(t, grantBySig(C1, P, rules, 1, deadline, await signGrant(stranger, { consentId: C1, patient: P, rules, nonce: 1, deadline })), registry, 'ConsentBadSignature');
  t.same(eventsOf(registry, await (await grantBySig(C1, P, rules, 1, deadline, grant)).wait()), [['ConsentPut', C1, P, 'true']]);
  const [, status, locked, storedRules] = await registry.getFunction('consentOf')(C1);
  t.same([status, locked], [1n, false], 'Active and unlocked');
  t.same(plain(storedRules), rules.map(stored), 'the signed rules as written');
  t.same(await f.decide(P, [A], PAT, ACCESS, bit(TREAT), 1_000_000, { dataTime: 100, facts: [] }), ['Deny', C1], 'and they decide: A is denied PAT');
  t.same(await f.decide(P, [A], OBS, ACCESS, bit(TREAT), 1_000_000, { dataTime: 100, facts: [] }), ['Permit', C1], 'but permitted OBS');
  t.same(await f.decide(P, [A], PAT, ACCESS, bit(TREAT), 1_000_000, { dataTime: 100, facts: [profile] }), ['Permit', C1], 'except for the profile');
  t.equal(await nonceOf(P), 2n);
  await rejectsWithCustomError(t, grantBySig(C1, P, rules, 1, deadline, grant), registry, 'ConsentBadNonce', [2, 1]);
  await send('putConsent', C1, P, [rule({ actors: [A] })]);
  t.pass('unlocked, the custodian may replace it again');

  // A grant obeys the same rules as a put (signed by hand: the codec refuses such rules).
  deadline = await later();
  const signRaw = (signer: typeof wallet, id: string, patient: string, raw: Rule[], nonce: number) =>
    signer.signTypedData({ name: 'VellumConsentRegistry', version: '2', chainId: f.chainId, verifyingContract: f.address }, CONSENT_TYPES.Grant, {
      consentId: id,
      patient,
      rules: raw,
      nonce,
      deadline,
    });
  const badKind = [rule({ tokens: [token(7, 'no kind')] })];
  await rejectsWithCustomError(t, grantBySig(C3, P, badKind, 2, deadline, await signRaw(wallet, C3, P, badKind, 2)), registry, 'ConsentBadRule', [0]);
  const badParent = [rule(), rule({ parent: 1 })];
  await rejectsWithCustomError(t, grantBySig(C3, P, badParent, 2, deadline, await signRaw(wallet, C3, P, badParent, 2)), registry, 'ConsentBadRule', [1]);
  t.equal(await nonceOf(P), 2n, 'a refused grant uses no nonce');
  const unapproved = [rule({ actors: [U] })];
  t.same(
    eventsOf(registry, await (await grantBySig(C4, P, unapproved, 2, deadline, await signGrant(wallet, { consentId: C4, patient: P, rules: unapproved, nonce: 2, deadline }))).wait()),
    [['ConsentPut', C4, P, 'true']],
    'a grant may name an actor not approved yet',
  );
  const wallet2 = Wallet.createRandom();
  await send('registerWallet', P2, wallet2.address);
  const simple = [rule({ actors: [A], classes: bit(OBS) })];
  await rejectsWithCustomError(t, grantBySig(C1, P2, simple, 0, deadline, await signGrant(wallet2, { consentId: C1, patient: P2, rules: simple, nonce: 0, deadline })), registry, 'ConsentPatientMismatch', [C1]);
  t.equal(await nonceOf(P2), 0n, 'nonces are per patient, and a refused grant uses none');
  t.same(eventsOf(registry, await (await grantBySig(C3, P2, simple, 0, deadline, await signGrant(wallet2, { consentId: C3, patient: P2, rules: simple, nonce: 0, deadline }))).wait()), [['ConsentPut', C3, P2, 'true']], 'a new consent by grant');
  t.same([...(await registry.getFunction('consentsOf')(P2))], [C3]);

  // A patient may lock a consent the custodian revoked.
  await send('revokeConsent', C2);
  t.same(eventsOf(registry, await (await revokeBySig(C2, 3, deadline, await signRevoke(wallet, { consentId: C2, nonce: 3, deadline }))).wait()), [['ConsentRevoked', C2, P, 'true']]);
  await rejectsWithCustomError(t, call('putConsent')(C2, P, [rule()]), registry, 'ConsentLockedByPatient', [C2]);

  // A new wallet: the old one no longer signs.
  const wallet3 = Wallet.createRandom();
  await send('registerWallet', P, wallet3.address);
  await rejectsWithCustomError(t, revokeBySig(C1, 4, deadline, await signRevoke(wallet, { consentId: C1, nonce: 4, deadline })), registry, 'ConsentBadSignature');
  await (await revokeBySig(C1, 4, deadline, await signRevoke(wallet3, { consentId: C1, nonce: 4, deadline }))).wait();
  t.pass('the new wallet does');
  t.same(eventsOf(registry, await send('registerWallet', P, ZERO_ADDRESS)), [['WalletRegistered', P, ZERO_ADDRESS]]);
  await rejectsWithCustomError(t, revokeBySig(C2, 5, deadline, await signRevoke(wallet3, { consentId: C2, nonce: 5, deadline })), registry, 'ConsentNoWallet', [P]);
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
    rule({ parent: 0, permit: true, actors: actors.slice(0, 2), purposes: bit(TREAT) }),
    rule({ parent: 1, permit: true, actors: [actors[2]!], start: 1_700_000_000, end: 1_900_000_000, tokens: [token(CODE, 'x'), token(LABEL, 'R')] }),
  ];
  gas['putConsent 3 nested rules, 3 actors, 2 tokens'] = (await send('putConsent', key('Consent/g3'), P, three)).gasUsed;
  gas['putConsent 3 rules, replacing the same'] = (await send('putConsent', key('Consent/g3'), P, three)).gasUsed;
  gas['revokeConsent'] = (await send('revokeConsent', key('Consent/g2'))).gasUsed;
  gas['setModel (first)'] = (await send('setModel', OPT_OUT, false)).gasUsed;
  gas['requestAccess'] = (await send('requestAccess', key('Consent/r'), P, actors[0])).gasUsed;
  const wallet = Wallet.createRandom();
  await send('registerWallet', P, wallet.address);
  const deadline = (await chain.ethers.provider.getBlock('latest'))!.timestamp + 3600;
  const sig = await signRevoke(wallet, { consentId: key('Consent/g1'), nonce: 0, deadline });
  gas['revokeBySig'] = (await (await as(registry, others[0]!).getFunction('revokeBySig')(key('Consent/g1'), 0, deadline, sig)).wait()).gasUsed;
  const estimate = await registry.getFunction('decide').estimateGas(request(P, actors, OBS, ACCESS, bit(TREAT), { time: 1_800_000_000, facts: [token(CODE, 'x')] }));
  for (const [name, used] of Object.entries(gas)) t.comment(`gas ${name}: ${used}`);
  t.comment(`gas decide (one 3-rule consent in force, 3 request actors, as a transaction): ${estimate}`);
  t.ok(gas['putConsent 1 rule, any actor']! < 200_000n, 'a one-rule consent stays under 200k gas');
  t.ok(gas['putConsent 3 nested rules, 3 actors, 2 tokens']! < 450_000n, 'a three-rule consent stays under 450k gas');
  t.ok(gas['revokeBySig']! < 80_000n, 'revokeBySig stays under 80k gas');
  t.ok(gas['approveActor (first)']! < 60_000n, 'approveActor stays under 60k gas');
  t.ok(gas['requestAccess']! < 40_000n, 'requestAccess is an event: under 40k gas');
});
