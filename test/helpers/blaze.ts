/**
 * Blaze's Synthea search dataset (CORPORA/search/blaze-synthea, corpora README §4a): the files in
 * load order, and an ORACLE — the expected answers computed from the files alone by this code,
 * never from a server's answers. References are resolved the way a transaction resolves them
 * (urn:uuid fullUrls; conditional `Type?identifier=system|value` references by identifier).
 */
import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { CORPORA } from './corpora.ts';

export const BLAZE_DIR = join(CORPORA, 'search', 'blaze-synthea');

export type Json = Record<string, any>;

export function readBlazeFile(file: string): string {
  return execFileSync('bzip2', ['-dc', join(BLAZE_DIR, file)], { maxBuffer: 256 * 1024 * 1024 }).toString('utf8');
}

/** The bundles in the documented order: the two `batch` information bundles, then the transactions. */
export function blazeFiles(): { infos: string[]; patients: string[] } {
  const files = readdirSync(BLAZE_DIR)
    .filter((f) => f.endsWith('.json.bz2'))
    .sort();
  return { infos: files.filter((f) => f.startsWith('0-')), patients: files.filter((f) => !f.startsWith('0-')) };
}

/** Lower case without accents: how a default string search compares. */
export function fold(s: string): string {
  return s.normalize('NFD').replace(/\p{M}/gu, '').toLowerCase();
}

export class BlazeOracle {
  readonly byFullUrl = new Map<string, Json>();
  readonly byType = new Map<string, Json[]>();
  readonly #byIdentifier = new Map<string, Json>();

  add(bundle: Json): void {
    for (const entry of bundle.entry ?? []) {
      const resource = entry.resource as Json;
      if (entry.fullUrl) this.byFullUrl.set(entry.fullUrl, resource);
      const list = this.byType.get(resource.resourceType) ?? [];
      list.push(resource);
      this.byType.set(resource.resourceType, list);
      for (const id of resource.identifier ?? []) {
        if (id.system && id.value) this.#byIdentifier.set(`${resource.resourceType}?identifier=${id.system}|${id.value}`, resource);
      }
    }
  }

  all(type: string): Json[] {
    return this.byType.get(type) ?? [];
  }

  /** The resource a reference of the files names (undefined when it names nothing loaded). */
  resolve(reference: unknown): Json | undefined {
    if (typeof reference !== 'string') return undefined;
    return this.byFullUrl.get(reference) ?? this.#byIdentifier.get(reference);
  }

  total(): number {
    let n = 0;
    for (const list of this.byType.values()) n += list.length;
    return n;
  }
}

/** Every coding of a CodeableConcept. */
export function codings(concept: Json | undefined): { system?: string; code?: string }[] {
  return concept?.coding ?? [];
}

export function hasCode(concept: Json | undefined, system: string, code: string): boolean {
  return codings(concept).some((c) => c.system === system && c.code === code);
}
