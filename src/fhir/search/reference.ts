/**
 * References as the search index stores them: a local target or an external url. Kept apart from
 * the extractor (extract.ts, which loads FHIRPath and its R4 model) so that the audit converter
 * thread, which only needs this, does not load them.
 */
const RELATIVE_REFERENCE = /^([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[A-Za-z0-9\-.]{1,64})?$/;

/**
 * Split a reference into a local target (relative `Type/id[/_history/v]`, or absolute under
 * `baseUrl`) or an external url. Contained references (`#id`) give undefined.
 */
export function splitReference(
  reference: string,
  baseUrl: string,
): { type: string; id: string } | { url: string; type: string | undefined } | undefined {
  if (reference === '' || reference.startsWith('#')) return undefined;
  const base = baseUrl.replace(/\/+$/, '');
  const local = base !== '' && reference.startsWith(`${base}/`) ? reference.slice(base.length + 1) : reference;
  const m = RELATIVE_REFERENCE.exec(local);
  if (m) return { type: m[1]!, id: m[2]! };
  // External: keep the url; its type (for `resolve() is T`) is the segment before the id.
  const tail = /\/([A-Z][A-Za-z]+)\/[A-Za-z0-9\-.]{1,64}(?:\/_history\/[^/]+)?$/.exec(reference);
  return { url: reference, type: tail?.[1] };
}
