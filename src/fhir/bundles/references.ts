/**
 * References inside the entries of a batch or transaction
 * (http://hl7.org/fhir/R4/http.html#trules, http://hl7.org/fhir/R4/references.html):
 * every `reference` string of every object of an entry's resource — extensions, contained
 * resources and all — is found, and rewritten when it names another entry (`urn:uuid:` /
 * `urn:oid:` fullUrls) or is a conditional reference (`Patient?identifier=s|v`), resolved by
 * search. Only `reference` properties are references: `valueUri`, Attachment urls and narrative
 * are left as written. Bundle resources carried as entries keep their own fullUrl scope, so the
 * walk does not enter them.
 */
import { fhirError } from '../errors.ts';

/** How deep the walk goes before it refuses the resource (the validator stops at 200 anyway). */
const MAX_DEPTH = 1000;

/** The forms a reference of an entry can take that a batch or transaction resolves. */
export function isPlaceholder(reference: string): boolean {
  return reference.startsWith('urn:uuid:') || reference.startsWith('urn:oid:');
}

/** A conditional reference `Type?criteria` (http://hl7.org/fhir/R4/http.html#trules). */
export function conditionalReference(reference: string): { type: string; query: string } | undefined {
  const match = /^([A-Z][A-Za-z]+)\?(.*)$/s.exec(reference);
  return match ? { type: match[1]!, query: match[2]! } : undefined;
}

function isBundle(value: Record<string, unknown>): boolean {
  return value.resourceType === 'Bundle';
}

/** Every `reference` string in `value`. Raises 400 VLM_BUNDLE_TOO_DEEP past MAX_DEPTH. */
export function collectReferences(value: unknown, into: Set<string> = new Set()): Set<string> {
  const walk = (node: unknown, depth: number): void => {
    if (node === null || typeof node !== 'object' || JSON.isRawJSON(node)) return;
    if (depth > MAX_DEPTH) throw fhirError(400, 'structure', 'VLM_BUNDLE_TOO_DEEP', 'An entry is nested too deeply');
    if (Array.isArray(node)) {
      for (const child of node) walk(child, depth + 1);
      return;
    }
    const object = node as Record<string, unknown>;
    if (isBundle(object)) return;
    for (const [key, child] of Object.entries(object)) {
      if (key === 'reference' && typeof child === 'string') into.add(child);
      else walk(child, depth + 1);
    }
  };
  walk(value, 0);
  return into;
}

/**
 * A copy of `value` with every `reference` string that `rewrite` maps replaced (exact decimals,
 * `JSON.rawJSON` values, are kept as they are). Unchanged subtrees are shared, not copied.
 */
export function rewriteReferences<T>(value: T, rewrite: ReadonlyMap<string, string>): T {
  if (rewrite.size === 0) return value;
  const walk = (node: unknown): unknown => {
    if (node === null || typeof node !== 'object' || JSON.isRawJSON(node)) return node;
    if (Array.isArray(node)) {
      let changed = false;
      const out = node.map((child) => {
        const next = walk(child);
        if (next !== child) changed = true;
        return next;
      });
      return changed ? out : node;
    }
    const object = node as Record<string, unknown>;
    if (isBundle(object)) return node;
    let out: Record<string, unknown> | undefined;
    for (const [key, child] of Object.entries(object)) {
      const next = key === 'reference' && typeof child === 'string' ? (rewrite.get(child) ?? child) : walk(child);
      if (next !== child) {
        out ??= { ...object };
        // defineProperty, not assignment: a `__proto__` key from JSON is an own property.
        Object.defineProperty(out, key, { value: next, enumerable: true, writable: true, configurable: true });
      }
    }
    return out ?? node;
  };
  return walk(value) as T;
}
