/**
 * Helpers of the Bulk Data export tests: kick off, wait for the runner, read the manifest and
 * download its files (src/fhir/bulk/). Everything goes through the server's HTTP API (inject); the
 * only thing taken from inside is `runner.idle()` (wait for the job instead of polling on a timer)
 * and the runner's `afterPart` seam (hold or stop a job at a known point).
 */
import type { Test } from 'tap';
import type { ExportProgress } from '../../../src/fhir/bulk/job.ts';
import type { TestServer } from '../../helpers/server.ts';

export type Res = Awaited<ReturnType<TestServer['fhir']>>;

export const ASYNC = { prefer: 'respond-async' };

/** A URL the server gave (status, file) as a path relative to the FHIR base, for `s.fhir`. */
export function rel(url: string): string {
  const u = new URL(url);
  return decodeURIComponent(u.pathname).replace(/^\/fhir\//, '') + u.search;
}

export const show = (res: Res): string => `${res.status} ${res.text.slice(0, 500)}`;

export const auth = (token: string | undefined): Record<string, string> => (token ? { authorization: `Bearer ${token}` } : {});

/** The job id of a kick-off's Content-Location. */
export function jobOf(res: Res): string {
  const location = String(res.headers['content-location'] ?? '');
  const m = /\/\$export-status\/([A-Za-z0-9-]+)$/.exec(location);
  if (!m) throw new Error(`no status URL in ${show(res)}`);
  return m[1]!;
}

export function ndjson(text: string): any[] {
  if (text === '') return [];
  if (!text.endsWith('\n')) throw new Error('an ndjson file ends with a newline');
  return text
    .slice(0, -1)
    .split('\n')
    .map((line) => JSON.parse(line));
}

export interface Export {
  job: string;
  statusPath: string;
  manifest: any;
  /** Lines of each output file by type, in manifest order (several files of a type are joined). */
  byType: Record<string, any[]>;
  /** Raw text of every file of the manifest (output, deleted, error, proofs) by URL. */
  texts: Map<string, string>;
}

/** Kick off (expects 202), wait for the runner, read the manifest (expects 200) and every file. */
export async function runExport(
  t: Test,
  s: TestServer,
  path: string,
  options: { method?: 'GET' | 'POST'; body?: unknown; token?: string; headers?: Record<string, string> } = {},
): Promise<Export> {
  const headers = { ...ASYNC, ...auth(options.token), ...options.headers };
  const kick = await s.fhir(options.method ?? 'GET', path, options.body, headers);
  t.equal(kick.status, 202, `kick-off ${path}: ${show(kick)}`);
  const job = jobOf(kick);
  return finish(t, s, job, options.token);
}

/** Wait for `job` and read its manifest and files. */
export async function finish(t: Test, s: TestServer, job: string, token?: string): Promise<Export> {
  await s.services.bulk!.runner.idle();
  const statusPath = `$export-status/${job}`;
  const status = await s.fhir('GET', statusPath, undefined, auth(token));
  if (status.status !== 200) throw new Error(`status of ${job}: ${show(status)}`);
  t.match(String(status.headers['content-type']), /^application\/json/, 'the manifest is application/json');
  const manifest = status.json;
  const texts = new Map<string, string>();
  const byType: Record<string, any[]> = {};
  const proofUrls = (manifest.extension?.['https://vellum.dev/fhir/bulk/proofs'] ?? []).map((p: any) => p.url);
  for (const url of [...manifest.output, ...manifest.deleted, ...manifest.error].map((o: any) => o.url).concat(proofUrls)) {
    const file = await s.fhir('GET', rel(url), undefined, { ...auth(token), accept: 'application/fhir+ndjson' });
    if (file.status !== 200) throw new Error(`file ${url}: ${show(file)}`);
    texts.set(url, file.text);
  }
  for (const o of manifest.output) {
    if (manifest.extension?.['https://vellum.dev/fhir/bulk/encryption']) continue;
    (byType[o.type] ??= []).push(...ndjson(texts.get(o.url)!));
  }
  return { job, statusPath, manifest, byType, texts };
}

/** `Type/id` of each resource. */
export const refs = (resources: any[] | undefined): string[] => (resources ?? []).map((r) => `${r.resourceType}/${r.id}`).sort();

/** `Type/id/_history/v` of each resource. */
export const versions = (resources: any[] | undefined): string[] =>
  (resources ?? []).map((r) => `${r.resourceType}/${r.id}/_history/${r.meta?.versionId}`).sort();

/** The `DELETE` urls of the deleted files of a manifest. */
export function deletions(e: Export): string[] {
  return e.manifest.deleted
    .flatMap((d: any) => ndjson(e.texts.get(d.url)!))
    .flatMap((bundle: any) => {
      if (bundle.resourceType !== 'Bundle' || bundle.type !== 'transaction') throw new Error('a deleted line is a transaction Bundle');
      return bundle.entry.map((entry: any) => `${entry.request.method} ${entry.request.url}`);
    })
    .sort();
}

/**
 * Hold the runner after its `nth` part (1-based) is recorded: `reached` resolves with the job and
 * its progress there; the runner waits until `release()`. Later parts pass freely.
 */
export function holdAfterPart(s: TestServer, nth = 1): { reached: Promise<{ job: string; progress: ExportProgress }>; release: () => void } {
  const runner = s.services.bulk!.runner;
  let count = 0;
  let reach!: (v: { job: string; progress: ExportProgress }) => void;
  let release!: () => void;
  const reached = new Promise<{ job: string; progress: ExportProgress }>((resolve) => (reach = resolve));
  const released = new Promise<void>((resolve) => (release = resolve));
  runner.afterPart = async (job, progress) => {
    if (++count !== nth) return;
    runner.afterPart = undefined;
    reach({ job, progress: structuredClone(progress) });
    await released;
  };
  return { reached, release };
}
