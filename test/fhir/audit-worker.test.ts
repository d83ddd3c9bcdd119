/**
 * The converter thread is started again after a crash: here its database cannot be opened, so
 * each thread dies at start, and the trail must keep trying (and readers must not hang) until
 * closed.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { startAuditWorker, type AuditFailure } from '../../src/fhir/audit-worker.ts';

t.test('a crashed converter thread is restarted, and settle never hangs', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-audit-worker-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const codes: string[] = [];
  const failures: AuditFailure[] = [];
  const converter = startAuditWorker(
    {
      // A directory where a database file is expected: opening it fails in the thread.
      storage: { databasePath: dir },
      queuePath: path.join(dir, 'missing', 'queue.db'),
      masterKey: new Uint8Array(32).fill(7),
      baseUrl: 'http://vellum.test/fhir',
      anchoring: false,
    },
    (failure) => {
      codes.push(failure.code);
      failures.push(failure);
    },
  );
  for (let i = 0; i < 1200 && codes.filter((c) => c === 'VLM_AUDIT_WORKER_CRASHED').length < 2; i++) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  t.ok(codes.filter((c) => c === 'VLM_AUDIT_WORKER_CRASHED').length >= 2, `the thread was started again after crashing (${codes.join(',')})`);
  const crash = failures.find((f) => f.code === 'VLM_AUDIT_WORKER_CRASHED')!;
  t.ok(crash.name && crash.at?.some((frame) => frame.startsWith('src/')), `the crash names its error and where it was raised (${JSON.stringify(crash)})`);
  t.notOk('message' in crash || 'stack' in crash, 'but not its message or stack, which could quote a record');
  // The thread is unref'd (a server's sockets keep the process alive): so does this timer here.
  const alive = setInterval(() => undefined, 1_000);
  await converter.settle();
  clearInterval(alive);
  t.pass('settle resolves whether the thread is down or starting (and crashing) again');
  await converter.close();
  const after = codes.length;
  await new Promise((resolve) => setTimeout(resolve, 1_500));
  t.equal(codes.length, after, 'no restart after close');
});
