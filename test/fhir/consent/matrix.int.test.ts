/**
 * The consent matrix (issue 6 "Tests"): every case goes through the HTTP API of the real server,
 * with real tokens (Backend Services clients bound to FHIR identities, with a purpose of use), the
 * real embedded chain and the real consent registry. One server for the file; every case makes its
 * own patients (and, where approvals matter, its own practitioners) so the cases stay independent.
 *
 * Assertions are on status codes and Vellum codes (`issue[].details.coding[0].code`), never prose,
 * and on behaviour, never timing: a change made straight on chain is awaited by a bounded retry
 * loop on the next read's answer.
 *
 * A transaction from an account other than Vellum's (a patient's relayer) has to reach the embedded
 * chain without going through Vellum. The EmbeddedLedger's `sendRawTransaction` is not reachable
 * from the Vellum object (`createVellum` keeps the ledger in a closure), so the test captures the
 * embedded chain's `Rpc` (src/chain/rpc.ts) by wrapping `Rpc.prototype.request` before the server
 * starts, and sends the relayer's signed transaction with `eth_sendRawTransaction` on it (funding the
 * relayer with `hardhat_setBalance`, as `sendRawTransaction` does). That transaction is not in
 * `<dataDir>/chain/transactions.log`; the server is never restarted here, so this does not matter.
 */
import t from 'tap';
import { Wallet } from 'ethers';
import { Rpc } from '../../../src/chain/rpc.ts';
import { consentTypedData, encodeRevokeBySig } from '../../../src/chain/consent-registry.ts';
import { actor, classes, consent, patientToken, purposes, startConsentServer, type ConsentHarness } from './harness.ts';

// ---------------------------------------------------------------- capture the embedded chain's Rpc

let chainRpc: Rpc | undefined;
const originalRequest = Rpc.prototype.request;
Rpc.prototype.request = function <T>(this: Rpc, method: string, params?: readonly unknown[]): Promise<T> {
  chainRpc ??= this;
  return originalRequest.call(this, method, params) as Promise<T>;
};

// ---------------------------------------------------------------- helpers

type Res = Awaited<ReturnType<ConsentHarness['as']>>;

/** The Vellum codes of an OperationOutcome. */
const codes = (body: any): string[] => (body?.issue ?? []).map((i: any) => i.details?.coding?.[0]?.code);
const entries = (body: any): any[] => body?.entry ?? [];
const ids = (body: any): string[] => entries(body).map((e: any) => `${e.resource?.resourceType}/${e.resource?.id}`);
const show = (res: Res): string => `${res.status} ${JSON.stringify(res.body)?.slice(0, 600)}`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const action = (code: string) => ({ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentaction', code }] });

/** Every patient a resource of a bundle belongs to (its `subject`/`patient`, or itself). */
function patientsOf(body: any): Set<string> {
  const out = new Set<string>();
  for (const e of entries(body)) {
    const r = e.resource;
    if (!r) continue;
    if (r.resourceType === 'Patient') out.add(`Patient/${r.id}`);
    for (const field of ['subject', 'patient']) if (typeof r[field]?.reference === 'string') out.add(r[field].reference);
  }
  return out;
}

t.test('consent matrix', async (t) => {
  const c = await startConsentServer(t);
  const consentSvc = c.s.services.consent!.service;
  const access = c.s.services.access!;
  const patientKey = (id: string) => consentSvc.patientKeyOfScope(access.patientScope(id));

  /**
   * A patient `tag` with an Observation `{tag}-obs` (code `secret-{tag}`) and a Condition
   * `{tag}-cond`; family name `Fam{tag}` (unique, for chains).
   */
  async function patient(tag: string, extra: Record<string, any> = {}): Promise<string> {
    await c.put({ resourceType: 'Patient', id: tag, name: [{ family: `Fam${tag.replace(/[^A-Za-z0-9]/g, '')}` }] });
    await c.put({
      resourceType: 'Observation',
      id: `${tag}-obs`,
      status: 'final',
      code: { coding: [{ system: 'http://example.org/codes', code: `secret-${tag}` }] },
      subject: { reference: `Patient/${tag}` },
      ...extra,
    });
    await c.put({ resourceType: 'Condition', id: `${tag}-cond`, subject: { reference: `Patient/${tag}` } });
    return tag;
  }

  /** A Practitioner `id`, approved (optionally with the emergency flag) unless `approve` is false. */
  async function practitioner(id: string, options: { approve?: boolean; emergency?: boolean } = {}): Promise<string> {
    await c.put({ resourceType: 'Practitioner', id, name: [{ family: id }] });
    if (options.approve !== false) await c.approve(`Practitioner/${id}`, options.emergency ?? false);
    return `Practitioner/${id}`;
  }

  /** PUT a Consent as the administrator; fails the test unless 200/201. */
  async function grant(t: Test, id: string, patientId: string, provision: Record<string, unknown>, status = 'active'): Promise<Res> {
    const res = await c.as(c.admin, 'PUT', `/Consent/${id}`, consent(id, patientId, provision, status));
    t.ok(res.status === 200 || res.status === 201, `PUT Consent/${id} → ${show(res)}`);
    return res;
  }

  /** 403 with exactly `code`. */
  function denied(t: Test, res: Res, code: string, what: string) {
    t.equal(res.status, 403, `${what}: ${show(res)}`);
    t.same(codes(res.body), [code], `${what}: code`);
  }

  const permitFor = (who: string, more: Record<string, unknown> = {}) => ({ type: 'permit', actor: [actor(who)], ...more });

  type Test = typeof t;

  await t.test('the CapabilityStatement lists the consent operations on their types', async (t) => {
    const metadata = await c.as(c.admin, 'GET', '/metadata');
    const opsOf = (type: string): string[] => metadata.body.rest[0].resource.find((r: any) => r.type === type).operation.map((o: any) => o.name);
    for (const name of ['revocation-request', 'revoke-signed', 'grant-request', 'grant-signed']) t.ok(opsOf('Consent').includes(name), `Consent $${name}`);
    t.ok(opsOf('Patient').includes('register-wallet') && opsOf('Patient').includes('everything'), 'Patient $register-wallet and $everything');
    t.ok(opsOf('Practitioner').includes('approve') && opsOf('Organization').includes('revoke-approval'), 'actors: $approve, $revoke-approval');
    t.notOk(opsOf('Observation').includes('approve'), 'not on other types');
  });

  // ============================================================ basic decisions

  await t.test('permit: a consent naming the practitioner lets it read', async (t) => {
    const p = await patient('perm');
    const dr = await practitioner('dr-perm');
    const tok = await c.tokenFor(dr);
    denied(t, await c.as(tok, 'GET', `/Observation/${p}-obs`), 'VLM_CONSENT_NONE', 'before any consent');
    await grant(t, 'c-perm', p, permitFor(dr));
    const res = await c.as(tok, 'GET', `/Observation/${p}-obs`);
    t.equal(res.status, 200, show(res));
    t.equal((await c.as(tok, 'GET', `/Patient/${p}`)).status, 200, 'the Patient resource too');
  });

  await t.test('explicit deny: a deny consent for the practitioner beats a permit', async (t) => {
    const p = await patient('deny');
    const dr = await practitioner('dr-deny');
    const tok = await c.tokenFor(dr);
    await grant(t, 'c-deny-permit', p, permitFor(dr));
    t.equal((await c.as(tok, 'GET', `/Observation/${p}-obs`)).status, 200, 'permitted first');
    await grant(t, 'c-deny-deny', p, { type: 'deny', actor: [actor(dr)] });
    denied(t, await c.as(tok, 'GET', `/Observation/${p}-obs`), 'VLM_CONSENT_DENIED', 'after the deny');
  });

  await t.test('expired period: a permit that ended is no permit', async (t) => {
    const p = await patient('expired');
    const dr = await practitioner('dr-expired');
    await grant(t, 'c-expired', p, permitFor(dr, { period: { start: '2019-01-01', end: '2020-12-31' } }));
    denied(t, await c.as(await c.tokenFor(dr), 'GET', `/Observation/${p}-obs`), 'VLM_CONSENT_NONE', 'expired');
  });

  await t.test('not-yet-valid period: a permit that starts later is no permit yet', async (t) => {
    const p = await patient('future');
    const dr = await practitioner('dr-future');
    await grant(t, 'c-future', p, permitFor(dr, { period: { start: '2099-01-01T00:00:00Z' } }));
    denied(t, await c.as(await c.tokenFor(dr), 'GET', `/Observation/${p}-obs`), 'VLM_CONSENT_NONE', 'not yet valid');
  });

  await t.test('wrong purpose: a permit for research does not cover treatment', async (t) => {
    const p = await patient('purpose');
    const dr = await practitioner('dr-purpose');
    await grant(t, 'c-purpose', p, permitFor(dr, { purpose: purposes('HRESCH') }));
    denied(t, await c.as(await c.tokenFor(dr, { purpose: 'TREAT' }), 'GET', `/Observation/${p}-obs`), 'VLM_CONSENT_NONE', 'TREAT');
    const res = await c.as(await c.tokenFor(dr, { purpose: 'HRESCH' }), 'GET', `/Observation/${p}-obs`);
    t.equal(res.status, 200, `HRESCH (control): ${show(res)}`);
  });

  await t.test('wrong class: a permit for Conditions does not cover Observations', async (t) => {
    const p = await patient('class');
    const dr = await practitioner('dr-class');
    const tok = await c.tokenFor(dr);
    await grant(t, 'c-class', p, permitFor(dr, { class: classes('Condition') }));
    denied(t, await c.as(tok, 'GET', `/Observation/${p}-obs`), 'VLM_CONSENT_NONE', 'Observation');
    t.equal((await c.as(tok, 'GET', `/Condition/${p}-cond`)).status, 200, 'Condition (control)');
  });

  await t.test('nested deny: an exception withholds Observations from an all-class permit', async (t) => {
    const p = await patient('nested');
    const dr = await practitioner('dr-nested');
    const tok = await c.tokenFor(dr);
    await grant(t, 'c-nested', p, permitFor(dr, { provision: [{ type: 'deny', class: classes('Observation') }] }));
    denied(t, await c.as(tok, 'GET', `/Observation/${p}-obs`), 'VLM_CONSENT_DENIED', 'Observation (excepted)');
    t.equal((await c.as(tok, 'GET', `/Condition/${p}-cond`)).status, 200, 'Condition (base permit)');
  });

  // ============================================================ organisations

  await t.test('organisation grant: a PractitionerRole acts for its organisation', async (t) => {
    const p = await patient('orgrole');
    await c.put({ resourceType: 'Organization', id: 'org-granted', name: 'Granted Clinic' });
    await c.put({ resourceType: 'Organization', id: 'org-other', name: 'Other Clinic' });
    await practitioner('dr-role', { approve: false });
    await c.put({ resourceType: 'PractitionerRole', id: 'role-granted', practitioner: { reference: 'Practitioner/dr-role' }, organization: { reference: 'Organization/org-granted' } });
    await c.put({ resourceType: 'PractitionerRole', id: 'role-other', practitioner: { reference: 'Practitioner/dr-role' }, organization: { reference: 'Organization/org-other' } });
    await c.approve('Organization/org-granted');
    await c.approve('Organization/org-other');
    await grant(t, 'c-orgrole', p, permitFor('Organization/org-granted'));
    const res = await c.as(await c.tokenFor('PractitionerRole/role-granted'), 'GET', `/Observation/${p}-obs`);
    t.equal(res.status, 200, `role of the granted organisation: ${show(res)}`);
    denied(t, await c.as(await c.tokenFor('PractitionerRole/role-other'), 'GET', `/Observation/${p}-obs`), 'VLM_CONSENT_NONE', 'role of another organisation');
  });

  await t.test('organisation grant: a client enrolled as the Organization', async (t) => {
    const p = await patient('orgclient');
    await c.put({ resourceType: 'Organization', id: 'org-client', name: 'HIE' });
    await c.approve('Organization/org-client');
    const tok = await c.tokenFor('Organization/org-client');
    denied(t, await c.as(tok, 'GET', `/Observation/${p}-obs`), 'VLM_CONSENT_NONE', 'before the grant');
    await grant(t, 'c-orgclient', p, permitFor('Organization/org-client'));
    const res = await c.as(tok, 'GET', `/Observation/${p}-obs`);
    t.equal(res.status, 200, show(res));
  });

  // ============================================================ revocation

  await t.test('revoke by FHIR update to inactive: the very next read is denied', async (t) => {
    const p = await patient('revupd');
    const dr = await practitioner('dr-revupd');
    const tok = await c.tokenFor(dr);
    await grant(t, 'c-revupd', p, permitFor(dr));
    t.equal((await c.as(tok, 'GET', `/Observation/${p}-obs`)).status, 200);
    const res = await c.as(c.admin, 'PUT', '/Consent/c-revupd', consent('c-revupd', p, permitFor(dr), 'inactive'));
    t.equal(res.status, 200, show(res));
    denied(t, await c.as(tok, 'GET', `/Observation/${p}-obs`), 'VLM_CONSENT_NONE', 'next read');
  });

  await t.test('revoke by DELETE of the Consent: the very next read is denied', async (t) => {
    const p = await patient('revdel');
    const dr = await practitioner('dr-revdel');
    const tok = await c.tokenFor(dr);
    await grant(t, 'c-revdel', p, permitFor(dr));
    t.equal((await c.as(tok, 'GET', `/Observation/${p}-obs`)).status, 200);
    const res = await c.as(c.admin, 'DELETE', '/Consent/c-revdel');
    t.ok(res.status === 200 || res.status === 204, show(res));
    denied(t, await c.as(tok, 'GET', `/Observation/${p}-obs`), 'VLM_CONSENT_NONE', 'next read');
    t.equal((await consentSvc.chain.consentOf(consentSvc.keyOf('Consent/c-revdel')))?.status, 'revoked', 'revoked on chain');
  });

  await t.test('patient-signed revoke sent straight to the contract by another account', async (t) => {
    const p = await patient('sigdirect');
    const dr = await practitioner('dr-sigdirect');
    const tok = await c.tokenFor(dr);
    const granted = await grant(t, 'c-sigdirect', p, permitFor(dr));
    const version = Number(granted.body?.meta?.versionId);
    t.equal((await c.as(tok, 'GET', `/Observation/${p}-obs`)).status, 200, 'permitted first');

    const wallet = Wallet.createRandom();
    const patientTok = await patientToken(c, p);
    const reg = await c.as(patientTok, 'POST', `/Patient/${p}/$register-wallet`, {
      resourceType: 'Parameters',
      parameter: [{ name: 'address', valueString: wallet.address }],
    });
    t.equal(reg.status, 200, `$register-wallet by the patient: ${show(reg)}`);
    if (reg.status !== 200) return;

    const chain = consentSvc.chain;
    const consentId = consentSvc.keyOf('Consent/c-sigdirect');
    const nonce = await chain.nonces(patientKey(p));
    const deadline = Math.floor(Date.now() / 1000) + 3600;
    const td = consentTypedData(chain.chainId, chain.contract, 'Revoke', { consentId, nonce, deadline });
    const signature = await wallet.signTypedData(td.domain, td.types, td.message);

    // Another account (not Vellum's) sends revokeBySig straight to the registry.
    t.ok(chainRpc, 'the embedded chain Rpc was captured');
    const rpc = chainRpc!;
    const relayer = Wallet.createRandom();
    await rpc.request('hardhat_setBalance', [relayer.address, '0x' + (10n ** 21n).toString(16)]);
    const latest = await rpc.block('latest');
    const baseFee = BigInt(latest?.baseFeePerGas ?? 0);
    const raw = await relayer.signTransaction({
      type: 2,
      chainId: chain.chainId,
      nonce: await rpc.nonce(relayer.address, 'pending'),
      to: chain.contract,
      data: encodeRevokeBySig(consentId, nonce, deadline, signature),
      value: 0n,
      gasLimit: 3_000_000n,
      maxPriorityFeePerGas: 1_000_000_000n,
      maxFeePerGas: 2n * baseFee + 1_000_000_000n,
    });
    const hash = await rpc.request<string>('eth_sendRawTransaction', [raw]);
    const receipt = await rpc.receipt(hash);
    t.equal(Number(receipt?.status), 1, 'revokeBySig mined and succeeded');

    // The next read is denied once the server has seen the block (bounded loop on behaviour).
    let res: Res | undefined;
    for (let i = 0; i < 100; i++) {
      res = await c.as(tok, 'GET', `/Observation/${p}-obs`);
      if (res.status !== 200) break;
      await sleep(100);
    }
    denied(t, res!, 'VLM_CONSENT_NONE', 'read after the on-chain revocation');

    // The FHIR Consent gets a new version, inactive.
    let fhir: Res | undefined;
    for (let i = 0; i < 100; i++) {
      fhir = await c.as(c.admin, 'GET', '/Consent/c-sigdirect');
      if (fhir.body?.status === 'inactive') break;
      await sleep(100);
    }
    t.equal(fhir!.body?.status, 'inactive', 'FHIR Consent written back inactive');
    t.ok(Number(fhir!.body?.meta?.versionId) > version, `new version (${fhir!.body?.meta?.versionId} > ${version})`);

    // A custodian re-activation cannot override the patient's signed revocation.
    const again = await c.as(c.admin, 'PUT', '/Consent/c-sigdirect', consent('c-sigdirect', p, permitFor(dr)));
    t.equal(again.status, 409, show(again));
    t.same(codes(again.body), ['VLM_CONSENT_LOCKED']);
    denied(t, await c.as(tok, 'GET', `/Observation/${p}-obs`), 'VLM_CONSENT_NONE', 'still denied after the refused re-activation');
    t.equal((await c.as(c.admin, 'GET', '/Consent/c-sigdirect')).body?.status, 'inactive', 'the FHIR Consent stays inactive');
  });

  await t.test('patient-signed revoke through Vellum: $revocation-request + $revoke-signed', async (t) => {
    const p = await patient('sigrelay');
    const dr = await practitioner('dr-sigrelay');
    const tok = await c.tokenFor(dr);
    const granted = await grant(t, 'c-sigrelay', p, permitFor(dr));
    const version = Number(granted.body?.meta?.versionId);
    t.equal((await c.as(tok, 'GET', `/Observation/${p}-obs`)).status, 200, 'permitted first');

    const wallet = Wallet.createRandom();
    const patientTok = await patientToken(c, p);
    const reg = await c.as(patientTok, 'POST', `/Patient/${p}/$register-wallet`, {
      resourceType: 'Parameters',
      parameter: [{ name: 'address', valueString: wallet.address }],
    });
    t.equal(reg.status, 200, show(reg));

    const request = await c.as(patientTok, 'GET', '/Consent/c-sigrelay/$revocation-request');
    t.equal(request.status, 200, show(request));
    const param = (name: string) => request.body?.parameter?.find((x: any) => x.name === name);
    const td = JSON.parse(param('typedData')?.valueString ?? '{}');
    // eth_signTypedData_v4 form (MetaMask) lists EIP712Domain; ethers takes the types without it.
    const { EIP712Domain: _domainType, ...types } = td.types;
    const signature = await wallet.signTypedData(td.domain, types, td.message);
    const signed = await c.as(patientTok, 'POST', '/Consent/c-sigrelay/$revoke-signed', {
      resourceType: 'Parameters',
      parameter: [
        { name: 'signature', valueString: signature },
        { name: 'nonce', valueString: String(param('nonce')?.valueString) },
        { name: 'deadline', valueString: String(param('deadline')?.valueInteger) },
      ],
    });
    t.equal(signed.status, 200, show(signed));

    denied(t, await c.as(tok, 'GET', `/Observation/${p}-obs`), 'VLM_CONSENT_NONE', 'the very next read');
    const fhir = await c.as(c.admin, 'GET', '/Consent/c-sigrelay');
    t.equal(fhir.body?.status, 'inactive', 'FHIR Consent inactive');
    t.ok(Number(fhir.body?.meta?.versionId) > version, 'new version');

    const again = await c.as(c.admin, 'PUT', '/Consent/c-sigrelay', consent('c-sigrelay', p, permitFor(dr)));
    t.equal(again.status, 409, `custodian re-activation: ${show(again)}`);
    t.same(codes(again.body), ['VLM_CONSENT_LOCKED']);

    // Only the patient's signed grant lifts it: $grant-request + $grant-signed, relayed by Vellum.
    const other = await c.as(tok, 'GET', '/Consent/c-sigrelay/$grant-request');
    t.equal(other.status, 403, `a practitioner does not ask for the patient's signature: ${show(other)}`);
    const grantReq = await c.as(patientTok, 'GET', '/Consent/c-sigrelay/$grant-request');
    t.equal(grantReq.status, 200, show(grantReq));
    const gparam = (name: string) => grantReq.body?.parameter?.find((x: any) => x.name === name);
    const gtd = JSON.parse(gparam('typedData')?.valueString ?? '{}');
    t.equal(gtd.primaryType, 'Grant');
    const { EIP712Domain: _gDomainType, ...gtypes } = gtd.types;
    const signedParams = (signature: string) => ({
      resourceType: 'Parameters',
      parameter: [
        { name: 'signature', valueString: signature },
        { name: 'nonce', valueString: String(gparam('nonce')?.valueString) },
        { name: 'deadline', valueString: String(gparam('deadline')?.valueInteger) },
      ],
    });
    const forged = await c.as(patientTok, 'POST', '/Consent/c-sigrelay/$grant-signed', signedParams(await Wallet.createRandom().signTypedData(gtd.domain, gtypes, gtd.message)));
    t.equal(forged.status, 422, `a grant signed by another wallet is refused: ${show(forged)}`);
    denied(t, await c.as(tok, 'GET', `/Observation/${p}-obs`), 'VLM_CONSENT_NONE', 'still revoked after the forged grant');
    const granted2 = await c.as(patientTok, 'POST', '/Consent/c-sigrelay/$grant-signed', signedParams(await wallet.signTypedData(gtd.domain, gtypes, gtd.message)));
    t.equal(granted2.status, 200, show(granted2));
    t.equal((await c.as(tok, 'GET', `/Observation/${p}-obs`)).status, 200, 'permitted again at the very next read');
    const after = await c.as(c.admin, 'GET', '/Consent/c-sigrelay');
    t.equal(after.body?.status, 'active', 'FHIR Consent active again');
    const custodian = await c.as(c.admin, 'PUT', '/Consent/c-sigrelay', { ...after.body, status: 'inactive' });
    t.equal(custodian.status, 200, `the lock is lifted: the custodian may change it again: ${show(custodian)}`);
  });

  // ============================================================ another patient's data
  // dr-x is permitted for patient xa, not for xb. Nothing of xb may reach dr-x, by any path.

  const drX = await practitioner('dr-x');
  await c.put({ resourceType: 'Practitioner', id: 'perf-xb', name: [{ family: 'Performer' }] });
  await c.put({ resourceType: 'Practitioner', id: 'perf-xa', name: [{ family: 'Performer' }] });
  const A = await patient('xa', { performer: [{ reference: 'Practitioner/perf-xa' }] });
  const B = await patient('xb', { performer: [{ reference: 'Practitioner/perf-xb' }] });
  // xa's Observation that points at xb's (an include / chain path into xb's record).
  await c.put({
    resourceType: 'Observation',
    id: 'xa-link',
    status: 'final',
    code: { text: 'panel' },
    subject: { reference: `Patient/${A}` },
    hasMember: [{ reference: `Observation/${B}-obs` }],
  });
  // xb's Observation that points at xa's (a _revinclude path into xb's record).
  await c.put({
    resourceType: 'Observation',
    id: 'xb-link',
    status: 'final',
    code: { text: 'panel' },
    subject: { reference: `Patient/${B}` },
    hasMember: [{ reference: `Observation/${A}-obs` }],
  });
  {
    const res = await c.as(c.admin, 'PUT', '/Consent/c-xa', consent('c-xa', A, permitFor(drX)));
    if (res.status !== 200 && res.status !== 201) throw new Error(`c-xa: ${show(res)}`);
  }
  const tokX = await c.tokenFor(drX);
  const noB = (t: Test, res: Res, what: string) => {
    t.equal(res.status, 200, `${what}: ${show(res)}`);
    // perf-xb is a Practitioner: outside any patient compartment, governed by scopes only.
    const leaked = ids(res.body).filter((id) => id.includes(B) && !id.startsWith('Practitioner/'));
    t.same(leaked, [], `${what}: no resource of ${B}`);
    t.notOk(patientsOf(res.body).has(`Patient/${B}`), `${what}: nothing about Patient/${B}`);
  };

  await t.test('other patient: direct read, vread and Patient read are 403', async (t) => {
    t.equal((await c.as(tokX, 'GET', `/Observation/${A}-obs`)).status, 200, 'own consented patient (control)');
    denied(t, await c.as(tokX, 'GET', `/Observation/${B}-obs`), 'VLM_CONSENT_NONE', 'read');
    denied(t, await c.as(tokX, 'GET', `/Observation/${B}-obs/_history/1`), 'VLM_CONSENT_NONE', 'vread');
    denied(t, await c.as(tokX, 'GET', `/Patient/${B}`), 'VLM_CONSENT_NONE', 'Patient read');
  });

  await t.test('other patient: search leaves matches out and gives no total', async (t) => {
    const all = await c.as(tokX, 'GET', '/Observation?_total=accurate');
    noB(t, all, 'Observation?_total=accurate');
    t.ok(ids(all.body).includes(`Observation/${A}-obs`), 'own patient present (control)');
    t.equal(all.body?.total, undefined, 'no total for a gated search of patient data');
    const direct = await c.as(tokX, 'GET', `/Observation?subject=Patient/${B}`);
    noB(t, direct, 'Observation?subject=B');
    t.same(entries(direct.body), [], 'no entries');
    t.equal(direct.body?.total, undefined, 'no total');
    const patients = await c.as(tokX, 'GET', `/Patient?_id=${A},${B}`);
    noB(t, patients, 'Patient?_id=A,B');
    t.equal(patients.body?.total, undefined, 'no total');
  });

  await t.test('other patient: _include does not bring the other patient in', async (t) => {
    const res = await c.as(tokX, 'GET', `/Observation?_id=xa-link&_include=Observation:has-member&_include=Observation:subject`);
    noB(t, res, '_include');
    t.ok(ids(res.body).includes('Observation/xa-link'), 'the match (control)');
    t.ok(ids(res.body).includes(`Patient/${A}`), 'own patient included (control)');
  });

  await t.test('other patient: _revinclude does not bring the other patient in', async (t) => {
    const res = await c.as(tokX, 'GET', `/Observation?_id=${A}-obs&_revinclude=Observation:has-member`);
    noB(t, res, '_revinclude');
    t.ok(ids(res.body).includes(`Observation/${A}-obs`), 'the match (control)');
    const pat = await c.as(tokX, 'GET', `/Patient?_id=${A}&_revinclude=Observation:subject`);
    noB(t, pat, 'Patient _revinclude Observation:subject');
    t.ok(ids(pat.body).includes(`Observation/${A}-obs`), 'own data revincluded (control)');
  });

  await t.test('other patient: chained search (subject.name) finds nothing and gives no total', async (t) => {
    const res = await c.as(tokX, 'GET', `/Observation?subject.name=Fam${B}`);
    noB(t, res, 'Observation?subject.name');
    t.same(entries(res.body), [], 'no entries');
    t.equal(res.body?.total, undefined, 'no total');
  });

  await t.test("other patient: a chain through the other patient's data is no oracle", async (t) => {
    // xa-link (permitted) would match only because xb's Observation (not permitted) has code secret-xb.
    const res = await c.as(tokX, 'GET', `/Observation?has-member:Observation.code=secret-${B}`);
    noB(t, res, 'Observation?has-member:Observation.code');
    t.same(entries(res.body), [], `xa-link is not matched through ${B}'s code`);
    t.equal(res.body?.total, undefined, 'no total');
    // The same chain for the administrator (not gated) does match: the filter is the consent's.
    const admin = await c.as(c.admin, 'GET', `/Observation?has-member:Observation.code=secret-${B}`);
    t.same(ids(admin.body), ['Observation/xa-link'], 'the administrator finds it (control)');
  });

  await t.test('own patient: a permitted chain still works', async (t) => {
    const res = await c.as(tokX, 'GET', `/Observation?subject.name=Fam${A}`);
    noB(t, res, 'Observation?subject.name (own patient)');
    t.same(ids(res.body).sort(), ['Observation/xa-link', `Observation/${A}-obs`], 'the consented patient\'s Observations');
    const typed = await c.as(tokX, 'GET', `/Observation?subject:Patient.name=Fam${A}&code=secret-${A}`);
    t.same(ids(typed.body), [`Observation/${A}-obs`], 'typed chain with another clause');
  });

  await t.test('other patient: _has finds nothing of the other patient', async (t) => {
    const res = await c.as(tokX, 'GET', `/Patient?_has:Observation:subject:code=secret-${B}`);
    noB(t, res, 'Patient?_has:Observation:subject:code');
    t.same(entries(res.body), [], 'no entries');
    t.equal(res.body?.total, undefined, 'no total');
  });

  await t.test("other patient: _has through the other patient's data finds no resource outside the compartments", async (t) => {
    // A resource outside any compartment, found only through the other patient's data.
    const oracle = await c.as(tokX, 'GET', `/Practitioner?_has:Observation:performer:subject=Patient/${B}&_total=accurate`);
    t.equal(oracle.status, 200, show(oracle));
    t.same(ids(oracle.body), [], `no Practitioner found through ${B}'s Observations`);
    t.equal(oracle.body?.total, 0, 'the total counts nothing found through withheld data');
    const count = await c.as(tokX, 'GET', `/Practitioner?_has:Observation:performer:subject=Patient/${B}&_summary=count`);
    t.equal(count.body?.total, 0, '_summary=count neither');
    const admin = await c.as(c.admin, 'GET', `/Practitioner?_has:Observation:performer:subject=Patient/${B}`);
    t.same(ids(admin.body), ['Practitioner/perf-xb'], 'the administrator finds it (control)');
  });

  await t.test('own patient: a permitted _has still works', async (t) => {
    const perf = await c.as(tokX, 'GET', `/Practitioner?_has:Observation:performer:subject=Patient/${A}&_total=accurate`);
    t.equal(perf.status, 200, show(perf));
    t.same(ids(perf.body), ['Practitioner/perf-xa'], "the performer of the consented patient's Observation");
    t.equal(perf.body?.total, 1, 'total');
    const pat = await c.as(tokX, 'GET', `/Patient?_has:Observation:subject:code=secret-${A}`);
    t.same(ids(pat.body), [`Patient/${A}`], 'Patient?_has:Observation:subject:code (own patient)');
    // Nested: practitioners of Observations of patients named Fam{A}.
    const nested = await c.as(tokX, 'GET', `/Practitioner?_has:Observation:performer:subject.name=Fam${A}`);
    t.same(ids(nested.body), ['Practitioner/perf-xa'], '_has with a chain inside');
    const nestedB = await c.as(tokX, 'GET', `/Practitioner?_has:Observation:performer:subject.name=Fam${B}`);
    t.same(ids(nestedB.body), [], '… and not through the other patient');
  });

  await t.test('a consent granted after the search plan: the next search sees it', async (t) => {
    await c.put({ resourceType: 'Practitioner', id: 'perf-xlate', name: [{ family: 'Performer' }] });
    const p = await patient('xlate', { performer: [{ reference: 'Practitioner/perf-xlate' }] });
    const url = `/Practitioner?_has:Observation:performer:subject=Patient/${p}`;
    t.same(ids((await c.as(tokX, 'GET', url)).body), [], 'before the consent');
    await grant(t, 'c-xlate', p, permitFor(drX));
    t.same(ids((await c.as(tokX, 'GET', url)).body), ['Practitioner/perf-xlate'], 'after the consent');
    const res = await c.as(c.admin, 'PUT', '/Consent/c-xlate', consent('c-xlate', p, permitFor(drX), 'inactive'));
    t.equal(res.status, 200, show(res));
    t.same(ids((await c.as(tokX, 'GET', url)).body), [], 'after the revocation');
  });

  await t.test('other patient: $everything', async (t) => {
    const own = await c.as(tokX, 'GET', `/Patient/${A}/$everything`);
    noB(t, own, `Patient/${A}/$everything`);
    t.ok(ids(own.body).includes(`Observation/${A}-obs`), 'own record (control)');
    denied(t, await c.as(tokX, 'GET', `/Patient/${B}/$everything`), 'VLM_CONSENT_NONE', `Patient/${B}/$everything`);
  });

  await t.test('other patient: history (instance, type and system)', async (t) => {
    denied(t, await c.as(tokX, 'GET', `/Observation/${B}-obs/_history`), 'VLM_CONSENT_NONE', 'instance history');
    const own = await c.as(tokX, 'GET', `/Observation/${A}-obs/_history`);
    t.equal(own.status, 200, `own instance history (control): ${show(own)}`);
    const type = await c.as(tokX, 'GET', '/Observation/_history');
    noB(t, type, 'type history');
    t.ok(ids(type.body).includes(`Observation/${A}-obs`), 'own patient in type history (control)');
    t.ok(type.body?.total === undefined || type.body.total === entries(type.body).length, `type history total does not count what was withheld (total ${type.body?.total}, entries ${entries(type.body).length})`);
    const system = await c.as(tokX, 'GET', '/_history');
    noB(t, system, 'system history');
  });

  await t.test('other patient: batch entries', async (t) => {
    const res = await c.as(tokX, 'POST', '/', {
      resourceType: 'Bundle',
      type: 'batch',
      entry: [
        { request: { method: 'GET', url: `Observation/${A}-obs` } },
        { request: { method: 'GET', url: `Observation/${B}-obs` } },
        { request: { method: 'GET', url: `Observation?subject=Patient/${B}` } },
        { request: { method: 'GET', url: `Patient/${B}/$everything` } },
      ],
    });
    t.equal(res.status, 200, show(res));
    const e = entries(res.body);
    t.match(e[0]?.response?.status, /^200/, 'own patient read');
    t.match(e[1]?.response?.status, /^403/, 'other patient read');
    t.same(codes(e[1]?.response?.outcome), ['VLM_CONSENT_NONE'], 'other patient read: code');
    t.same(entries(e[2]?.resource), [], 'other patient search: no entries');
    t.equal(e[2]?.resource?.total, undefined, 'other patient search: no total');
    t.match(e[3]?.response?.status, /^403/, 'other patient $everything');
    t.notOk(JSON.stringify(res.body).includes(`secret-${B}`), `nothing of ${B} anywhere in the response`);
  });

  await t.test('other patient: transaction entries (read and write)', async (t) => {
    const reads = await c.as(tokX, 'POST', '/', {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { request: { method: 'GET', url: `Observation/${A}-obs` } },
        { request: { method: 'GET', url: `Observation/${B}-obs` } },
      ],
    });
    t.notOk(JSON.stringify(reads.body ?? {}).includes(`secret-${B}`), `no data of ${B} in the transaction response: ${show(reads)}`);
    if (reads.status === 200) t.match(entries(reads.body)[1]?.response?.status, /^403/, 'the other patient read entry is 403');
    else t.equal(reads.status, 403, 'or the whole transaction is refused');
    const write = await c.as(tokX, 'POST', '/', {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { request: { method: 'PUT', url: 'Observation/xa-tx' }, resource: { resourceType: 'Observation', id: 'xa-tx', status: 'final', code: { text: 'x' }, subject: { reference: `Patient/${A}` } } },
        { request: { method: 'PUT', url: 'Observation/xb-tx' }, resource: { resourceType: 'Observation', id: 'xb-tx', status: 'final', code: { text: 'x' }, subject: { reference: `Patient/${B}` } } },
      ],
    });
    t.equal(write.status, 403, `a transaction writing the other patient's data fails whole: ${show(write)}`);
    t.ok(codes(write.body).some((code) => /^VLM_CONSENT_/.test(code)), 'with a consent code');
    t.equal((await c.as(c.admin, 'GET', '/Observation/xb-tx')).status, 404, 'nothing stored for the other patient');
    t.equal((await c.as(c.admin, 'GET', '/Observation/xa-tx')).status, 404, 'nor for the permitted one (all or nothing)');
  });

  await t.test('other patient: conditional create, update, patch and delete do not reveal its matches', async (t) => {
    const obs = (id: string | undefined, code: string) => ({
      resourceType: 'Observation',
      ...(id ? { id } : {}),
      status: 'final',
      code: { coding: [{ system: 'http://example.org/codes', code }] },
      subject: { reference: `Patient/${A}` },
    });
    // If-None-Exist matching only B's Observation: as if nothing matched (no 200 with B's data).
    const created = await c.as(tokX, 'POST', '/Observation', obs(undefined, 'cond-create'), { 'if-none-exist': `code=secret-${B}` });
    t.equal(created.status, 201, `If-None-Exist: a new resource, not B's: ${show(created)}`);
    t.notOk(JSON.stringify(created.body).includes(`secret-${B}`), "no data of B's in the answer");
    // Criteria matching A's and B's Observations: one visible match, updated — not a 412 telling B has one.
    const updated = await c.as(tokX, 'PUT', `/Observation?_id=${A}-obs,${B}-obs`, obs(`${A}-obs`, `secret-${A}`));
    t.equal(updated.status, 200, `conditional update: A's Observation only: ${show(updated)}`);
    t.equal(updated.body?.id, `${A}-obs`);
    const patched = await c.as(
      tokX,
      'PATCH',
      `/Observation?_id=${A}-obs,${B}-obs`,
      [{ op: 'replace', path: '/status', value: 'amended' }],
      { 'content-type': 'application/json-patch+json' },
    );
    t.equal(patched.status, 200, `conditional patch: A's Observation only: ${show(patched)}`);
    t.equal(patched.body?.id, `${A}-obs`);
    // Conditional delete matching only B's Observation: nothing matched, nothing deleted.
    const deleted = await c.as(tokX, 'DELETE', `/Observation?code=secret-${B}`);
    t.ok(deleted.status === 204 || deleted.status === 200, `conditional delete: ${show(deleted)}`);
    t.equal((await c.as(c.admin, 'GET', `/Observation/${B}-obs`)).status, 200, "B's Observation is still there");
    // The same in a transaction, and a conditional reference naming B's Patient resolves to nothing.
    const tx = await c.as(tokX, 'POST', '/', {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { request: { method: 'POST', url: 'Observation', ifNoneExist: `code=secret-${B}` }, resource: obs(undefined, 'cond-tx') },
        { request: { method: 'DELETE', url: `Observation?code=secret-${B}` } },
      ],
    });
    t.equal(tx.status, 200, show(tx));
    t.equal(entries(tx.body)[0]?.response?.status?.slice(0, 3), '201', 'ifNoneExist entry: created, not B\'s');
    t.notOk(JSON.stringify(tx.body).includes(`${B}-obs`), "B's Observation is not named");
    t.equal((await c.as(c.admin, 'GET', `/Observation/${B}-obs`)).status, 200, 'still there after the transaction');
    const ref = await c.as(tokX, 'POST', '/', {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [{ request: { method: 'POST', url: 'Observation' }, resource: { ...obs(undefined, 'cond-ref'), subject: { reference: `Patient?_id=${B}` } } }],
    });
    t.equal(ref.status, 404, `a conditional reference to B resolves to nothing: ${show(ref)}`);
    t.same(codes(ref.body), ['VLM_BUNDLE_REFERENCE_NOT_FOUND']);
    // A patient's token: the same for its own compartment.
    const tokA = await patientToken(c, A, 'openid fhirUser launch/patient patient/*.cruds');
    const own = await c.as(tokA, 'POST', '/Observation', obs(undefined, 'cond-patient'), { 'if-none-exist': `code=secret-${B}` });
    t.equal(own.status, 201, `a patient's If-None-Exist does not find B's: ${show(own)}`);
    t.notOk(JSON.stringify(own.body).includes(`secret-${B}`));
  });

  // ============================================================ the audit trail (issue 12)
  // AuditEvents are for the administrator and for patients (their own). dr-x, consented for every
  // class of xa, gets none of xa's AuditEvents (e.g. the administrator's write of Consent c-xa) by
  // any path: as if absent from bundles, 403 VLM_AUDIT_FORBIDDEN when asked for directly.

  /** Every AuditEvent a response carries, at any depth (entries, batch entries' bundles, fullUrls). */
  const auditEventsIn = (body: any): string[] => {
    const found: string[] = [];
    const walk = (v: any): void => {
      if (Array.isArray(v)) v.forEach(walk);
      else if (v && typeof v === 'object') {
        if (v.resourceType === 'AuditEvent') found.push(`AuditEvent/${v.id}`);
        if (typeof v.fullUrl === 'string' && v.fullUrl.includes('/AuditEvent/')) found.push(v.fullUrl);
        Object.values(v).forEach(walk);
      }
    };
    walk(body);
    return found;
  };
  const noAudit = (t: Test, res: Res, what: string) => {
    t.equal(res.status, 200, `${what}: ${show(res)}`);
    t.same(auditEventsIn(res.body), [], `${what}: no AuditEvent`);
  };
  const auditForbidden = (t: Test, res: Res, what: string) => denied(t, res, 'VLM_AUDIT_FORBIDDEN', what);

  // The administrator's write of Consent c-xa left an AuditEvent in xa's compartment.
  const consentAudit = await c.as(c.admin, 'GET', '/AuditEvent?entity=Consent/c-xa');
  const xaAudit: string | undefined = entries(consentAudit.body).map((e: any) => e.resource?.id)[0];
  if (!xaAudit) throw new Error(`no AuditEvent of the Consent c-xa write: ${show(consentAudit)}`);

  await t.test('audit trail: controls — the administrator sees AuditEvents through these paths', async (t) => {
    const history = await c.as(c.admin, 'GET', '/_history?_count=1000');
    t.equal(history.status, 200, show(history));
    t.ok(auditEventsIn(history.body).length > 0, 'system history carries AuditEvents for the administrator');
    const rev = await c.as(c.admin, 'GET', `/Patient?_id=${A}&_revinclude=AuditEvent:patient&_count=1000`);
    t.ok(auditEventsIn(rev.body).includes(`AuditEvent/${xaAudit}`), `_revinclude=AuditEvent:patient brings ${xaAudit}`);
    const has = await c.as(c.admin, 'GET', '/Patient?_has:AuditEvent:patient:entity=Consent/c-xa');
    t.same(ids(has.body), [`Patient/${A}`], '_has through AuditEvent');
    const sys = await c.as(c.admin, 'GET', `/?_type=AuditEvent&_id=${xaAudit}`);
    t.same(ids(sys.body), [`AuditEvent/${xaAudit}`], 'system search');
    const everything = await c.as(c.admin, 'GET', `/Patient/${A}/$everything?_type=AuditEvent&_count=1000`);
    t.ok(auditEventsIn(everything.body).length > 0, '$everything?_type=AuditEvent');
  });

  await t.test('audit trail: history (system, type, instance) gives a consent-gated practitioner none', async (t) => {
    const system = await c.as(tokX, 'GET', '/_history?_count=1000');
    noAudit(t, system, 'system history');
    t.ok(entries(system.body).length > 0, 'system history still shows what is permitted (control)');
    noAudit(t, await c.as(tokX, 'GET', '/_history'), 'system history, default page');
    auditForbidden(t, await c.as(tokX, 'GET', '/AuditEvent/_history'), 'type history');
    auditForbidden(t, await c.as(tokX, 'GET', `/AuditEvent/${xaAudit}/_history`), 'instance history');
    auditForbidden(t, await c.as(tokX, 'GET', `/AuditEvent/${xaAudit}`), 'read');
    auditForbidden(t, await c.as(tokX, 'GET', `/AuditEvent/${xaAudit}/_history/1`), 'vread');
    auditForbidden(t, await c.as(tokX, 'GET', `/AuditEvent/${xaAudit}/$verify`), '$verify');
  });

  await t.test('audit trail: _include/_revinclude, chains and _has give a consent-gated practitioner none', async (t) => {
    const rev = await c.as(tokX, 'GET', `/Patient?_id=${A}&_revinclude=AuditEvent:patient`);
    noAudit(t, rev, 'Patient?_revinclude=AuditEvent:patient');
    t.same(ids(rev.body), [`Patient/${A}`], 'the match itself (control)');
    noAudit(t, await c.as(tokX, 'GET', '/Consent?_id=c-xa&_revinclude=AuditEvent:entity'), 'Consent?_revinclude=AuditEvent:entity');
    noAudit(t, await c.as(tokX, 'GET', `/Patient?_id=${A}&_revinclude=*`), 'Patient?_revinclude=*');
    noAudit(t, await c.as(tokX, 'GET', `/Observation?_id=${A}-obs&_revinclude=AuditEvent:entity&_revinclude:iterate=AuditEvent:patient`), '_revinclude:iterate');
    const has = await c.as(tokX, 'GET', '/Patient?_has:AuditEvent:patient:entity=Consent/c-xa');
    noAudit(t, has, 'Patient?_has:AuditEvent');
    t.same(entries(has.body), [], '_has finds nothing through AuditEvents');
  });

  await t.test('audit trail: system search gives a consent-gated practitioner none', async (t) => {
    const typed = await c.as(tokX, 'GET', '/?_type=AuditEvent&_count=1000');
    noAudit(t, typed, '?_type=AuditEvent');
    t.same(entries(typed.body).filter((e: any) => e.search?.mode === 'match'), [], 'no matches');
    t.ok(typed.body?.total === undefined || typed.body.total === 0, `no total counting them (${typed.body?.total})`);
    const mixed = await c.as(tokX, 'GET', `/?_type=AuditEvent,Patient&_id=${A},${xaAudit}`);
    noAudit(t, mixed, '?_type=AuditEvent,Patient');
    t.same(ids(mixed.body), [`Patient/${A}`], 'the Patient only');
    noAudit(t, await c.as(tokX, 'GET', '/?_count=1000'), 'system search of every type');
    noAudit(t, await c.as(tokX, 'GET', `/?_type=Patient&_id=${A}&_revinclude=AuditEvent:patient`), 'system search with _revinclude');
    const count = await c.as(tokX, 'GET', '/?_type=AuditEvent&_summary=count');
    t.equal(count.status, 200, show(count));
    t.ok(count.body?.total === undefined || count.body.total === 0, `_summary=count counts none (${count.body?.total})`);
  });

  await t.test('audit trail: compartment search and $everything give a consent-gated practitioner none', async (t) => {
    auditForbidden(t, await c.as(tokX, 'GET', `/Patient/${A}/AuditEvent`), 'Patient/{id}/AuditEvent');
    const star = await c.as(tokX, 'GET', `/Patient/${A}/*`);
    t.not(star.status, 200, `Patient/{id}/* is not served: ${show(star)}`);
    t.same(auditEventsIn(star.body), [], 'Patient/{id}/*: no AuditEvent');
    const typed = await c.as(tokX, 'GET', `/Patient/${A}/$everything?_type=AuditEvent`);
    noAudit(t, typed, '$everything?_type=AuditEvent');
    t.equal(typed.body?.total, 0, 'total 0');
    const mixed = await c.as(tokX, 'GET', `/Patient/${A}/$everything?_type=AuditEvent,Observation`);
    noAudit(t, mixed, '$everything?_type=AuditEvent,Observation');
    t.ok(ids(mixed.body).includes(`Observation/${A}-obs`), 'the Observations (control)');
    noAudit(t, await c.as(tokX, 'GET', `/Patient/${A}/$everything`), '$everything');
  });

  await t.test('audit trail: batch and transaction entries give a consent-gated practitioner none', async (t) => {
    // [url, expected status, expected code of a refusal]
    const cases: [string, string, string?][] = [
      ['_history?_count=1000', '200'],
      [`AuditEvent?patient=Patient/${A}`, '403', 'VLM_AUDIT_FORBIDDEN'],
      [`AuditEvent/${xaAudit}`, '403', 'VLM_AUDIT_FORBIDDEN'],
      ['AuditEvent/_history', '403', 'VLM_AUDIT_FORBIDDEN'],
      [`AuditEvent/${xaAudit}/_history`, '403', 'VLM_AUDIT_FORBIDDEN'],
      [`Patient/${A}/AuditEvent`, '403', 'VLM_AUDIT_FORBIDDEN'],
      [`Patient/${A}/*`, '404', 'VLM_FHIR_UNKNOWN_TYPE'],
      [`Patient?_id=${A}&_revinclude=AuditEvent:patient`, '200'],
      [`Patient/${A}/$everything?_type=AuditEvent`, '200'],
      [`Patient?_has:AuditEvent:patient:entity=Consent/c-xa`, '200'],
      [`Patient/${A}/Observation?_id=${A}-obs`, '200'],
    ];
    const batch = await c.as(tokX, 'POST', '/', { resourceType: 'Bundle', type: 'batch', entry: cases.map(([url]) => ({ request: { method: 'GET', url } })) });
    noAudit(t, batch, 'batch');
    const e = entries(batch.body);
    t.equal(e.length, cases.length, 'one entry per request');
    for (const [i, [url, status, code]] of cases.entries()) {
      t.equal(String(e[i]?.response?.status ?? '').slice(0, 3), status, `${url}: ${status}`);
      if (code) t.same(codes(e[i]?.response?.outcome), [code], `${url}: code`);
    }
    t.same(ids(e[cases.length - 1]?.resource), [`Observation/${A}-obs`], 'a compartment search entry searches the compartment (control)');
    const systemSearch = await c.as(tokX, 'POST', '/', { resourceType: 'Bundle', type: 'batch', entry: [{ request: { method: 'GET', url: '?_type=AuditEvent' } }] });
    t.equal(systemSearch.status, 200, show(systemSearch));
    t.same(auditEventsIn(systemSearch.body), [], 'batch ?_type=AuditEvent: no AuditEvent');
    const tx = await c.as(tokX, 'POST', '/', {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { request: { method: 'GET', url: '_history?_count=1000' } },
        { request: { method: 'GET', url: `Patient?_id=${A}&_revinclude=AuditEvent:patient` } },
      ],
    });
    t.same(auditEventsIn(tx.body), [], `transaction: no AuditEvent: ${show(tx)}`);
  });

  await t.test('audit trail: conditional matching does not find AuditEvents for a consent-gated practitioner', async (t) => {
    const auditEvent = {
      resourceType: 'AuditEvent',
      type: { system: 'http://dicom.nema.org/resources/ontology/DCM', code: '110110' },
      recorded: new Date().toISOString(),
      agent: [{ requestor: true, who: { display: 'probe' } }],
      source: { observer: { display: 'probe' } },
    };
    const created = await c.as(tokX, 'POST', '/AuditEvent', auditEvent, { 'if-none-exist': `_id=${xaAudit}` });
    t.equal(created.status, 201, `If-None-Exist naming a withheld AuditEvent: as if absent: ${show(created)}`);
    t.not(created.body?.id, xaAudit, 'not the existing AuditEvent');
    const ref = await c.as(tokX, 'POST', '/', {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        {
          request: { method: 'POST', url: 'Provenance' },
          resource: {
            resourceType: 'Provenance',
            target: [{ reference: `AuditEvent?_id=${xaAudit}` }],
            recorded: new Date().toISOString(),
            agent: [{ who: { reference: drX } }],
          },
        },
      ],
    });
    t.equal(ref.status, 404, `a conditional reference to the AuditEvent resolves to nothing: ${show(ref)}`);
    t.same(codes(ref.body), ['VLM_BUNDLE_REFERENCE_NOT_FOUND']);
    t.same(auditEventsIn(ref.body), []);
  });

  await t.test('audit trail: a patient-confined token still sees its own through its compartment', async (t) => {
    const tokA = await patientToken(c, A);
    const own = await c.as(tokA, 'GET', `/Patient/${A}/AuditEvent?_count=1000`);
    t.equal(own.status, 200, show(own));
    t.ok(ids(own.body).includes(`AuditEvent/${xaAudit}`), `its compartment search finds ${xaAudit}`);
    const rev = await c.as(tokA, 'GET', `/Patient?_id=${A}&_revinclude=AuditEvent:patient&_count=1000`);
    t.ok(auditEventsIn(rev.body).includes(`AuditEvent/${xaAudit}`), '_revinclude=AuditEvent:patient brings its own');
    t.equal((await c.as(tokA, 'GET', `/AuditEvent/${xaAudit}`)).status, 200, 'a direct read of its own');
    const everything = await c.as(tokA, 'GET', `/Patient/${A}/$everything?_type=AuditEvent&_count=1000`);
    t.ok(auditEventsIn(everything.body).includes(`AuditEvent/${xaAudit}`), '$everything?_type=AuditEvent');
  });

  // ============================================================ break-glass

  await t.test('break-glass: an emergency practitioner with ETREAT reads without consent', async (t) => {
    const p = await patient('btg');
    const er = await practitioner('dr-er', { emergency: true });
    const fromBlock = await consentSvc.chain.head();
    const res = await c.as(await c.tokenFor(er, { purpose: 'ETREAT' }), 'GET', `/Observation/${p}-obs`);
    t.equal(res.status, 200, show(res));
    t.equal(res.headers['x-vellum-break-glass'], 'ETREAT', 'X-Vellum-Break-Glass header');
    t.ok((res.body?.meta?.security ?? []).some((s: any) => s.code === 'BTG' && s.system === 'http://terminology.hl7.org/CodeSystem/v3-ActReason'), 'BTG security label');
    // The EmergencyAccess event on chain (recorded without holding the response: bounded loop).
    let found: any;
    for (let i = 0; i < 100 && !found; i++) {
      const events = await consentSvc.chain.events(fromBlock + 1);
      found = events.find((e) => e.type === 'EmergencyAccess' && e.patient === patientKey(p) && e.actor === consentSvc.keyOf(er));
      if (!found) await sleep(100);
    }
    t.ok(found, 'EmergencyAccess event on chain for this patient and practitioner');
    t.equal(found?.purpose, 1, 'purpose ETREAT');
  });

  /** The consent decisions an AuditEvent records (audit.ts `consentEntities`). */
  const decisionsOf = (ae: any) =>
    (ae?.entity ?? [])
      .filter((e: any) => e.type?.code === 'Consent' && e.description === 'consent decision')
      .map((e: any) => {
        const detail = (type: string) => e.detail?.find((d: any) => d.type === type)?.valueString;
        return { consent: e.what?.reference, decision: detail('decision'), resourceClass: detail('resource-class') };
      });

  await t.test('break-glass: the AuditEvent records it', async (t) => {
    const p = await patient('btgaudit');
    const er = await practitioner('dr-er-audit', { emergency: true });
    const res = await c.as(await c.tokenFor(er, { purpose: 'ETREAT' }), 'GET', `/Observation/${p}-obs`);
    t.equal(res.status, 200);
    const audit = await c.as(c.admin, 'GET', `/AuditEvent?entity=Observation/${p}-obs`);
    t.equal(audit.status, 200, `AuditEvent?entity=Observation/${p}-obs: ${show(audit)}`);
    const mine = entries(audit.body).map((e: any) => e.resource).filter((ae: any) => JSON.stringify(ae.agent).includes(er));
    t.equal(mine.length, 1, 'one AuditEvent of the access');
    const text = JSON.stringify(mine[0] ?? {});
    t.equal(mine[0]?.outcome, '0', 'a success');
    t.ok((mine[0]?.meta?.security ?? []).some((s: any) => s.code === 'BTG'), `the AuditEvent is labelled BTG: ${text.slice(0, 800)}`);
    t.same(decisionsOf(mine[0]), [{ consent: undefined, decision: 'break-glass', resourceClass: 'Observation' }], 'the break-glass decision');
  });

  await t.test('break-glass: an explicit deny for emergencies still denies', async (t) => {
    const p = await patient('btgdeny');
    const er = await practitioner('dr-er-deny', { emergency: true });
    await grant(t, 'c-btgdeny', p, { type: 'deny', purpose: purposes('ETREAT') });
    const res = await c.as(await c.tokenFor(er, { purpose: 'ETREAT' }), 'GET', `/Observation/${p}-obs`);
    denied(t, res, 'VLM_CONSENT_DENIED', 'ETREAT against an emergency deny');
    t.equal(res.headers['x-vellum-break-glass'], undefined, 'no break-glass header');
  });

  await t.test('break-glass: a deny that does not name emergencies does not stop it', async (t) => {
    const p = await patient('btggen');
    const er = await practitioner('dr-er-gen', { emergency: true });
    await grant(t, 'c-btggen', p, { type: 'deny', actor: [actor(er)] });
    denied(t, await c.as(await c.tokenFor(er, { purpose: 'TREAT' }), 'GET', `/Observation/${p}-obs`), 'VLM_CONSENT_DENIED', 'TREAT');
    const res = await c.as(await c.tokenFor(er, { purpose: 'ETREAT' }), 'GET', `/Observation/${p}-obs`);
    t.equal(res.status, 200, `ETREAT: ${show(res)}`);
    t.equal(res.headers['x-vellum-break-glass'], 'ETREAT');
  });

  await t.test('break-glass: chains and _has traverse every patient but those denying emergencies', async (t) => {
    await c.put({ resourceType: 'Practitioner', id: 'perf-btgc-deny', name: [{ family: 'Performer' }] });
    await c.put({ resourceType: 'Practitioner', id: 'perf-btgc-open', name: [{ family: 'Performer' }] });
    const closed = await patient('btgcdeny', { performer: [{ reference: 'Practitioner/perf-btgc-deny' }] });
    const open = await patient('btgcopen', { performer: [{ reference: 'Practitioner/perf-btgc-open' }] });
    const er = await practitioner('dr-er-chain', { emergency: true });
    await grant(t, 'c-btgcdeny', closed, { type: 'deny', purpose: purposes('ETREAT') });
    const tok = await c.tokenFor(er, { purpose: 'ETREAT' });
    const through = await c.as(tok, 'GET', `/Practitioner?_has:Observation:performer:subject=Patient/${open}&_total=accurate`);
    t.same(ids(through.body), ['Practitioner/perf-btgc-open'], `through ${open} (no consent: break-glass)`);
    t.equal(through.body?.total, 1);
    t.equal(through.headers['x-vellum-break-glass'], 'ETREAT', 'labelled break-glass');
    const denied = await c.as(tok, 'GET', `/Practitioner?_has:Observation:performer:subject=Patient/${closed}&_total=accurate`);
    t.same(ids(denied.body), [], `not through ${closed} (explicit deny for emergencies)`);
    t.equal(denied.body?.total, 0);
    const chain = await c.as(tok, 'GET', `/Observation?subject.name=Fam${closed}`);
    t.same(entries(chain.body), [], 'a chain through the denying patient finds nothing');
    const treat = await c.as(await c.tokenFor(er, { purpose: 'TREAT' }), 'GET', `/Practitioner?_has:Observation:performer:subject=Patient/${open}`);
    t.same(ids(treat.body), [], 'without ETREAT: no consent, nothing traversed');
  });

  await t.test('break-glass: a non-emergency practitioner with ETREAT is denied', async (t) => {
    const p = await patient('btgnon');
    const dr = await practitioner('dr-btgnon');
    denied(t, await c.as(await c.tokenFor(dr, { purpose: 'ETREAT' }), 'GET', `/Observation/${p}-obs`), 'VLM_CONSENT_NONE', 'ETREAT');
  });

  await t.test('break-glass: an emergency practitioner without ETREAT is denied', async (t) => {
    const p = await patient('btgtreat');
    const er = await practitioner('dr-er-treat', { emergency: true });
    denied(t, await c.as(await c.tokenFor(er, { purpose: 'TREAT' }), 'GET', `/Observation/${p}-obs`), 'VLM_CONSENT_NONE', 'TREAT');
  });

  // ============================================================ patient, administrator

  await t.test('patient self-access: a patient sees its own data without any consent', async (t) => {
    const p = await patient('self');
    const other = await patient('selfother');
    const tok = await patientToken(c, p);
    const own = await c.as(tok, 'GET', `/Observation/${p}-obs`);
    t.equal(own.status, 200, show(own));
    const search = await c.as(tok, 'GET', '/Observation');
    t.same(ids(search.body), [`Observation/${p}-obs`], 'search: own only');
    const everything = await c.as(tok, 'GET', `/Patient/${p}/$everything`);
    t.equal(everything.status, 200, show(everything));
    denied(t, await c.as(tok, 'GET', `/Observation/${other}-obs`), 'VLM_AUTH_COMPARTMENT', "another patient's data");
  });

  await t.test("patient-bound client with system scopes: its own data, never another patient's", async (t) => {
    const p = await patient('selfsys');
    const other = await patient('selfsysother');
    const tok = await c.tokenFor(`Patient/${p}`); // system/*.cruds
    t.equal((await c.as(tok, 'GET', `/Observation/${p}-obs`)).status, 200, 'own data');
    const res = await c.as(tok, 'GET', `/Observation/${other}-obs`);
    t.equal(res.status, 403, `another patient's Observation: ${show(res)}`);
  });

  await t.test('administrator: reads everything, not consent-gated', async (t) => {
    const p = await patient('admin');
    await grant(t, 'c-admin-deny', p, { type: 'deny' });
    const res = await c.as(c.admin, 'GET', `/Observation/${p}-obs`);
    t.equal(res.status, 200, show(res));
    const search = await c.as(c.admin, 'GET', `/Observation?subject=Patient/${p}&_total=accurate`);
    t.equal(search.body?.total, 1, 'total given to the administrator');
    t.equal((await c.as(c.admin, 'GET', `/Patient/${p}/$everything`)).status, 200);
    t.equal(res.headers['x-vellum-break-glass'], undefined);
  });

  // ============================================================ approvals

  await t.test('unapproved practitioner: a consent naming nobody does not let it in', async (t) => {
    const p = await patient('unappr');
    const dr = await practitioner('dr-unappr', { approve: false });
    await grant(t, 'c-unappr', p, { type: 'permit' });
    const tok = await c.tokenFor(dr);
    denied(t, await c.as(tok, 'GET', `/Observation/${p}-obs`), 'VLM_CONSENT_ACTOR_NOT_APPROVED', 'unapproved');
    await c.approve(dr);
    t.equal((await c.as(tok, 'GET', `/Observation/${p}-obs`)).status, 200, 'once approved (control)');
  });

  await t.test('a Consent permitting an unapproved actor is stored, and permits only once the actor is approved', async (t) => {
    const p = await patient('unapprc');
    const dr = await practitioner('dr-unapprc', { approve: false });
    const tok = await c.tokenFor(dr);
    const res = await c.as(c.admin, 'PUT', '/Consent/c-unapprc', consent('c-unapprc', p, permitFor(dr)));
    t.equal(res.status, 201, show(res));
    denied(t, await c.as(tok, 'GET', `/Observation/${p}-obs`), 'VLM_CONSENT_ACTOR_NOT_APPROVED', 'not approved yet');
    t.equal((await c.as(c.admin, 'POST', `/${dr}/$approve`, { resourceType: 'Parameters', parameter: [] })).status, 200);
    t.equal((await c.as(tok, 'GET', `/Observation/${p}-obs`)).status, 200, 'the very next read after the approval');
  });

  await t.test('$revoke-approval cuts access', async (t) => {
    const p = await patient('revappr');
    const dr = await practitioner('dr-revappr');
    const tok = await c.tokenFor(dr);
    await grant(t, 'c-revappr', p, permitFor(dr));
    t.equal((await c.as(tok, 'GET', `/Observation/${p}-obs`)).status, 200, 'permitted first');
    const res = await c.as(c.admin, 'POST', `/${dr}/$revoke-approval`, { resourceType: 'Parameters', parameter: [] });
    t.equal(res.status, 200, show(res));
    denied(t, await c.as(tok, 'GET', `/Observation/${p}-obs`), 'VLM_CONSENT_ACTOR_NOT_APPROVED', 'next read');
    const other = await c.as(tok, 'POST', `/${dr}/$approve`, { resourceType: 'Parameters', parameter: [] });
    t.equal(other.status, 403, 'a practitioner cannot re-approve itself');
    t.same(codes(other.body), ['VLM_AUTH_ADMIN_ONLY']);
  });

  // ============================================================ writes by practitioners

  const newObs = (id: string, p: string) => ({ resourceType: 'Observation', id, status: 'final', code: { text: 'new' }, subject: { reference: `Patient/${p}` } });

  await t.test('practitioner write: create needs collect', async (t) => {
    const p = await patient('wcollect');
    const dr = await practitioner('dr-wcollect');
    await grant(t, 'c-wcollect', p, permitFor(dr, { action: [action('collect')] }));
    const tok = await c.tokenFor(dr);
    const res = await c.as(tok, 'POST', '/Observation', newObs('ignored', p));
    t.equal(res.status, 201, show(res));
    const update = await c.as(tok, 'PUT', `/Observation/${p}-obs`, newObs(`${p}-obs`, p));
    denied(t, update, 'VLM_CONSENT_NONE', 'update needs correct, not collect');
  });

  await t.test('practitioner write: a permit for all actions allows create and update', async (t) => {
    const p = await patient('wall');
    const dr = await practitioner('dr-wall');
    await grant(t, 'c-wall', p, permitFor(dr));
    const tok = await c.tokenFor(dr);
    t.equal((await c.as(tok, 'POST', '/Observation', newObs('ignored', p))).status, 201, 'create');
    const update = await c.as(tok, 'PUT', `/Observation/${p}-obs`, newObs(`${p}-obs`, p));
    t.equal(update.status, 200, `update: ${show(update)}`);
  });

  await t.test('practitioner write: access only, or no consent, is denied', async (t) => {
    const p = await patient('waccess');
    const q = await patient('wnone');
    const dr = await practitioner('dr-waccess');
    await grant(t, 'c-waccess', p, permitFor(dr, { action: [action('access')] }));
    const tok = await c.tokenFor(dr);
    t.equal((await c.as(tok, 'GET', `/Observation/${p}-obs`)).status, 200, 'read is permitted (control)');
    denied(t, await c.as(tok, 'POST', '/Observation', newObs('ignored', p)), 'VLM_CONSENT_NONE', 'create with access only');
    denied(t, await c.as(tok, 'PUT', '/Observation/wnone-new', newObs('wnone-new', q)), 'VLM_CONSENT_NONE', 'create-by-PUT without consent');
    t.equal((await c.as(c.admin, 'GET', '/Observation/wnone-new')).status, 404, 'nothing stored');
    // Moving a permitted patient's resource onto another patient is also a write on the other one.
    await grant(t, 'c-waccess-all', p, permitFor(dr));
    denied(t, await c.as(tok, 'PUT', `/Observation/${p}-obs`, newObs(`${p}-obs`, q)), 'VLM_CONSENT_NONE', 'update moving to an unconsented patient');
  });

  // ============================================================ unrepresentable consents

  await t.test('unrepresentable Consent: 422, nothing stored, nothing on chain', async (t) => {
    const p = await patient('unrep');
    const dr = await practitioner('dr-unrep');
    const headBefore = await consentSvc.chain.head();
    const cases: [string, Record<string, unknown>, string][] = [
      ['c-unrep-label', consent('c-unrep-label', p, permitFor(dr, { securityLabel: [{ code: 'R' }] })), 'VLM_CONSENT_LABEL'],
      ['c-unrep-scope', { ...consent('c-unrep-scope', p, permitFor(dr)), scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'other' }] } }, 'VLM_CONSENT_SCOPE'],
      ['c-unrep-modifier', consent('c-unrep-modifier', p, permitFor(dr, { provision: [{ type: 'deny', modifierExtension: [{ url: 'urn:x', valueBoolean: true }] }] })), 'VLM_CONSENT_MODIFIER'],
      ['c-unrep-purpose', consent('c-unrep-purpose', p, permitFor(dr, { purpose: [{ system: 'http://example.org/purpose', code: 'X' }] })), 'VLM_CONSENT_PURPOSE'],
      ['c-unrep-base', consent('c-unrep-base', p, { actor: [actor(dr)] }), 'VLM_CONSENT_BASE_POLICY'],
      ['c-unrep-data', consent('c-unrep-data', p, permitFor(dr, { data: [{ meaning: 'instance', reference: { reference: 'http://elsewhere.example/fhir/Observation/1' } }] })), 'VLM_CONSENT_DATA'],
    ];
    for (const [id, body, code] of cases) {
      const res = await c.as(c.admin, 'PUT', `/Consent/${id}`, body);
      t.equal(res.status, 422, `${id}: ${show(res)}`);
      t.same(codes(res.body), [code], `${id}: code`);
      t.equal((await c.as(c.admin, 'GET', `/Consent/${id}`)).status, 404, `${id}: not stored`);
      t.equal(await consentSvc.chain.consentOf(consentSvc.keyOf(`Consent/${id}`)), undefined, `${id}: not on chain`);
    }
    const put = (await consentSvc.chain.events(headBefore + 1)).filter((e) => e.type === 'ConsentPut' && e.patient === patientKey(p));
    t.same(put, [], 'no ConsentPut for the patient');
    denied(t, await c.as(await c.tokenFor(dr), 'GET', `/Observation/${p}-obs`), 'VLM_CONSENT_NONE', 'still no access');
  });

  // ============================================================ data-level provisions

  await t.test('data-level provisions (label, code, custodian, dependents) are decided on each record on every read path', async (t) => {
    const p = await patient('datal');
    const dr = await practitioner('dr-datal');
    const tok = await c.tokenFor(dr);
    const obs = (id: string, more: Record<string, unknown>) =>
      c.put({ resourceType: 'Observation', id, status: 'final', code: { text: id }, subject: { reference: `Patient/${p}` }, ...more });
    await c.put({ resourceType: 'ServiceRequest', id: 'datal-lab', status: 'active', intent: 'order', code: { text: 'panel' }, subject: { reference: `Patient/${p}` } });
    await obs('datal-psy', { meta: { security: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'PSY' }] } });
    await obs('datal-hiv', { code: { coding: [{ system: 'http://loinc.org', code: '75622-1' }] } });
    await obs('datal-other-org', { meta: { source: 'http://other.example/fhir#Organization/org-other' } });
    await obs('datal-result', { basedOn: [{ reference: 'ServiceRequest/datal-lab' }] });
    const cst = { role: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'CST' }] }, reference: { reference: 'Organization/org-other' } };
    await grant(t, 'c-datal', p, {
      type: 'permit',
      actor: [actor(dr)],
      provision: [
        { type: 'deny', securityLabel: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'PSY' }] },
        { type: 'deny', code: [{ coding: [{ system: 'http://loinc.org', code: '75622-1' }] }] },
        { type: 'deny', actor: [cst] },
        { type: 'deny', data: [{ meaning: 'dependents', reference: { reference: 'ServiceRequest/datal-lab' } }] },
      ],
    });
    const withheld = ['datal-psy', 'datal-hiv', 'datal-other-org', 'datal-result'];
    t.equal((await c.as(tok, 'GET', `/Observation/${p}-obs`)).status, 200, 'an ordinary record');
    for (const id of withheld) denied(t, await c.as(tok, 'GET', `/Observation/${id}`), 'VLM_CONSENT_DENIED', `read ${id}`);
    denied(t, await c.as(tok, 'GET', '/ServiceRequest/datal-lab'), 'VLM_CONSENT_DENIED', 'the order itself (dependents covers it)');
    const ids = (res: Res) => entries(res.body).map((e: any) => e.resource?.id).filter(Boolean).sort();
    t.same(ids(await c.as(tok, 'GET', `/Observation?subject=Patient/${p}`)), [`${p}-obs`], 'search');
    t.same(ids(await c.as(tok, 'GET', `/Patient/${p}/Observation`)), [`${p}-obs`], 'compartment search');
    const everything = ids(await c.as(tok, 'GET', `/Patient/${p}/$everything`));
    for (const id of withheld) t.notOk(everything.includes(id), `$everything leaves out ${id}`);
    t.ok(everything.includes(`${p}-obs`), '$everything has the ordinary record');
    t.same(ids(await c.as(tok, 'GET', `/Observation/_history?_count=100`)).filter((id: string) => withheld.includes(id)), [], 'type history');
    const vread = await c.as(tok, 'GET', '/Observation/datal-psy/_history/1');
    denied(t, vread, 'VLM_CONSENT_DENIED', 'vread');
    const revinc = ids(await c.as(tok, 'GET', `/Patient?_id=${p}&_revinclude=Observation:subject`));
    for (const id of withheld) t.notOk(revinc.includes(id), `_revinclude leaves out ${id}`);
  });

  // ============================================================ audit

  await t.test('AuditEvents record the consent decision (permit and deny)', async (t) => {
    const p = await patient('audit');
    const dr = await practitioner('dr-audit');
    const tok = await c.tokenFor(dr);
    await grant(t, 'c-audit', p, permitFor(dr, { class: classes('Observation') }));
    await grant(t, 'c-audit-deny', p, { type: 'deny', actor: [actor(dr)], class: classes('Condition') });
    t.equal((await c.as(tok, 'GET', `/Observation/${p}-obs`)).status, 200);
    t.equal((await c.as(tok, 'GET', `/Condition/${p}-cond`)).status, 403);
    const find = async (ref: string) => {
      const res = await c.as(c.admin, 'GET', `/AuditEvent?entity=${ref}`);
      t.equal(res.status, 200, `AuditEvent?entity=${ref}: ${show(res)}`);
      return entries(res.body).map((e: any) => e.resource).filter((ae: any) => JSON.stringify(ae.agent).includes(dr));
    };
    const [permitted] = await find(`Observation/${p}-obs`);
    const [refused] = await find(`Condition/${p}-cond`);
    t.ok(permitted && refused, 'both accesses audited');
    t.equal(permitted?.outcome, '0');
    t.equal(refused?.outcome, '4');
    t.same(decisionsOf(permitted), [{ consent: 'Consent/c-audit', decision: 'permit', resourceClass: 'Observation' }], 'the permit and its consent');
    t.same(decisionsOf(refused), [{ consent: 'Consent/c-audit-deny', decision: 'deny', resourceClass: 'Condition' }], 'the deny and its consent');
    t.equal(refused?.outcomeDesc, 'VLM_CONSENT_DENIED', 'the refusal code');
  });

  // ============================================================ chain unavailable

  await t.test('chain unreachable: consent-gated requests answer 503, nothing leaks', async (t) => {
    const p = await patient('nochain');
    const dr = await practitioner('dr-nochain');
    await grant(t, 'c-nochain', p, permitFor(dr));
    const tok = await c.tokenFor(dr);
    t.equal((await c.as(tok, 'GET', `/Observation/${p}-obs`)).status, 200, 'permitted while the chain answers');
    const chain = consentSvc.chain as unknown as { head: () => Promise<number> };
    const head = chain.head;
    chain.head = () => Promise.reject(Object.assign(new Error('chain down (test)'), { code: 'VLM_CHAIN_UNAVAILABLE' }));
    try {
      // Once the cache can no longer prove freshness (bounded loop on behaviour).
      let res: Res | undefined;
      for (let i = 0; i < 150; i++) {
        res = await c.as(tok, 'GET', `/Observation/${p}-obs`);
        if (res.status !== 200) break;
        await sleep(100);
      }
      t.equal(res!.status, 503, show(res!));
      t.same(codes(res!.body), ['VLM_CONSENT_UNAVAILABLE']);
      const search = await c.as(tok, 'GET', `/Observation?subject=Patient/${p}`);
      t.equal(search.status, 503, `search: ${show(search)}`);
      t.notOk(JSON.stringify(search.body ?? {}).includes(`secret-${p}`), 'nothing leaks');
      t.equal((await c.as(c.admin, 'GET', `/Observation/${p}-obs`)).status, 200, 'the administrator is not gated');
    } finally {
      chain.head = head;
    }
    let back: Res | undefined;
    for (let i = 0; i < 100; i++) {
      back = await c.as(tok, 'GET', `/Observation/${p}-obs`);
      if (back.status === 200) break;
      await sleep(100);
    }
    t.equal(back!.status, 200, 'permitted again once the chain answers');
  });
});
