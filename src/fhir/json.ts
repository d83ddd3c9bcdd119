/**
 * FHIR JSON with exact decimals. R4 decimals keep their precision: `5.40` is not `5.4`, and an
 * 18-digit value is not the nearest double (http://hl7.org/fhir/R4/datatypes.html#decimal,
 * http://hl7.org/fhir/R4/json.html#primitive). JavaScript numbers cannot hold either, so
 * number literals that would not survive a round trip are kept as `JSON.rawJSON` values, which
 * `JSON.stringify` writes back verbatim.
 *
 * The exact form is for storing and sending; validation and search indexing use the plain form
 * (ordinary numbers), since they only compare values.
 */

declare global {
  interface JSON {
    rawJSON(text: string): unknown;
    isRawJSON(value: unknown): boolean;
  }
}

/**
 * Whether `text` may hold a number literal that a double cannot reproduce: a fraction ending in
 * 0, an exponent, or 16+ digits. False positives only cost a slower parse.
 */
export function mayNeedExactNumbers(text: string): boolean {
  // Only digits that end a JSON number (followed by , } ] or whitespace) count: instants inside
  // strings such as "…:25.020Z" must not force the slow path.
  return /(?:\.\d*0|\d[eE][+-]?\d+|\d{16,}|\.\d{15,})(?=[\s,}\]])/.test(text);
}

function exactNumbers(_key: string, value: unknown, context?: { source?: string }): unknown {
  if (typeof value === 'number' && context?.source !== undefined && context.source !== String(value)) {
    return JSON.rawJSON(context.source);
  }
  return value;
}

/** Parse JSON keeping every number literal that a double would alter as a raw JSON value. */
export function parseExact(text: string): unknown {
  return mayNeedExactNumbers(text) ? JSON.parse(text, exactNumbers as (k: string, v: unknown) => unknown) : JSON.parse(text);
}

/** Whether parsing `text` exactly gives something other than the plain parse. */
export function hasInexactNumbers(value: unknown): boolean {
  if (value === null || typeof value !== 'object') return false;
  if (JSON.isRawJSON(value)) return true;
  for (const child of Array.isArray(value) ? value : Object.values(value)) if (hasInexactNumbers(child)) return true;
  return false;
}
