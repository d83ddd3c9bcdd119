import t from 'tap';
import { createHmac, randomBytes } from 'node:crypto';
import { CompactEncrypt, compactDecrypt, decodeProtectedHeader, flattenedDecrypt } from 'jose';
import type { EnvelopeBinding } from '../../src/storage/cipher.ts';
import { BINDING_HEADER, JweCipher, unwrapDataKey } from '../../src/storage/jwe-cipher.ts';
import { deriveKey, KEY_PURPOSE, keyScopeFor, SHARED_SCOPE } from '../../src/storage/keys.ts';
import { MemoryDataKeyStore } from '../../src/storage/memory-data-key-store.ts';

const master = randomBytes(32);
const scope = keyScopeFor(master, 'Patient/123');
const binding: EnvelopeBinding = { resourceType: 'Observation', id: 'obs-1', versionId: '1', keyScope: scope };
const text = (s: string) => new TextEncoder().encode(s);
const str = (b: Uint8Array) => new TextDecoder().decode(b);
const payload = text(JSON.stringify({ resourceType: 'Observation', id: 'obs-1', status: 'final' }));
const b64u = (b: Uint8Array | string) => Buffer.from(b).toString('base64url');
/** The decoded protected header of a compact JWE. */
const headerOf = (jwe: string): Record<string, unknown> => JSON.parse(Buffer.from(jwe.split('.')[0]!, 'base64url').toString('utf8'));
/** The binding tag of `b`, computed independently of JweCipher (as another implementation would). */
const bindingTagOf = (b: EnvelopeBinding) =>
  createHmac('sha256', deriveKey(master, KEY_PURPOSE.binding)).update(`${b.resourceType}/${b.id}/${b.versionId}`).digest('base64url');

t.test('seal/open round trip; envelope is a JWE compact string without raw ids', async (t) => {
  const cipher = new JweCipher(master, new MemoryDataKeyStore());
  const env = await cipher.seal(payload, binding);
  const jwe = str(env);
  t.equal(jwe.split('.').length, 5, 'compact serialization');
  const header = decodeProtectedHeader(jwe);
  t.same(Object.keys(header), ['alg', 'enc', BINDING_HEADER], 'exactly alg, enc and the binding tag: no kid');
  t.same({ alg: header.alg, enc: header.enc }, { alg: 'A256KW', enc: 'A256GCM' });
  t.equal(header[BINDING_HEADER], bindingTagOf(binding));
  t.notMatch(jwe + JSON.stringify(header), /obs-1|Observation|Patient/, 'no ids in the envelope');
  t.notOk((jwe + JSON.stringify(header)).includes(scope), 'no key scope in the envelope');
  t.same(str(await cipher.open(env, binding)), str(payload));
  t.not(str(await cipher.seal(payload, binding)), jwe, 'fresh CEK and IV per seal');
});

t.test('an envelope opened for another binding → VLM_CIPHER_BINDING', async (t) => {
  const cipher = new JweCipher(master, new MemoryDataKeyStore());
  const env = await cipher.seal(payload, binding);
  const otherScope = keyScopeFor(master, 'Patient/999');
  // give the other scopes data keys
  await cipher.seal(payload, { ...binding, keyScope: otherScope });
  await cipher.seal(payload, { ...binding, keyScope: SHARED_SCOPE });
  for (const other of [
    { ...binding, versionId: '2' },
    { ...binding, id: 'obs-2' },
    { ...binding, resourceType: 'Condition' },
    { ...binding, keyScope: otherScope }, // the CEK does not unwrap under the other scope's key
    { ...binding, keyScope: SHARED_SCOPE },
  ]) {
    await t.rejects(cipher.open(env, other), { code: 'VLM_CIPHER_BINDING', category: 'fault' }, JSON.stringify(other));
  }
  // The envelope names no scope: under a scope that never had a data key, all we can tell is that
  // no key exists for it.
  await t.rejects(cipher.open(env, { ...binding, keyScope: keyScopeFor(master, 'Patient/never') }), { code: 'VLM_CIPHER_KEY_SHREDDED' });
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
  // a forged header that keeps alg, enc and vlm.bnd but re-encodes the JSON also fails (it is GCM AAD)
  const header = JSON.parse(Buffer.from(parts[0]!, 'base64url').toString());
  const forged = [Buffer.from(JSON.stringify({ ...header, x: 1 })).toString('base64url'), ...parts.slice(1)].join('.');
  await t.rejects(cipher.open(text(forged), binding), { code: 'VLM_CIPHER_BINDING' }, 'header re-encoded');
  const spaced = [Buffer.from(JSON.stringify(header, null, 1)).toString('base64url'), ...parts.slice(1)].join('.');
  await t.rejects(cipher.open(text(spaced), binding), { code: 'VLM_CIPHER_BINDING' }, 'same header JSON, other encoding');
  // swapping the encrypted key, IV or tag in from another envelope of the same scope
  const other = str(await cipher.seal(payload, binding)).split('.');
  for (const i of [1, 2, 4]) {
    const mixed = parts.map((p, j) => (j === i ? other[j]! : p)).join('.');
    await t.rejects(cipher.open(text(mixed), binding), { code: 'VLM_CIPHER_BINDING' }, `part ${i} from another envelope`);
  }
  await t.rejects(cipher.open(text('garbage'), binding), { code: 'VLM_CIPHER_BINDING' });
  await t.rejects(cipher.open(Uint8Array.of(0xff, 0xfe), binding), { code: 'VLM_CIPHER_BINDING' });
});

t.test('shredded scope → VLM_CIPHER_KEY_SHREDDED (gone), other scopes unaffected', async (t) => {
  const store = new MemoryDataKeyStore();
  const cipher = new JweCipher(master, store);
  const other: EnvelopeBinding = { ...binding, keyScope: keyScopeFor(master, 'Patient/456') };
  const env = await cipher.seal(payload, binding);
  const envOther = await cipher.seal(payload, other);
  await cipher.shred(scope);
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
  const { plaintext, protectedHeader } = await compactDecrypt(jwe, dataKey, {
    keyManagementAlgorithms: ['A256KW'],
    contentEncryptionAlgorithms: ['A256GCM'],
  });
  t.same(str(plaintext), str(payload));
  t.same(protectedHeader, { alg: 'A256KW', enc: 'A256GCM', [BINDING_HEADER]: bindingTagOf(binding) });
  // empty plaintext: empty ciphertext segment
  const empty = str(await cipher.seal(new Uint8Array(0), binding));
  t.equal(empty.split('.')[3], '');
  t.equal((await compactDecrypt(empty, dataKey)).plaintext.byteLength, 0);
  // the same envelope in flattened JSON form, as a JSON-serialization consumer would hold it
  const [p, ek, iv, ct, tag] = jwe.split('.');
  const flat = await flattenedDecrypt({ protected: p!, encrypted_key: ek!, iv: iv!, ciphertext: ct!, tag: tag! }, dataKey);
  t.same(str(flat.plaintext), str(payload));
});

t.test('interoperability: envelopes made by jose CompactEncrypt open with JweCipher', async (t) => {
  const store = new MemoryDataKeyStore();
  const cipher = new JweCipher(master, store);
  await cipher.seal(payload, binding); // creates the scope's data key
  const dataKey = unwrapDataKey(master, scope, store.getWrappedKey(scope)!);
  const joseSeal = (body: Uint8Array, header: Record<string, unknown>) =>
    new CompactEncrypt(body).setProtectedHeader({ alg: 'A256KW', enc: 'A256GCM', ...header }).encrypt(dataKey);

  const jwe = await joseSeal(payload, { [BINDING_HEADER]: bindingTagOf(binding) });
  const opened = await cipher.open(text(jwe), binding);
  t.same(str(opened), str(payload));
  t.ok(opened instanceof Uint8Array);
  t.equal((await cipher.open(text(await joseSeal(new Uint8Array(0), { [BINDING_HEADER]: bindingTagOf(binding) })), binding)).byteLength, 0, 'empty plaintext');
  const big = randomBytes(100_000);
  t.same(Buffer.from(await cipher.open(text(await joseSeal(big, { [BINDING_HEADER]: bindingTagOf(binding) })), binding)), big, '100 KB');
  // unknown header parameters are ignored (RFC 7516 §4), except that they are authenticated
  t.ok(await cipher.open(text(await joseSeal(payload, { [BINDING_HEADER]: bindingTagOf(binding), cty: 'application/fhir+json' })), binding));

  // still bound: another version's tag, or no tag, is refused
  const v2 = await joseSeal(payload, { [BINDING_HEADER]: bindingTagOf({ ...binding, versionId: '2' }) });
  await t.rejects(cipher.open(text(v2), binding), { code: 'VLM_CIPHER_BINDING' });
  t.ok(await cipher.open(text(v2), { ...binding, versionId: '2' }));
  await t.rejects(cipher.open(text(await joseSeal(payload, {})), binding), { code: 'VLM_CIPHER_BINDING' }, 'no binding tag');

  // envelopes sealed before kid was dropped (kid = key scope) still open; a kid naming another scope does not
  t.same(str(await cipher.open(text(await joseSeal(payload, { kid: scope, [BINDING_HEADER]: bindingTagOf(binding) })), binding)), str(payload), 'legacy kid');
  const otherKid = await joseSeal(payload, { kid: keyScopeFor(master, 'Patient/456'), [BINDING_HEADER]: bindingTagOf(binding) });
  await t.rejects(cipher.open(text(otherKid), binding), { code: 'VLM_CIPHER_BINDING' }, 'kid of another scope');

  // encrypted under some other key: the CEK does not unwrap
  const foreign = await new CompactEncrypt(payload)
    .setProtectedHeader({ alg: 'A256KW', enc: 'A256GCM', [BINDING_HEADER]: bindingTagOf(binding) })
    .encrypt(randomBytes(32));
  await t.rejects(cipher.open(text(foreign), binding), { code: 'VLM_CIPHER_BINDING' }, 'foreign key');
});

t.test('malformed compact serializations → VLM_CIPHER_BINDING', async (t) => {
  const cipher = new JweCipher(master, new MemoryDataKeyStore());
  const jwe = str(await cipher.seal(payload, binding));
  const [h, ek, iv, ct, tag] = jwe.split('.') as [string, string, string, string, string];
  const header = headerOf(jwe);
  const withHeader = (hdr: unknown) => [b64u(JSON.stringify(hdr)), ek, iv, ct, tag].join('.');
  const withPart = (i: number, value: string) => jwe.split('.').map((p, j) => (j === i ? value : p)).join('.');
  const { alg: _alg, ...noAlg } = header;
  const { enc: _enc, ...noEnc } = header;
  // the last character of a 16-byte (22-char) tag carries 4 unused bits: make one of them 1
  const lastTag = tag[tag.length - 1]!;
  const nonCanonicalTag = tag.slice(0, -1) + (lastTag === 'B' ? 'C' : 'B');
  t.equal(Buffer.from(nonCanonicalTag, 'base64url').length, 16, 'non-canonical tag still decodes leniently');

  const cases: Array<[string, string | Uint8Array, RegExp]> = [
    // segment structure
    ['empty', '', /5 segments/],
    ['five empty segments', '....', /has an empty protected header/],
    ['truncated: 4 segments', [h, ek, iv, ct].join('.'), /5 segments/],
    ['truncated: 3 segments', [h, ek, iv].join('.'), /5 segments/],
    ['truncated inside the tag', jwe.slice(0, jwe.length - 3), /tag is not canonical base64url|tag has the wrong length/],
    ['truncated mid-ciphertext', jwe.slice(0, h.length + ek.length + iv.length + 3 + Math.floor(ct.length / 2)), /5 segments/],
    ['6 segments', `${jwe}.${tag}`, /5 segments/],
    ['trailing dot', `${jwe}.`, /5 segments/],
    ['JWS-like', `${h}.${ct}.${tag}`, /5 segments/],
    ['empty header', withPart(0, ''), /has an empty protected header/],
    ['empty encrypted key', withPart(1, ''), /encrypted key has the wrong length/],
    ['empty IV', withPart(2, ''), /IV has the wrong length/],
    ['empty tag', withPart(4, ''), /authentication tag has the wrong length/],
    // lengths
    ['encrypted key too short', withPart(1, ek.slice(0, 40)), /encrypted key has the wrong length/],
    ['encrypted key of 32 bytes', withPart(1, b64u(randomBytes(32))), /encrypted key has the wrong length/],
    ['encrypted key too long', withPart(1, b64u(randomBytes(48))), /encrypted key has the wrong length/],
    ['IV of 16 bytes', withPart(2, b64u(randomBytes(16))), /IV has the wrong length/],
    ['IV of 8 bytes', withPart(2, b64u(randomBytes(8))), /IV has the wrong length/],
    ['tag truncated to 12 bytes', withPart(4, tag.slice(0, 16)), /authentication tag has the wrong length/],
    ['tag truncated to 15 bytes', withPart(4, tag.slice(0, 20)), /authentication tag has the wrong length/],
    ['tag too long', withPart(4, b64u(randomBytes(17))), /authentication tag has the wrong length/],
    ['ciphertext truncated', withPart(3, ct.slice(0, ct.length - 4)), /failed authentication/],
    // base64url
    ['padding on tag', withPart(4, `${tag}==`), /authentication tag is not base64url/],
    ['standard base64 "+" in ciphertext', withPart(3, `+${ct.slice(1)}`), /ciphertext is not base64url/],
    ['standard base64 "/" in IV', withPart(2, `/${iv.slice(1)}`), /IV is not base64url/],
    ['space in ciphertext', withPart(3, `${ct.slice(0, 8)} ${ct.slice(8)}`), /ciphertext is not base64url/],
    ['trailing newline', `${jwe}\n`, /authentication tag is not base64url/],
    ['leading whitespace', ` ${jwe}`, /protected header is not base64url/],
    ['ciphertext of length 4n+1', withPart(3, ct + 'A'.repeat((5 - (ct.length % 4)) % 4)), /ciphertext is not base64url/],
    ['tag of length 4n+1', withPart(4, `${tag}AAA`), /authentication tag is not base64url/],
    ['non-canonical trailing bits', withPart(4, nonCanonicalTag), /authentication tag is not canonical base64url/],
    ['non-ASCII byte', Uint8Array.from([...text(jwe.slice(0, 60)), 0xc3, 0xa9, ...text(jwe.slice(60))]), /protected header is not base64url/],
    ['invalid UTF-8 bytes', Uint8Array.of(0xff, 0xfe, 0x2e, 0x2e, 0x2e, 0x2e), /protected header is not base64url/],
    // protected header
    ['header not JSON', withPart(0, b64u('not json')), /protected header is not UTF-8 JSON/],
    ['header JSON array', withPart(0, b64u('[]')), /protected header is not a JSON object/],
    ['header JSON null', withPart(0, b64u('null')), /protected header is not a JSON object/],
    ['header JSON string', withPart(0, b64u('"A256KW"')), /protected header is not a JSON object/],
    ['header not UTF-8', withPart(0, b64u(Uint8Array.of(0x7b, 0xff, 0x7d))), /protected header is not UTF-8 JSON/],
    ['alg missing', withHeader(noAlg), /uses unexpected JWE algorithms/],
    ['alg A128KW', withHeader({ ...header, alg: 'A128KW' }), /uses unexpected JWE algorithms/],
    ['alg dir', withHeader({ ...header, alg: 'dir' }), /uses unexpected JWE algorithms/],
    ['alg RSA-OAEP', withHeader({ ...header, alg: 'RSA-OAEP' }), /uses unexpected JWE algorithms/],
    ['alg lower-case', withHeader({ ...header, alg: 'a256kw' }), /uses unexpected JWE algorithms/],
    ['enc missing', withHeader(noEnc), /uses unexpected JWE algorithms/],
    ['enc A128GCM', withHeader({ ...header, enc: 'A128GCM' }), /uses unexpected JWE algorithms/],
    ['enc A256CBC-HS512', withHeader({ ...header, enc: 'A256CBC-HS512' }), /uses unexpected JWE algorithms/],
    ['zip', withHeader({ ...header, zip: 'DEF' }), /uses unexpected JWE algorithms/],
    ['crit', withHeader({ ...header, crit: [BINDING_HEADER] }), /requires unsupported JWE extensions/],
    ['binding tag not a string', withHeader({ ...header, [BINDING_HEADER]: 1 }), /was sealed for another resource version/],
  ];
  // each is caught by the structural check meant for it (the message says which), not by accident
  for (const [name, env, message] of cases) {
    await t.rejects(cipher.open(typeof env === 'string' ? text(env) : env, binding), { code: 'VLM_CIPHER_BINDING', category: 'fault', message }, name);
  }
  t.same(str(await cipher.open(text(jwe), binding)), str(payload), 'the original still opens');
});

t.test('unlinkability: envelopes of one scope share no header value but alg and enc', async (t) => {
  const store = new MemoryDataKeyStore();
  const cipher = new JweCipher(master, store);
  const bindings: EnvelopeBinding[] = [
    binding,
    { ...binding, versionId: '2' },
    { ...binding, id: 'obs-2' },
    { ...binding, resourceType: 'Condition', id: 'c-1' },
  ];
  const jwes = await Promise.all(bindings.map(async (b) => str(await cipher.seal(payload, b))));
  const headers = jwes.map(headerOf);
  for (const [i, a] of headers.entries()) {
    for (const b of headers.slice(i + 1)) {
      const shared = Object.keys(a).filter((k) => k in b && JSON.stringify(a[k]) === JSON.stringify(b[k]));
      t.same(shared.sort(), ['alg', 'enc'], 'only alg and enc in common');
      const aValues = new Set(Object.values(a).map((v) => JSON.stringify(v)));
      t.same(Object.values(b).map((v) => JSON.stringify(v)).filter((v) => aValues.has(v)).sort(), ['"A256GCM"', '"A256KW"'], 'no value reused under another name');
    }
    t.notOk(JSON.stringify(a).includes(scope), 'scope pseudonym not in the header');
  }
  // nor do the other segments repeat (fresh CEK and IV per envelope, so a fresh encrypted key)
  const segments = jwes.map((j) => j.split('.'));
  for (const part of [1, 2, 3, 4]) t.equal(new Set(segments.map((s) => s[part])).size, jwes.length, `segment ${part} all distinct`);
  // the same payload for the same version, sealed twice, shares only the per-version binding tag
  const again = headerOf(str(await cipher.seal(payload, binding)));
  t.same(again, headers[0], 'header is a function of the version alone');
  // and a patient envelope's header has the same shape as a shared-scope one
  const sharedHeader = headerOf(str(await cipher.seal(payload, { ...binding, keyScope: SHARED_SCOPE })));
  t.same(Object.keys(sharedHeader), Object.keys(headers[0]!));
  t.same(sharedHeader, headers[0], 'the header does not tell patient scopes from the shared scope');
  // with the same payload, envelope lengths are equal too
  t.equal(new Set(jwes.map((j) => j.length)).size, 1);
});

t.test('throughput, 2 KB payload (informational)', async (t) => {
  const cipher = new JweCipher(master, new MemoryDataKeyStore());
  const body = randomBytes(2048);
  await cipher.open(await cipher.seal(body, binding), binding); // warm-up: key created and cached
  const n = 20_000;
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
