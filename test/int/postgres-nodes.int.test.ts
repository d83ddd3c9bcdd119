/**
 * Several Vellum nodes, as an HIE runs them: two server processes (`npm start`) on one PostgreSQL
 * database, one external chain (`hardhat node`) and a shared master key. Writes on either node are
 * read on the other, concurrent conditional updates of one resource from both nodes leave exactly
 * one winner, and the node holding the anchoring lease is killed (SIGKILL) in the middle of a write
 * load: the other keeps serving, takes the lease over, and every acknowledged write is readable and
 * anchored.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import t from 'tap';
import { HARDHAT_KEYS, startHardhatNode } from '../chain/chain-helpers.ts';
import { freshDatabase } from '../helpers/postgres.ts';
import { freePort, startProcessServer, type ProcessServer } from '../helpers/process-server.ts';
import { leaseName } from '../../src/storage/postgres/pg-lease.ts';

const param = (p: any, name: string) => p?.parameter?.find((x: any) => x.name === name);

t.test('two nodes on one PostgreSQL: shared reads and writes, exact versions, a killed node loses nothing', async (t) => {
  const database = await freshDatabase(t);
  const chain = await startHardhatNode(await freePort());
  t.teardown(() => chain.stop());
  const env = {
    VELLUM_DATABASE_URL: database,
    VELLUM_CHAIN: 'rpc',
    VELLUM_CHAIN_RPC_URL: chain.url,
    VELLUM_CHAIN_PRIVATE_KEY: HARDHAT_KEYS[0],
    VELLUM_CHAIN_ID: '31337',
    VELLUM_ANCHOR_INTERVAL_MS: '200',
    VELLUM_MASTER_KEY: randomBytes(32).toString('hex'),
    VELLUM_AUTH: 'off',
  };
  const first = await startProcessServer(t, { env });
  // The second node uses the registries the first deployed.
  const remembered = JSON.parse(fs.readFileSync(path.join(first.dataDir, 'chain-contract.json'), 'utf8')) as { contract: string; consentContract?: string };
  const second = await startProcessServer(t, {
    env: { ...env, VELLUM_CHAIN_CONTRACT: remembered.contract, ...(remembered.consentContract ? { VELLUM_CONSENT_CONTRACT: remembered.consentContract } : {}) },
  });
  const nodes = [first, second];

  await t.test('a write on one node is read on the other', async (t) => {
    const created = await first.fhir('POST', 'Patient', { resourceType: 'Patient', name: [{ family: 'Shared' }] });
    t.equal(created.status, 201);
    const read = await second.fhir('GET', `Patient/${created.json.id}`);
    t.equal(read.status, 200);
    t.equal(read.json.meta.versionId, '1');
    const search = await second.fhir('GET', 'Patient?family=Shared');
    t.same(search.json.entry.map((e: any) => e.resource.id), [created.json.id]);
  });

  await t.test('conditional updates of one resource from both nodes at once: one wins, the other gets 412', async (t) => {
    const created = await first.fhir('POST', 'Patient', { resourceType: 'Patient', name: [{ family: 'Contended' }] });
    const id = created.json.id as string;
    for (let v = 1; v <= 10; v++) {
      const update = (s: ProcessServer, n: number) =>
        s.fhir('PUT', `Patient/${id}`, { resourceType: 'Patient', id, name: [{ family: `Contended${v}-${n}` }] }, { 'if-match': `W/"${v}"` });
      const statuses = (await Promise.all([update(first, 1), update(second, 2)])).map((r) => r.status).sort();
      t.same(statuses, [200, 412], `version ${v}: one 200, one 412`);
    }
    const history = await second.fhir('GET', `Patient/${id}/_history`);
    t.same(
      history.json.entry.map((e: any) => e.resource.meta.versionId),
      ['11', '10', '9', '8', '7', '6', '5', '4', '3', '2', '1'],
      'every version once, none lost or doubled',
    );
  });

  await t.test('the lease holder killed during a write load: the other node serves on and anchors everything', async (t) => {
    // Which node anchors: the one whose lease connection holds the advisory lock.
    const admin = new pg.Client({ connectionString: database });
    await admin.connect();
    t.teardown(() => admin.end());
    const holderPid = async (): Promise<number | undefined> => {
      const { rows } = await admin.query(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted AND a.application_name LIKE $1",
        [leaseName(0).replace(/0$/, '%')],
      );
      const name = (rows[0] as { application_name?: string } | undefined)?.application_name;
      return name === undefined ? undefined : Number(/(\d+)$/.exec(name)?.[1]);
    };
    // Wait for a holder (the batchers try every anchor interval).
    let pid: number | undefined;
    while ((pid = await holderPid()) === undefined) await new Promise((resolve) => setTimeout(resolve, 100));
    const victim = nodes.find((n) => n.child.pid === pid);
    t.ok(victim, 'one of the nodes holds the lease');
    const survivor = nodes.find((n) => n !== victim)!;

    // Eight clients writing, alternating nodes; the victim is killed once 60 writes are acknowledged.
    const acknowledged: string[] = [];
    let killed = false;
    const client = async (c: number) => {
      for (let i = 0; i < 25; i++) {
        const target = killed ? survivor : nodes[(c + i) % 2]!;
        try {
          const res = await target.fhir('POST', 'Patient', { resourceType: 'Patient', name: [{ family: `Load${c}x${i}` }] });
          if (res.status === 201) acknowledged.push(res.json.id);
        } catch {
          // the killed node's connection: not acknowledged
        }
        if (!killed && acknowledged.length >= 60) {
          killed = true;
          victim!.child.kill('SIGKILL');
        }
      }
    };
    await Promise.all(Array.from({ length: 8 }, (_, c) => client(c)));
    await victim!.exited;
    t.ok(killed, 'the lease holder was killed mid-load');
    t.ok(acknowledged.length >= 150, `writes went on on the survivor (${acknowledged.length} acknowledged)`);

    // The survivor takes the lease over; a write that waits for its anchor proves anchoring goes on.
    const last = await survivor.fhir('POST', 'Patient', { resourceType: 'Patient', name: [{ family: 'AfterKill' }] }, { prefer: 'anchor=wait' });
    t.equal(last.status, 201);
    t.equal(await holderPid(), survivor.child.pid, 'the survivor holds the lease');
    let readable = 0;
    let verified = 0;
    for (const id of [...acknowledged, last.json.id]) {
      if ((await survivor.fhir('GET', `Patient/${id}`)).status === 200) readable++;
      const verify = await survivor.fhir('GET', `Patient/${id}/$verify`);
      if (verify.status === 200 && param(verify.json, 'verified')?.valueBoolean === true) verified++;
    }
    t.equal(readable, acknowledged.length + 1, 'every acknowledged write is readable on the survivor');
    t.equal(verified, acknowledged.length + 1, 'and anchored, verified by the contract');
    t.equal(await survivor.stop(), 0);
  });
});
