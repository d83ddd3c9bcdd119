/**
 * The signing keys of Vellum's authorization server: RS256 (RSA 2048) key pairs that sign access
 * tokens and id tokens. RS256 because OpenID Connect requires it for id tokens
 * (https://openid.net/specs/openid-connect-core-1_0.html#ServerMTI; Inferno checks it).
 *
 * The keys live in `<dataDir>/auth/signing-keys.json` (mode 0600), created on first start. `rotate()`
 * adds a new current key; previous keys stay published in the JWKS (and keep verifying) until every
 * token they signed has expired (`retainSeconds` after they stopped signing), then are dropped.
 */
import { randomUUID } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { link, mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { calculateJwkThumbprint, createLocalJWKSet, exportJWK, generateKeyPair, importJWK, type CryptoKey, type JWK, type JWTVerifyGetKey } from 'jose';

export const SIGNING_ALG = 'RS256';

interface StoredKey {
  kid: string;
  alg: typeof SIGNING_ALG;
  /** Seconds since the epoch. */
  createdAt: number;
  /** When the key stopped signing (a newer key became current); absent for the current key. */
  retiredAt?: number;
  privateJwk: JWK;
  publicJwk: JWK;
}

interface KeyFile {
  version: 1;
  keys: StoredKey[];
}

export interface SigningKey {
  kid: string;
  alg: typeof SIGNING_ALG;
  privateKey: CryptoKey;
}

export class SigningKeyError extends Error {
  override readonly name = 'SigningKeyError';
  constructor(readonly code: 'VLM_AUTH_KEYS_FILE' | 'VLM_AUTH_KEYS_INVALID', message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

async function newKey(now: number): Promise<StoredKey> {
  const { privateKey, publicKey } = await generateKeyPair(SIGNING_ALG, { modulusLength: 2048, extractable: true });
  const publicJwk = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(publicJwk);
  return {
    kid,
    alg: SIGNING_ALG,
    createdAt: now,
    privateJwk: { ...(await exportJWK(privateKey)), kid, alg: SIGNING_ALG, use: 'sig' },
    publicJwk: { ...publicJwk, kid, alg: SIGNING_ALG, use: 'sig' },
  };
}

export interface SigningKeysOptions {
  /** How long a retired key stays published: at least the longest token lifetime (plus clock skew). */
  retainSeconds: number;
  /** Clock in seconds (tests). */
  now?: () => number;
}

/** The key ring. Build with `SigningKeys.open(file, options)`. */
export class SigningKeys {
  #file: string;
  #options: SigningKeysOptions;
  #keys: StoredKey[];
  #current: SigningKey;
  #jwks: { keys: JWK[] };
  #keySet: JWTVerifyGetKey;

  private constructor(file: string, options: SigningKeysOptions, keys: StoredKey[], current: SigningKey) {
    this.#file = file;
    this.#options = options;
    this.#keys = keys;
    this.#current = current;
    this.#jwks = { keys: keys.map((k) => ({ ...k.publicJwk })) };
    this.#keySet = createLocalJWKSet(this.#jwks);
  }

  /**
   * Load the key file, creating it (mode 0600, directory 0700) with one fresh key when absent.
   * Raises SigningKeyError `VLM_AUTH_KEYS_FILE` (unreadable / unwritable) or `VLM_AUTH_KEYS_INVALID`.
   */
  static async open(file: string, options: SigningKeysOptions): Promise<SigningKeys> {
    const now = options.now ?? (() => Math.floor(Date.now() / 1000));
    let stored = await readKeyFile(file);
    if (stored === undefined) {
      await createFile(file, { version: 1, keys: [await newKey(now())] });
      stored = await readKeyFile(file);
      if (stored === undefined) throw new SigningKeyError('VLM_AUTH_KEYS_FILE', `signing key file ${file} vanished after creation`);
    }
    return SigningKeys.#fromFile(file, { ...options, now }, stored);
  }

  static async #fromFile(file: string, options: SigningKeysOptions, stored: KeyFile): Promise<SigningKeys> {
    const current = stored.keys.find((k) => k.retiredAt === undefined);
    if (!current) throw new SigningKeyError('VLM_AUTH_KEYS_INVALID', `signing key file ${file} has no current key`);
    let privateKey: CryptoKey;
    try {
      privateKey = (await importJWK(current.privateJwk, SIGNING_ALG)) as CryptoKey;
    } catch (err) {
      throw new SigningKeyError('VLM_AUTH_KEYS_INVALID', `signing key file ${file} holds an unusable key`, { cause: err });
    }
    return new SigningKeys(file, options, stored.keys, { kid: current.kid, alg: SIGNING_ALG, privateKey });
  }

  /** The key that signs new tokens. */
  current(): SigningKey {
    return this.#current;
  }

  /** The public JWKS (current key first, then retired keys still within their retention). */
  jwks(): { keys: JWK[] } {
    return { keys: this.#jwks.keys.map((k) => ({ ...k })) };
  }

  /** A jose key resolver over the published keys, for `jwtVerify`. */
  keySet(): JWTVerifyGetKey {
    return this.#keySet;
  }

  /**
   * Make a new key current; the previous one stays published for `retainSeconds`, and keys retired
   * longer ago are dropped. The file is replaced atomically (mode 0600). Returns the new `kid`.
   */
  async rotate(): Promise<string> {
    const now = this.#options.now!();
    const fresh = await newKey(now);
    const keys = [
      fresh,
      ...this.#keys
        .map((k) => (k.retiredAt === undefined ? { ...k, retiredAt: now } : k))
        .filter((k) => k.retiredAt! + this.#options.retainSeconds > now),
    ];
    await replaceFile(this.#file, { version: 1, keys });
    const next = await SigningKeys.#fromFile(this.#file, this.#options, { version: 1, keys });
    this.#keys = next.#keys;
    this.#current = next.#current;
    this.#jwks = next.#jwks;
    this.#keySet = next.#keySet;
    return fresh.kid;
  }
}

async function readKeyFile(file: string): Promise<KeyFile | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as { code?: string }).code === 'ENOENT') return undefined;
    throw new SigningKeyError('VLM_AUTH_KEYS_FILE', `cannot read signing key file ${file}`, { cause: err });
  }
  try {
    const parsed = JSON.parse(text) as KeyFile;
    if (parsed.version !== 1 || !Array.isArray(parsed.keys) || parsed.keys.length === 0) throw new Error('shape');
    for (const k of parsed.keys) {
      if (typeof k.kid !== 'string' || k.alg !== SIGNING_ALG || typeof k.privateJwk !== 'object' || typeof k.publicJwk !== 'object') {
        throw new Error('shape');
      }
    }
    return parsed;
  } catch (err) {
    throw new SigningKeyError('VLM_AUTH_KEYS_INVALID', `signing key file ${file} is not a Vellum key file`, { cause: err });
  }
}

async function writeTemp(file: string, content: KeyFile): Promise<string> {
  const dir = dirname(file);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const tmp = join(dir, `.${basename(file)}.${randomUUID()}.tmp`);
  const handle = await open(tmp, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, 0o600);
  try {
    await handle.writeFile(`${JSON.stringify(content, null, 2)}\n`, 'utf8');
    await handle.sync();
  } finally {
    await handle.close();
  }
  return tmp;
}

/** Create without overwriting: a concurrent creator's keys win (link fails with EEXIST). */
async function createFile(file: string, content: KeyFile): Promise<void> {
  let tmp: string | undefined;
  try {
    tmp = await writeTemp(file, content);
    await link(tmp, file).catch((err: { code?: string }) => {
      if (err.code !== 'EEXIST') throw err;
    });
  } catch (err) {
    throw new SigningKeyError('VLM_AUTH_KEYS_FILE', `cannot create signing key file ${file}`, { cause: err });
  } finally {
    if (tmp) await unlink(tmp).catch(() => undefined);
  }
}

async function replaceFile(file: string, content: KeyFile): Promise<void> {
  try {
    const tmp = await writeTemp(file, content);
    await rename(tmp, file);
  } catch (err) {
    throw new SigningKeyError('VLM_AUTH_KEYS_FILE', `cannot write signing key file ${file}`, { cause: err });
  }
}
