/**
 * `vellum users add`: a login user created from the command line (password on standard input)
 * signs in through the SMART standalone launch pages.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import t from 'tap';
import { runUsers } from '../../src/cli/users.ts';
import { appAndUsers, authorizeThroughPages, startHarness } from '../fhir/auth/harness.ts';

async function users(dataDir: string, args: string[], password: string) {
  let stdout = '';
  let stderr = '';
  const io = { stdout: { write: (s: string) => (stdout += s) }, stderr: { write: (s: string) => (stderr += s) }, stdin: Readable.from([Buffer.from(password)]) };
  const code = await runUsers(args, io, { VELLUM_DATA_DIR: dataDir });
  return { code, stdout, stderr };
}

t.test('a user created by the CLI signs in', async (t) => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-users-'));
  t.teardown(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  const h = await startHarness(t, { dataDir });
  const { clientId, redirectUri } = await appAndUsers(h);

  const made = await users(dataDir, ['add', '--username', 'carol', '--fhir-user', 'Patient/p7', '--json'], 'a long enough password\n');
  t.equal(made.code, 0, made.stderr);
  t.equal(JSON.parse(made.stdout).fhir_user, 'Patient/p7');
  t.notOk(made.stdout.includes('a long enough password'), 'the password is never printed');

  const taken = await users(dataDir, ['add', '--username', 'carol', '--fhir-user', 'Patient/p8'], 'another password here');
  t.equal(taken.code, 1, 'a taken name is refused');
  const weak = await users(dataDir, ['add', '--username', 'dave', '--fhir-user', 'Patient/p9'], 'short');
  t.equal(weak.code, 1, 'a short password is refused');
  const bad = await users(dataDir, ['add', '--username', 'erin', '--fhir-user', 'Organization/o1'], 'a long enough password');
  t.equal(bad.code, 1, 'only patients and practitioners sign in');
  t.equal((await users(dataDir, ['add', '--username', 'x'], 'whatever password')).code, 2, 'usage');

  const flow = await authorizeThroughPages(h, {
    clientId,
    redirectUri,
    scope: 'openid fhirUser launch/patient patient/*.rs',
    username: 'carol',
    password: 'a long enough password',
  });
  t.ok(flow.code.length > 10, 'carol signed in and approved: an authorization code');
});
