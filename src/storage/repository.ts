/**
 * The repository ties the blob store, the cipher and the index together. A version is stored as
 * an encrypted envelope under its CID; its index rows are committed only after every envelope
 * is durably stored, so no index row can point at a missing blob whatever the crash point.
 * The repository deals in bytes: what the bytes mean (a FHIR Bundle) is the FHIR layer's business.
 */
import type { KeyObject } from 'node:crypto';
import type { AbortOptions, BlobStore } from './blob-store.ts';
import type { Cipher, EnvelopeBinding } from './cipher.ts';
import { storageError } from './errors.ts';
import type { WriteGate } from './write-gate.ts';
import type { IndexStore, IndexWrite, VersionRecord } from './index-store.ts';
import { encodeGroup, groupBinding, memberKey, openVersion, type GroupSlot } from './envelope-group.ts';
import { locatorKeyObject, sealLocator, type LocatorKey } from './locator.ts';

/** A version ready to store: its index entry (less the CID) and its plaintext bytes. */
export interface PreparedVersion {
  write: Omit<IndexWrite, 'cid' | 'anchor'>;
  plaintext: Uint8Array;
  /** The version's anchor leaf, which commits to the envelope CID and so is finished here. */
  anchor?: (cid: string) => { leaf: Uint8Array; salt: Uint8Array };
  /**
   * May share one envelope with the other groupable versions of its key scope in this call
   * (envelope-group.ts; the audit trail's AuditEvents). Only for versions with content.
   */
  group?: boolean;
}

/** Most versions in one group envelope (a group is decrypted whole to read any member). */
export const MAX_GROUP_MEMBERS = 64;
/** Opened groups kept (by CID and key scope). */
const GROUP_CACHE = 16;

export interface RepositoryOptions {
  blobs: BlobStore;
  index: IndexStore;
  cipher: Cipher;
  /** How many decrypted versions to keep in memory (0 disables the cache). */
  cacheEntries?: number;
  /**
   * Master-derived key sealing each anchored version's manifest locator (locator.ts). With it,
   * the scope's wrapped data key is also published as a block, so `vellum rebuild` can
   * reconstruct the index from the chain, IPFS and the master key alone.
   */
  locatorKey?: LocatorKey;
  /** Taken around the database writes of `store` when another thread writes the same file (write-gate.ts). */
  writeGate?: WriteGate;
}

function versionBinding({ write }: PreparedVersion): EnvelopeBinding {
  return { resourceType: write.type, id: write.id, versionId: String(write.versionId), keyScope: write.keyScope };
}

function cacheKey(record: VersionRecord): string {
  return `${record.cid} ${record.type}/${record.id}/${record.versionId}/${record.keyScope}`;
}

export class Repository {
  readonly index: IndexStore;
  readonly blobs: BlobStore;
  #cipher: Cipher;
  #cache = new Map<string, Uint8Array>();
  #cacheEntries: number;
  /** Imported once: sealing with raw key bytes would import them again for every locator. */
  #locatorKey: KeyObject | undefined;
  /** Scope → its wrapped data key and that key's block CID (published once per process and key). */
  #keyBlocks = new Map<string, { wrapped: Uint8Array; cid: string }>();
  /** Opened group envelopes, `cid keyScope` → members (least recently used evicted first). */
  #groups = new Map<string, Map<string, Uint8Array>>();
  readonly #gate: WriteGate | undefined;

  constructor(options: RepositoryOptions) {
    this.blobs = options.blobs;
    this.index = options.index;
    this.#cipher = options.cipher;
    this.#cacheEntries = options.cacheEntries ?? 10_000;
    this.#locatorKey = options.locatorKey === undefined ? undefined : locatorKeyObject(options.locatorKey);
    this.#gate = options.writeGate;
  }

  /**
   * Encrypt and store every version, then commit their index rows in one transaction. The
   * versions are durable once `flush()` resolves: callers acknowledge a write only after it.
   */
  async store(versions: PreparedVersion[], options?: AbortOptions): Promise<VersionRecord[]> {
    // Which envelope each version goes into: its own, or its key scope's group (at most
    // MAX_GROUP_MEMBERS members; a lone groupable version is stored alone).
    const envelopeOf: number[] = [];
    const sealing: { binding: EnvelopeBinding; members: number[] }[] = [];
    const openGroups = new Map<string, number>();
    const groupable = new Map<string, number>();
    for (const { write, group } of versions) if (group && !write.deleted) groupable.set(write.keyScope, (groupable.get(write.keyScope) ?? 0) + 1);
    versions.forEach(({ write, group }, i) => {
      const binding = { resourceType: write.type, id: write.id, versionId: String(write.versionId), keyScope: write.keyScope };
      if (!group || write.deleted || (groupable.get(write.keyScope) ?? 0) < 2) {
        envelopeOf.push(sealing.push({ binding, members: [i] }) - 1);
        return;
      }
      let at = openGroups.get(write.keyScope);
      if (at === undefined || sealing[at]!.members.length >= MAX_GROUP_MEMBERS) {
        openGroups.set(write.keyScope, (at = sealing.push({ binding: groupBinding(write.keyScope), members: [] }) - 1));
      }
      sealing[at]!.members.push(i);
      envelopeOf.push(at);
    });
    const envelopes: Uint8Array[] = [];
    for (const { binding, members } of sealing) {
      const plaintext =
        binding.resourceType === groupBinding('').resourceType
          ? encodeGroup(members.map((i) => ({ key: memberKey(versionBinding(versions[i]!)), plaintext: versions[i]!.plaintext })))
          : versions[members[0]!]!.plaintext;
      envelopes.push(await this.#cipher.seal(plaintext, binding, options));
    }
    return this.#gate ? this.#gate.run(() => this.#write(versions, envelopeOf, envelopes, options)) : this.#write(versions, envelopeOf, envelopes, options);
  }

  /** Store the sealed envelopes and commit the versions' index rows (`store`, its database part). */
  async #write(versions: PreparedVersion[], envelopeOf: number[], envelopes: Uint8Array[], options?: AbortOptions): Promise<VersionRecord[]> {
    // A store that takes many blobs at once (the embedded SQLite one: one transaction for a whole
    // audit batch) gets them at once; any other, one by one.
    const envelopeCids: string[] = [];
    if (this.blobs.putMany && envelopes.length > 1) envelopeCids.push(...(await this.blobs.putMany(envelopes, options)));
    else for (const envelope of envelopes) envelopeCids.push(await this.blobs.put(envelope, options));
    const cids = envelopeOf.map((e) => envelopeCids[e]!);
    const writes: IndexWrite[] = [];
    versions.forEach((version, i) => writes.push({ ...version.write, cid: cids[i]! }));
    // A scope's key block, once per call (the scope's key cannot change within it: sealed just above).
    const keyCids = new Map<string, string>();
    for (const [i, version] of versions.entries()) {
      if (!version.anchor) continue;
      const { write } = version;
      const anchor: NonNullable<IndexWrite['anchor']> = version.anchor(cids[i]!);
      if (this.#locatorKey) {
        let keyCid = keyCids.get(write.keyScope);
        if (keyCid === undefined) keyCids.set(write.keyScope, (keyCid = await this.#publishKey(write.keyScope, options)));
        anchor.locator = sealLocator(this.#locatorKey, anchor.leaf, {
          type: write.type,
          id: write.id,
          versionId: write.versionId,
          keyScope: write.keyScope,
          method: write.method,
          keyCid,
        });
      }
      writes[i]!.anchor = anchor;
    }
    const records = await this.index.commit(writes);
    records.forEach((record, i) => this.#remember(cacheKey(record), versions[i]!.plaintext));
    return records;
  }

  /**
   * Publish the wrapped data key of `scope` (sealed by `seal` just before) as a block, and return
   * its CID. Content-addressed, so publishing again is a no-op; remembered per process.
   */
  async #publishKey(scope: string, options?: AbortOptions): Promise<string> {
    const wrapped = await this.index.dataKeys.getWrappedKey(scope);
    if (!wrapped) throw storageError('VLM_KEY_MISSING', 'fault', 'the data key of a scope in use is missing');
    // Compared, not just looked up: a shredded scope that comes back has a new key.
    const known = this.#keyBlocks.get(scope);
    if (known && Buffer.from(known.wrapped).equals(wrapped)) return known.cid;
    const cid = await this.blobs.put(wrapped, options);
    this.#keyBlocks.set(scope, { wrapped: new Uint8Array(wrapped), cid });
    return cid;
  }

  /** Resolve once everything stored so far is durable (blocks before index rows). */
  async flush(): Promise<void> {
    await this.blobs.flush?.();
    await this.index.flush();
  }

  /**
   * The plaintext bytes of a stored version (verified against its CID, decrypted, binding checked).
   * `cache: false` (bulk reads of the whole store) neither evicts nor adds cached versions.
   */
  async load(record: VersionRecord, options?: AbortOptions & { cache?: boolean }): Promise<Uint8Array> {
    // Keyed by CID AND version: an index row pointing at another version's envelope must still
    // go through the cipher's binding check, never be served from the cache.
    const key = cacheKey(record);
    const cached = this.#cache.get(key);
    if (cached) return cached;
    const envelope = await this.blobs.get(record.cid, options);
    const plaintext = await openVersion(
      this.#cipher,
      envelope,
      { resourceType: record.type, id: record.id, versionId: String(record.versionId), keyScope: record.keyScope },
      options,
      this.#groupSlot(`${record.cid} ${record.keyScope}`),
    );
    if (options?.cache !== false) this.#remember(key, plaintext);
    return plaintext;
  }

  #groupSlot(key: string): GroupSlot {
    return {
      get: () => {
        const members = this.#groups.get(key);
        if (members) {
          this.#groups.delete(key); // refresh its LRU position
          this.#groups.set(key, members);
        }
        return members;
      },
      set: (members) => {
        this.#groups.set(key, members);
        if (this.#groups.size > GROUP_CACHE) this.#groups.delete(this.#groups.keys().next().value!);
      },
    };
  }

  #remember(key: string, plaintext: Uint8Array): void {
    if (this.#cacheEntries <= 0) return;
    if (this.#cache.size >= this.#cacheEntries) {
      const oldest = this.#cache.keys().next();
      if (!oldest.done) this.#cache.delete(oldest.value);
    }
    this.#cache.set(key, plaintext);
  }

  async close(): Promise<void> {
    this.#cache.clear();
    this.#groups.clear();
    await this.index.close();
    await this.blobs.close();
  }
}
