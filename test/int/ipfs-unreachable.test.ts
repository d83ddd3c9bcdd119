/**
 * With the Kubo block store (VELLUM_IPFS_URL), IPFS becoming unreachable on a write must answer
 * 503 with an OperationOutcome and commit nothing. The node only needs to answer `version` at
 * start; then its port is closed, which is what "unreachable" is. (The store itself is tested
 * against a real js-ipfs daemon in test/storage/kubo-blob-store.int.test.ts.)
 */
import http from 'node:http';
import t from 'tap';
import { issueCodes, startTestServer } from '../helpers/server.ts';

t.test('IPFS unreachable on a write → 503, nothing committed', async (t) => {
  const node = http.createServer((req, res) => {
    if (req.url?.startsWith('/api/v0/version')) {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ Version: '0.32.1', Commit: '', Repo: '16', System: 'amd64/linux', Golang: 'go1.23' }));
    } else {
      res.statusCode = 500;
      res.end();
    }
  });
  await new Promise<void>((resolve) => node.listen(0, '127.0.0.1', resolve));
  const { port } = node.address() as { port: number };
  const s = await startTestServer(t, { VELLUM_IPFS_URL: `http://127.0.0.1:${port}` });
  node.closeAllConnections();
  await new Promise<void>((resolve) => node.close(() => resolve()));

  const res = await s.fhir('POST', 'Patient', { resourceType: 'Patient', name: [{ family: 'Offline' }] });
  t.equal(res.status, 503, 'the write is refused as unavailable');
  t.equal(res.json?.resourceType, 'OperationOutcome');
  t.same(issueCodes(res.json), ['transient']);
  const put = await s.fhir('PUT', 'Patient/offline-1', { resourceType: 'Patient', id: 'offline-1' });
  t.equal(put.status, 503);
  const history = await s.fhir('GET', '_history');
  t.equal(history.json.total, 0, 'nothing was committed');
  t.equal((await s.fhir('GET', 'Patient/offline-1')).status, 404);
});
