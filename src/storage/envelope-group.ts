/**
 * Several versions of one key scope in one envelope: a *group*.
 *
 * The audit trail writes an AuditEvent per access; sealing, storing and addressing each one alone
 * costs more than the access it records. So versions a trusted producer marks groupable
 * (`PreparedVersion.group`: the audit converter's AuditEvents) are stored per key scope per commit
 * in one envelope and one block: every member's index row carries the group's CID, and every
 * member keeps its own anchor leaf — which commits to its own content digest and to the group's CID,
 * so `$verify`, the offline verifier and `vellum rebuild` work on a member exactly as on a version
 * stored alone. Crypto-shredding is unchanged: a group never mixes key scopes.
 *
 * Plaintext: `VGRP` ‖ version byte 1 ‖ u32 count ‖ per member (u32 key length ‖ UTF-8 key
 * `Type/id/versionId` ‖ u32 plaintext length ‖ plaintext) — each member's plaintext is exactly the
 * bundle it would have had alone. The envelope is bound to `groupBinding(keyScope)`, not to any
 * member: a version is opened with its own binding first and, when that is refused, as a member of
 * a group of its key scope — found by its key inside, or refused (`VLM_CIPHER_BINDING`) like an
 * envelope of another version.
 */
import type { AbortOptions } from './blob-store.ts';
import type { Cipher, EnvelopeBinding } from './cipher.ts';
import { isStorageError, storageError } from './errors.ts';

const MAGIC = Buffer.from('VGRP\x01', 'latin1');

/** The binding of a group envelope of `keyScope`. */
export function groupBinding(keyScope: string): EnvelopeBinding {
  return { resourceType: 'vellum-group', id: 'members', versionId: '1', keyScope };
}

/** A member's key inside its group. */
export function memberKey(binding: Pick<EnvelopeBinding, 'resourceType' | 'id' | 'versionId'>): string {
  return `${binding.resourceType}/${binding.id}/${binding.versionId}`;
}

export function encodeGroup(members: readonly { key: string; plaintext: Uint8Array }[]): Uint8Array {
  const parts: Buffer[] = [MAGIC, u32(members.length)];
  for (const { key, plaintext } of members) {
    const k = Buffer.from(key, 'utf8');
    parts.push(u32(k.length), k, u32(plaintext.length), Buffer.from(plaintext.buffer, plaintext.byteOffset, plaintext.byteLength));
  }
  return Buffer.concat(parts);
}

/** The members of a group plaintext by key; undefined when the bytes are not a well-formed group. */
export function decodeGroup(bytes: Uint8Array): Map<string, Uint8Array> | undefined {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (b.length < MAGIC.length + 4 || !b.subarray(0, MAGIC.length).equals(MAGIC)) return undefined;
  let at = MAGIC.length;
  const read = (n: number): Buffer | undefined => {
    if (at + n > b.length) return undefined;
    const out = b.subarray(at, at + n);
    at += n;
    return out;
  };
  const count = read(4)?.readUInt32BE(0);
  if (count === undefined) return undefined;
  const members = new Map<string, Uint8Array>();
  for (let i = 0; i < count; i++) {
    const keyLength = read(4)?.readUInt32BE(0);
    const key = keyLength === undefined ? undefined : read(keyLength);
    const length = key === undefined ? undefined : read(4)?.readUInt32BE(0);
    const plaintext = length === undefined ? undefined : read(length);
    if (!key || !plaintext) return undefined;
    members.set(key.toString('utf8'), new Uint8Array(plaintext));
  }
  return at === b.length ? members : undefined;
}

function u32(n: number): Buffer {
  const out = Buffer.alloc(4);
  out.writeUInt32BE(n, 0);
  return out;
}

/** Opened groups of one envelope and key scope (the caller keys them: by CID and scope). */
export interface GroupSlot {
  get(): Map<string, Uint8Array> | undefined;
  set(members: Map<string, Uint8Array>): void;
}

/**
 * Open the envelope of the version `binding` names, stored alone or as a member of a group of its
 * key scope. `slot`, when given, keeps the opened group of this envelope and scope: its members are
 * usually read together (a search of AuditEvents). A refusal is the version's own
 * (`VLM_CIPHER_BINDING` when the envelope is neither its own nor a group of its scope holding it).
 */
export async function openVersion(
  cipher: Cipher,
  envelope: Uint8Array,
  binding: EnvelopeBinding,
  options?: AbortOptions,
  slot?: GroupSlot,
): Promise<Uint8Array> {
  const known = slot?.get()?.get(memberKey(binding));
  if (known) return known;
  try {
    return await cipher.open(envelope, binding, options);
  } catch (err) {
    if (!isStorageError(err, 'VLM_CIPHER_BINDING')) throw err;
    let plaintext: Uint8Array;
    try {
      plaintext = await cipher.open(envelope, groupBinding(binding.keyScope), options);
    } catch {
      throw err; // neither this version's envelope nor a group of its scope
    }
    const members = decodeGroup(plaintext);
    if (!members) throw storageError('VLM_CIPHER_BINDING', 'fault', 'a group envelope is malformed', err);
    slot?.set(members);
    const member = members.get(memberKey(binding));
    if (!member) throw err;
    return member;
  }
}
