/**
 * In-memory DataKeyStore (wrapped data keys by scope) for unit tests; production keeps wrapped
 * keys in the index database.
 */
import type { DataKeyStore } from './cipher.ts';

/** A DataKeyStore over a Map; stores and returns copies so callers cannot alias its contents. */
export class MemoryDataKeyStore implements DataKeyStore {
  readonly #keys = new Map<string, Uint8Array>();

  /** The wrapped key of `scope`, or undefined when none was stored (or it was shredded). */
  getWrappedKey(scope: string): Uint8Array | undefined {
    return this.#keys.get(scope)?.slice();
  }

  /** Store `wrapped` unless `scope` already has a key; return the key that is stored. */
  putWrappedKeyIfAbsent(scope: string, wrapped: Uint8Array): Uint8Array {
    const existing = this.#keys.get(scope);
    if (existing !== undefined) return existing.slice();
    this.#keys.set(scope, wrapped.slice());
    return wrapped.slice();
  }

  /** Forget the wrapped key of `scope` (crypto-shredding). */
  deleteWrappedKey(scope: string): void {
    this.#keys.delete(scope);
  }

  /** Scopes that currently have a wrapped key. */
  scopes(): string[] {
    return [...this.#keys.keys()];
  }
}
