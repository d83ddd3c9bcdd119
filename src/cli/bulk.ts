/**
 * Bulk exchange from the command line: `vellum export`, `vellum import` and `vellum sync`.
 *
 * - `export` runs a Bulk Data export on any server and downloads it (files, proofs, manifest.json)
 *   into a directory, decrypting files encrypted to the client's key.
 * - `import` loads a directory of ndjson files into a running Vellum through its FHIR API — so
 *   through the normal write path: validated, encrypted, anchored, audited — in transaction
 *   Bundles of `--chunk` resources, keeping ids (update-as-create). A resource whose content is
 *   unchanged is not written again, and the position reached is kept in the directory
 *   (`.vellum-import.json`), so running it again resumes and adds nothing. With proofs files,
 *   each line is verified first (content, leaf, Merkle proof; with `--rpc`, the root on chain);
 *   failures are refused and listed. Each imported version that was anchored at the source gets
 *   a Provenance naming the source's version and its anchoring transaction (cross-site
 *   provenance: `xsite-…`, which `$verify` reports).
 * - `sync` keeps a Vellum in step with a Bulk Data server: export `_since` the last
 *   `transactionTime`, download, verify, import, apply deletions, then store the new
 *   `transactionTime` (durably) — once, or every `--every` seconds.
 *
 * Exit codes: 0 done; 1 some lines were refused or failed (listed); 2 usage, I/O or server errors.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { JWK } from 'jose';
import { canonicalJson } from '../chain/leaf.ts';
import { BulkClientError, CROSS_SITE_EXTENSION, FhirClient, crossSiteProvenanceId, type ClientCredentials, type Manifest } from '../fhir/bulk/client.ts';
import { RootChecker, checkLine, exportFiles, readLines, type LineReason, type ProofLine } from './verify-export.ts';
import type { Io } from './verify.ts';

export const BULK_USAGE = `Usage:
  vellum export --from <fhir base> --out <dir> [source credentials] [--type T,…] [--since <instant>] [--json]
  vellum import <dir> [--to <fhir base>] [--credentials <admin-client.json>] [--chunk <n>] [--rpc <url>] [--json]
  vellum sync --from <fhir base> [source credentials] [--to <fhir base>] [--credentials <file>]
              [--state <file>] [--once | --every <seconds>] [--chunk <n>] [--rpc <url>] [--json]

Source credentials (SMART Backend Services, private_key_jwt):
  --client-id <id> --key <private JWK or JWK Set file> --token-url <url> [--scope <scopes>]
  The JWK Set may also hold the private encryption key ("use": "enc") that export files are
  encrypted to. Default scope: system/*.read.

Target (import, sync): --to defaults to http://127.0.0.1:$PORT/fhir (PORT 8080), --credentials to
$VELLUM_DATA_DIR/admin-client.json (the administrator client Vellum writes on first start).
--state (sync) defaults to ./vellum-sync-state.json. --rpc: a JSON-RPC node of the source's chain,
to check proofs' roots on chain (without it, content, leaves and Merkle proofs are checked).
`;

class UsageError extends Error {}

/** Options every bulk command reads. */
function parse(argv: string[]) {
  try {
    return parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        from: { type: 'string' },
        to: { type: 'string' },
        out: { type: 'string' },
        'client-id': { type: 'string' },
        key: { type: 'string' },
        'token-url': { type: 'string' },
        scope: { type: 'string' },
        credentials: { type: 'string' },
        type: { type: 'string' },
        since: { type: 'string' },
        state: { type: 'string' },
        once: { type: 'boolean', default: false },
        every: { type: 'string' },
        chunk: { type: 'string' },
        rpc: { type: 'string' },
        json: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}
type Values = ReturnType<typeof parse>['values'];

function base(url: string | undefined, option: string): string {
  if (!url) throw new UsageError(`${option} <fhir base> is required`);
  try {
    const parsed = new URL(url);
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new Error('protocol');
  } catch {
    throw new UsageError(`${option} must be an http(s) URL`);
  }
  return url.replace(/\/+$/, '');
}

/** The source's client: private_key_jwt from --client-id/--key/--token-url, or none. */
async function sourceClient(values: Values): Promise<{ client: FhirClient; decryptionKey?: JWK }> {
  const from = base(values.from, '--from');
  if (!values['client-id'] && !values.key) return { client: new FhirClient(from) };
  if (!values['client-id'] || !values.key || !values['token-url']) throw new UsageError('--client-id, --key and --token-url go together');
  let keys: JWK[];
  try {
    const parsed = JSON.parse(await fs.readFile(values.key, 'utf8')) as JWK | { keys: JWK[] };
    keys = 'keys' in parsed && Array.isArray(parsed.keys) ? parsed.keys : [parsed as JWK];
  } catch {
    throw new UsageError(`${values.key} is not a JWK or JWK Set file`);
  }
  const signing = keys.find((k) => k.use !== 'enc' && k.d);
  if (!signing) throw new UsageError(`${values.key} holds no private signing key`);
  const decryptionKey = keys.find((k) => k.use === 'enc' && k.d);
  const credentials: ClientCredentials = {
    kind: 'assertion',
    tokenUrl: values['token-url'],
    clientId: values['client-id'],
    key: signing,
    scope: values.scope ?? 'system/*.read',
  };
  return { client: new FhirClient(from, credentials), ...(decryptionKey ? { decryptionKey } : {}) };
}

/** The target Vellum's client: the administrator file's client_credentials (client secret). */
async function targetClient(values: Values): Promise<FhirClient> {
  const to = base(values.to ?? `http://127.0.0.1:${process.env.PORT ?? '8080'}/fhir`, '--to');
  const file = values.credentials ?? path.join(path.resolve(process.env.VELLUM_DATA_DIR?.trim() || './data'), 'admin-client.json');
  let admin: { client_id?: string; client_secret?: string; token_url?: string } | undefined;
  try {
    admin = JSON.parse(await fs.readFile(file, 'utf8')) as typeof admin;
  } catch (err) {
    if (values.credentials !== undefined || (err as NodeJS.ErrnoException).code !== 'ENOENT') throw new UsageError(`cannot read the credentials file ${file}`);
  }
  if (!admin) return new FhirClient(to);
  if (!admin.client_id || !admin.client_secret || !admin.token_url) throw new UsageError(`${file} is not a client credentials file (client_id, client_secret, token_url)`);
  return new FhirClient(to, { kind: 'secret', tokenUrl: admin.token_url, clientId: admin.client_id, secret: admin.client_secret, scope: 'system/*.*' });
}

function whole(raw: string | undefined, option: string, fallback: number, max: number): number {
  if (raw === undefined) return fallback;
  if (!/^[1-9][0-9]{0,8}$/.test(raw) || Number(raw) > max) throw new UsageError(`${option} must be a whole number from 1 to ${max}`);
  return Number(raw);
}

/** The kick-off URL of an export with `_type` and `_since`. */
function kickOffUrl(types: string | undefined, since: string | undefined): string {
  const query = new URLSearchParams();
  if (types) query.set('_type', types);
  if (since) query.set('_since', since);
  const text = query.toString();
  return `$export${text ? `?${text}` : ''}`;
}

// ---------------------------------------------------------------------------------------------
// import

export interface ImportSummary {
  lines: number;
  imported: number;
  unchanged: number;
  deleted: number;
  pending: number;
  refused: { file: string; line: number; resource: string; reason: LineReason | string }[];
}

interface ImportState {
  done: Record<string, number>;
}

const STATE_FILE = '.vellum-import.json';

async function writeJsonFile(file: string, value: unknown): Promise<void> {
  const partial = `${file}.partial`;
  const handle = await fs.open(partial, 'w', 0o600);
  try {
    await handle.writeFile(JSON.stringify(value, null, 2) + '\n');
    await handle.sync();
  } finally {
    await handle.close();
  }
  await fs.rename(partial, file);
}

/** Resources of a directory: from its manifest.json, or every `*.ndjson` not a proofs, deleted or error file. */
async function importPlan(dir: string): Promise<{ pairs: { file: string; proofs?: string }[]; deleted: string[]; manifest?: Manifest }> {
  try {
    await fs.access(path.join(dir, 'manifest.json'));
  } catch {
    const names = (await fs.readdir(dir)).filter((n) => n.endsWith('.ndjson')).sort();
    const kind = /-(proofs|deleted|error)\.ndjson$/;
    return { pairs: names.filter((n) => !kind.test(n)).map((file) => ({ file })), deleted: names.filter((n) => n.endsWith('-deleted.ndjson')) };
  }
  const { manifest, pairs } = await exportFiles(dir);
  const deleted = (manifest.deleted ?? []).map((d) => decodeURIComponent(new URL(d.url).pathname.split('/').pop()!));
  return { pairs, deleted, manifest };
}

/** A resource as compared for "unchanged": without the server's version stamp. */
function comparable(resource: Record<string, unknown>): string {
  const { meta, ...rest } = resource as { meta?: Record<string, unknown> };
  const { versionId: _v, lastUpdated: _l, ...keptMeta } = meta ?? {};
  return canonicalJson(Object.keys(keptMeta).length ? { ...rest, meta: keptMeta } : rest);
}


/** The Provenance recording where an imported version came from and where it was anchored. */
function crossSiteProvenance(target: string, proof: ProofLine, source: string | undefined): Record<string, unknown> {
  const sub = (url: string, value: Record<string, unknown>) => ({ url, ...value });
  return {
    resourceType: 'Provenance',
    id: crossSiteProvenanceId(target),
    target: [{ reference: target }],
    recorded: new Date().toISOString(),
    activity: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-DataOperation', code: 'CREATE' }], text: 'imported from another site' },
    agent: [{ who: { display: source ?? 'bulk import' } }],
    entity: [{ role: 'source', what: { reference: source ? `${source}/${proof.resource}` : proof.resource } }],
    extension: [
      {
        url: CROSS_SITE_EXTENSION,
        extension: [
          ...(source ? [sub('source', { valueUri: source })] : []),
          sub('resource', { valueString: proof.resource }),
          sub('status', { valueCode: proof.status }),
          ...(proof.digest ? [sub('digest', { valueString: proof.digest })] : []),
          ...(proof.leaf ? [sub('leaf', { valueString: proof.leaf })] : []),
          ...(proof.root ? [sub('root', { valueString: proof.root })] : []),
          ...(proof.transaction ? [sub('transaction', { valueString: proof.transaction })] : []),
          ...(proof.blockNumber !== undefined ? [sub('blockNumber', { valueInteger: proof.blockNumber })] : []),
          ...(proof.chainId !== undefined ? [sub('chainId', { valueInteger: proof.chainId })] : []),
          ...(proof.contract ? [sub('contract', { valueString: proof.contract })] : []),
        ],
      },
    ],
  };
}

export interface ImportOptions {
  dir: string;
  client: FhirClient;
  chunk: number;
  rpcUrl?: string;
  /** Report progress: counts, rate, ETA. */
  progress?: (p: { done: number; total: number; rate: number; etaSeconds: number | undefined }) => void;
}

/** Load a directory into the target. */
export async function importDirectory(options: ImportOptions): Promise<ImportSummary> {
  const { dir, client, chunk } = options;
  const plan = await importPlan(dir);
  const source = plan.manifest ? plan.manifest.request.replace(/\/(?:(?:Patient|Group\/[^/]+)\/)?\$export.*$/, '') : undefined;
  const stateFile = path.join(dir, STATE_FILE);
  let state: ImportState = { done: {} };
  try {
    state = JSON.parse(await fs.readFile(stateFile, 'utf8')) as ImportState;
  } catch {
    // first run
  }
  const roots = options.rpcUrl ? new RootChecker(options.rpcUrl) : undefined;
  const summary: ImportSummary = { lines: 0, imported: 0, unchanged: 0, deleted: 0, pending: 0, refused: [] };
  const files = await Promise.all(plan.pairs.map(async (p) => ({ ...p, lines: await readLines(path.join(dir, p.file)) })));
  const total = files.reduce((n, f) => n + f.lines.length, 0);
  const started = Date.now();
  let done = files.reduce((n, f) => n + Math.min(state.done[f.file] ?? 0, f.lines.length), 0);
  const firstDone = done;
  const report = () => {
    const seconds = (Date.now() - started) / 1000;
    const rate = seconds > 0 ? (done - firstDone) / seconds : 0;
    options.progress?.({ done, total, rate, etaSeconds: rate > 0 ? (total - done) / rate : undefined });
  };
  for (const file of files) {
    const proofs = file.proofs ? await readLines(path.join(dir, file.proofs)) : undefined;
    for (let start = state.done[file.file] ?? 0; start < file.lines.length; start += chunk) {
      const end = Math.min(start + chunk, file.lines.length);
      const accepted: { resource: Record<string, unknown>; text: string; line: number; proof?: ProofLine }[] = [];
      for (let i = start; i < end; i++) {
        summary.lines++;
        let resource: Record<string, unknown>;
        try {
          resource = JSON.parse(file.lines[i]!) as Record<string, unknown>;
          if (typeof resource.resourceType !== 'string' || typeof resource.id !== 'string') throw new Error('shape');
        } catch {
          summary.refused.push({ file: file.file, line: i + 1, resource: '?', reason: 'malformed' });
          continue;
        }
        let proof: ProofLine | undefined;
        if (proofs) {
          try {
            proof = JSON.parse(proofs[i] ?? 'null') as ProofLine;
          } catch {
            proof = undefined;
          }
          let reason: LineReason | undefined = proof ? checkLine(file.lines[i]!, proof) : 'malformed';
          if (reason === undefined && roots) reason = await roots.check(proof!.root!, String(proof!.contract), Number(proof!.chainId));
          if (reason === 'pending') summary.pending++;
          else if (reason !== undefined) {
            summary.refused.push({ file: file.file, line: i + 1, resource: `${resource.resourceType}/${resource.id}`, reason });
            continue;
          }
        }
        accepted.push({ resource, text: file.lines[i]!, line: i + 1, ...(proof ? { proof } : {}) });
      }
      await importChunk(client, accepted, file.file, summary, source);
      done += end - start;
      state.done[file.file] = end;
      await writeJsonFile(stateFile, state);
      report();
    }
  }
  for (const name of plan.deleted) {
    const key = `deleted:${name}`;
    if (state.done[key]) continue;
    const entries: { request: { method: string; url: string } }[] = [];
    for (const line of await readLines(path.join(dir, name))) {
      const bundle = JSON.parse(line) as { entry?: { request?: { method?: string; url?: string } }[] };
      for (const e of bundle.entry ?? []) if (e.request?.method === 'DELETE' && typeof e.request.url === 'string') entries.push({ request: { method: 'DELETE', url: e.request.url } });
    }
    for (let i = 0; i < entries.length; i += chunk) {
      // A batch: a resource already gone here is no reason to keep the others.
      const answer = await client.json<{ entry?: { response?: { status?: string } }[] }>('', { method: 'POST', body: { resourceType: 'Bundle', type: 'batch', entry: entries.slice(i, i + chunk) } });
      summary.deleted += (answer.entry ?? []).filter((e) => /^20[04]/.test(e.response?.status ?? '')).length;
    }
    state.done[key] = 1;
    await writeJsonFile(stateFile, state);
  }
  return summary;
}

/** Write one chunk: what changed, as one transaction (entry by entry when the transaction is refused). */
async function importChunk(
  client: FhirClient,
  accepted: { resource: Record<string, unknown>; text: string; line: number; proof?: ProofLine }[],
  file: string,
  summary: ImportSummary,
  source: string | undefined,
): Promise<void> {
  if (accepted.length === 0) return;
  // What the target holds now: unchanged resources are not written again.
  const current = new Map<string, { versionId: number; comparable: string }>();
  const byType = new Map<string, string[]>();
  for (const { resource } of accepted) byType.set(resource.resourceType as string, [...(byType.get(resource.resourceType as string) ?? []), resource.id as string]);
  for (const [type, ids] of byType) {
    const page = await client.json<{ entry?: { resource: Record<string, unknown> }[] }>(`${type}?_id=${ids.map(encodeURIComponent).join(',')}&_count=${ids.length}`);
    for (const { resource } of page.entry ?? []) {
      if (resource.resourceType !== type) continue;
      current.set(`${type}/${resource.id}`, { versionId: Number((resource.meta as { versionId?: string } | undefined)?.versionId ?? 0), comparable: comparable(resource) });
    }
  }
  // Entries as JSON text: each resource is sent as the line it was (decimals exactly as exported);
  // the target stamps its own meta.versionId and meta.lastUpdated.
  const entries: { url: string; text: string }[] = [];
  const written: typeof accepted = [];
  for (const item of accepted) {
    const reference = `${item.resource.resourceType}/${item.resource.id}`;
    const now = current.get(reference);
    if (now && now.comparable === comparable(item.resource)) {
      summary.unchanged++;
      continue;
    }
    entries.push({ url: reference, text: item.text });
    if (item.proof?.status === 'anchored') {
      const target = `${reference}/_history/${(now?.versionId ?? 0) + 1}`;
      entries.push({ url: `Provenance/${crossSiteProvenanceId(target)}`, text: JSON.stringify(crossSiteProvenance(target, item.proof, source)) });
    }
    written.push(item);
  }
  if (entries.length === 0) return;
  try {
    const entry = entries.map((e) => `{"resource":${e.text},"request":${JSON.stringify({ method: 'PUT', url: e.url })}}`).join(',');
    await client.json('', { method: 'POST', body: `{"resourceType":"Bundle","type":"transaction","entry":[${entry}]}` });
    summary.imported += written.length;
    return;
  } catch (err) {
    if (!(err instanceof BulkClientError) || err.status === undefined || err.status >= 500) throw err;
  }
  // The transaction was refused (one bad resource refuses all): write them one by one to name the bad ones.
  for (const item of written) {
    const reference = `${item.resource.resourceType}/${item.resource.id}`;
    try {
      await client.json(reference, { method: 'PUT', body: item.text });
      summary.imported++;
    } catch (err) {
      if (!(err instanceof BulkClientError) || err.status === undefined || err.status >= 500) throw err;
      summary.refused.push({ file, line: item.line, resource: reference, reason: `HTTP ${err.status}: ${err.message.split(' ').pop()}` });
    }
  }
}

// ---------------------------------------------------------------------------------------------
// commands

function progressPrinter(io: Io, json: boolean, label: string) {
  const tty = (io.stdout as { isTTY?: boolean }).isTTY === true;
  return (p: { done: number; total: number; rate: number; etaSeconds: number | undefined }) => {
    if (json) io.stdout.write(`${JSON.stringify({ event: 'progress', stage: label, ...p, rate: Math.round(p.rate) })}\n`);
    else if (tty) {
      const width = 30;
      const filled = p.total ? Math.round((p.done / p.total) * width) : width;
      const eta = p.etaSeconds === undefined ? '' : ` ETA ${Math.ceil(p.etaSeconds)}s`;
      io.stdout.write(`\r${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${p.done}/${p.total} ${Math.round(p.rate)}/s${eta}   `);
    }
  };
}

function printSummary(io: Io, json: boolean, summary: ImportSummary & { transactionTime?: string }): void {
  if (json) {
    io.stdout.write(`${JSON.stringify({ event: 'done', ...summary })}\n`);
    return;
  }
  if ((io.stdout as { isTTY?: boolean }).isTTY) io.stdout.write('\n');
  io.stdout.write(
    `${summary.imported} imported, ${summary.unchanged} unchanged, ${summary.deleted} deleted, ${summary.refused.length} refused` +
      `${summary.pending ? ` (${summary.pending} not yet anchored at the source)` : ''}${summary.transactionTime ? `; in step with the source as of ${summary.transactionTime}` : ''}\n`,
  );
  for (const r of summary.refused.slice(0, 100)) io.stdout.write(`REFUSED ${r.file}:${r.line} ${r.resource}: ${r.reason}\n`);
  if (summary.refused.length > 100) io.stdout.write(`… and ${summary.refused.length - 100} more\n`);
}

async function runExportCommand(values: Values, io: Io): Promise<number> {
  if (!values.out) throw new UsageError('--out <dir> is required');
  const { client, decryptionKey } = await sourceClient(values);
  const { manifest, status } = await client.export(kickOffUrl(values.type, values.since), (p) => values.json && io.stdout.write(`${JSON.stringify({ event: 'progress', stage: 'export', status: p })}\n`));
  await client.download(manifest, values.out, decryptionKey);
  await client.discard(status);
  const count = manifest.output.reduce((n, o) => n + (o.count ?? 0), 0);
  io.stdout.write(values.json ? `${JSON.stringify({ event: 'done', transactionTime: manifest.transactionTime, files: manifest.output.length, resources: count, dir: values.out })}\n` : `${count} resources in ${manifest.output.length} files, as of ${manifest.transactionTime}, in ${values.out}\n`);
  return 0;
}

async function runImportCommand(values: Values, positionals: string[], io: Io): Promise<number> {
  if (positionals.length !== 1) throw new UsageError('give the directory to import');
  const client = await targetClient(values);
  const summary = await importDirectory({
    dir: positionals[0]!,
    client,
    chunk: whole(values.chunk, '--chunk', 100, 10_000),
    ...(values.rpc ? { rpcUrl: values.rpc } : {}),
    progress: progressPrinter(io, values.json === true, 'import'),
  });
  printSummary(io, values.json === true, summary);
  return summary.refused.length ? 1 : 0;
}

/** One sync round: export since the last transactionTime, import, remember the new one. */
export async function syncOnce(options: {
  source: FhirClient;
  decryptionKey?: JWK;
  target: FhirClient;
  stateFile: string;
  chunk: number;
  rpcUrl?: string;
  types?: string;
  progress?: ImportOptions['progress'];
}): Promise<ImportSummary & { transactionTime: string }> {
  let state: { from?: string; transactionTime?: string } = {};
  try {
    state = JSON.parse(await fs.readFile(options.stateFile, 'utf8')) as typeof state;
  } catch {
    // first round: everything
  }
  if (state.from !== undefined && state.from !== options.source.base) throw new UsageError(`${options.stateFile} is the state of a sync from ${state.from}`);
  const { manifest, status } = await options.source.export(kickOffUrl(options.types, state.transactionTime));
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vellum-sync-'));
  try {
    await options.source.download(manifest, dir, options.decryptionKey);
    const summary = await importDirectory({ dir, client: options.target, chunk: options.chunk, ...(options.rpcUrl ? { rpcUrl: options.rpcUrl } : {}), ...(options.progress ? { progress: options.progress } : {}) });
    // Only a round that refused nothing moves the position on (a refused line is tried again next round).
    if (summary.refused.length === 0) await writeJsonFile(options.stateFile, { from: options.source.base, transactionTime: manifest.transactionTime });
    return { ...summary, transactionTime: manifest.transactionTime };
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
    await options.source.discard(status);
  }
}

async function runSyncCommand(values: Values, io: Io): Promise<number> {
  const { client: source, decryptionKey } = await sourceClient(values);
  const target = await targetClient(values);
  const every = values.every === undefined ? undefined : whole(values.every, '--every', 60, 86_400);
  if (values.once && every !== undefined) throw new UsageError('--once or --every, not both');
  const options = {
    source,
    ...(decryptionKey ? { decryptionKey } : {}),
    target,
    stateFile: values.state ?? 'vellum-sync-state.json',
    chunk: whole(values.chunk, '--chunk', 100, 10_000),
    ...(values.rpc ? { rpcUrl: values.rpc } : {}),
    ...(values.type ? { types: values.type } : {}),
    progress: progressPrinter(io, values.json === true, 'sync'),
  };
  for (;;) {
    const summary = await syncOnce(options);
    printSummary(io, values.json === true, summary);
    if (every === undefined) return summary.refused.length ? 1 : 0;
    await new Promise((resolve) => setTimeout(resolve, every * 1000));
  }
}

/** `vellum export|import|sync …`. */
export async function runBulk(command: 'export' | 'import' | 'sync', argv: string[], io: Io): Promise<number> {
  try {
    const { values, positionals } = parse(argv);
    if (values.help) {
      io.stdout.write(BULK_USAGE);
      return 0;
    }
    if (command === 'export') return await runExportCommand(values, io);
    if (command === 'import') return await runImportCommand(values, positionals, io);
    return await runSyncCommand(values, io);
  } catch (err) {
    if (err instanceof UsageError) {
      io.stderr.write(`vellum ${command}: ${err.message}\n\n${BULK_USAGE}`);
      return 2;
    }
    if (err instanceof BulkClientError || (err as { name?: string }).name === 'VerifyUsageError') {
      io.stderr.write(`vellum ${command}: ${(err as Error).message}\n`);
      return 2;
    }
    throw err;
  }
}
