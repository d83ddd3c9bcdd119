/**
 * `npm run bench:consent`: what consent enforcement (issues 6 and 12) costs, and how fast a revocation bites.
 *
 * 1. **Workload overhead** → `bench/results/consent-overhead.{json,md}`. The shared workload
 *    (`bench/fhir-load.mjs` through `bench/lib.ts`, 8 clients) against Vellum in its default
 *    configuration (`npm start`: embedded chain, auth, audit, consent on), in BOTH consent models
 *    (`VELLUM_CONSENT_MODEL` = opt-in and opt-out; checked before each run: a patient without a
 *    Consent is refused to the practitioner in opt-in, readable for treatment in opt-out), through
 *    a small loopback proxy that both variants go through:
 *    - in both, the proxy forwards `POST Patient` with the administrator's token (the registration
 *      desk) and, on 201, grants a Consent (permit, actor `Practitioner/bench-dr`, all classes and
 *      actions, purpose TREAT) as the administrator before it answers — so both variants store the
 *      same data, make the same chain writes and leave the same background work (audit, anchoring);
 *    - `administrator`: every other request with the administrator's token (the data custodian:
 *      audited, never consent-gated);
 *    - `practitioner`: every other request with the token of a Backend Services client whose
 *      `fhir_user` is `Practitioner/bench-dr` (approved with `$approve`, purpose of use TREAT), so
 *      each one is consent-gated (and permitted by its Consent, in both models).
 *    create_patient is left out of the comparison (it is the registration desk's, not the practitioner's).
 *    Each round runs every (model, variant) pair, in alternating order; a fresh server per run, medians.
 *    Aim (issue 12): the practitioner within 10 % of the administrator, in both models.
 *    Plus, one client without concurrency, per model (`probe`), and in-process: the cached consent
 *    check of a permitted read, i.e. `ConsentService.gate(...)` + `.allowed(...)` (a new gate per
 *    request, the patient key derived from the record's key scope), with N consents in force for
 *    the patient — simple ones (issue 6), and 10 with nested, data, code and label provisions whose
 *    decision needs the record's facts (issue 12's aim: ≤ 20 µs).
 * 2. **Revocation latency** → `bench/results/consent-revocation.{json,md}`. Vellum in this process
 *    (`createVellum`, default configuration — opt-in, where a revoked permit leaves nothing —
 *    listening on loopback; requests go over HTTP):
 *    (a) `PUT Consent` with status inactive: time to its response, and whether the very next read
 *        is 403;
 *    (b) a patient-signed `revokeBySig` sent straight to the registry by another account (through
 *        the embedded chain's `sendRawTransaction`, `Vellum.ledger`): time from the transaction
 *        being mined to the first denied read, polling reads back to back. The contract's own
 *        `decide` (`ledger.consents.decide`) is asked before (Permit) and after (not permitted).
 *
 * `npm run bench:consent -- --rounds=2 --patients=200 --revocations=20 [--models=opt-in,opt-out] [--only=overhead|check|revocation|probe]`
 */
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import { Wallet } from 'ethers';
import { adminToken, freePort, root, runLoad, startServer, type LoadSummary } from './lib.ts';
import { ConsentService, type ConsentChain } from '../src/fhir/consent/service.ts';
import type { Principal } from '../src/fhir/auth/verify.ts';
import { CONSENT_ACTIONS, classBit, purposeIndex, type ConsentModel, type Rule } from '../src/fhir/consent/terms.ts';
import type { DataFacts } from '../src/fhir/consent/facts.ts';
import { keyScoper } from '../src/storage/keys.ts';
import { loadConfig } from '../src/config.ts';
import { createVellum } from '../src/server.ts';
import { consentTypedData, encodeRevokeBySig, type DecideRequest } from '../src/chain/consent-registry.ts';
import type { EmbeddedLedger } from '../src/chain/embedded-chain.ts';

const PHASES = ['create_patient', 'create_observation', 'read_patient', 'search_obs_subject', 'search_obs_code_date', 'update_patient', 'history_patient'];
const COMPARED = PHASES.filter((p) => p !== 'create_patient');
const DR = 'Practitioner/bench-dr';

function option(name: string, fallback: number): number {
  const arg = process.argv.find((a) => a.startsWith(`--${name}=`));
  const value = arg ? Number(arg.slice(name.length + 3)) : fallback;
  if (!Number.isSafeInteger(value) || value < 1) throw new Error(`--${name} must be a positive integer`);
  return value;
}
const only = process.argv.find((a) => a.startsWith('--only='))?.slice('--only='.length);
/** `--models=opt-in,opt-out` (default both): the consent models the workload and the probe run in. */
function modelsOption(): ConsentModel[] {
  const arg = process.argv.find((a) => a.startsWith('--models='))?.slice('--models='.length) ?? 'opt-in,opt-out';
  const models = arg.split(',').map((m) => m.trim());
  for (const m of models) if (m !== 'opt-in' && m !== 'opt-out') throw new Error('--models lists opt-in and/or opt-out');
  return models as ConsentModel[];
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const percentile = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
};
const r1 = (x: number) => Math.round(x * 10) / 10;
const r2 = (x: number) => Math.round(x * 100) / 100;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const loadavg = () => os.loadavg().map((x) => r2(x));

function write(file: string, json: unknown, md: string): void {
  fs.mkdirSync(path.join(root, 'bench/results'), { recursive: true });
  fs.writeFileSync(path.join(root, `bench/results/${file}.json`), JSON.stringify(json, null, 2) + '\n');
  fs.writeFileSync(path.join(root, `bench/results/${file}.md`), md + '\n');
  console.log(`\n${md}\n\nwritten to bench/results/${file}.{json,md}`);
}

// ------------------------------------------------------------------ HTTP helpers (any Vellum)

interface Res {
  status: number;
  body: any;
}

async function call(origin: string, token: string, method: string, url: string, body?: unknown): Promise<Res> {
  const res = await fetch(`${origin}/fhir/${url.replace(/^\//, '')}`, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      accept: 'application/fhir+json',
      ...(body === undefined ? {} : { 'content-type': 'application/fhir+json' }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  let json: unknown;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = text;
  }
  return { status: res.status, body: json };
}

async function must(what: string, res: Promise<Res>, ok = [200, 201]): Promise<Res> {
  const r = await res;
  if (!ok.includes(r.status)) throw new Error(`${what}: ${r.status} ${JSON.stringify(r.body)?.slice(0, 400)}`);
  return r;
}

function consentOf(id: string, patientId: string, status = 'active'): Record<string, unknown> {
  return {
    resourceType: 'Consent',
    id,
    status,
    scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] },
    category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }],
    patient: { reference: `Patient/${patientId}` },
    provision: {
      type: 'permit',
      actor: [{ role: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'PRCP' }] }, reference: { reference: DR } }],
      purpose: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code: 'TREAT' }],
    },
  };
}

/**
 * `Practitioner/bench-dr` created and approved, and a token for a Backend Services client bound to
 * it: RFC 7591 registration with the administrator's token, then client_credentials with a
 * private_key_jwt assertion, purpose of use TREAT.
 */
async function enrolPractitioner(origin: string, admin: string, dataDir: string): Promise<string> {
  await must('PUT Practitioner', call(origin, admin, 'PUT', DR, { resourceType: 'Practitioner', id: 'bench-dr', name: [{ family: 'Bench' }] }));
  await must('$approve', call(origin, admin, 'POST', `${DR}/$approve`, { resourceType: 'Parameters', parameter: [{ name: 'emergency', valueBoolean: false }] }), [200]);
  const { token_url: tokenUrl } = JSON.parse(fs.readFileSync(path.join(dataDir, 'admin-client.json'), 'utf8')) as { token_url: string };
  const alg = 'ES384';
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const kid = randomBytes(8).toString('hex');
  const scope = 'system/*.cruds';
  const reg = await fetch(`${origin}/auth/register`, {
    method: 'POST',
    headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      client_name: 'bench practitioner',
      token_endpoint_auth_method: 'private_key_jwt',
      grant_types: ['client_credentials'],
      jwks: { keys: [{ ...(await exportJWK(publicKey)), kid, alg }] },
      scope,
      fhir_user: DR,
    }),
  });
  const client = (await reg.json()) as { client_id?: string };
  if (reg.status !== 201 || !client.client_id) throw new Error(`register: ${reg.status} ${JSON.stringify(client)}`);
  const now = Math.floor(Date.now() / 1000);
  const assertion = await new SignJWT({ iss: client.client_id, sub: client.client_id, aud: tokenUrl, exp: now + 240, jti: randomBytes(16).toString('hex') })
    .setProtectedHeader({ alg, kid, typ: 'JWT' })
    .sign(privateKey);
  const res = await fetch(tokenUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'client_credentials',
      scope,
      purpose_of_use: 'TREAT',
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: assertion,
    }).toString(),
  });
  const json = (await res.json()) as { access_token?: string };
  if (!json.access_token) throw new Error(`practitioner token: ${res.status} ${JSON.stringify(json)}`);
  return json.access_token;
}

// ------------------------------------------------------------------ 1. workload overhead

interface Proxy {
  origin: string;
  consentsGranted: number;
  consentFailures: string[];
  close(): Promise<void>;
}

/** The loopback proxy in front of Vellum that swaps in the token of the variant (see the header). */
async function startProxy(upstream: string, mode: 'administrator' | 'practitioner', admin: string, practitioner: string): Promise<Proxy> {
  const target = new URL(upstream);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 32 });
  const forward = (method: string, url: string, headers: http.OutgoingHttpHeaders, body: Buffer) =>
    new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }>((resolve, reject) => {
      const req = http.request(
        { host: target.hostname, port: target.port, method, path: url, agent, headers: { ...headers, 'content-length': String(body.length) } },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode ?? 502, headers: res.headers, body: Buffer.concat(chunks) }));
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  const proxy: Proxy = { origin: '', consentsGranted: 0, consentFailures: [], close: async () => undefined };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      void (async () => {
        const body = Buffer.concat(chunks);
        const headers: http.OutgoingHttpHeaders = {};
        for (const [k, v] of Object.entries(req.headers)) if (!['host', 'connection', 'authorization', 'content-length'].includes(k)) headers[k] = v;
        const url = req.url ?? '/';
        const registration = req.method === 'POST' && /^\/fhir\/Patient\/?(\?.*)?$/.test(url);
        const token = mode === 'administrator' || registration ? admin : practitioner;
        let out = await forward(req.method ?? 'GET', url, { ...headers, authorization: `Bearer ${token}` }, body);
        if (registration && out.status === 201) {
          const id = (JSON.parse(out.body.toString()) as { id: string }).id;
          const consent = Buffer.from(JSON.stringify(consentOf(`bench-${id}`, id)));
          const granted = await forward('PUT', `/fhir/Consent/bench-${id}`, { 'content-type': 'application/fhir+json', accept: 'application/fhir+json', authorization: `Bearer ${admin}` }, consent);
          if (granted.status === 200 || granted.status === 201) proxy.consentsGranted++;
          else {
            proxy.consentFailures.push(`PUT Consent/bench-${id} -> ${granted.status} ${granted.body.toString().slice(0, 300)}`);
            out = { status: 502, headers: { 'content-type': 'application/fhir+json' }, body: granted.body };
          }
        }
        const back: http.OutgoingHttpHeaders = {};
        for (const k of ['content-type', 'location', 'etag', 'last-modified', 'x-request-id']) if (out.headers[k] !== undefined) back[k] = out.headers[k];
        res.writeHead(out.status, back);
        res.end(out.body);
      })().catch((err: unknown) => {
        res.writeHead(502, { 'content-type': 'text/plain' });
        res.end(String(err));
      });
    });
  });
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  proxy.origin = `http://127.0.0.1:${port}`;
  proxy.close = () =>
    new Promise<void>((resolve) => {
      agent.destroy();
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return proxy;
}

/**
 * Checks that the server decides in `model`: a patient without any Consent, read by the
 * practitioner (purpose TREAT), is refused with VLM_CONSENT_NONE in opt-in and implied (200) in
 * opt-out. Leaves one more Patient in the store.
 */
async function assertModel(origin: string, admin: string, practitioner: string, model: ConsentModel): Promise<void> {
  const bare = await must('POST Patient', call(origin, admin, 'POST', 'Patient', { resourceType: 'Patient', name: [{ family: 'NoConsent' }] }));
  const res = await call(origin, practitioner, 'GET', `Patient/${bare.body.id}`);
  const code = res.body?.issue?.[0]?.details?.coding?.[0]?.code;
  if (model === 'opt-in' && (res.status !== 403 || code !== 'VLM_CONSENT_NONE')) throw new Error(`opt-in: practitioner not consent-gated (${res.status} ${code})`);
  if (model === 'opt-out' && res.status !== 200) throw new Error(`opt-out: treatment not implied without a consent (${res.status} ${code})`);
}

const VARIANTS = ['administrator', 'practitioner'] as const;
type Variant = (typeof VARIANTS)[number];

/**
 * The workload A/B in each model: per round, every (model, variant) pair on a fresh server
 * (`VELLUM_CONSENT_MODEL` = the model), models and variants in alternating order.
 */
async function overhead(rounds: number, patients: number, models: readonly ConsentModel[]) {
  const samples: Record<string, Record<Variant, Record<string, number[]>>> = {};
  const p50: Record<string, Record<Variant, Record<string, number[]>>> = {};
  const runs: { round: number; model: ConsentModel; mode: Variant; phases: LoadSummary['phases']; [k: string]: unknown }[] = [];
  for (const model of models) {
    samples[model] = { administrator: {}, practitioner: {} };
    p50[model] = { administrator: {}, practitioner: {} };
  }
  for (let round = 0; round < rounds; round++) {
    const modelOrder = round % 2 === 0 ? [...models] : [...models].reverse();
    for (const [m, model] of modelOrder.entries()) {
      const order = (round + m) % 2 === 0 ? [...VARIANTS] : [...VARIANTS].reverse();
      for (const mode of order) {
        const server = await startServer({ VELLUM_CONSENT_MODEL: model });
        let proxy: Proxy | undefined;
        try {
          const admin = server.token ?? (await adminToken(server.dataDir));
          // The same set-up for both variants; only the token the proxy uses differs.
          const practitioner = await enrolPractitioner(server.origin, admin, server.dataDir);
          await assertModel(server.origin, admin, practitioner, model);
          proxy = await startProxy(server.origin, mode, admin, practitioner);
          const before = loadavg();
          const { code, summary } = await runLoad(`${proxy.origin}/fhir`, [`--patients=${patients}`], false);
          const after = loadavg();
          const failed = summary.phases.filter((p) => p.errors > 0 || (p as { check_failures?: number }).check_failures);
          if (code !== 0 || proxy.consentFailures.length) {
            console.error(JSON.stringify(summary.phases, null, 1), proxy.consentFailures.slice(0, 3));
            throw new Error(`workload failed (${model}, ${mode})`);
          }
          for (const p of summary.phases) {
            if (!PHASES.includes(p.phase)) continue;
            (samples[model]![mode][p.phase] ??= []).push(p.ops_per_s);
            (p50[model]![mode][p.phase] ??= []).push(p.p50_ms);
          }
          runs.push({ round: round + 1, model, mode, loadavg_before: before, loadavg_after: after, consents_granted: proxy.consentsGranted, phases_with_errors: failed.map((p) => p.phase), phases: summary.phases });
          console.log(`round ${round + 1} ${model} ${mode} (load ${before.join(' ')} → ${after.join(' ')}): ${PHASES.map((ph) => `${ph} ${samples[model]![mode][ph]!.at(-1)}/s`).join(', ')}`);
        } finally {
          await proxy?.close();
          await server.stop();
        }
      }
    }
  }
  const pct = (on: number, off: number) => Math.round(((on - off) / off) * 1000) / 10;
  const byModel = models.map((model) => {
    const s = samples[model]!;
    const rows = PHASES.map((phase) => {
      const a = median(s.administrator[phase]!);
      const p = median(s.practitioner[phase]!);
      return {
        phase,
        compared: phase !== 'create_patient',
        administrator_ops_per_s: Math.round(a),
        practitioner_ops_per_s: Math.round(p),
        change_pct: pct(p, a),
        administrator_p50_ms: r2(median(p50[model]!.administrator[phase]!)),
        practitioner_p50_ms: r2(median(p50[model]!.practitioner[phase]!)),
      };
    });
    const compared = rows.filter((r) => r.compared);
    // Whole-workload figure over the compared phases: total ops / total time, from the medians.
    const opsOf = (phase: string) => runs.find((r) => r.model === model && r.mode === 'administrator')!.phases.find((p) => p.phase === phase)!.ops;
    const time = (mode: Variant) => compared.reduce((sum, r) => sum + opsOf(r.phase) / r[`${mode}_ops_per_s`], 0);
    const total = { administrator_s: r2(time('administrator')), practitioner_s: r2(time('practitioner')) };
    const totalChange = pct(total.administrator_s, total.practitioner_s);
    const worst = Math.min(...compared.map((r) => r.change_pct));
    return { model, phases: rows, workload_time: { ...total, throughput_change_pct: totalChange }, worst_phase_change_pct: worst, samples: s, p50_ms_samples: p50[model] };
  });
  return { rounds, patients, concurrency: 8, models: byModel, compared_phases: COMPARED, runs };
}

// ------------------------------------------------------------------ 1b. the cached consent check, in process

/** A rule: nested in the root, permit, any actor, everything, unbounded, no data condition; `over` overrides. */
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

interface CheckRow {
  consents: number;
  shape: string;
  model: ConsentModel;
  key_cache: string;
  mean_us: number;
  best_round_us: number;
  rounds_us: number[];
}

function consentCheck(decisions: number) {
  const masterKey = new Uint8Array(32).fill(7);
  const scopeOf = keyScoper(masterKey);
  const service = new ConsentService({ chain: {} as ConsentChain, key: new Uint8Array(32).fill(3) });
  const keyOf = (ref: string) => service.keyOf(ref);
  const tokenOf = service.tokenOf;
  const bit = (type: string) => 1n << BigInt(classBit(type)!);
  const purpose = (code: string) => 1n << BigInt(purposeIndex(code)!);
  const NOW = Math.floor(Date.now() / 1000);
  const YEAR = 365 * 86_400;
  const dr = keyOf(DR);
  const others = Array.from({ length: 16 }, (_, i) => keyOf(`Practitioner/other-${i}`));
  for (const a of [dr, ...others]) service.state.approve(a, false);
  const principal: Principal = { clientId: 'c', subject: 'c', scopes: [], scope: 'system/*.cruds', context: 'system', fhirUser: DR, purposeOfUse: 'TREAT', admin: false, expiresAt: NOW + 3600 };
  const PATIENTS = 2_000;
  const label = (code: string) => tokenOf('label', `http://terminology.hl7.org/CodeSystem/v3-ActCode|${code}`);
  const loinc = (code: string) => tokenOf('code', `http://loinc.org|${code}`);

  /** The consents of the simple shapes (issue 6's figures): the requester's permit, others' permits with a nested deny. */
  const simple = (p: number, c: number, mine: boolean): Rule[] =>
    mine
      ? [rule({ actors: [dr], purposes: purpose('TREAT') })]
      : [
          rule({ actors: [others[(p + c) % 16]!, others[(p + c + 1) % 16]!], classes: bit('Observation') | bit('Condition'), actions: 0b10001, purposes: purpose('TREAT'), start: NOW - 86400, end: NOW + 86400 }),
          rule({ permit: false, classes: bit('Condition') }),
        ];
  /**
   * The consents of issue 12's target: nested, data, code and label provisions. Others' consents
   * cycle through class + purpose + period, 3-level nesting, and code / label / data denials; the
   * requester's permits TREAT except PSY, HIV and ETH labels, three LOINC codes and data recorded
   * more than ten years ago, so deciding it needs the record's facts.
   */
  const rich = (p: number, c: number, mine: boolean): Rule[] => {
    if (mine) {
      return [
        rule({ actors: [dr], purposes: purpose('TREAT'), start: NOW - YEAR, end: NOW + YEAR }),
        rule({ permit: false, tokens: [label('PSY'), label('HIV'), label('ETH')] }),
        rule({ permit: false, tokens: [loinc('2339-0'), loinc('5195-3'), loinc('10351-5')] }),
        rule({ permit: false, dataEnd: NOW - 10 * YEAR }),
      ];
    }
    const other = others[(p + c) % 16]!;
    switch (c % 3) {
      case 0:
        return [rule({ actors: [other], classes: bit('Observation') | bit('Condition'), purposes: purpose('TREAT'), start: NOW - YEAR, end: NOW + YEAR })];
      case 1:
        return [
          rule({ actors: [other], classes: bit('Observation') | bit('Condition') | bit('MedicationRequest'), purposes: purpose('TREAT') | purpose('ETREAT'), start: NOW - YEAR, end: NOW + YEAR }),
          rule({ parent: 0, permit: false, classes: bit('Condition') }),
          rule({ parent: 1, permit: true, purposes: purpose('ETREAT') }),
        ];
      default:
        return [
          rule({ actors: [other], purposes: purpose('TREAT') }),
          rule({ permit: false, tokens: [loinc('8867-4'), loinc('2339-0'), loinc('5195-3')] }),
          rule({ permit: false, tokens: [label('PSY'), label('HIV'), label('ETH')] }),
          rule({ permit: false, tokens: [tokenOf('data', 'dependents|ServiceRequest/lab-1'), tokenOf('data', 'instance|Observation/hiv-1')] }),
        ];
    }
  };

  const results: CheckRow[] = [];
  let sink = 0;
  const configs: { consents: number; shape: 'simple' | 'rich' }[] = [
    { consents: 1, shape: 'simple' },
    { consents: 10, shape: 'simple' },
    { consents: 64, shape: 'simple' },
    { consents: 10, shape: 'rich' },
  ];
  for (const { consents, shape } of configs) {
    // Each patient has `consents` consents in force; the one naming the practitioner is the last,
    // so every decision walks all of them.
    const scopes: string[] = [];
    const facts: DataFacts[] = [];
    for (let p = 0; p < PATIENTS; p++) {
      const scope = scopeOf(`Patient/check-${shape}-${consents}-${p}`);
      scopes.push(scope);
      const patient = service.patientKeyOfScope(scope);
      for (let c = 0; c < consents; c++) {
        const mine = c === consents - 1;
        service.state.put(keyOf(`Consent/check-${shape}-${consents}-${p}-${c}`), patient, shape === 'rich' ? rich(p, c, mine) : simple(p, c, mine));
      }
      // The facts of the record read (an Observation of the patient), as the server computes them
      // once it has loaded the resource.
      if (shape === 'rich') facts.push(service.factsOf(observationOf(`check-${p}`, `Patient/check-${p}`, NOW), NOW * 1000));
    }
    const factsFor: (i: number) => (() => DataFacts) | undefined = shape === 'rich' ? (i) => () => facts[i % PATIENTS]! : () => undefined;
    // One permitted read: a new gate (as each request gets) and one `allowed` for the record.
    const round = (n: number, scopeFor: (i: number) => string) => {
      const start = process.hrtime.bigint();
      for (let i = 0; i < n; i++) {
        const gate = service.gate([dr], principal, []);
        if (gate.allowed('Observation', scopeFor(i), undefined, factsFor(i))) sink++;
      }
      return Number(process.hrtime.bigint() - start) / n / 1000;
    };
    const warm = (i: number) => scopes[i % PATIENTS]!;
    for (const model of shape === 'rich' ? (['opt-in', 'opt-out'] as const) : (['opt-in'] as const)) {
      service.state.setModel(model, true);
      for (let i = 0; i < 100; i++) {
        const gate = service.gate([dr], principal, []);
        const d = gate.decide('Observation', warm(i), undefined, factsFor(i));
        if (d.decision !== 'permit') throw new Error(`check ${shape} × ${consents} (${model}): expected permit, got ${d.decision}`);
      }
      round(Math.min(decisions, 50_000), warm); // JIT warm-up
      const means = Array.from({ length: 5 }, () => round(decisions, warm));
      const shapeName = shape === 'rich' ? 'nested, data, code and label provisions (facts needed)' : 'simple';
      results.push({ consents, shape: shapeName, model, key_cache: 'warm', mean_us: r2(means.reduce((a, b) => a + b, 0) / means.length), best_round_us: r2(Math.min(...means)), rounds_us: means.map(r2) });
      if (consents === 10 && shape === 'simple') {
        // A patient key not yet in the service's key-scope cache costs one HMAC-SHA-256 (`keyOf`) more:
        // measured on its own and added to the warm figure.
        const n = Math.min(decisions, 200_000);
        const hmacRound = () => {
          const start = process.hrtime.bigint();
          for (let i = 0; i < n; i++) if (service.keyOf(`key-scope:${scopes[i % PATIENTS]}`).length === 66) sink++;
          return Number(process.hrtime.bigint() - start) / n / 1000;
        };
        hmacRound();
        const hmac = Array.from({ length: 5 }, hmacRound);
        const permittedWarm = results.at(-1)!;
        const mean = hmac.reduce((a, b) => a + b, 0) / hmac.length;
        results.push({ ...permittedWarm, key_cache: 'cold (+ one HMAC, measured apart)', mean_us: r2(permittedWarm.mean_us + mean), best_round_us: r2(permittedWarm.best_round_us + Math.min(...hmac)), rounds_us: hmac.map(r2) });
      }
      if (shape === 'rich' && model === 'opt-in') {
        // The facts themselves (factsOf: one keyed token per fact, so an HMAC each), when the
        // server has not got them yet: measured on their own and added to the warm figure.
        const n = Math.min(decisions, 20_000);
        const resources = Array.from({ length: 64 }, (_, i) => observationOf(`facts-${i}`, `Patient/check-${i}`, NOW));
        const factsRound = () => {
          const start = process.hrtime.bigint();
          for (let i = 0; i < n; i++) sink += service.factsOf(resources[i % 64]!, NOW * 1000).tokens.size;
          return Number(process.hrtime.bigint() - start) / n / 1000;
        };
        factsRound();
        const took = Array.from({ length: 5 }, factsRound);
        const permittedWarm = results.at(-1)!;
        results.push({
          ...permittedWarm,
          key_cache: `warm, + the record's facts computed (factsOf: ${facts[0]!.tokens.size} tokens, measured apart)`,
          mean_us: r2(permittedWarm.mean_us + took.reduce((a, b) => a + b, 0) / took.length),
          best_round_us: r2(permittedWarm.best_round_us + Math.min(...took)),
          rounds_us: took.map(r2),
        });
      }
    }
    service.state.setModel('opt-in', true);
  }
  if (sink === 0) throw new Error('no decision permitted');
  return { decisions_per_round: decisions, patients_per_n: PATIENTS, request_actors: 1, purpose: 'TREAT', results };
}

/** An Observation of `patient` as a lab system writes it: custodian, performer, LOINC code, recorded a day ago. */
function observationOf(id: string, patient: string, now: number): Record<string, unknown> {
  return {
    resourceType: 'Observation',
    id,
    meta: { source: 'http://ehr.example/fhir/Organization/lab-1' },
    status: 'final',
    code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
    subject: { reference: patient },
    performer: [{ reference: 'Practitioner/lab-tech' }],
    effectiveDateTime: new Date((now - 86_400) * 1000).toISOString(),
  };
}

// ------------------------------------------------------------------ 2. revocation latency

async function revocation(count: number, pollEvery: number) {
  const port = await freePort();
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-bench-consent-'));
  const config = loadConfig({ ...process.env, PORT: String(port), HOST: '127.0.0.1', VELLUM_DATA_DIR: dataDir, VELLUM_LOG_LEVEL: 'warn' });
  const vellum = await createVellum(config, { logger: false });
  await vellum.app.listen({ host: '127.0.0.1', port });
  const origin = `http://127.0.0.1:${port}`;
  try {
    const ledger = (vellum as unknown as { ledger?: EmbeddedLedger }).ledger;
    if (!ledger?.sendRawTransaction) throw new Error('createVellum does not expose the embedded ledger');
    const service = vellum.services.consent!.service;
    const access = vellum.services.access!;
    const admin = await adminToken(dataDir);
    const dr = await enrolPractitioner(origin, admin, dataDir);
    const setup = async (tag: string) => {
      await must('PUT Patient', call(origin, admin, 'PUT', `Patient/${tag}`, { resourceType: 'Patient', id: tag, name: [{ family: tag }] }));
      await must('PUT Observation', call(origin, admin, 'PUT', `Observation/${tag}-obs`, { resourceType: 'Observation', id: `${tag}-obs`, status: 'final', code: { text: 'x' }, subject: { reference: `Patient/${tag}` } }));
      await must('PUT Consent', call(origin, admin, 'PUT', `Consent/c-${tag}`, consentOf(`c-${tag}`, tag)));
      await must('permitted read', call(origin, dr, 'GET', `Observation/${tag}-obs`), [200]);
    };

    // (a) through Vellum
    const viaFhir: { put_ms: number; next_status: number }[] = [];
    for (let i = 0; i < count; i++) {
      const tag = `rev-fhir-${i}`;
      await setup(tag);
      await sleep(Math.random() * config.consent.pollMs); // decorrelate from the poll timer
      const t0 = performance.now();
      const put = await call(origin, admin, 'PUT', `Consent/c-${tag}`, consentOf(`c-${tag}`, tag, 'inactive'));
      const putMs = performance.now() - t0;
      if (put.status !== 200) throw new Error(`PUT Consent inactive: ${put.status} ${JSON.stringify(put.body)}`);
      const next = await call(origin, dr, 'GET', `Observation/${tag}-obs`);
      viaFhir.push({ put_ms: r2(putMs), next_status: next.status });
    }

    // (b) patient-signed revokeBySig sent straight to the contract by another account
    const chain = service.chain;
    const direct: { mined_to_denied_ms: number; sent_to_denied_ms: number; send_ms: number; reads: number; permitted_after_mined: number; block: number; contract_before: string; contract_after: string }[] = [];
    for (let i = 0; i < count; i++) {
      const tag = `rev-sig-${i}`;
      await setup(tag);
      const wallet = Wallet.createRandom();
      await must('$register-wallet', call(origin, admin, 'POST', `Patient/${tag}/$register-wallet`, { resourceType: 'Parameters', parameter: [{ name: 'address', valueString: wallet.address }] }), [200]);
      const patientKey = service.patientKeyOfScope(access.patientScope(tag));
      const consentId = service.keyOf(`Consent/c-${tag}`);
      const nonce = await chain.nonces(patientKey);
      const deadline = Math.floor(Date.now() / 1000) + 3600;
      const td = consentTypedData(chain.chainId, chain.contract, 'Revoke', { consentId, nonce, deadline });
      const signature = await wallet.signTypedData(td.domain, td.types, td.message);
      const relayer = Wallet.createRandom();
      const raw = await relayer.signTransaction(await ledger.prepareTransaction({ from: relayer.address, to: chain.contract, data: encodeRevokeBySig(consentId, nonce, deadline, signature) }));
      // The contract itself (`decide`, the source of truth) permits before and denies after.
      const request: DecideRequest = {
        patient: patientKey,
        actors: [service.keyOf(DR)],
        resourceClass: classBit('Observation')!,
        action: CONSENT_ACTIONS.indexOf('access'),
        purposes: 1n << BigInt(purposeIndex('TREAT')!),
        time: Math.floor(Date.now() / 1000),
        dataTime: 0,
        facts: [],
      };
      const contractBefore = (await chain.decide(request)).decision;
      if (contractBefore !== 'Permit') throw new Error(`the contract decides ${contractBefore} before revokeBySig (${tag})`);
      await sleep(Math.random() * config.consent.pollMs); // decorrelate from the poll timer
      const sent = performance.now();
      const receipt = await ledger.sendRawTransaction(raw); // resolves once mined (automine)
      const mined = performance.now();
      if (receipt.status !== 1) throw new Error(`revokeBySig reverted (${tag})`);
      let reads = 0;
      let permitted = 0;
      for (;;) {
        const res = await call(origin, dr, 'GET', `Observation/${tag}-obs`);
        reads++;
        if (res.status === 403) break;
        if (res.status !== 200) throw new Error(`read after revokeBySig: ${res.status} ${JSON.stringify(res.body)}`);
        permitted++;
        if (performance.now() - mined > 30_000) throw new Error('not denied within 30 s');
        await sleep(pollEvery);
      }
      const denied = performance.now();
      const contractAfter = (await chain.decide({ ...request, time: Math.floor(Date.now() / 1000) })).decision;
      if (contractAfter === 'Permit' || contractAfter === 'Implied' || contractAfter === 'BreakGlass') throw new Error(`the contract still decides ${contractAfter} after revokeBySig (${tag})`);
      direct.push({ mined_to_denied_ms: r2(denied - mined), sent_to_denied_ms: r2(denied - sent), send_ms: r2(mined - sent), reads, permitted_after_mined: permitted, block: receipt.blockNumber, contract_before: contractBefore, contract_after: contractAfter });
    }
    const stats = (xs: number[]) => ({ p50: r1(percentile(xs, 50)), p95: r1(percentile(xs, 95)), max: r1(Math.max(...xs)), mean: r1(xs.reduce((a, b) => a + b, 0) / xs.length) });
    return {
      revocations: count,
      consent_poll_ms: config.consent.pollMs,
      consent_freshness_ms: config.consent.freshnessMs,
      read_pause_ms: pollEvery,
      via_fhir: { put_ms: stats(viaFhir.map((x) => x.put_ms)), next_read_not_403: viaFhir.filter((x) => x.next_status !== 403).length, samples: viaFhir },
      direct: {
        mined_to_denied_ms: stats(direct.map((x) => x.mined_to_denied_ms)),
        send_to_mined_ms: stats(direct.map((x) => x.send_ms)),
        reads_permitted_after_mined: direct.reduce((s, x) => s + x.permitted_after_mined, 0),
        samples: direct,
      },
    };
  } finally {
    await vellum.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

// ------------------------------------------------------------------ probe: one client, no concurrency

/** Sequential requests as the administrator and as the practitioner, interleaved, on one server in `model`. */
async function probe(n: number, model: ConsentModel) {
  const server = await startServer({ VELLUM_CONSENT_MODEL: model });
  try {
    const admin = server.token ?? (await adminToken(server.dataDir));
    const dr = await enrolPractitioner(server.origin, admin, server.dataDir);
    // The practitioner's token is consent-gated, and the server decides in `model`.
    await assertModel(server.origin, admin, dr, model);
    const ids: string[] = [];
    for (let i = 0; i < 20; i++) {
      const p = await must('POST Patient', call(server.origin, admin, 'POST', 'Patient', { resourceType: 'Patient', name: [{ family: `Probe${i}` }] }));
      const id = p.body.id as string;
      ids.push(id);
      await must('PUT Consent', call(server.origin, admin, 'PUT', `Consent/bench-${id}`, consentOf(`bench-${id}`, id)));
      await must('POST Observation', call(server.origin, admin, 'POST', 'Observation', { resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: `Patient/${id}` } }));
    }
    const kinds: Record<string, (id: string) => [string, string]> = {
      read: (id) => ['GET', `Patient/${id}`],
      search: (id) => ['GET', `Observation?subject=Patient/${id}`],
      history: (id) => ['GET', `Patient/${id}/_history`],
    };
    const out: Record<string, { administrator_p50_ms: number; practitioner_p50_ms: number }> = {};
    for (const [kind, req] of Object.entries(kinds)) {
      const t: Record<string, number[]> = { administrator: [], practitioner: [] };
      for (let i = 0; i < n; i++) {
        for (const [who, tok] of (i % 2 ? [['practitioner', dr], ['administrator', admin]] : [['administrator', admin], ['practitioner', dr]]) as [string, string][]) {
          const [method, url] = req(ids[i % ids.length]!);
          const t0 = performance.now();
          await must(`${who} ${kind}`, call(server.origin, tok, method, url), [200]);
          t[who]!.push(performance.now() - t0);
        }
      }
      out[kind] = { administrator_p50_ms: r2(median(t.administrator!)), practitioner_p50_ms: r2(median(t.practitioner!)) };
      console.log(model, kind, out[kind]);
    }
    return out;
  } finally {
    await server.stop();
  }
}

// ------------------------------------------------------------------ main

async function main(): Promise<void> {
  const at = new Date().toISOString();
  const models = modelsOption();
  if (only === 'probe') {
    for (const model of models) console.log(model, JSON.stringify(await probe(option('requests', 100), model)));
    return;
  }
  const machine = `${os.cpus().length} cpus (${os.cpus()[0]?.model ?? '?'}), node ${process.version}`;
  if (!only || only === 'overhead' || only === 'check') {
    const loadStart = loadavg();
    const check = !only || only === 'check' || only === 'overhead' ? consentCheck(option('decisions', 200_000)) : undefined;
    const single: Record<string, Awaited<ReturnType<typeof probe>>> | undefined = !only || only === 'overhead' ? {} : undefined;
    if (single) for (const model of models) single[model] = await probe(option('requests', 100), model);
    const work = !only || only === 'overhead' ? await overhead(option('rounds', 2), option('patients', 200), models) : undefined;
    const loadEnd = loadavg();
    const sign = (x: number) => `${x > 0 ? '+' : ''}${x} %`;
    const md: string[] = [];
    if (work) {
      md.push(
        `Shared workload (\`bench/fhir-load.mjs\`, 8 clients, ${work.patients} patients), median of ${work.rounds} alternating rounds, a fresh`,
        'Vellum per run in its default configuration (embedded chain, auth, audit, consent on) but for the consent model',
        `(\`VELLUM_CONSENT_MODEL\` = ${work.models.map((m) => m.model).join(' and ')}; each round runs every model and variant, in alternating order), both variants through the same`,
        'loopback proxy. In both, the proxy sends `POST Patient` with the administrator token (the registration desk) and, on 201,',
        'grants a Consent as the administrator (permit, actor Practitioner/bench-dr, all classes and actions, purpose TREAT) before',
        'it answers, so both store the same data and make the same chain writes. **administrator**: every other request with the',
        'administrator token (audited, not consent-gated). **practitioner**: every other request with the token of a Backend',
        'Services client bound to Practitioner/bench-dr (approved with `$approve`, purpose of use TREAT), so each one is consent-gated',
        '(and permitted by its Consent, in both models). Before each run the model is checked: a patient without a Consent is 403',
        '`VLM_CONSENT_NONE` to the practitioner in opt-in, readable (treatment implied) in opt-out.',
        '**create_patient is not compared** (it is the registration desk\'s work in both variants).',
        '',
      );
      for (const m of work.models) {
        md.push(
          `**${m.model}**`,
          '',
          '| phase | administrator, ops/s | practitioner, ops/s | change | p50 ms admin → practitioner |',
          '|---|---:|---:|---:|---:|',
          ...m.phases.map((r) => `| ${r.compared ? r.phase : `${r.phase} (not compared)`} | ${r.administrator_ops_per_s} | ${r.practitioner_ops_per_s} | ${sign(r.change_pct)} | ${r.administrator_p50_ms} → ${r.practitioner_p50_ms} |`),
          '',
          `Compared phases together (time to run their operations at the median rates): administrator ${m.workload_time.administrator_s} s, practitioner ${m.workload_time.practitioner_s} s → throughput ${sign(m.workload_time.throughput_change_pct)}; worst single phase ${sign(m.worst_phase_change_pct)}. Aim: ≥ −10 %.`,
          '',
        );
      }
    }
    if (single) {
      md.push(
        `One client, no concurrency (less sensitive to the machine's load): per model, on one fresh server, 20 patients each with the same`,
        `Consent and one Observation; ${option('requests', 100)} requests per kind and caller, administrator and practitioner interleaved.`,
        '',
        '| model | request | administrator p50 ms | practitioner p50 ms | change |',
        '|---|---|---:|---:|---:|',
        ...Object.entries(single).flatMap(([model, kinds]) =>
          Object.entries(kinds).map(([kind, v]) => `| ${model} | ${kind} | ${v.administrator_p50_ms} | ${v.practitioner_p50_ms} | ${sign(Math.round(((v.practitioner_p50_ms - v.administrator_p50_ms) / v.administrator_p50_ms) * 1000) / 10)} |`),
        ),
        '',
      );
    }
    if (check) {
      md.push(
        `Cached consent check of a permitted read, in process: a new \`ConsentService.gate(...)\` + \`.allowed('Observation', keyScope, action, facts)\``,
        `per decision (the patient key derived from the record's key scope), ${check.patients_per_n} patients, the permitting consent last, 5 rounds of ${check.decisions_per_round.toLocaleString('en')}.`,
        '*simple*: the requester\'s consent permits TREAT; the others permit other practitioners two classes for a day, with a nested deny.',
        '*nested, data, code and label*: the others cycle through class + purpose + period, 3-level nesting, and denials by 3 LOINC codes,',
        '3 labels (PSY, HIV, ETH) and 2 data references; the requester\'s permits TREAT for a year except 3 labels, 3 LOINC codes and data',
        'recorded more than ten years ago, so its decision needs the record\'s facts (those of an Observation with custodian, performer,',
        'a LOINC code; computed once per record, as the server does once it has loaded it).',
        '',
        '| consents per patient | consents | model | patient-key cache | mean µs | best round µs |',
        '|---:|---|---|---|---:|---:|',
        ...check.results.map((r) => `| ${r.consents} | ${r.shape} | ${r.model} | ${r.key_cache} | ${r.mean_us} | ${r.best_round_us} |`),
        '',
        'Aim: ≤ 20 µs with 10 consents of nested, data, code and label provisions (issue 12; issue 6\'s aim was ≤ 200 µs).',
        '',
      );
    }
    md.push(`Machine: ${machine}; load average ${loadStart.join(' ')} at start, ${loadEnd.join(' ')} at end (shared machine) (${at}).`);
    write('consent-overhead', { at, machine, loadavg_start: loadStart, loadavg_end: loadEnd, workload: work, single_client: single, consent_check: check }, md.join('\n'));
  }
  if (!only || only === 'revocation') {
    const loadStart = loadavg();
    const rev = await revocation(option('revocations', 20), option('read-every-ms', 5));
    const loadEnd = loadavg();
    const f = (s: { p50: number; p95: number; max: number; mean: number }) => `${s.p50} | ${s.p95} | ${s.max} | ${s.mean}`;
    const md = [
      `Revocation latency, ${rev.revocations} revocations each way; Vellum in process (default configuration, embedded chain), requests over loopback HTTP;`,
      `\`VELLUM_CONSENT_POLL_MS\` = ${rev.consent_poll_ms}, \`VELLUM_CONSENT_FRESHNESS_MS\` = ${rev.consent_freshness_ms}.`,
      '',
      '| revocation | measured | p50 ms | p95 ms | max ms | mean ms |',
      '|---|---|---:|---:|---:|---:|',
      `| \`PUT Consent\` status inactive, through Vellum | request sent → response | ${f(rev.via_fhir.put_ms)} |`,
      `| patient-signed \`revokeBySig\` sent straight to the contract by another account | transaction mined → first 403 read | ${f(rev.direct.mined_to_denied_ms)} |`,
      `| (same) | transaction sent → mined | ${f(rev.direct.send_to_mined_ms)} |`,
      '',
      `Through Vellum: reads right after the PUT's response that were NOT 403: **${rev.via_fhir.next_read_not_403} of ${rev.revocations}**.`,
      `Straight to the contract: reads answered 200 after the transaction was mined (before the poll saw it): ${rev.direct.reads_permitted_after_mined} in all (one read every ${rev.read_pause_ms} ms after the previous answer).`,
      '',
      `Machine: ${machine}; load average ${loadStart.join(' ')} at start, ${loadEnd.join(' ')} at end (shared machine) (${at}).`,
    ].join('\n');
    write('consent-revocation', { at, machine, loadavg_start: loadStart, loadavg_end: loadEnd, ...rev }, md);
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
