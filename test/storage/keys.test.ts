import t from 'tap';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isStorageError } from '../../src/storage/errors.ts';
import { formatMasterKey, keyScopeFor, loadMasterKey, parseMasterKey, SHARED_SCOPE } from '../../src/storage/keys.ts';

const dir = mkdtempSync(join(tmpdir(), 'vellum-keys-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

t.test('key file is created with mode 0600 and reused', async (t) => {
  const keyFile = join(dir, 'nested', 'master.key');
  const first = await loadMasterKey({ keyFile });
  t.equal(first.byteLength, 32);
  if (process.platform !== 'win32') t.equal(statSync(keyFile).mode & 0o777, 0o600, 'mode 0600');
  t.equal(readFileSync(keyFile, 'utf8').trim(), formatMasterKey(first), 'file holds the key as base64url');
  const second = await loadMasterKey({ keyFile });
  t.same(Buffer.from(second), Buffer.from(first), 'second call reads the same key');
});

t.test('concurrent first starts agree on one key', async (t) => {
  const keyFile = join(dir, 'race.key');
  const keys = await Promise.all(Array.from({ length: 8 }, () => loadMasterKey({ keyFile })));
  for (const k of keys) t.same(Buffer.from(k), Buffer.from(keys[0]!));
  t.same(Buffer.from(await loadMasterKey({ keyFile })), Buffer.from(keys[0]!));
  t.same(readdirSync(dir).filter((f) => f.endsWith('.tmp')), [], 'no temp files left behind');
});

t.test('env key wins over the key file, in every accepted encoding', async (t) => {
  const keyFile = join(dir, 'unused.key');
  const raw = randomBytes(32);
  for (const env of [raw.toString('base64url'), raw.toString('base64'), raw.toString('hex'), raw.toString('hex').toUpperCase(), ` ${raw.toString('base64url')}\n`]) {
    const key = await loadMasterKey({ env, keyFile });
    t.same(Buffer.from(key), raw);
  }
  t.throws(() => statSync(keyFile), 'no key file created when env is set');
});

t.test('malformed env key → VLM_KEY_INVALID without leaking it', async (t) => {
  const keyFile = join(dir, 'unused2.key');
  const secretish = randomBytes(31).toString('base64url');
  for (const env of ['', 'short', secretish, randomBytes(33).toString('hex'), randomBytes(32).toString('hex').slice(1) + 'g', '!'.repeat(43)]) {
    const err = await loadMasterKey({ env, keyFile }).catch((e: unknown) => e);
    t.ok(isStorageError(err, 'VLM_KEY_INVALID'), `rejected ${env.length}-char value`);
    t.equal(isStorageError(err) && err.category, 'invalid');
    if (env.length > 4) t.notMatch(String((err as Error).message), env, 'message does not contain the value');
  }
});

t.test('malformed key file → VLM_KEY_INVALID', async (t) => {
  const keyFile = join(dir, 'bad.key');
  writeFileSync(keyFile, 'not a key\n', { mode: 0o600 });
  await t.rejects(loadMasterKey({ keyFile }), { code: 'VLM_KEY_INVALID', category: 'invalid' });
});

t.test('parseMasterKey rejects non-canonical base64', async (t) => {
  const s = randomBytes(32).toString('base64url');
  // Last char of 43 carries 2 spare bits; a value with them set is not a canonical encoding.
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  const last = alphabet.indexOf(s.at(-1)!);
  const tweaked = s.slice(0, -1) + alphabet[last | 1];
  if (tweaked !== s) t.throws(() => parseMasterKey(tweaked), { code: 'VLM_KEY_INVALID' });
  t.equal(parseMasterKey(s).byteLength, 32);
});

t.test('keyScopeFor: stable keyed pseudonym per patient, shared otherwise', async (t) => {
  const master = randomBytes(32);
  const a = keyScopeFor(master, 'Patient/123');
  t.match(a, /^[0-9a-f]{32}$/);
  t.equal(keyScopeFor(master, 'Patient/123'), a, 'stable');
  t.not(keyScopeFor(master, 'Patient/124'), a, 'different per patient');
  t.not(keyScopeFor(randomBytes(32), 'Patient/123'), a, 'depends on the master key');
  t.notMatch(a, /123/);
  t.equal(keyScopeFor(master, null), SHARED_SCOPE);
  t.equal(SHARED_SCOPE, 'shared');
  t.throws(() => keyScopeFor(master, ''), { code: 'VLM_KEY_SCOPE_INVALID' });
  t.throws(() => keyScopeFor(new Uint8Array(16), 'Patient/1'), { code: 'VLM_KEY_INVALID' });
});
