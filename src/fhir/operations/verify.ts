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
 */
import { canonicalJson, cidDigest, contentDigest, leafFromParts, pseudonym } from '../../chain/leaf.ts';
import { toHex, verifyProof } from '../../chain/merkle.ts';
import type { VersionRecord } from '../../storage/index-store.ts';
import { fhirError } from '../errors.ts';
import type { FhirRequest, FhirResource, FhirResponse } from '../request.ts';
import type { FhirServices } from '../services.ts';
import { ANCHOR_SALT_EXTENSION, deletionContent } from '../writer.ts';
import { checkId } from '../interactions/common.ts';

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

export async function verify(services: FhirServices, request: FhirRequest): Promise<FhirResponse> {
  const anchoring = services.anchoring;
  if (!anchoring) throw fhirError(501, 'not-supported', 'VLM_ANCHOR_DISABLED', 'Anchoring is not enabled on this server');
  const record = await versionRecord(services, request);
  const anchor = await services.repository.index.anchorOf(record.seq);
  if (!anchor) throw fhirError(404, 'not-found', 'VLM_ANCHOR_NO_LEAF', 'This version was written without an anchor leaf');

  // Recompute the leaf from the stored envelope (the block store checks the bytes against the CID).
  const bundle = await services.loadBundle(record, request.signal);
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
  const batch = anchor.batch;
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
    const onChain = await anchoring.anchoredAt(batch.root);
    if (!onChain) problems.push('root-not-on-chain');
    else if (!(await anchoring.verifyLeaf(batch.root, leaf, batch.proof))) problems.push('contract-rejects-proof');
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
  return { status: 200, raw: true, resource: { resourceType: 'Parameters', parameter: out } };
}
