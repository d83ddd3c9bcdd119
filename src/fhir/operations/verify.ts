/**
 * $verify — Vellum's notarisation check of one resource version.
 * GET [base]/[type]/[id]/$verify and GET [base]/[type]/[id]/_history/[vid]/$verify.
 *
 * Returns a Parameters resource with everything a third party needs to check the version without
 * trusting this server (status pending | planned | anchored, the salt, content digest, pseudonym,
 * envelope CID, leaf, batch, Merkle root and proof, transaction, block, chain id, contract) and
 * `verified`, computed afresh: the envelope is re-read from the block store (its bytes are checked
 * against the CID), decrypted, the leaf is recomputed from the stored resource and compared with the
 * queued leaf, the proof is checked against the root, and the CONTRACT — not the local index — is
 * asked whether that root is anchored and the proof holds.
 *
 * ## Proof document (`?export=true`)
 *
 * `GET [base]/[type]/[id]/_history/[vid]/$verify?export=true` (or `[base]/[type]/[id]/$verify?export=true`
 * for the current version) returns, instead of the bare Parameters, a self-contained proof
 * document that the offline verifier (`vellum verify <file> --rpc <url>`, src/cli/verify.ts)
 * checks against the chain without this server:
 *
 * ```
 * {
 *   "resourceType": "Bundle",
 *   "meta": { "tag": [{ "system": "https://vellum.dev/fhir/CodeSystem/document-kind", "code": "proof-document-v1" }] },
 *   "type": "collection",
 *   "timestamp": "<when exported>",
 *   "entry": [
 *     // 1. The resource version exactly as stored (meta.versionId, meta.lastUpdated…, decimals
 *     //    as written). ABSENT for a deletion version: a deletion has no resource, and a
 *     //    collection entry must carry one (bdl-5). Its leaf commits instead to the RFC 8785 JSON
 *     //    of {"deleted":true,"id":…,"resourceType":…,"versionId":"<vid>"} (writer.ts).
 *     { "fullUrl": "<base>/<type>/<id>", "resource": { …the version… } },
 *     // 2. This operation's Parameters, unchanged (see `verifyParameters`):
 *     { "fullUrl": "urn:uuid:…", "resource": { "resourceType": "Parameters", "parameter": [ … ] } }
 *   ]
 * }
 * ```
 *
 * | parameter     | type         | meaning                                                              |
 * |---------------|--------------|----------------------------------------------------------------------|
 * | status        | valueCode    | pending · planned · anchored                                         |
 * | resource      | valueString  | `<type>/<id>/_history/<vid>`                                         |
 * | cid           | valueString  | CID of the encrypted envelope in IPFS                                |
 * | salt          | valueString  | 0x + 32 bytes: the version's salt                                    |
 * | digest        | valueString  | 0x + 32 bytes: keccak256(salt ‖ RFC 8785 JSON)                      |
 * | pseudonym     | valueString  | 0x + 32 bytes: HMAC of type/id under the server's key                |
 * | cidDigest     | valueString  | 0x + 32 bytes: keccak256(binary CID)                                 |
 * | leaf          | valueString  | 0x + 32 bytes: the Merkle leaf (chain/leaf.ts)                       |
 * | root          | valueString  | 0x + 32 bytes: the batch's Merkle root (once batched)                |
 * | leafIndex     | valueInteger | position of the leaf in the batch manifest                          |
 * | proof         | valueString  | repeated, in order from the leaf up: sibling hashes (may be none)    |
 * | manifestCid   | valueString  | CID of the batch manifest                                            |
 * | batchId       | valueInteger | the registry's batch id (once anchored)                              |
 * | transaction   | valueString  | hash of the anchoring transaction                                    |
 * | blockNumber   | valueInteger | block that anchored the root                                         |
 * | anchoredAt    | valueInstant | that block's timestamp                                               |
 * | chainId       | valueInteger | EIP-155 chain id                                                     |
 * | contract      | valueString  | AnchorRegistry address                                               |
 * | verified      | valueBoolean | this server's own check when exported (a verifier ignores it)        |
 * | problem       | valueCode    | repeated: what this server's check found wrong                       |
 *
 * What the offline verifier recomputes, trusting nothing but the chain: `digest =
 * keccak256(salt ‖ RFC 8785 JSON of entry 1's resource as a standard JSON parser reads it)` (the
 * writer commits to plain numbers, so `5.40` and `5.4` hash alike), the leaf from `pseudonym`,
 * `meta.versionId`, that digest and `cidDigest` (`leafFromParts`), the Merkle proof up to `root`,
 * and then the contract at `contract` on chain `chainId`: `anchoredAt(root)` and
 * `verifyLeaf(root, leaf, proof)`. The pseudonym (a keyed HMAC of type and id) cannot be
 * recomputed without the server's key; the proof establishes the content and its inclusion,
 * and the content itself names its type, id and version.
 *
 * The document carries the resource in clear: it is as sensitive as the resource.
 */
import { assertVisibleLoaded } from '../access.ts';
import { randomUUID } from 'node:crypto';
import { canonicalJson, cidDigest, contentDigest, leafFromParts, pseudonym } from '../../chain/leaf.ts';
import { buildTree, toHex, verifyProof, type MerkleTree } from '../../chain/merkle.ts';
import type { AnchorRecord, VersionRecord } from '../../storage/index-store.ts';
import { FhirError, fhirError, toFhirError } from '../errors.ts';
import { dateRange } from '../dates.ts';
import { queryValue, type FhirRequest, type FhirResource, type FhirResponse } from '../request.ts';
import type { FhirServices } from '../services.ts';
import { ANCHOR_SALT_EXTENSION, deletionContent } from '../writer.ts';
import { checkId } from '../interactions/common.ts';
import { CROSS_SITE_EXTENSION, crossSiteProvenanceId } from '../bulk/client.ts';

export const VERIFY_DEFINITION = {
  resourceType: 'OperationDefinition',
  url: 'https://vellum.dev/fhir/OperationDefinition/verify',
  name: 'Verify',
  code: 'verify',
};

type Parameter = { name: string; [value: string]: unknown };

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

function saltOf(bundle: FhirResource): Uint8Array | undefined {
  const extensions = (bundle.meta?.extension ?? []) as { url?: string; valueBase64Binary?: string }[];
  const value = extensions.find((e) => e.url === ANCHOR_SALT_EXTENSION)?.valueBase64Binary;
  return value === undefined ? undefined : new Uint8Array(Buffer.from(value, 'base64'));
}

async function versionRecord(services: FhirServices, request: FhirRequest): Promise<VersionRecord> {
  const record = await findVersionRecord(services, request);
  if (!record.deleted) await assertVisibleLoaded(services, request, record);
  return record;
}

async function findVersionRecord(services: FhirServices, request: FhirRequest): Promise<VersionRecord> {
  const type = request.resourceType!;
  const id = checkId(request.id!);
  if (request.versionId === undefined) {
    const current = await services.repository.index.current(type, id);
    if (!current) throw fhirError(404, 'not-found', 'VLM_FHIR_NOT_FOUND', `${type}/${id} is not known`);
    return current;
  }
  if (!/^[1-9]\d{0,15}$/.test(request.versionId)) throw fhirError(404, 'not-found', 'VLM_FHIR_VERSION_NOT_FOUND', 'No such version');
  const record = await services.repository.index.version(type, id, Number(request.versionId));
  if (!record) throw fhirError(404, 'not-found', 'VLM_FHIR_VERSION_NOT_FOUND', `${type}/${id} has no version ${request.versionId}`);
  return record;
}

/** Kind tag of the proof document (`Bundle.meta.tag`); the code names the format's version. */
export const PROOF_DOCUMENT_TAG = { system: 'https://vellum.dev/fhir/CodeSystem/document-kind', code: 'proof-document-v1' } as const;

export async function verify(services: FhirServices, request: FhirRequest): Promise<FhirResponse> {
  const exported = queryValue(request, 'export');
  if (exported !== undefined && exported !== 'true' && exported !== 'false') {
    throw fhirError(400, 'invalid', 'VLM_FHIR_BAD_PARAMETER', 'export must be true or false', ['export']);
  }
  const record = await versionRecord(services, request);
  const { parameters } = await verifyParameters(services, record, request.signal);
  const origin = await crossSiteOrigin(services, record, request.signal);
  if (origin) (parameters.parameter as Parameter[]).push(origin);
  if (exported !== 'true') return { status: 200, raw: true, resource: parameters };

  // The version exactly as stored (exact decimals kept), or nothing for a deletion.
  const stored = record.deleted ? undefined : await services.loadResource(record, request.signal);
  const entry: Record<string, unknown>[] = [];
  if (stored) entry.push({ fullUrl: `${request.baseUrl}/${record.type}/${record.id}`, resource: stored });
  entry.push({ fullUrl: `urn:uuid:${randomUUID()}`, resource: parameters });
  return {
    status: 200,
    raw: true,
    resource: {
      resourceType: 'Bundle',
      meta: { tag: [{ ...PROOF_DOCUMENT_TAG }] },
      type: 'collection',
      timestamp: new Date().toISOString(),
      entry,
    },
  };
}

/**
 * Where an imported version came from (`vellum import` / `vellum sync`, src/cli/bulk.ts): the
 * cross-site Provenance recorded with it, as an `origin` parameter whose parts are the source,
 * the source's version and where the source anchored it (root, transaction, block, chain, contract).
 */
async function crossSiteOrigin(services: FhirServices, record: VersionRecord, signal?: AbortSignal): Promise<Parameter | undefined> {
  const id = crossSiteProvenanceId(`${record.type}/${record.id}/_history/${record.versionId}`);
  const provenance = await services.repository.index.current('Provenance', id);
  const resource = provenance && !provenance.deleted ? await services.loadResource(provenance, signal) : undefined;
  const extension = ((resource?.extension ?? []) as { url?: string; extension?: Record<string, unknown>[] }[]).find((e) => e.url === CROSS_SITE_EXTENSION);
  if (!extension) return undefined;
  const part = (extension.extension ?? []).map(({ url, ...value }) => ({ name: String(url), ...value }));
  return { name: 'origin', part: [{ name: 'provenance', valueString: `Provenance/${id}` }, ...part] };
}

/** Contract answers shared by the versions of one sweep (a batch root is asked about once). */
type RootCache = Map<string, Promise<boolean>> & { trees?: TreeCache };

/** Trees a sweep has rebuilt (it verifies many leaves of each batch), by batch id and root. */
type TreeCache = Map<string, MerkleTree>;

/**
 * A leaf's proof: stored for batches planned by earlier versions, otherwise rebuilt from the
 * batch's stored leaves. Either way it is checked against the batch root (and, without a sweep's
 * cache, by the contract): leaves changed in the index cannot give the anchored root.
 */
async function proofOf(services: FhirServices, batch: NonNullable<AnchorRecord['batch']>, trees?: TreeCache): Promise<Uint8Array[]> {
  if (batch.proof) return batch.proof;
  const key = `${batch.id}:${toHex(batch.root)}`;
  let tree = trees?.get(key);
  if (!tree) {
    try {
      tree = buildTree(await services.repository.index.batchLeaves(batch.id));
    } catch {
      return []; // leaves damaged in the index: no proof, reported as the 'proof' problem
    }
    trees?.set(key, tree);
  }
  return batch.leafIndex < tree.leafCount ? tree.proof(batch.leafIndex) : [];
}

/**
 * The $verify Parameters of a version, and the problems found. With a `rootCache` (the sweep),
 * the contract is asked once per batch root whether it is anchored and the proof is checked
 * locally; without one (a single $verify), the contract's `verifyLeaf` checks the proof as well.
 */
async function verifyParameters(
  services: FhirServices,
  record: VersionRecord,
  signal?: AbortSignal,
  rootCache?: RootCache,
): Promise<{ parameters: FhirResource; verified: boolean; status: string; problems: string[] }> {
  const anchoring = services.anchoring;
  if (!anchoring) throw fhirError(501, 'not-supported', 'VLM_ANCHOR_DISABLED', 'Anchoring is not enabled on this server');
  const anchor = await services.repository.index.anchorOf(record.seq);
  if (!anchor) throw fhirError(404, 'not-found', 'VLM_ANCHOR_NO_LEAF', 'This version was written without an anchor leaf');

  // Recompute the leaf from the stored envelope (the block store checks the bytes against the CID).
  const bundle = await services.loadBundle(record, signal);
  const entries = (bundle.entry ?? []) as { resource?: FhirResource }[];
  const content = record.deleted ? deletionContent(record.type, record.id, record.versionId) : entries[0]?.resource;
  const salt = saltOf(bundle);
  const problems: string[] = [];
  if (!salt || !equal(salt, anchor.salt)) problems.push('salt');
  const digest = contentDigest(anchor.salt, canonicalJson(content));
  const parts = {
    pseudonym: pseudonym(anchoring.leafKey, record.type, record.id),
    versionId: BigInt(record.versionId),
    contentDigest: digest,
    cidDigest: cidDigest(record.cid),
  };
  const leaf = leafFromParts(parts);
  if (!equal(leaf, anchor.leaf)) problems.push('leaf');

  const out: Parameter[] = [
    { name: 'status', valueCode: anchor.status },
    { name: 'resource', valueString: `${record.type}/${record.id}/_history/${record.versionId}` },
    { name: 'cid', valueString: record.cid },
    { name: 'salt', valueString: toHex(anchor.salt) },
    { name: 'digest', valueString: toHex(digest) },
    { name: 'pseudonym', valueString: toHex(parts.pseudonym) },
    { name: 'cidDigest', valueString: toHex(parts.cidDigest) },
    { name: 'leaf', valueString: toHex(leaf) },
  ];
  let verified = problems.length === 0;
  const stored = anchor.batch;
  const batch = stored ? { ...stored, proof: await proofOf(services, stored, rootCache?.trees) } : undefined;
  if (batch) {
    if (!verifyProof(batch.root, leaf, batch.proof)) problems.push('proof');
    out.push(
      { name: 'root', valueString: toHex(batch.root) },
      { name: 'leafIndex', valueInteger: batch.leafIndex },
      ...batch.proof.map((node) => ({ name: 'proof', valueString: toHex(node) })),
      { name: 'manifestCid', valueString: batch.manifestCid },
    );
  }
  if (batch?.receipt) {
    if (rootCache) {
      const key = toHex(batch.root);
      let known = rootCache.get(key);
      if (!known) rootCache.set(key, (known = anchoring.anchoredAt(batch.root).then((at) => at !== undefined)));
      if (!(await known)) problems.push('root-not-on-chain');
    } else {
      const onChain = await anchoring.anchoredAt(batch.root);
      if (!onChain) problems.push('root-not-on-chain');
      else if (!(await anchoring.verifyLeaf(batch.root, leaf, batch.proof))) problems.push('contract-rejects-proof');
    }
    out.push(
      { name: 'batchId', valueInteger: batch.receipt.chainBatchId },
      { name: 'transaction', valueString: batch.receipt.txHash },
      { name: 'blockNumber', valueInteger: batch.receipt.blockNumber },
      { name: 'anchoredAt', valueInstant: new Date(batch.receipt.blockTimestamp * 1000).toISOString() },
      { name: 'chainId', valueInteger: anchoring.chainId },
      { name: 'contract', valueString: anchoring.contract },
    );
    verified = problems.length === 0;
  } else {
    // Not anchored yet: the local checks can pass, but nothing is proven on chain.
    verified = false;
  }
  out.push({ name: 'verified', valueBoolean: verified });
  for (const problem of problems) out.push({ name: 'problem', valueCode: problem });
  return { parameters: { resourceType: 'Parameters', parameter: out }, verified, status: anchor.status, problems };
}

const SWEEP_PAGE = 500;

/**
 * GET [base]/$verify?_since=…&_count=… — sweep the store: check every version written since
 * `_since` (default: all; at most `_count`, default 100,000) and report every mismatch. Pending
 * versions (not yet anchored) are counted, not reported. Reads an altered envelope as the problem
 * `integrity`.
 */
export async function verifySweep(services: FhirServices, request: FhirRequest): Promise<FhirResponse> {
  if (!services.anchoring) throw fhirError(501, 'not-supported', 'VLM_ANCHOR_DISABLED', 'Anchoring is not enabled on this server');
  let since: number | undefined;
  const sinceRaw = queryValue(request, '_since');
  if (sinceRaw !== undefined) {
    since = dateRange(sinceRaw)?.low;
    if (since === undefined) throw fhirError(400, 'invalid', 'VLM_FHIR_BAD_PARAMETER', '_since must be an instant', ['_since']);
  }
  const countRaw = queryValue(request, '_count');
  if (countRaw !== undefined && !/^\d{1,7}$/.test(countRaw)) {
    throw fhirError(400, 'invalid', 'VLM_FHIR_BAD_PARAMETER', '_count must be a whole number', ['_count']);
  }
  const limit = countRaw === undefined ? 100_000 : Number(countRaw);
  const maxSeq = await services.repository.index.lastSeq();
  const rootCache: RootCache = Object.assign(new Map<string, Promise<boolean>>(), { trees: new Map<string, MerkleTree>() });
  const counts = { checked: 0, verified: 0, pending: 0, mismatches: 0 };
  const mismatches: Parameter[] = [];
  for (let offset = 0; counts.checked < limit; offset += SWEEP_PAGE) {
    const page = await services.repository.index.history({ since, maxSeq, count: Math.min(SWEEP_PAGE, limit - counts.checked), offset });
    if (page.records.length === 0) break;
    for (const record of page.records) {
      counts.checked++;
      let problems: string[];
      let status: string;
      try {
        const result = await verifyParameters(services, record, request.signal, rootCache);
        if (result.verified) counts.verified++;
        if (result.status !== 'anchored' && result.problems.length === 0) {
          counts.pending++;
          continue;
        }
        if (result.verified) continue;
        problems = result.problems;
        status = result.status;
      } catch (err) {
        // Written before anchoring was enabled: nothing to check.
        if (err instanceof FhirError && err.issues.some((i) => i.vellumCode === 'VLM_ANCHOR_NO_LEAF')) continue;
        const { error, fault } = toFhirError(err);
        if (fault && error.issues[0]?.vellumCode !== 'VLM_INTEGRITY') throw err;
        problems = ['integrity'];
        status = 'unknown';
      }
      counts.mismatches++;
      mismatches.push({
        name: 'mismatch',
        part: [
          { name: 'resource', valueString: `${record.type}/${record.id}/_history/${record.versionId}` },
          { name: 'status', valueCode: status },
          ...problems.map((problem) => ({ name: 'problem', valueCode: problem })),
        ],
      });
    }
  }
  return {
    status: 200,
    raw: true,
    resource: {
      resourceType: 'Parameters',
      parameter: [
        { name: 'checked', valueInteger: counts.checked },
        { name: 'verified', valueInteger: counts.verified },
        { name: 'pending', valueInteger: counts.pending },
        { name: 'mismatches', valueInteger: counts.mismatches },
        ...mismatches,
      ],
    },
  };
}
