/**
 * The shape of a conformance check and the two ways it can end other than passing.
 *
 * A check is a module in `checks/` named `<area>-<behaviour>.ts` whose named exports are `id`
 * (its file name without `.ts`), `spec` (the URL of the R4 clause it tests), `description` (one
 * line) and `run(ctx)`. `run` resolves to pass, throws `CheckFailure` to fail, or `CheckSkip` to skip (the
 * server's CapabilityStatement says it lacks what the check needs, or the spec lets the server
 * decline). Any other exception fails the check too.
 */
import type { CheckContext } from './context.ts';

export interface Check {
  /** `<area>-<behaviour>`, equal to the file name. */
  id: string;
  /** The clause of the FHIR R4 specification this check tests. */
  spec: string;
  /** One line: what the server must do. */
  description: string;
  /** Resolves (optionally with a short note for the PASS line) when the server behaves. */
  run(ctx: CheckContext): Promise<void | string>;
}

/** The server did something the spec forbids (or failed to do what it requires). */
export class CheckFailure extends Error {
  override name = 'CheckFailure';
}

/** The check does not apply to this server. */
export class CheckSkip extends Error {
  override name = 'CheckSkip';
}

/** Fail the current check with `reason`. */
export function fail(reason: string): never {
  throw new CheckFailure(reason);
}

/** Skip the current check with `reason`. */
export function skip(reason: string): never {
  throw new CheckSkip(reason);
}
