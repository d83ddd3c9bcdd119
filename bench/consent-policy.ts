/**
 * `node --import tsx bench/consent-policy.ts`: the cost of one local consent decision
 * (src/fhir/consent/policy.ts) that ends in `permit`, with 10 consents in force per patient.
 *
 * The state holds 10,000 patients × 10 consents, each a base rule and three exceptions with
 * actors, class, action and purpose masks and periods, as `mapConsent` produces them. The request
 * carries three identities (Practitioner, PractitionerRole, Organization). Nine of each patient's
 * consents match nothing for the request and one permits, so every decision walks all ten
 * consents and every rule in them (a permit can only be returned once no deny is possible).
 * Prints the mean cost per decision over 5 rounds of `--decisions` (default 1,000,000).
 */
import { parseArgs } from 'node:util';
import { ConsentState, decide, type ConsentRequest } from '../src/fhir/consent/policy.ts';
import { classBit, consentKeyer, purposeIndex, type Rule } from '../src/fhir/consent/terms.ts';

const { values } = parseArgs({ options: { decisions: { type: 'string', default: '1000000' }, patients: { type: 'string', default: '10000' } } });
const DECISIONS = Number(values.decisions);
const PATIENTS = Number(values.patients);
const CONSENTS = 10;

const keyOf = consentKeyer(new Uint8Array(32).fill(3));
const bit = (type: string) => 1n << BigInt(classBit(type)!);
const purpose = (code: string) => 1n << BigInt(purposeIndex(code)!);
const NOW = Math.floor(Date.now() / 1000);

const state = new ConsentState();
const practitioner = keyOf('Practitioner/pr-1');
const role = keyOf('PractitionerRole/role-1');
const org = keyOf('Organization/org-1');
const others = Array.from({ length: 16 }, (_, i) => keyOf(`Practitioner/other-${i}`));
for (const a of [practitioner, role, org, ...others]) state.approve(a, false);

const patients: string[] = [];
for (let p = 0; p < PATIENTS; p++) {
  const patient = keyOf(`Patient/${p}`);
  patients.push(patient);
  for (let c = 0; c < CONSENTS; c++) {
    const permitting = c === CONSENTS - 1;
    const actors = permitting ? [org] : [others[(p + c) % 16]!, others[(p + c + 1) % 16]!];
    const rules: Rule[] = [
      { permit: true, actors, classes: bit('Observation') | bit('Condition') | bit('MedicationRequest'), actions: 0b10001, purposes: purpose('TREAT') | purpose('ETREAT'), start: NOW - 86400 * 365, end: NOW + 86400 * 365 },
      { permit: false, actors: [], classes: bit('Condition'), actions: 0, purposes: 0n, start: 0, end: 0 },
      { permit: false, actors: [others[(p + c + 2) % 16]!], classes: 0n, actions: 0b10000, purposes: 0n, start: 0, end: 0 },
      { permit: true, actors: [], classes: bit('MedicationRequest'), actions: 0, purposes: purpose('ETREAT'), start: NOW - 3600, end: NOW + 3600 },
    ];
    state.put(keyOf(`Consent/${p}-${c}`), patient, rules);
  }
}

const requests: ConsentRequest[] = patients.map((patient) => ({
  patient,
  actors: [practitioner, role, org],
  resourceClass: classBit('Observation')!,
  action: 0,
  purpose: Number(purposeIndex('TREAT')),
  time: NOW,
}));
for (const r of requests.slice(0, 100)) {
  const d = decide(state, r);
  if (d.decision !== 'permit') throw new Error(`expected permit, got ${d.decision}`);
}

let sink = 0;
function round(n: number): number {
  const start = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    if (decide(state, requests[i % PATIENTS]!).decision === 'permit') sink++;
  }
  return Number(process.hrtime.bigint() - start) / n;
}

round(Math.min(DECISIONS, 200_000)); // warm-up: let the JIT settle
const means: number[] = [];
for (let r = 0; r < 5; r++) means.push(round(DECISIONS));
if (sink === 0) throw new Error('no decision permitted');

const fmt = (ns: number) => `${(ns / 1000).toFixed(2)} µs`;
console.log(`consent policy: permitted decision, ${CONSENTS} consents × 4 rules per patient, ${PATIENTS} patients, 3 request identities`);
console.log(`rounds of ${DECISIONS.toLocaleString('en')} decisions: ${means.map(fmt).join(', ')}`);
console.log(`mean ${fmt(means.reduce((a, b) => a + b, 0) / means.length)} per decision (best round ${fmt(Math.min(...means))}); budget 200 µs`);
