/**
 * PostgreSQL stopped and started under a running Vellum: requests are answered 503 (and /ready
 * says so) while it is down, nothing half-written is left, and everything works again once it is
 * back — without restarting Vellum.
 */
import t from 'tap';
import { launchCluster } from '../helpers/postgres.ts';
import { startTestServer, vellumCodes } from '../helpers/server.ts';

t.test('the database down: 503 meanwhile, served again afterwards without a restart', async (t) => {
  const cluster = await launchCluster();
  const s = await startTestServer(t, { VELLUM_DATABASE_URL: cluster.url });
  const created = await s.fhir('POST', 'Patient', { resourceType: 'Patient', name: [{ family: 'Before' }] });
  t.equal(created.status, 201);
  const ready = () => s.app.inject({ method: 'GET', url: '/ready' });
  t.equal((await ready()).statusCode, 200);

  cluster.stop();
  const read = await s.fhir('GET', `Patient/${created.json.id}`);
  t.equal(read.status, 503, 'a read while the database is down');
  t.same(vellumCodes(read.json), ['VLM_DB_UNAVAILABLE']);
  const write = await s.fhir('POST', 'Patient', { resourceType: 'Patient', name: [{ family: 'During' }] });
  t.equal(write.status, 503, 'a write while the database is down');
  t.equal((await s.fhir('GET', 'Patient?family=Before')).status, 503, 'a search');
  t.equal((await ready()).statusCode, 503, '/ready says the server cannot serve');

  cluster.start();
  t.equal((await ready()).statusCode, 200, '/ready again');
  t.equal((await s.fhir('GET', `Patient/${created.json.id}`)).status, 200, 'reads again');
  const after = await s.fhir('POST', 'Patient', { resourceType: 'Patient', name: [{ family: 'After' }] });
  t.equal(after.status, 201, 'writes again');
  const all = await s.fhir('GET', 'Patient?_count=10');
  t.same(all.json.entry.map((e: any) => e.resource.name[0].family).sort(), ['After', 'Before'], 'the refused write left nothing behind');
});
