/**
 * A full disk, for real: `npm start`'s process with its data dir on a small tmpfs. Writes that find
 * no space are answered 507 `VLM_STORAGE_FULL` and change nothing (every acknowledged write is
 * readable, the refused ones are not there), the cause is logged once rather than per request, the
 * server stays up and serves reads, and writes succeed again once space is freed — without a restart.
 *
 * Needs to mount a tmpfs (root, as in CI); elsewhere the test says why it cannot run.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { startProcessServer } from '../helpers/process-server.ts';

const codeOf = (res: { json: any }) => res.json?.issue?.[0]?.details?.coding?.[0]?.code;

t.test('a full disk: 507 VLM_STORAGE_FULL, nothing half-written, logged once, writes resume once space is freed', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-full-'));
  const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=24m', 'tmpfs', dir]);
  if (mounted.status !== 0) {
    fs.rmdirSync(dir);
    t.plan(0, `cannot mount a tmpfs here (${String(mounted.stderr).trim() || mounted.status}): run as root`);
    return;
  }
  t.teardown(() => {
    spawnSync('umount', ['-l', dir]);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  // Ballast, removed later to free space.
  const ballast = path.join(dir, 'ballast');
  fs.writeFileSync(ballast, Buffer.alloc(6 * 1024 * 1024, 1));
  const dataDir = path.join(dir, 'data');
  // Anchoring and the audit trail off: what fills the disk is the writes' own blocks and index.
  const s = await startProcessServer(t, { dataDir, env: { VELLUM_CHAIN: 'off', VELLUM_AUTH: 'off', VELLUM_AUDIT: 'off' } });

  const note = 'x'.repeat(200_000);
  const acknowledged: string[] = [];
  const refused: string[] = [];
  for (let i = 0; refused.length < 3 && i < 400; i++) {
    const id = `big-${i}`;
    const res = await s.fhir('PUT', `Observation/${id}`, {
      resourceType: 'Observation',
      id,
      status: 'final',
      code: { text: `filler ${i}` },
      note: [{ text: `${i} ${note}` }],
    });
    if (res.status === 201) acknowledged.push(id);
    else {
      t.equal(res.status, 507, `a write without space: 507 (${res.text.slice(0, 200)})`);
      t.equal(codeOf(res), 'VLM_STORAGE_FULL');
      refused.push(id);
    }
  }
  t.equal(refused.length, 3, 'the disk filled up');
  t.ok(acknowledged.length > 10, `${acknowledged.length} writes fitted first`);

  // Nothing half-written: every acknowledged write reads back, none of the refused exists.
  for (const id of acknowledged) t.equal((await s.fhir('GET', `Observation/${id}`)).status, 200, `${id} was kept`);
  for (const id of refused) t.equal((await s.fhir('GET', `Observation/${id}`)).status, 404, `${id} was not written`);
  const count = await s.fhir('GET', 'Observation?_summary=count');
  t.equal(count.json.total, acknowledged.length, 'the index holds exactly the acknowledged writes');

  const logged = s.lines().filter((line) => line.includes('storage is full'));
  t.equal(logged.length, 1, 'the cause is logged once, not per request');
  t.notOk(s.stdout().includes(note.slice(0, 1000)), 'no resource content in the logs');

  // Space freed: writes succeed again, without a restart.
  fs.rmSync(ballast);
  const again = await s.fhir('PUT', 'Observation/after', { resourceType: 'Observation', id: 'after', status: 'final', code: { text: 'after' } });
  t.equal(again.status, 201, `a write after space was freed: ${again.text.slice(0, 200)}`);
  t.equal((await s.fhir('GET', 'Observation/after')).status, 200);
  t.equal(await s.stop(), 0, 'the server stops cleanly');
});
