/**
 * Bulk Data export with anchoring on (the embedded chain): beside each output file a proofs file,
 * one JSON line per exported resource line, from which anyone recomputes the salted digest of the
 * line, the leaf and the Merkle path to the anchored root — and the contract confirms the root and
 * the inclusion. An altered line no longer matches its digest.
 */
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { canonicalJson, cidDigest, contentDigest, leafFromParts, pseudonym } from '../../../src/chain/leaf.ts';
import { fromHex, toHex, verifyProof } from '../../../src/chain/merkle.ts';
import { CORPORA } from '../../helpers/corpora.ts';
import { startTestServer } from '../../helpers/server.ts';
import { runExport, show } from './helpers.ts';

const PROOFS = 'https://vellum.dev/fhir/bulk/proofs';
/** An R4 example's text, sent as is (its decimals exactly as written). */
const example = (type: string, name: string) => fs.readFileSync(path.join(CORPORA, 'r4-examples', type, name), 'utf8');

t.test('proofs files: every exported line checks against the anchored root', async (t) => {
  const s = await startTestServer(t, { VELLUM_CHAIN: 'embedded', VELLUM_ANCHOR_INTERVAL_MS: '50' });
  const anchoring = s.services.anchoring!;
  // Real examples, one with decimals a double would alter (1.00, 1E-22, 1.000000000000000000E-245).
  const resources = [
    example('Patient', 'Patient-example.json'),
    example('Patient', 'Patient-f001.json'),
    example('Observation', 'Observation-decimal.json'),
    example('Observation', 'Observation-bmi.json'),
    example('Observation', 'Observation-blood-pressure.json'),
  ];
  for (const text of resources) {
    const resource = JSON.parse(text);
    const res = await s.fhir('PUT', `${resource.resourceType}/${resource.id}`, text);
    t.ok(res.status === 201, `PUT ${resource.resourceType}/${resource.id}: ${show(res)}`);
  }
  // A second version, then wait until it is anchored (batches go in write order: so is everything before it).
  const updated = { ...JSON.parse(resources[0]!), active: false };
  const last = await s.fhir('PUT', `Patient/${updated.id}`, updated, { prefer: 'anchor=wait' });
  t.equal(last.status, 200, show(last));

  const e = await runExport(t, s, '$export?_type=Patient,Observation');
  const proofs = e.manifest.extension?.[PROOFS] as { output: string; url: string; count: number }[];
  t.ok(Array.isArray(proofs), 'the manifest lists the proofs files');
  t.same(proofs.map((p) => p.output), e.manifest.output.map((o: any) => o.url), 'one proofs file per output file');
  let checked = 0;
  for (const p of proofs) {
    const output = e.manifest.output.find((o: any) => o.url === p.output);
    const lines = e.texts.get(output.url)!.trimEnd().split('\n');
    const proofLines = e.texts.get(p.url)!.trimEnd().split('\n').map((l) => JSON.parse(l));
    t.equal(p.count, output.count, `${output.type}: as many proofs as lines`);
    t.equal(proofLines.length, lines.length);
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i]!;
      const resource = JSON.parse(line);
      const proof = proofLines[i];
      const ref = `${resource.resourceType}/${resource.id}/_history/${resource.meta.versionId}`;
      t.equal(proof.resource, ref, `${ref}: the proof of the line at the same position`);
      t.equal(proof.status, 'anchored', `${ref}: anchored`);
      const salt = fromHex(proof.salt, 32);
      const digest = contentDigest(salt, canonicalJson(JSON.parse(line)));
      t.equal(toHex(digest), proof.digest, `${ref}: the digest of the line, recomputed`);
      t.equal(toHex(cidDigest(proof.cid)), proof.cidDigest, `${ref}: cidDigest`);
      t.equal(toHex(pseudonym(anchoring.leafKey, resource.resourceType, resource.id)), proof.pseudonym, `${ref}: pseudonym`);
      const leaf = leafFromParts({ pseudonym: fromHex(proof.pseudonym, 32), versionId: BigInt(resource.meta.versionId), contentDigest: digest, cidDigest: cidDigest(proof.cid) });
      t.equal(toHex(leaf), proof.leaf, `${ref}: the leaf, recomputed`);
      const root = fromHex(proof.root, 32);
      const path = (proof.proof as string[]).map((h) => fromHex(h, 32));
      t.ok(verifyProof(root, leaf, path), `${ref}: the Merkle path leads to the root`);
      t.ok(await anchoring.verifyLeaf(root, leaf, path), `${ref}: the contract confirms the inclusion`);
      const onChain = await anchoring.anchoredAt(root);
      t.equal(onChain?.blockNumber, proof.blockNumber, `${ref}: the root is anchored in the block the proof names`);
      t.equal(proof.chainId, anchoring.chainId);
      t.equal(proof.contract?.toLowerCase(), anchoring.contract.toLowerCase());
      t.match(proof.transaction, /^0x[0-9a-f]{64}$/);
      t.ok(typeof proof.manifestCid === 'string' && Number.isInteger(proof.leafIndex), `${ref}: batch manifest and leaf index`);

      // Altered, the line no longer matches.
      const altered = JSON.parse(line);
      altered.id = `${altered.id}x`;
      const tampered = JSON.parse(line);
      tampered.meta.lastUpdated = '2000-01-01T00:00:00.000Z';
      for (const bad of [altered, tampered]) t.not(toHex(contentDigest(salt, canonicalJson(bad))), proof.digest, `${ref}: an altered line does not match`);
      checked++;
    }
  }
  t.equal(checked, 5, 'every line was checked (5 resources, one of them in its second version)');
  t.ok(e.byType.Patient!.some((p) => p.id === updated.id && p.meta.versionId === '2'), 'the current version is exported');
  // The exact decimals are exported as written.
  const decimal = e.texts.get(e.manifest.output.find((o: any) => o.type === 'Observation').url)!;
  t.ok(decimal.includes('"value":1.00,') && decimal.includes('1.000000000000000000E-245'), 'decimals exported exactly');

  // With _elements the lines are not the anchored versions: no proofs.
  const subset = await runExport(t, s, '$export?_type=Patient&_elements=name');
  t.notOk(subset.manifest.extension?.[PROOFS], 'no proofs with _elements');
});
