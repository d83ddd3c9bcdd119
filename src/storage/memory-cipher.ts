/**
 * A Cipher for unit tests of the layers above storage: it does NOT encrypt. The envelope is the
 * plaintext behind a header naming its binding, so tests can exercise binding checks (swapped
 * envelopes are refused with VLM_CIPHER_BINDING) without key management. Never used by the server.
 */
import type { AbortOptions } from './blob-store.ts';
import type { Cipher, EnvelopeBinding } from './cipher.ts';
import { storageError } from './errors.ts';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function header(binding: EnvelopeBinding): string {
  return `memory-envelope ${binding.resourceType}/${binding.id}/${binding.versionId} ${binding.keyScope}\n`;
}

export class MemoryCipher implements Cipher {
  async seal(plaintext: Uint8Array, binding: EnvelopeBinding, _options?: AbortOptions): Promise<Uint8Array> {
    const head = encoder.encode(header(binding));
    const envelope = new Uint8Array(head.length + plaintext.length);
    envelope.set(head);
    envelope.set(plaintext, head.length);
    return envelope;
  }

  async open(envelope: Uint8Array, binding: EnvelopeBinding, _options?: AbortOptions): Promise<Uint8Array> {
    const expected = encoder.encode(header(binding));
    const actual = decoder.decode(envelope.subarray(0, expected.length));
    if (actual !== header(binding)) throw storageError('VLM_CIPHER_BINDING', 'fault', 'the envelope was made for another version');
    return envelope.slice(expected.length);
  }
}
