/**
 * Deciding a subscription filter on the rows a version was just indexed with, without a query —
 * where the rows alone decide it exactly. The outbox (index commit) evaluates every filter of a
 * type on every version of it; most filters name a code, a patient or an id, and most versions
 * are not theirs: those are decided here, in memory, and only the rest are asked of the search
 * engine (same answer, one query each).
 *
 * Exact for clauses whose conditions are all plain tokens with a code (`code`, `|code`,
 * `system|code`), local references by id, or `_id` — the SQL of search-sql.ts compares these
 * by equality on the same row fields. Any other clause (negated, `:text`, `system|`, strings,
 * dates, numbers, quantities, uris, composites, `:missing`, `_lastUpdated`) is undecided.
 */
import type { IndexClause, IndexCondition, SearchRow } from './search-types.ts';

/** `true`/`false` when the rows decide the filter `where` for resource `id`; `undefined` when a query must. */
export function decideByRows(where: readonly IndexClause[], id: string, rows: readonly SearchRow[]): boolean | undefined {
  let undecided = false;
  for (const clause of where) {
    const decided = clause.negate ? undefined : decideClause(clause.anyOf, id, rows);
    if (decided === false) return false;
    if (decided === undefined) undecided = true;
  }
  return undecided ? undefined : true;
}

function decideClause(anyOf: readonly IndexCondition[], id: string, rows: readonly SearchRow[]): boolean | undefined {
  let found = false;
  for (const c of anyOf) {
    const hit = decideCondition(c, id, rows);
    if (hit === undefined) return undefined;
    if (hit) found = true;
  }
  return found;
}

function decideCondition(c: IndexCondition, id: string, rows: readonly SearchRow[]): boolean | undefined {
  switch (c.kind) {
    case 'id':
      return c.id === id;
    case 'token':
      if (c.text !== undefined || c.code === undefined) return undefined;
      return rows.some(
        (r) => r.kind === 'token' && r.param === c.param && r.code === c.code && (c.system === undefined || r.system === c.system),
      );
    case 'reference':
      if ('url' in c) return undefined;
      return rows.some(
        (r) => r.kind === 'reference' && r.param === c.param && r.targetId === c.id && (c.types.length === 0 || (r.targetType !== null && c.types.includes(r.targetType))),
      );
    default:
      return undefined;
  }
}
