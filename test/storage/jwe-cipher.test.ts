import t from 'tap';
import { randomBytes } from 'node:crypto';
import { compactDecrypt, decodeProtectedHeader, flattenedDecrypt } from 'jose';
import type { EnvelopeBinding } from '../../src/storage/cipher.ts';
import { BINDING_HEADER, JweCipher, unwrapDataKey } from '../../src/storage/jwe-cipher.ts';
import { keyScopeFor } from '../../src/storage/keys.ts';
import { MemoryDataKeyStore } from '../../src/storage/memory-data-key-store.ts';

const master = randomBytes(32);
const scope = keyScopeFor(master, 'Patient/123');
const binding: EnvelopeBinding = { resourceType: 'Observation', id: 'obs-1', versionId: '1', keyScope: scope };
const text = (s: string) => new TextEncoder().encode(s);
const str = (b: Uint8Array) => new TextDecoder().decode(b);
const payload = text(JSON.stringify({ resourceType: 'Observation', id: 'obs-1', status: 'final' }));

t.test('seal/open round trip; envelope is a JWE compact string without raw ids', async (t) => {
  const cipher = new JweCipher(master, new MemoryDataKeyStore());
  const env = await cipher.seal(payload, binding);
  const jwe = str(env);
  t.equal(jwe.split('.').length, 5, 'compact serialization');
  const header = decodeProtectedHeader(jwe);
  t.same(
    { alg: header.alg, enc: header.enc, kid: header.kid },
    { alg: 'A256KW', enc: 'A256GCM', kid: scope },
  );
  t.match(header[BINDING_HEADER], /^[A-Za-z0-9_-]{43}$/);
  t.notMatch(jwe + JSON.stringify(header), /obs-1|Observation|Patient/, 'no ids in the envelope');
  t.same(str(await cipher.open(env, binding)), str(payload));
  t.not(str(await cipher.seal(payload, binding)), jwe, 'fresh CEK and IV per seal');
});

t.test('an envelope opened for another binding → VLM_CIPHER_BINDING', async (t) => {
  const cipher = new JweCipher(master, new MemoryDataKeyStore());
  const env = await cipher.seal(payload, binding);
  for (const other of [
    { ...binding, versionId: '2' },
    { ...binding, id: 'obs-2' },
    { ...binding, resourceType: 'Condition' },
    { ...binding, keyScope: keyScopeFor(master, 'Patient/999') },
  ]) {
    await t.rejects(cipher.open(env, other), { code: 'VLM_CIPHER_BINDING', category: 'fault' });
  }
  // swap: version 2's envelope stored in place of version 1's
  const env2 = await cipher.seal(text('v2'), { ...binding, versionId: '2' });
  await t.rejects(cipher.open(env2, binding), { code: 'VLM_CIPHER_BINDING' });
});

t.test('tampering → VLM_CIPHER_BINDING', async (t) => {
  const cipher = new JweCipher(master, new MemoryDataKeyStore());
  const jwe = str(await cipher.seal(payload, binding));
  const parts = jwe.split('.');
  const flip = (s: string) => (s[5] === 'A' ? s.slice(0, 5) + 'B' + s.slice(6) : s.slice(0, 5) + 'A' + s.slice(6));
  for (let i = 0; i < 5; i++) {
    const tampered = parts.map((p, j) => (j === i ? flip(p) : p)).join('.');
    await t.rejects(cipher.open(text(tampered), binding), { code: 'VLM_CIPHER_BINDING' }, `part ${i} altered`);
  }
  // a forged header that keeps kid and vlm.bnd but re-encodes the JSON also fails (it is GCM AAD)
  const header = JSON.parse(Buffer.from(parts[0]!, 'base64url').toString());
  const forged = [Buffer.from(JSON.stringify({ ...header, x: 1 })).toString('base64url'), ...parts.slice(1)].join('.');
  await t.rejects(cipher.open(text(forged), binding), { code: 'VLM_CIPHER_BINDING' }, 'header re-encoded');
  await t.rejects(cipher.open(text('garbage'), binding), { code: 'VLM_CIPHER_BINDING' });
  await t.rejects(cipher.open(Uint8Array.of(0xff, 0xfe), binding), { code: 'VLM_CIPHER_BINDING' });
});

t.test('shredded scope → VLM_CIPHER_KEY_SHREDDED (gone), other scopes unaffected', async (t) => {
  const store = new MemoryDataKeyStore();
  const cipher = new JweCipher(master, store);
  const other: EnvelopeBinding = { ...binding, keyScope: keyScopeFor(master, 'Patient/456') };
  const env = await cipher.seal(payload, binding);
  const envOther = await cipher.seal(payload, other);
  cipher.shred(scope);
  await t.rejects(cipher.open(env, binding), { code: 'VLM_CIPHER_KEY_SHREDDED', category: 'gone' });
  t.ok(await cipher.open(envOther, other));

  // deleted directly in the store (e.g. by another node): the cache must not keep it alive
  const env2 = await cipher.seal(payload, other);
  store.deleteWrappedKey(other.keyScope);
  await t.rejects(cipher.open(env2, other), { code: 'VLM_CIPHER_KEY_SHREDDED', category: 'gone' });

  // a new key for a shredded scope does not bring old envelopes back
  await cipher.seal(payload, binding);
  await t.rejects(cipher.open(env, binding), { code: 'VLM_CIPHER_BINDING' });
});

t.test('data key is persisted once and reused by another instance with the same master key', async (t) => {
  const store = new MemoryDataKeyStore();
  const a = new JweCipher(master, store);
  const env = await a.seal(payload, binding);
  const wrapped = store.getWrappedKey(scope);
  t.ok(wrapped, 'wrapped key stored');
  t.equal(store.scopes().length, 1);
  await a.seal(payload, { ...binding, versionId: '2' });
  t.same(store.getWrappedKey(scope), wrapped, 'same key for the same scope');
  const b = new JweCipher(Uint8Array.from(master), store);
  t.same(str(await b.open(env, binding)), str(payload));
  t.same(str(await a.open(await b.seal(payload, binding), binding)), str(payload));
});

t.test('concurrent first seals of a scope converge on one key', async (t) => {
  const store = new MemoryDataKeyStore();
  const ciphers = [new JweCipher(master, store), new JweCipher(master, store)];
  const envs = await Promise.all(Array.from({ length: 10 }, (_, i) => ciphers[i % 2]!.seal(payload, { ...binding, versionId: String(i) })));
  for (const [i, env] of envs.entries()) t.ok(await ciphers[(i + 1) % 2]!.open(env, { ...binding, versionId: String(i) }));
});

t.test('wrong master key → VLM_CIPHER_KEY_UNWRAP', async (t) => {
  const store = new MemoryDataKeyStore();
  const env = await new JweCipher(master, store).seal(payload, binding);
  const wrong = new JweCipher(randomBytes(32), store);
  await t.rejects(wrong.open(env, binding), { code: 'VLM_CIPHER_KEY_UNWRAP', category: 'fault' });
  await t.rejects(wrong.seal(payload, binding), { code: 'VLM_CIPHER_KEY_UNWRAP' });
  t.throws(() => unwrapDataKey(randomBytes(32), scope, store.getWrappedKey(scope)!), { code: 'VLM_CIPHER_KEY_UNWRAP' });
  // a wrapped key moved to another scope does not unwrap (scope is AAD of the wrap)
  t.throws(() => unwrapDataKey(master, 'shared', store.getWrappedKey(scope)!), { code: 'VLM_CIPHER_KEY_UNWRAP' });
});

t.test('invalid binding → VLM_CIPHER_BINDING_INVALID', async (t) => {
  const cipher = new JweCipher(master, new MemoryDataKeyStore());
  await t.rejects(cipher.seal(payload, { ...binding, id: '' }), { code: 'VLM_CIPHER_BINDING_INVALID', category: 'invalid' });
  await t.rejects(cipher.seal(payload, { ...binding, id: 'a/b' }), { code: 'VLM_CIPHER_BINDING_INVALID' });
  await t.rejects(cipher.seal(payload, { ...binding, keyScope: '' }), { code: 'VLM_CIPHER_BINDING_INVALID' });
  const ac = new AbortController();
  ac.abort();
  await t.rejects(cipher.seal(payload, binding, { signal: ac.signal }), { code: 'VLM_CIPHER_ABORTED' });
});

t.test('interoperability: plain jose decrypts with the unwrapped data key', async (t) => {
  const store = new MemoryDataKeyStore();
  const cipher = new JweCipher(master, store);
  const jwe = str(await cipher.seal(payload, binding));
  const dataKey = unwrapDataKey(master, scope, store.getWrappedKey(scope)!);
  t.equal(dataKey.byteLength, 32);
  const { plaintext, protectedHeader } = await compactDecrypt(jwe, dataKey);
  t.same(str(plaintext), str(payload));
  t.equal(protectedHeader.kid, scope);
  // the same envelope in flattened JSON form, as a JSON-serialization consumer would hold it
  const [p, ek, iv, ct, tag] = jwe.split('.');
  const flat = await flattenedDecrypt({ protected: p!, encrypted_key: ek!, iv: iv!, ciphertext: ct!, tag: tag! }, dataKey);
  t.same(str(flat.plaintext), str(payload));
});

t.test('throughput, 2 KB payload (informational)', async (t) => {
  const cipher = new JweCipher(master, new MemoryDataKeyStore());
  const body = randomBytes(2048);
  await cipher.open(await cipher.seal(body, binding), binding); // warm-up: key created and cached
  const n = 3000;
  const envs: Uint8Array[] = [];
  let start = performance.now();
  for (let i = 0; i < n; i++) envs.push(await cipher.seal(body, binding));
  const sealPerSec = (n / (performance.now() - start)) * 1000;
  start = performance.now();
  for (const env of envs) await cipher.open(env, binding);
  const openPerSec = (n / (performance.now() - start)) * 1000;
  start = performance.now();
  await Promise.all(envs.map((env) => cipher.open(env, binding)));
  const openConcurrent = (n / (performance.now() - start)) * 1000;
  t.comment(`JweCipher 2 KB: seal ${Math.round(sealPerSec)}/s, open ${Math.round(openPerSec)}/s sequential, open ${Math.round(openConcurrent)}/s with ${n} in flight; envelope ${envs[0]!.byteLength} bytes`);
  t.pass();
});
