/**
 * Where an export's files rest until they are downloaded or expire: `<data dir>/exports/<job>/`.
 *
 * - By default a file is encrypted at rest like everything Vellum stores: AES-256-GCM under a key
 *   derived from the master key, with the job id and file name as additional data (a file cannot
 *   be passed off as another), decrypted when its owner downloads it.
 * - For a client that registered an encryption key (a JWK with `"use": "enc"`), the file is a JWE
 *   (compact serialization, `ECDH-ES+A256KW` / `A256GCM`) to that key, made from the plaintext in
 *   memory: the plaintext never rests on the server, and only the recipient can read the file.
 *
 * Files are written whole and renamed into place, so a crash leaves either a complete file or none.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { CompactEncrypt, importJWK, type JWK } from 'jose';

/** What a recipient key looks like once checked (auth/registration.ts accepts these). */
export const RECIPIENT_ALG = 'ECDH-ES+A256KW';
export const RECIPIENT_ENC = 'A256GCM';

/** Whether a JWK can receive export files: an `enc` EC P-256/P-384 or X25519 public key. */
export function isRecipientKey(key: Record<string, unknown>): boolean {
  if (key.use !== 'enc') return false;
  if (key.alg !== undefined && key.alg !== RECIPIENT_ALG) return false;
  if (key.kty === 'EC') return (key.crv === 'P-256' || key.crv === 'P-384') && typeof key.x === 'string' && typeof key.y === 'string';
  return key.kty === 'OKP' && key.crv === 'X25519' && typeof key.x === 'string';
}

const JOB_ID = /^[A-Za-z0-9-]{1,64}$/;
const FILE_NAME = /^[A-Za-z0-9.-]{1,128}$/;

export class ExportFiles {
  readonly #root: string;
  readonly #key: Uint8Array;

  /** `key`: 32 bytes derived from the master key for export files. */
  constructor(root: string, key: Uint8Array) {
    this.#root = root;
    this.#key = key;
  }

  #path(job: string, name?: string): string {
    if (!JOB_ID.test(job) || (name !== undefined && !FILE_NAME.test(name))) throw new Error('bad export file name');
    return name === undefined ? path.join(this.#root, job) : path.join(this.#root, job, name);
  }

  /**
   * Store `plaintext` as file `name` of `job`: encrypted to `recipient` when given (the stored
   * bytes are the JWE), otherwise sealed at rest. Returns the media type it will be served with.
   */
  async write(job: string, name: string, plaintext: Uint8Array, recipient?: JWK): Promise<void> {
    const dir = this.#path(job);
    await fs.mkdir(dir, { recursive: true, mode: 0o700 });
    let stored: Uint8Array;
    if (recipient) {
      const key = await importJWK(recipient, RECIPIENT_ALG);
      const jwe = await new CompactEncrypt(plaintext)
        .setProtectedHeader({ alg: RECIPIENT_ALG, enc: RECIPIENT_ENC, cty: 'application/fhir+ndjson', ...(recipient.kid ? { kid: recipient.kid } : {}) })
        .encrypt(key);
      stored = Buffer.from(jwe, 'ascii');
    } else {
      const iv = randomBytes(12);
      const cipher = createCipheriv('aes-256-gcm', this.#key, iv);
      cipher.setAAD(Buffer.from(`${job}/${name}`));
      const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
      stored = Buffer.concat([iv, cipher.getAuthTag(), body]);
    }
    const target = this.#path(job, name);
    const partial = `${target}.partial`;
    await fs.writeFile(partial, stored, { mode: 0o600 });
    await fs.rename(partial, target);
  }

  /** The file as its owner downloads it: the plaintext, or the JWE as stored. Undefined when absent. */
  async read(job: string, name: string, jwe: boolean): Promise<Buffer | undefined> {
    let stored: Buffer;
    try {
      stored = await fs.readFile(this.#path(job, name));
    } catch {
      return undefined;
    }
    if (jwe) return stored;
    const decipher = createDecipheriv('aes-256-gcm', this.#key, stored.subarray(0, 12));
    decipher.setAAD(Buffer.from(`${job}/${name}`));
    decipher.setAuthTag(stored.subarray(12, 28));
    return Buffer.concat([decipher.update(stored.subarray(28)), decipher.final()]);
  }

  /** Remove a job's files (and any partial one). */
  async remove(job: string): Promise<void> {
    await fs.rm(this.#path(job), { recursive: true, force: true });
  }

  /** Remove the files of a job whose part `keep` lists are the only complete ones (a resumed job's leftovers). */
  async prune(job: string, keep: ReadonlySet<string>): Promise<void> {
    let names: string[];
    try {
      names = await fs.readdir(this.#path(job));
    } catch {
      return;
    }
    for (const name of names) if (!keep.has(name)) await fs.rm(path.join(this.#path(job), name), { force: true });
  }
}
