/**
 * FHIR date / dateTime / instant values as time ranges (http://hl7.org/fhir/R4/datatypes.html#dateTime):
 * `2020` covers the whole year, `2020-03-01T10:00:00Z` one second.
 */

const DATE_TIME =
  /^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$/;

/** The inclusive [low, high] millisecond range a FHIR date/dateTime/instant denotes; undefined when malformed. */
export function dateRange(value: string): { low: number; high: number } | undefined {
  const m = DATE_TIME.exec(value);
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s, frac, tz] = m;
  if (h !== undefined && tz === undefined) return undefined;
  const year = Number(y);
  const month = mo === undefined ? undefined : Number(mo);
  const day = d === undefined ? undefined : Number(d);
  if (month !== undefined && (month < 1 || month > 12)) return undefined;
  if (day !== undefined) {
    const last = new Date(Date.UTC(year, month!, 0)).getUTCDate();
    if (day < 1 || day > last) return undefined;
  }
  if (h !== undefined && (Number(h) > 23 || Number(mi) > 59 || (s !== undefined && Number(s) > 59))) return undefined;
  const offset = tz && tz !== 'Z' ? (tz[0] === '-' ? -1 : 1) * (Number(tz.slice(1, 3)) * 60 + Number(tz.slice(4, 6))) : 0;
  const utc = (yy: number, mm: number, dd: number, hh = 0, mn = 0, ss = 0, ms = 0) =>
    Date.UTC(yy, mm, dd, hh, mn, ss, ms) - offset * 60_000;
  if (month === undefined) return { low: utc(year, 0, 1), high: utc(year + 1, 0, 1) - 1 };
  if (day === undefined) return { low: utc(year, month - 1, 1), high: utc(year, month, 1) - 1 };
  if (h === undefined) return { low: utc(year, month - 1, day), high: utc(year, month - 1, day + 1) - 1 };
  if (s === undefined) {
    const low = utc(year, month - 1, day, Number(h), Number(mi));
    return { low, high: low + 59_999 };
  }
  const millis = frac === undefined ? 0 : Number(frac.slice(0, 3).padEnd(3, '0'));
  const low = utc(year, month - 1, day, Number(h), Number(mi), Number(s), millis);
  return { low, high: frac === undefined ? low + 999 : frac.length >= 3 ? low : low + 10 ** (3 - frac.length) - 1 };
}
