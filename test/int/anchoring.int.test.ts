/**
 * The anchor pipeline as a user runs it: a crash (SIGKILL) with leaves still pending, and an outage
 * of an external chain (a real `hardhat node` behind a TCP proxy that can cut the connection).
 * Every acknowledged write must end up anchored and verified by the contract.
 */
import net from 'node:net';
import t, { type Test } from 'tap';
import { HARDHAT_KEYS, startHardhatNode } from '../chain/chain-helpers.ts';
import { freePort, startProcessServer, tempDataDir, type ProcessServer } from '../helpers/process-server.ts';

const param = (p: any, name: string) => p?.parameter?.find((x: any) => x.name === name);

async function createPatients(s: ProcessServer, n: number, prefer?: string): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const res = await s.fhir('POST', 'Patient', { resourceType: 'Patient', name: [{ family: `Anchor${i}` }] }, prefer ? { prefer } : {});
    if (res.status !== 201) throw new Error(`create failed: ${res.status}`);
    ids.push(res.json.id);
  }
  return ids;
}

async function expectVerified(t: Test, s: ProcessServer, ids: string[], label: string) {
  let verified = 0;
  for (const id of ids) {
    const res = await s.fhir('GET', `Patient/${id}/$verify`);
    if (res.status === 200 && param(res.json, 'verified')?.valueBoolean === true) verified++;
  }
  t.equal(verified, ids.length, `${label}: every acknowledged write is anchored and verified by the contract`);
}

t.test('crash with leaves pending: after a restart every acknowledged write is anchored', async (t) => {
  const dataDir = tempDataDir(t);
  // A long window: the leaves are still pending when the process is killed.
  // The audit trail is off in these tests: they count the anchor backlog, which AuditEvents (anchored too) would move.
  const first = await startProcessServer(t, { dataDir, env: { VELLUM_ANCHOR_INTERVAL_MS: '600000', VELLUM_AUDIT: 'off' } });
  const ids = await createPatients(first, 20);
  const ready = await first.http('GET', '/ready');
  t.equal(ready.json.anchorBacklog, 20, 'acknowledged but not yet anchored');
  first.child.kill('SIGKILL');
  await first.exited;

  const second = await startProcessServer(t, { dataDir, env: { VELLUM_ANCHOR_INTERVAL_MS: '50', VELLUM_AUDIT: 'off' } });
  // Batches go in write order: once a new write is anchored (anchor=wait), the older leaves are too.
  const [last] = await createPatients(second, 1, 'anchor=wait');
  await expectVerified(t, second, [...ids, last!], 'after SIGKILL');
  t.equal((await second.http('GET', '/ready')).json.anchorBacklog, 0);
  t.equal(await second.stop(), 0);
});

t.test('external chain outage: writes are accepted, queued, and anchored once the chain answers', async (t) => {
  const nodePort = await freePort();
  const node = await startHardhatNode(nodePort);
  t.teardown(() => node.stop());

  // A TCP proxy Vellum talks to; `down` cuts every connection, as a network outage would.
  let down = false;
  const sockets = new Set<net.Socket>();
  const proxy = net.createServer((client) => {
    if (down) return client.destroy();
    const upstream = net.connect(nodePort, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => s.destroy());
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => proxy.close(() => resolve())));
  const proxyUrl = `http://127.0.0.1:${(proxy.address() as net.AddressInfo).port}`;

  const s = await startProcessServer(t, {
    env: {
      VELLUM_CHAIN: 'rpc',
      VELLUM_CHAIN_RPC_URL: proxyUrl,
      VELLUM_CHAIN_PRIVATE_KEY: HARDHAT_KEYS[0],
      VELLUM_CHAIN_ID: '31337',
      VELLUM_ANCHOR_INTERVAL_MS: '100',
      VELLUM_AUDIT: 'off',
    },
  });
  const before = await createPatients(s, 3, 'anchor=wait');
  await expectVerified(t, s, before, 'chain up');

  down = true;
  for (const socket of sockets) socket.destroy();
  const during = await createPatients(s, 10);
  t.equal(during.length, 10, 'writes are acknowledged while the chain is down');
  const ready = await s.http('GET', '/ready');
  t.equal(ready.status, 200, 'storage is ready');
  t.equal(ready.json.chain, 'unavailable', '/ready reports the chain outage');
  t.ok(ready.json.anchorBacklog >= 10, '/ready reports the backlog');
  const metrics = await s.http('GET', '/metrics');
  t.match(metrics.text, /vellum_anchor_backlog (1\d|[2-9]\d)/, '/metrics reports the backlog');

  down = false;
  const [after] = await createPatients(s, 1, 'anchor=wait');
  await expectVerified(t, s, [...during, after!], 'after the outage');
  t.equal((await s.http('GET', '/ready')).json.anchorBacklog, 0, 'no backlog left');
  t.equal(await s.stop(), 0);
});
