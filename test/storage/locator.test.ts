/**
 * src/storage/locator.ts: sealing and opening with raw key bytes or a KeyObject (interchangeably),
 * the binding to the leaf and the key, a key array changed in place, and bad keys.
 */
import t from 'tap';
import { createSecretKey, randomBytes } from 'node:crypto';
import { locatorKeyObject, openLocator, sealLocator, type Locator } from '../../src/storage/locator.ts';

const locator: Locator = { type: 'AuditEvent', id: 'ae-1-2', versionId: 1, keyScope: 'patient:abc', method: 'create', keyCid: 'bafkreigh2akiscaildc' };

t.test('bytes and KeyObject seal and open alike', async (t) => {
  const bytes = new Uint8Array(randomBytes(32));
  const object = createSecretKey(bytes);
  const leaf = new Uint8Array(randomBytes(32));
  const byBytes = sealLocator(bytes, leaf, locator);
  const byObject = sealLocator(object, leaf, locator);
  t.not(byBytes, byObject, 'random IVs');
  for (const sealed of [byBytes, byObject]) {
    t.same(openLocator(bytes, leaf, sealed), locator);
    t.same(openLocator(object, leaf, sealed), locator);
    t.same(openLocator(locatorKeyObject(bytes), leaf, sealed), locator);
  }
});

t.test('bound to the leaf and the key', async (t) => {
  const key = new Uint8Array(randomBytes(32));
  const leaf = new Uint8Array(randomBytes(32));
  const sealed = sealLocator(key, leaf, locator);
  t.throws(() => openLocator(key, new Uint8Array(randomBytes(32)), sealed), { code: 'VLM_LOCATOR_INVALID' });
  t.throws(() => openLocator(new Uint8Array(randomBytes(32)), leaf, sealed), { code: 'VLM_LOCATOR_INVALID' });
  t.throws(() => openLocator(createSecretKey(randomBytes(32)), leaf, sealed), { code: 'VLM_LOCATOR_INVALID' });
});

t.test('a key array changed in place is imported again', async (t) => {
  const key = new Uint8Array(randomBytes(32));
  const leaf = new Uint8Array(randomBytes(32));
  const first = sealLocator(key, leaf, locator);
  const old = new Uint8Array(key);
  key.set(randomBytes(32));
  const second = sealLocator(key, leaf, locator);
  t.throws(() => openLocator(key, leaf, first), { code: 'VLM_LOCATOR_INVALID' });
  t.same(openLocator(old, leaf, first), locator);
  t.same(openLocator(key, leaf, second), locator);
});

t.test('bad keys are refused', async (t) => {
  const leaf = new Uint8Array(32);
  t.throws(() => sealLocator(new Uint8Array(16), leaf, locator), { code: 'VLM_LOCATOR_KEY' });
  t.throws(() => sealLocator(createSecretKey(randomBytes(16)), leaf, locator), { code: 'VLM_LOCATOR_KEY' });
  t.throws(() => openLocator(new Uint8Array(31), leaf, 'AAAA'), { code: 'VLM_LOCATOR_KEY' });
  t.throws(() => locatorKeyObject('k'.repeat(32) as unknown as Uint8Array), { code: 'VLM_LOCATOR_KEY' });
});
