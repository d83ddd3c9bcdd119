/**
 * src/chain/consent-ledger.ts through the embedded ledger: the consent registry is deployed on
 * first start (and on the first start of a data dir that predates it), writes go through
 * Vellum's sender and are answered by the contract (`decide` of a request with a purposes mask,
 * data time and facts; the consent model; access requests), events come back in chain order,
 * reverts become VLM_CONSENT_* codes, a patient-signed revocation sent straight to the chain by another
 * account locks the consent, and everything survives a restart (same address, same state,
 * events replayable from block 0). The RPC ledger (against `hardhat node` in its own process)
 * deploys one or finds it by address, and exposes the same client.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import { Transaction, Wallet } from 'ethers';
import { encodeRevokeBySig, type DecideRequest, type Rule } from '../../src/chain/consent-registry.ts';
import { ANCHORER_LABEL, derivePrivateKey, openEmbeddedLedger, type EmbeddedLedger } from '../../src/chain/embedded-chain.ts';
import { toHex } from '../../src/chain/merkle.ts';
import { encodeAnchor } from '../../src/chain/registry.ts';
import { openRpcLedger } from '../../src/chain/rpc-chain.ts';
import { HARDHAT_KEYS, freePort, manifestCid, randomRoot, rejectsCode, startHardhatNode } from './chain-helpers.ts';

function tempDir(t: Test): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-consent-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const logFile = (dataDir: string): string => path.join(dataDir, 'chain', 'transactions.log');
const logLines = (dataDir: string): { hash: string; block: number; timestamp: number; raw: string }[] =>
  fs.readFileSync(logFile(dataDir), 'utf8').trim().split('\n').map((l) => JSON.parse(l));

const key = (n: number): string => `0x${n.toString(16).padStart(64, '0')}`;
const bit = (i: number): bigint => 1n << BigInt(i);
const rule = (over: Partial<Rule> = {}): Rule => ({
  parent: 0,
  permit: true,
  actors: [],
  classes: 0n,
  actions: 0,
  purposes: 0n,
  start: 0,
  end: 0,
  dataStart: 0,
  dataEnd: 0,
  tokens: [],
  ...over,
});
const now = (): number => Math.floor(Date.now() / 1000);
/** A data token of `kind` (its first byte). */
const token = (kind: number, n: number): string => `0x${kind.toString(16).padStart(2, '0')}${n.toString(16).padStart(62, '0')}`;
/** A `decide` request for purpose `purpose` (an index) or the mask `purposes`. */
const req = (
  patient: string,
  actors: string[],
  resourceClass: number,
  action: number,
  purposes: number | bigint,
  time: number,
  extras: { dataTime?: number; facts?: string[] } = {},
): DecideRequest => ({
  patient,
  actors,
  resourceClass,
  action,
  purposes: typeof purposes === 'number' ? bit(purposes) : purposes,
  time,
  dataTime: extras.dataTime ?? 0,
  facts: extras.facts ?? [],
});

const OBS = 5;
const PAT = 7;
const ACCESS = 0;
const TREAT = 0;
const ETREAT = 1;
const HPAYMT = 2;
const CODE = 4;
const LABEL = 5;
const [A, B, E, U] = [key(0xa1), key(0xb1), key(0xe1), key(0xf1)];
const [P, P2] = [key(0x1001), key(0x1002)];
const [C1, C2, C3] = [key(0xc1), key(0xc2), key(0xc3)];

const dataDir = tempDir(t);
let ledger: EmbeddedLedger = await openEmbeddedLedger({ dataDir });
t.teardown(() => ledger.close());
const patientWallet = Wallet.createRandom();

t.test('first start deploys both registries', async (t) => {
  t.match(ledger.consents.contract, /^0x[0-9a-fA-F]{40}$/);
  t.not(ledger.consents.contract, ledger.contract, 'a contract of its own');
  t.equal(ledger.consents.chainId, 31337);
  t.equal(logLines(dataDir).length, 2, 'both deployments are logged');
  t.equal(await ledger.consents.head(), 2, 'two blocks');
  t.equal(await ledger.consents.nonces(P), 0n);
  t.equal(await ledger.consents.walletOf(P), undefined);
  t.equal(await ledger.consents.consentOf(C1), undefined, 'an unknown consent');
});

t.test('approve, put, decide, revoke — and the events, in order', async (t) => {
  const c = ledger.consents;
  const from = (await c.head()) + 1;
  const receipts = [];
  receipts.push(await c.approve(A, false));
  receipts.push(await c.approve(E, true));
  t.same(await c.approvalOf(A), { approved: true, emergency: false });
  t.same(await c.approvalOf(E), { approved: true, emergency: true });
  const rules = [
    rule({ actors: [A], classes: bit(OBS) | bit(PAT) }),
    rule({ parent: 0, permit: false, classes: bit(PAT), start: 1_000, end: 2 ** 40 }),
    rule({ parent: 1, permit: true, dataStart: 100, tokens: [token(CODE, 1), token(CODE, 2), token(LABEL, 3)] }),
  ];
  receipts.push(await c.put(C1, P, rules));
  t.same(await c.consentOf(C1), { id: C1, patient: P, status: 'active', lockedByPatient: false, rules }, 'consentOf gives back what was put');
  t.same(await c.consentsOf(P), [C1]);
  t.same(await c.decide(req(P, [A], OBS, ACCESS, TREAT, now())), { decision: 'Permit', consentId: C1 });
  t.same(await c.decide(req(P, [A], PAT, ACCESS, TREAT, now())), { decision: 'Deny', consentId: C1 });
  t.same(await c.decide(req(P, [A], PAT, ACCESS, TREAT, 999)), { decision: 'Permit', consentId: C1 }, 'before the exception’s period');
  t.same(await c.decide(req(P, [A], PAT, ACCESS, TREAT, now(), { dataTime: 100, facts: [token(LABEL, 3), token(CODE, 2)] })), { decision: 'Permit', consentId: C1 }, 'the nested permit, by the data’s facts and time');
  t.same(await c.decide(req(P, [A], PAT, ACCESS, TREAT, now(), { dataTime: 99, facts: [token(LABEL, 3), token(CODE, 2)] })), { decision: 'Deny', consentId: C1 }, 'recorded before its data period');
  t.same(await c.decide(req(P, [A], PAT, ACCESS, TREAT, now(), { dataTime: 100, facts: [token(CODE, 2)] })), { decision: 'Deny', consentId: C1 }, 'without the label');
  t.same(await c.decide(req(P, [E], PAT, ACCESS, ETREAT, now())), { decision: 'BreakGlass', consentId: undefined });
  t.same(await c.decide(req(P, [E], PAT, ACCESS, bit(TREAT) | bit(ETREAT), now())), { decision: 'BreakGlass', consentId: undefined }, 'ETREAT among several purposes');
  t.same(await c.decide(req(P, [U], OBS, ACCESS, TREAT, now())), { decision: 'ActorNotApproved', consentId: undefined });
  t.equal(await c.isPermitted(req(P, [A], OBS, ACCESS, TREAT, now())), true);
  t.equal(await c.isPermitted(req(P, [A], PAT, ACCESS, TREAT, now())), false);
  const putBlock = receipts[2]!.blockNumber;
  t.same(await c.decide(req(P, [A], OBS, ACCESS, TREAT, now()), { blockTag: putBlock - 1 }), { decision: 'NoConsent', consentId: undefined }, 'as of the block before the put');

  receipts.push(await c.revoke(C1));
  t.same(await c.decide(req(P, [A], OBS, ACCESS, TREAT, now())), { decision: 'NoConsent', consentId: undefined }, 'revoked');
  t.equal((await c.consentOf(C1))!.status, 'revoked');
  receipts.push(await c.registerWallet(P, patientWallet.address));
  t.equal(await c.walletOf(P), patientWallet.address);
  receipts.push(await c.recordEmergencyAccess(P, E, PAT, ETREAT));
  receipts.push(await c.revokeApproval(B));
  receipts.push(await c.put(C1, P, rules));

  const blocks = receipts.map((r) => r.blockNumber);
  t.same(blocks, [...blocks].sort((a, b) => a - b), 'writes are mined in the order they were made');
  const events = await c.events(from);
  t.same(
    events.map((e) => e.type),
    ['ActorApproved', 'ActorApproved', 'ConsentPut', 'ConsentRevoked', 'WalletRegistered', 'EmergencyAccess', 'ActorApprovalRevoked', 'ConsentPut'],
    'one event per write, in chain order',
  );
  t.same(events.map((e) => e.txHash), receipts.map((r) => r.txHash), 'each with its transaction');
  t.same(events.map((e) => e.blockNumber), blocks, 'and block');
  t.match(events[0], { type: 'ActorApproved', actor: A, emergency: false });
  t.match(events[2], { type: 'ConsentPut', id: C1, patient: P, bySignature: false });
  t.match(events[3], { type: 'ConsentRevoked', id: C1, patient: P, bySignature: false });
  t.match(events[4], { type: 'WalletRegistered', patient: P, wallet: patientWallet.address });
  t.match(events[5], { type: 'EmergencyAccess', patient: P, actor: E, resourceClass: PAT, purpose: ETREAT });
  t.same(await c.events(from, from), events.slice(0, 1), 'a bounded range');

  // Consent writes and anchors share one account and one nonce sequence.
  const [anchored, put] = await Promise.all([ledger.anchor(randomRoot(), 1, manifestCid('mixed')), c.put(C3, P2, [rule({ actors: [A] })])]);
  t.not(anchored.blockNumber, put.blockNumber, 'anchor and consent write, concurrently, each mined');
});

t.test('reverts become VLM_CONSENT_* codes', async (t) => {
  const c = ledger.consents;
  await rejectsCode(t, c.revoke(key(0xdead)), 'VLM_CONSENT_UNKNOWN', 'invalid');
  await rejectsCode(t, c.put(C1, P2, [rule()]), 'VLM_CONSENT_PATIENT_MISMATCH', 'invalid');
  await rejectsCode(t, c.put(C2, P, Array.from({ length: 33 }, () => rule())), 'VLM_CONSENT_LIMIT', 'invalid');
  await rejectsCode(t, c.put(C2, P, [rule({ tokens: Array.from({ length: 33 }, (_, i) => token(CODE, i + 1)) })]), 'VLM_CONSENT_LIMIT', 'invalid');
  await rejectsCode(t, c.put(C2, P, [rule(), rule({ parent: 1 })]), 'VLM_CONSENT_BAD_RULE', 'invalid');
  await rejectsCode(t, c.put(C2, P, [rule({ tokens: [token(7, 1)] })]), 'VLM_CONSENT_BAD_RULE', 'invalid');
  await rejectsCode(t, c.put(C2, P, [rule({ tokens: [token(0, 1)] })]), 'VLM_CONSENT_BAD_RULE', 'invalid');
  await rejectsCode(t, c.decide(req(P, [A, B, E, U, key(9)], OBS, ACCESS, TREAT, now())), 'VLM_CONSENT_LIMIT', 'invalid');
  await rejectsCode(t, c.put('0x1234', P, [rule()]), 'VLM_CONSENT_BAD_KEY', 'invalid');
  await rejectsCode(t, c.put(C2, P, []), 'VLM_CONSENT_BAD_RULE', 'invalid');
  await rejectsCode(t, c.put(C2, P, [rule({ actions: 70_000 })]), 'VLM_CONSENT_BAD_RULE', 'invalid');

  const deadline = now() + 3600;
  const sign = (wallet: Wallet | ReturnType<typeof Wallet.createRandom>, consentId: string, nonce: number, dl = deadline) => {
    const td = c.typedData('Revoke', { consentId, nonce, deadline: dl });
    return wallet.signTypedData(td.domain, td.types, td.message);
  };
  await rejectsCode(t, c.relayRevokeBySig(C1, 0, 1, await sign(patientWallet, C1, 0, 1)), 'VLM_CONSENT_EXPIRED', 'invalid');
  await rejectsCode(t, c.relayRevokeBySig(C1, 5, deadline, await sign(patientWallet, C1, 5)), 'VLM_CONSENT_BAD_NONCE', 'invalid');
  await rejectsCode(t, c.relayRevokeBySig(C1, 0, deadline, await sign(Wallet.createRandom(), C1, 0)), 'VLM_CONSENT_BAD_SIGNATURE', 'invalid');
  await rejectsCode(t, c.relayRevokeBySig(C3, 0, deadline, await sign(patientWallet, C3, 0)), 'VLM_CONSENT_BAD_SIGNATURE', 'invalid'); // P2 has no wallet
  t.equal(await c.nonces(P), 0n, 'nothing was used up');
});

t.test('unapproved actors, the consent model and access requests', async (t) => {
  const c = ledger.consents;
  const from = (await c.head()) + 1;
  const [P3, C4, C5] = [key(0x1003), key(0xc4), key(0xc5)];

  // A permit may name an actor not approved yet: the put succeeds, decide does not permit it.
  await c.put(C4, P3, [rule({ actors: [U] })]);
  t.same(await c.decide(req(P3, [U], OBS, ACCESS, TREAT, now())), { decision: 'ActorNotApproved', consentId: undefined }, 'named, not approved');
  await c.approve(U, false);
  t.same(await c.decide(req(P3, [U], OBS, ACCESS, TREAT, now())), { decision: 'Permit', consentId: C4 }, 'approved later: permitted');
  await c.revokeApproval(U);

  // The model: opt-in until set; a change needs force.
  t.same(await c.model(), { model: 'opt-in', set: false }, 'unset');
  const P4 = key(0x1004);
  t.same(await c.decide(req(P4, [A], OBS, ACCESS, TREAT, now())), { decision: 'NoConsent', consentId: undefined });
  const setAt = (await c.setModel('opt-out', false)).blockNumber;
  t.same(await c.model(), { model: 'opt-out', set: true });
  t.same(await c.model({ blockTag: setAt - 1 }), { model: 'opt-in', set: false }, 'as of the block before');
  t.same(await c.decide(req(P4, [A], OBS, ACCESS, bit(TREAT) | bit(ETREAT), now())), { decision: 'Implied', consentId: undefined }, 'opt-out implies treatment');
  t.same(await c.decide(req(P4, [A], OBS, ACCESS, bit(TREAT) | bit(HPAYMT), now())), { decision: 'NoConsent', consentId: undefined }, 'and nothing else');
  t.same(await c.decide(req(P4, [U], OBS, ACCESS, TREAT, now())), { decision: 'ActorNotApproved', consentId: undefined }, 'for approved actors only');
  t.equal(await c.isPermitted(req(P4, [A], OBS, ACCESS, TREAT, now())), true, 'isPermitted: Implied');
  await c.setModel('opt-out', false);
  t.pass('the same model again is fine');
  await rejectsCode(t, c.setModel('opt-in', false), 'VLM_CONSENT_MODEL_CHANGE', 'invalid');
  await rejectsCode(t, c.setModel('none' as never, true), 'VLM_CONSENT_BAD_RULE', 'invalid');
  await c.setModel('opt-in', true);
  t.same(await c.model(), { model: 'opt-in', set: true }, 'forced back');
  t.same(await c.decide(req(P4, [A], OBS, ACCESS, TREAT, now())), { decision: 'NoConsent', consentId: undefined });

  // Access requests are events; the answer too; nothing is in force until put.
  await c.requestAccess(C5, P3, A);
  t.equal(await c.consentOf(C5), undefined, 'a request writes no consent');
  await c.answerRequest(C5, P3, true);
  await c.put(C5, P3, [rule({ actors: [A], classes: bit(OBS) })]);
  t.same(await c.decide(req(P3, [A], OBS, ACCESS, TREAT, now())), { decision: 'Permit', consentId: C5 });
  await c.answerRequest(key(0xc6), P3, false);
  await rejectsCode(t, c.requestAccess(C5, P3, `0x${'0'.repeat(64)}`), 'VLM_CONSENT_BAD_KEY', 'invalid');

  const events = await c.events(from);
  t.same(
    events.map((e) => e.type),
    [
      'ConsentPut',
      'ActorApproved',
      'ActorApprovalRevoked',
      'ConsentModelSet',
      'ConsentModelSet',
      'AccessRequested',
      'AccessRequestAnswered',
      'ConsentPut',
      'AccessRequestAnswered',
    ],
    'an unchanged model emits nothing',
  );
  t.match(events[3], { type: 'ConsentModelSet', model: 'opt-out', forced: false });
  t.match(events[4], { type: 'ConsentModelSet', model: 'opt-in', forced: true });
  t.match(events[5], { type: 'AccessRequested', id: C5, patient: P3, requester: A });
  t.match(events[6], { type: 'AccessRequestAnswered', id: C5, patient: P3, approved: true });
  t.match(events[8], { type: 'AccessRequestAnswered', id: key(0xc6), patient: P3, approved: false });
});

t.test("a patient's revokeBySig sent straight to the chain by another account", async (t) => {
  const c = ledger.consents;
  await c.put(C2, P, [rule({ actors: [A] })]);
  t.same(await c.decide(req(P, [A], OBS, ACCESS, TREAT, now())), { decision: 'Permit', consentId: C1 });
  const deadline = now() + 3600;
  const td = c.typedData('Revoke', { consentId: C2, nonce: 0, deadline });
  const signature = await patientWallet.signTypedData(td.domain, td.types, td.message);
  const relayer = Wallet.createRandom(); // neither Vellum's account nor the patient's
  const data = encodeRevokeBySig(C2, 0, deadline, signature);
  const from = (await c.head()) + 1;

  const sent = await ledger.sendRawTransaction(await relayer.signTransaction(await ledger.prepareTransaction({ from: relayer.address, to: c.contract, data })));
  t.equal(sent.status, 1, 'mined');
  t.match(await c.consentOf(C2), { status: 'revoked', lockedByPatient: true }, 'revoked and locked');
  t.equal(await c.nonces(P), 1n);
  t.match(await c.events(from), [{ type: 'ConsentRevoked', id: C2, patient: P, bySignature: true, txHash: sent.txHash, blockNumber: sent.blockNumber }]);
  await rejectsCode(t, c.put(C2, P, [rule({ actors: [A] })]), 'VLM_CONSENT_LOCKED', 'invalid');

  const replayed = await ledger.sendRawTransaction(await relayer.signTransaction(await ledger.prepareTransaction({ from: relayer.address, to: c.contract, data })));
  t.equal(replayed.status, 0, 'the same signature again is mined reverted (and logged)');
  await rejectsCode(t, ledger.sendRawTransaction(await relayer.signTransaction({ ...(await ledger.prepareTransaction({ from: relayer.address, to: c.contract, data })), chainId: 1 })), 'VLM_CHAIN_WRONG_CHAIN', 'invalid');

  // Only the patient's grant lifts the lock; Vellum may relay it.
  const rules = [rule({ actors: [A], classes: bit(PAT) })];
  const grant = c.typedData('Grant', { consentId: C2, patient: P, rules, nonce: 1, deadline });
  const grantSig = await patientWallet.signTypedData(grant.domain, grant.types, grant.message);
  await c.relayGrantBySig(C2, P, rules, 1, deadline, grantSig);
  t.match(await c.consentOf(C2), { status: 'active', lockedByPatient: false, rules });
  await c.put(C2, P, rules);
  t.pass('unlocked: the custodian may write it again');
  await rejectsCode(t, c.relayGrantBySig(C2, P, rules, 1, deadline, grantSig), 'VLM_CONSENT_BAD_NONCE', 'invalid');
});

t.test('restart: same address, same state, events replayable from block 0', async (t) => {
  const c = ledger.consents;
  const before = {
    contract: ledger.contract,
    consents: c.contract,
    events: await c.events(0),
    c1: await c.consentOf(C1),
    c2: await c.consentOf(C2),
    nonce: await c.nonces(P),
    decide: await c.decide(req(P, [A], PAT, ACCESS, TREAT, now())),
    approval: await c.approvalOf(E),
    model: await c.model(),
    batches: await ledger.batches(),
  };
  t.ok(before.events.length >= 12, 'a history to replay');
  await ledger.close();
  await rejectsCode(t, c.head(), 'VLM_CHAIN_CLOSED');
  await rejectsCode(t, ledger.sendRawTransaction('0x00'), 'VLM_CHAIN_BAD_HEX');
  ledger = await openEmbeddedLedger({ dataDir });
  const d = ledger.consents;
  t.equal(ledger.replayed, logLines(dataDir).length, 'every logged transaction replayed, the reverted one included');
  t.same(
    {
      contract: ledger.contract,
      consents: d.contract,
      events: await d.events(0),
      c1: await d.consentOf(C1),
      c2: await d.consentOf(C2),
      nonce: await d.nonces(P),
      decide: await d.decide(req(P, [A], PAT, ACCESS, TREAT, now())),
      approval: await d.approvalOf(E),
      model: await d.model(),
      batches: await ledger.batches(),
    },
    before,
    'same addresses, events (hashes and blocks included), consents, nonces, decisions, model and anchors',
  );
  const lines = logLines(dataDir).length;
  await d.put(C3, P2, [rule({ actors: [A], classes: bit(OBS) })]);
  t.equal(logLines(dataDir).length, lines + 1, 'writes continue, logged');
  t.same(await d.decide(req(P2, [A], OBS, ACCESS, TREAT, now())), { decision: 'Permit', consentId: C3 });
});

t.test('a data dir from before the consent registry gets one on its next start', async (t) => {
  // Build the log of an older Vellum: the AnchorRegistry deployment, then three anchors.
  const dir = tempDir(t);
  const first = await openEmbeddedLedger({ dataDir: dir });
  const anchorRegistry = first.contract;
  await first.close();
  const [deploy] = logLines(dir);
  const secret = new Uint8Array(Buffer.from(fs.readFileSync(path.join(dir, 'chain', 'anchorer.key'), 'utf8').trim(), 'hex'));
  const wallet = new Wallet(derivePrivateKey(secret, ANCHORER_LABEL));
  const template = Transaction.from(deploy!.raw);
  const roots = [randomRoot(), randomRoot(), randomRoot()];
  const lines = [deploy!];
  for (let i = 0; i < roots.length; i++) {
    const raw = await wallet.signTransaction({
      type: 2,
      chainId: 31337,
      nonce: i + 1,
      to: anchorRegistry,
      data: encodeAnchor(toHex(roots[i]!), 1, manifestCid(`legacy ${i}`)),
      gasLimit: 200_000n,
      maxFeePerGas: template.maxFeePerGas,
      maxPriorityFeePerGas: template.maxPriorityFeePerGas,
    });
    lines.push({ hash: Transaction.from(raw).hash!, block: deploy!.block + i + 1, timestamp: deploy!.timestamp, raw });
  }
  fs.writeFileSync(logFile(dir), lines.map((l) => `${JSON.stringify({ v: 1, ...l })}\n`).join(''));

  let l = await openEmbeddedLedger({ dataDir: dir });
  t.equal(l.replayed, 4, 'the legacy log replays');
  t.equal(l.contract, anchorRegistry, 'the same anchor registry');
  for (const root of roots) t.ok(await l.anchoredAt(root), 'legacy anchors answer');
  t.equal(logLines(dir).length, 5, 'the consent registry deployment is appended');
  const address = l.consents.contract;
  await l.consents.approve(A, false);
  await l.consents.put(C1, P, [rule({ actors: [A] })]);
  await l.close();

  l = await openEmbeddedLedger({ dataDir: dir });
  t.teardown(() => l.close());
  t.equal(l.consents.contract, address, 'found again at the same address on the next start');
  t.equal(logLines(dir).length, 7, 'and not deployed twice');
  t.same(await l.consents.decide(req(P, [A], OBS, ACCESS, TREAT, now())), { decision: 'Permit', consentId: C1 });
  t.equal((await l.anchor(randomRoot(), 1, manifestCid('after'))).batchId, 4, 'anchoring continues');
});

t.test('the RPC ledger: deployed with the anchor registry, or found by address', async (t) => {
  const node = await startHardhatNode(await freePort());
  t.teardown(() => node.stop());
  const base = { rpcUrl: node.url, privateKey: HARDHAT_KEYS[0], chainId: 31337, confirmations: 1, pollIntervalMs: 20 };
  const first = await openRpcLedger({ ...base, deploy: true });
  t.teardown(() => first.close());
  t.ok(first.consents && first.deployedConsent, 'deploy: true deploys a consent registry too');
  const consents = first.consents!;
  await consents.approve(A, false);
  await consents.put(C1, P, [rule({ actors: [A] })]);
  t.same(await consents.decide(req(P, [A], OBS, ACCESS, TREAT, now())), { decision: 'Permit', consentId: C1 });

  const again = await openRpcLedger({ ...base, contract: first.contract, consentContract: consents.contract });
  t.teardown(() => again.close());
  t.equal(again.deployedConsent, undefined, 'found by address, not deployed');
  t.same(await again.consents!.events(0), await consents.events(0), 'the same registry');
  const without = await openRpcLedger({ ...base, contract: first.contract });
  t.teardown(() => without.close());
  t.equal(without.consents, undefined, 'neither configured nor deployed: no consents');
  await rejectsCode(t, openRpcLedger({ ...base, contract: first.contract, consentContract: first.contract }), 'VLM_CHAIN_CONTRACT_MISSING', 'fault');
  await rejectsCode(t, openRpcLedger({ ...base, contract: first.contract, consentContract: '0x12' }), 'VLM_CHAIN_BAD_OPTION', 'invalid');
  // Another account may anchor only if granted; here it is not even a custodian.
  await rejectsCode(
    t,
    openRpcLedger({ ...base, privateKey: HARDHAT_KEYS[1], deploy: true, consentContract: consents.contract }),
    'VLM_CONSENT_NOT_AUTHORIZED',
    'fault',
  );
});
