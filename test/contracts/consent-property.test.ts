/**
 * The contract and its mirror decide alike: a seeded, deterministic property test. Each world is
 * a fresh ConsentRegistry on the in-process chain and a fresh `ConsentState`
 * (src/fhir/consent/policy.ts), fed the same random history — consents that are random trees of
 * rules (parents anywhere before, permit/deny, actors, classes, actions, purposes, periods, data
 * periods, tokens of every kind, all drawn from small pools so they meet), several per patient,
 * replaced, revoked by the custodian or by the patient's signature (which locks), granted by
 * signature; actors approved with or without the emergency flag and unapproved again; the model
 * set, kept, refused a change or forced — and then random requests (actors, class, action, a
 * purposes mask, time, data time, facts from the same pools). Every write must succeed on both or
 * be refused by both with the same error, and every request must get the same decision and the
 * same deciding consent (and the same `isPermitted`). A failure prints the world's seed and the
 * request, so it can be replayed alone with CONSENT_PROPERTY_SEED.
 *
 * CONSENT_PROPERTY_WORLDS (default 40) and CONSENT_PROPERTY_REQUESTS (default 30 per phase, two
 * phases per world) scale it; CONSENT_PROPERTY_SEED runs the one world of that seed.
 */
import t from 'tap';
import { Wallet, type Contract } from 'ethers';
import type { Rule } from '../../src/chain/consent-registry.ts';
import { ConsentState, ConsentStateError, isPermitted, type DecisionKind } from '../../src/fhir/consent/policy.ts';
import { revertData, startChain } from './chain.ts';
import { ZERO32, as, bit, deployConsentRegistry, key, type RequestTuple } from './consent-helpers.ts';

const WORLDS = Number(process.env.CONSENT_PROPERTY_WORLDS ?? 40);
const REQUESTS = Number(process.env.CONSENT_PROPERTY_REQUESTS ?? 30);
const ONLY_SEED = process.env.CONSENT_PROPERTY_SEED === undefined ? undefined : Number(process.env.CONSENT_PROPERTY_SEED);
const BASE_SEED = 0x5eed_c0de;

/** mulberry32: small, fast, and the same everywhere. */
function prng(seed: number) {
  let a = seed >>> 0;
  const next = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let r = Math.imul(a ^ (a >>> 15), 1 | a);
    r = (r + Math.imul(r ^ (r >>> 7), 61 | r)) ^ r;
    return ((r ^ (r >>> 14)) >>> 0) / 4294967296;
  };
  const int = (lo: number, hi: number): number => lo + Math.floor(next() * (hi - lo + 1));
  const chance = (p: number): boolean => next() < p;
  const pick = <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)]!;
  const some = <T>(items: readonly T[], p: number): T[] => items.filter(() => next() < p);
  const several = <T>(items: readonly T[], lo: number, hi: number): T[] => Array.from({ length: int(lo, hi) }, () => pick(items));
  return { next, int, chance, pick, some, several };
}
type Rng = ReturnType<typeof prng>;

// ------------------------------------------------------------------ pools

const lower = (hex: string): string => hex.toLowerCase();
const tok = (kind: number, ref: string): string => lower(`0x${kind.toString(16).padStart(2, '0')}${key(ref).slice(4)}`);
/** Two tokens of each kind, custodian (1) to data (6). */
const TOKENS: readonly string[] = [1, 2, 3, 4, 5, 6].flatMap((kind) => [tok(kind, `pool ${kind}a`), tok(kind, `pool ${kind}b`)]);
const STRAY_TOKEN = tok(4, 'stray'); // never in a rule
const CLASSES = [5, 7, 40, 200] as const;
const ACTIONS = [0, 1, 2, 3, 4] as const;
const RULE_PURPOSES = [0, 1, 2, 3] as const; // TREAT, ETREAT, HPAYMT, HRESCH
const RULE_TIMES = [100, 200, 300] as const;
const REQUEST_TIMES = [50, 100, 150, 200, 250, 300, 350] as const;
const REQUEST_DATA_TIMES = [0, 50, 100, 150, 200, 300, 350] as const;
/** Actors 0..4 may be approved; 5 never is. */
const ACTORS: readonly string[] = Array.from({ length: 6 }, (_, i) => lower(key(`Practitioner/pool-${i}`)));
const PATIENTS: readonly string[] = [lower(key('Patient/p0')), lower(key('Patient/p1'))];
const STRANGER_PATIENT = lower(key('Patient/nobody'));
const PATIENT_WALLET = new Wallet(`0x${'4b'.repeat(32)}`);
const DEADLINE = 2 ** 40;
const MODELS = ['opt-in', 'opt-out'] as const;

const CONTRACT_DECISION: Readonly<Record<string, DecisionKind>> = {
  NoConsent: 'no-consent',
  Permit: 'permit',
  Deny: 'deny',
  BreakGlass: 'break-glass',
  ActorNotApproved: 'actor-not-approved',
  Implied: 'implied',
};
const DECISION_NAMES = ['NoConsent', 'Permit', 'Deny', 'BreakGlass', 'ActorNotApproved', 'Implied'] as const;

// ------------------------------------------------------------------ generators

function randomRule(r: Rng, i: number): Rule {
  // The root carries fewer conditions, so that it matches often and the nested rules get to decide.
  const cond = (p: number): boolean => r.chance(i === 0 ? p / 2 : p);
  const mask = (items: readonly number[], p: number): bigint => r.some(items, p).reduce((m, b) => m | bit(b), 0n);
  let purposes = cond(0.5) ? mask(RULE_PURPOSES, 0.4) : 0n;
  if (r.chance(0.04)) purposes |= bit(r.pick([19, 31, 40])); // a purpose requests rarely (or never: bit 40) name
  let actions = cond(0.35) ? Number(mask(ACTIONS, 0.5)) : 0;
  if (r.chance(0.03)) actions |= 1 << 15;
  const bound = (p: number): number => (cond(p) ? r.pick(RULE_TIMES) : 0);
  return {
    parent: i === 0 ? (r.chance(0.1) ? r.int(1, 9) : 0) : r.chance(0.55) ? i - 1 : r.int(0, i - 1),
    permit: r.chance(0.5),
    actors: cond(0.45) ? r.several(ACTORS, 1, 3) : [],
    classes: cond(0.4) ? mask(CLASSES, 0.45) : 0n,
    actions,
    purposes,
    start: bound(0.2),
    end: bound(0.2),
    dataStart: bound(0.15),
    dataEnd: bound(0.15),
    tokens: cond(0.45) ? r.several(TOKENS, 1, 3) : [],
  };
}

/** A random tree of 1 to 7 rules (now and then up to 12), now and then made invalid on purpose. */
function randomRules(r: Rng, allowInvalid: boolean): Rule[] {
  const n = r.chance(0.1) ? r.int(8, 12) : r.int(1, 7);
  const rules = Array.from({ length: n }, (_, i) => randomRule(r, i));
  if (allowInvalid && r.chance(0.06)) {
    const i = r.int(0, n - 1);
    const what = r.int(0, n > 1 ? 2 : 1);
    if (what === 0) rules[i]!.tokens = [...rules[i]!.tokens, tok(r.pick([0, 7, 0xff]), 'bad kind')];
    else if (what === 1) rules[i]!.actors = Array.from({ length: 9 }, (_, j) => lower(key(`Organization/${j}`)));
    else rules[Math.max(1, i)]!.parent = Math.max(1, i) + r.int(0, 3);
  }
  if (allowInvalid && r.chance(0.02)) return [];
  return rules;
}

interface Request {
  patient: string;
  actors: string[];
  resourceClass: number;
  action: number;
  purposes: number;
  time: number;
  dataTime: number;
  facts: string[];
}

function randomRequest(r: Rng): Request {
  let purposes = 0;
  if (!r.chance(0.05)) for (const p of RULE_PURPOSES) if (r.chance(0.35)) purposes |= 1 << p;
  if (r.chance(0.04)) purposes |= 1 << r.pick([19, 31]);
  purposes >>>= 0;
  const facts = r.some(TOKENS, 0.35);
  if (r.chance(0.1)) facts.push(STRAY_TOKEN);
  return {
    patient: r.chance(0.07) ? STRANGER_PATIENT : r.pick(PATIENTS),
    actors: r.chance(0.03) ? r.several(ACTORS, 5, 5) : r.several(ACTORS, r.chance(0.05) ? 0 : 1, 3),
    resourceClass: r.chance(0.85) ? r.pick(CLASSES) : r.int(0, 255),
    action: r.chance(0.95) ? r.pick(ACTIONS) : r.pick([15, 16, 200]),
    purposes,
    time: r.pick(REQUEST_TIMES),
    dataTime: r.pick(REQUEST_DATA_TIMES),
    facts,
  };
}

// ------------------------------------------------------------------ the test

const chain = await startChain(t);
const seeds = ONLY_SEED !== undefined ? [ONLY_SEED] : Array.from({ length: WORLDS }, (_, w) => (BASE_SEED + w * 0x9e3779b9) >>> 0);
const seen = new Map<string, number>();
const errorsSeen = new Map<string, number>();
let decisions = 0;
let writes = 0;
let writeMs = 0;
let decideMs = 0;

/** The custom error a failed contract call reverted with ('?' if none could be read). */
function contractError(registry: Contract, err: unknown): string {
  const data = revertData(err);
  if (data === undefined) return `? ${(err as Error).message}`;
  try {
    return registry.interface.parseError(data)?.name ?? `? ${data}`;
  } catch {
    return `? ${data}`;
  }
}

for (const seed of seeds) {
  await t.test(`world ${seed}`, async (t) => {
    const r = prng(seed);
    const f = await deployConsentRegistry(chain);
    const { registry } = f;
    const state = new ConsentState();
    const ids = Array.from({ length: 6 }, (_, i) => lower(key(`Consent/${seed}/${i}`)));
    const home = new Map(ids.map((id, i) => [id, PATIENTS[i % 2]!]));
    const unknownId = lower(key(`Consent/${seed}/never`)); // never written
    const relayer = as(registry, f.others[0]!);
    let nonce = 0;
    const history: string[] = [];
    let failed = false;

    /** One write on both sides: both succeed, or both refuse with the same error. */
    const both = async (what: string, onChain: () => Promise<unknown>, onMirror: () => void): Promise<void> => {
      history.push(what);
      writes++;
      let chainResult = 'ok';
      const started = performance.now();
      try {
        await ((await onChain()) as { wait(): Promise<unknown> }).wait();
      } catch (err) {
        chainResult = contractError(registry, err);
      }
      writeMs += performance.now() - started;
      let mirrorResult = 'ok';
      try {
        onMirror();
      } catch (err) {
        if (!(err instanceof ConsentStateError)) throw err;
        mirrorResult = err.code;
      }
      history[history.length - 1] = `${what} → ${chainResult}`;
      if (chainResult !== 'ok') errorsSeen.set(chainResult, (errorsSeen.get(chainResult) ?? 0) + 1);
      if (chainResult !== mirrorResult) {
        failed = true;
        t.fail(`seed ${seed}: ${what}: the contract says ${chainResult}, the mirror ${mirrorResult}`, { history });
      }
    };

    const put = async (allowInvalid: boolean) => {
      const id = r.pick(ids);
      const patient = r.chance(0.08) ? PATIENTS[(PATIENTS.indexOf(home.get(id)!) + 1) % 2]! : home.get(id)!;
      const rules = randomRules(r, allowInvalid);
      await both(`put ${id.slice(0, 10)} for ${patient.slice(0, 10)}: ${JSON.stringify(rules, (_, v) => (typeof v === 'bigint' ? `${v}n` : v))}`, () => f.call('putConsent')(id, patient, rules), () => state.put(id, patient, rules));
    };
    const grant = async () => {
      const id = r.pick(ids);
      const rules = randomRules(r, false);
      rules[0]!.parent = 0; // the codec signs only what putConsent's callers may send
      const signature = await f.signGrant(PATIENT_WALLET, { consentId: id, patient: PATIENTS[0]!, rules, nonce, deadline: DEADLINE });
      await both(
        `grantBySig ${id.slice(0, 10)}: ${JSON.stringify(rules, (_, v) => (typeof v === 'bigint' ? `${v}n` : v))}`,
        async () => {
          const tx = await relayer.getFunction('grantBySig')(id, PATIENTS[0]!, rules, nonce, DEADLINE, signature);
          nonce++; // only a call that passed the estimate is mined, and mined it succeeds
          return tx;
        },
        () => state.put(id, PATIENTS[0]!, rules, true),
      );
    };
    const revokeBySig = async () => {
      // Only the wallet's patient's consents (or an unknown id, which fails before any signature check).
      const candidates = [...ids.filter((id) => state.consent(id)?.patient === PATIENTS[0]), unknownId];
      const id = r.pick(candidates);
      const signature = await f.signRevoke(PATIENT_WALLET, { consentId: id, nonce, deadline: DEADLINE });
      await both(
        `revokeBySig ${id.slice(0, 10)}`,
        async () => {
          const tx = await relayer.getFunction('revokeBySig')(id, nonce, DEADLINE, signature);
          nonce++;
          return tx;
        },
        () => state.revoke(id, true),
      );
    };
    const revoke = async () => {
      const id = r.chance(0.1) ? unknownId : r.pick(ids);
      await both(`revoke ${id.slice(0, 10)}`, () => f.call('revokeConsent')(id), () => state.revoke(id));
    };
    const approval = async () => {
      const actor = ACTORS[r.int(0, 4)]!;
      if (r.chance(0.2)) {
        await both(`revokeApproval ${actor.slice(0, 10)}`, () => f.call('revokeApproval')(actor), () => state.revokeApproval(actor));
      } else {
        const emergency = r.chance(0.4);
        await both(`approve ${actor.slice(0, 10)} emergency=${emergency}`, () => f.call('approveActor')(actor, emergency), () => state.approve(actor, emergency));
      }
    };
    const setModel = async () => {
      const model = r.pick(MODELS);
      const force = r.chance(0.5);
      await both(`setModel ${model} force=${force}`, () => f.call('setModel')(MODELS.indexOf(model), force), () => state.setModel(model, force));
    };

    const requests = async (phase: number) => {
      const batch = Array.from({ length: REQUESTS }, () => randomRequest(r));
      const decide = registry.getFunction('decide');
      const permitted = registry.getFunction('isPermitted');
      const started = performance.now();
      const answers = await Promise.all(
        batch.map(async (q, i) => {
          const tuple: RequestTuple = { ...q, purposes: BigInt(q.purposes) };
          try {
            const [decision, consentId] = await decide(tuple);
            const name = DECISION_NAMES[Number(decision)]!;
            const allowed = i % 4 === 0 ? ((await permitted(tuple)) as boolean) : undefined;
            return { decision: CONTRACT_DECISION[name]!, consentId: consentId === ZERO32 ? undefined : lower(consentId), allowed };
          } catch (err) {
            return { error: contractError(registry, err) };
          }
        }),
      );
      decideMs += performance.now() - started;
      batch.forEach((q, i) => {
        const fromChain = answers[i]!;
        let fromMirror: { decision?: DecisionKind; consentId?: string; allowed?: boolean; error?: string };
        try {
          const d = state.decide({ ...q, facts: new Set(q.facts) });
          fromMirror = { decision: d.decision, consentId: d.consentId, allowed: 'allowed' in fromChain && fromChain.allowed !== undefined ? isPermitted(d) : undefined };
        } catch (err) {
          if (!(err instanceof ConsentStateError)) throw err;
          fromMirror = { error: err.code };
        }
        decisions++;
        const label = 'error' in fromChain ? `error ${fromChain.error}` : fromChain.decision;
        seen.set(label, (seen.get(label) ?? 0) + 1);
        const same =
          'error' in fromChain
            ? fromMirror.error === fromChain.error
            : fromMirror.decision === fromChain.decision && fromMirror.consentId === fromChain.consentId && fromMirror.allowed === fromChain.allowed;
        if (!same) {
          failed = true;
          t.fail(`seed ${seed}, phase ${phase}, request ${i}: the contract and the mirror disagree`, {
            request: { ...q, purposes: `0b${q.purposes.toString(2)}` },
            contract: fromChain,
            mirror: fromMirror,
            history,
          });
        }
      });
    };

    // The world: a model (or none), approvals, a wallet for patient 0, consents and their history.
    if (r.chance(0.7)) await setModel();
    for (const actor of ACTORS.slice(0, 5)) {
      if (!r.chance(0.7)) continue;
      const emergency = r.chance(0.4);
      await both(`approve ${actor.slice(0, 10)} emergency=${emergency}`, () => f.call('approveActor')(actor, emergency), () => state.approve(actor, emergency));
    }
    await f.send('registerWallet', PATIENTS[0], PATIENT_WALLET.address);
    const ops: ((allowInvalid: boolean) => Promise<void>)[] = [put, put, put, put, revoke, approval, grant, revokeBySig, setModel];
    const firstOps = r.int(4, 12);
    for (let i = 0; i < firstOps; i++) await (i < 3 ? put(true) : r.pick(ops)(true));
    await requests(1);
    const moreOps = r.int(2, 8);
    for (let i = 0; i < moreOps; i++) await r.pick(ops)(true);
    await requests(2);
    if (!failed) t.pass(`seed ${seed}: ${writes} writes so far, every decision the same`);
  });
}

t.test('the random worlds reached every decision', async (t) => {
  t.comment(`${seeds.length} worlds, ${writes} writes (${Math.round(writeMs)} ms), ${decisions} decisions (${Math.round(decideMs)} ms on chain)`);
  t.comment(`decisions: ${JSON.stringify(Object.fromEntries([...seen].sort()))}`);
  t.comment(`refused writes: ${JSON.stringify(Object.fromEntries([...errorsSeen].sort()))}`);
  if (ONLY_SEED !== undefined) return;
  for (const kind of ['permit', 'deny', 'break-glass', 'actor-not-approved', 'no-consent', 'implied', 'error ConsentTooManyRequestActors'] as const) {
    t.ok((seen.get(kind) ?? 0) > 0, `some requests got ${kind}`);
  }
  for (const error of ['ConsentBadRule', 'ConsentTooManyActors', 'ConsentUnknown', 'ConsentLockedByPatient', 'ConsentModelChange', 'ConsentPatientMismatch'] as const) {
    t.ok((errorsSeen.get(error) ?? 0) > 0, `some writes were refused with ${error}`);
  }
});
