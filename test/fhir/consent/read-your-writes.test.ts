/**
 * Read-your-writes of consent changes made through Vellum (issue 12): `ConsentService.syncTo(block)`
 * must not resolve with a poll that was already in flight when the write was mined — that poll read
 * the chain's head before the write's block, so resolving with it left a fresh grant unseen (403) or
 * a fresh revocation still permitting for one poll. The chain is a fake whose head reads can be held
 * (after the head is read), so the poll is in flight deterministically.
 */
import t from 'tap';
import { ConsentService, type ConsentChain } from '../../../src/fhir/consent/service.ts';
import type { ConsentEvent } from '../../../src/chain/consent-registry.ts';
import type { Principal } from '../../../src/fhir/auth/verify.ts';
import { openProvision } from './harness.ts';

function heldChain() {
  const events: ConsentEvent[] = [];
  const consents = new Map<string, unknown>();
  let hold: Promise<void> | undefined;
  let release: (() => void) | undefined;
  let reading: (() => void) | undefined;
  const chain = {
    // The head is read first, then the poll is held: it stays in flight with a head from before
    // whatever is mined meanwhile (a poll that finds nothing new never reads events).
    head: async () => {
      const snapshot = events.length - 1;
      reading?.();
      if (hold) await hold;
      return snapshot;
    },
    events: async (from: number, to: number) => events.filter((e) => e.blockNumber >= from && e.blockNumber <= to),
    consentOf: async (id: string) => consents.get(id),
    recordEmergencyAccess: async () => undefined,
    consentModel: async () => undefined,
  } as unknown as ConsentChain;
  return {
    chain,
    events,
    consents,
    /** Hold the next poll right after it read the head; resolves once a poll is held there. */
    holdNextRead(): Promise<void> {
      hold = new Promise<void>((r) => (release = r));
      return new Promise<void>((r) => (reading = r));
    },
    release() {
      reading = undefined;
      const r = release;
      hold = undefined;
      release = undefined;
      r?.();
    },
  };
}

t.test('syncTo waits past a poll that read the head before the write was mined', async (t) => {
  const fake = heldChain();
  const service = new ConsentService({ chain: fake.chain, key: new Uint8Array(32).fill(3) });
  const dr = service.keyOf('Practitioner/dr');
  const patient = service.patientKeyOfScope('scope-p', true);
  fake.events.push({ type: 'ActorApproved', actor: dr, emergency: false, blockNumber: 0, logIndex: 0, txHash: '0x' });
  await service.sync();
  const gate = () => service.gate([dr], { purposeOfUse: 'TREAT' } as unknown as Principal, []);
  t.notOk(gate().allowed('Observation', 'scope-p'), 'no consent yet');

  // A poll is in flight: it read head 0 and is held there.
  const inside = fake.holdNextRead();
  const poll = service.sync();
  await inside;
  // Meanwhile a grant is mined at block 1.
  fake.consents.set('0x01', { patient, status: 'active', lockedByPatient: false, rules: [openProvision({ effect: 'permit', actors: [dr] })] });
  fake.events.push({ type: 'ConsentPut', id: '0x01', patient, bySignature: false, blockNumber: 1, logIndex: 0, txHash: '0x' });
  let done = false;
  const waiting = service.syncTo(1).then(() => (done = true));
  // The poll in flight ends (with head 0): syncTo must not count it.
  fake.release();
  await poll;
  t.equal(service.syncedBlock, 0, 'the poll in flight ended below the grant');
  await waiting;
  t.ok(done);
  t.equal(service.syncedBlock, 1);
  t.ok(gate().allowed('Observation', 'scope-p'), 'the very next request sees the grant');

  // The same for a revocation, with a poll held again.
  const inside2 = fake.holdNextRead();
  const poll2 = service.sync();
  await inside2;
  fake.events.push({ type: 'ConsentRevoked', id: '0x01', patient, bySignature: false, blockNumber: 2, logIndex: 0, txHash: '0x' });
  const waiting2 = service.syncTo(2);
  fake.release();
  await poll2;
  await waiting2;
  t.notOk(gate().allowed('Observation', 'scope-p'), 'the very next request sees the revocation');
});

t.test('ensureFresh holds gated requests until the cache reaches the last write made through Vellum', async (t) => {
  const fake = heldChain();
  const service = new ConsentService({ chain: fake.chain, key: new Uint8Array(32).fill(3) });
  await service.sync();
  fake.events.push({ type: 'ActorApproved', actor: service.keyOf('Practitioner/x'), emergency: false, blockNumber: 0, logIndex: 0, txHash: '0x' });
  // A write's syncTo failed (the chain stopped answering): the required block stays recorded.
  const broken = { ...fake.chain, head: async () => Promise.reject(new Error('down')) } as unknown as ConsentChain;
  const failing = new ConsentService({ chain: broken, key: new Uint8Array(32).fill(3) });
  await t.rejects(failing.syncTo(5));
  const refused = await failing.ensureFresh().then(
    () => undefined,
    (err: unknown) => err,
  );
  t.equal((refused as { status?: number } | undefined)?.status, 503, 'no decision without the write');
  // With a chain that answers, ensureFresh catches up to the required block first.
  await service.syncTo(0);
  await service.ensureFresh();
  t.equal(service.syncedBlock, 0);
});
