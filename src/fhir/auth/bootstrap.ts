/**
 * The bootstrap administrator: on first start Vellum registers an administrator client
 * (`client_secret_basic`, `client_credentials`, scope `system/*.* user/*.*`) and writes its
 * credentials to `<dataDir>/admin-client.json` (mode 0600). Later starts reuse the file; if the
 * auth database lost the client, it is restored from the file; if the file was lost, the old
 * administrator (whose secret nobody holds any more) is replaced. Only the file's path is logged.
 */
import { randomUUID } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { hashSecret, newSecret, secretMatches, type AuthStore } from '../../storage/auth-store.ts';

export const ADMIN_SCOPE = 'system/*.* user/*.*';

export interface AdminClientFile {
  client_id: string;
  client_secret: string;
  token_url: string;
  scope: string;
}

export class AdminBootstrapError extends Error {
  override readonly name = 'AdminBootstrapError';
  readonly code = 'VLM_AUTH_ADMIN_FILE';
}

export interface BootstrapOptions {
  store: AuthStore;
  /** `<dataDir>/admin-client.json`. */
  file: string;
  tokenUrl: string;
  now?: () => number;
  log?: { info(obj: object, msg: string): void };
}

async function readAdminFile(file: string): Promise<AdminClientFile | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as { code?: string }).code === 'ENOENT') return undefined;
    throw new AdminBootstrapError(`cannot read ${file}`, { cause: err });
  }
  try {
    const parsed = JSON.parse(text) as AdminClientFile;
    if (typeof parsed.client_id !== 'string' || typeof parsed.client_secret !== 'string' || parsed.client_secret.length < 32) throw new Error('shape');
    return parsed;
  } catch (err) {
    throw new AdminBootstrapError(`${file} is not an administrator client file (delete it to create a new administrator)`, { cause: err });
  }
}

async function writeAdminFile(file: string, content: AdminClientFile): Promise<void> {
  const dir = dirname(file);
  const tmp = join(dir, `.${basename(file)}.${randomUUID()}.tmp`);
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const handle = await open(tmp, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, 0o600);
    try {
      await handle.writeFile(`${JSON.stringify(content, null, 2)}\n`, 'utf8');
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, file);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw new AdminBootstrapError(`cannot write ${file}`, { cause: err });
  }
}

/** Ensure the administrator client exists and its credentials file is current. Raises AdminBootstrapError. */
export async function bootstrapAdminClient(options: BootstrapOptions): Promise<{ clientId: string; file: string; created: boolean }> {
  const { store, file, tokenUrl } = options;
  const now = options.now ?? (() => Math.floor(Date.now() / 1000));
  const existing = await readAdminFile(file);
  if (existing) {
    const client = await store.getClient(existing.client_id);
    if (client?.admin && client.secretHash && secretMatches(existing.client_secret, client.secretHash)) {
      if (existing.token_url !== tokenUrl || existing.scope !== client.scope) await writeAdminFile(file, { ...existing, token_url: tokenUrl, scope: client.scope });
      options.log?.info({ file }, 'administrator client credentials are in this file');
      return { clientId: client.clientId, file, created: false };
    }
    if (!client) {
      // The auth database was reset: restore the administrator the file describes.
      await createAdmin(store, existing.client_id, existing.client_secret, now());
      await writeAdminFile(file, { ...existing, token_url: tokenUrl, scope: ADMIN_SCOPE });
      options.log?.info({ file }, 'administrator client restored from this file');
      return { clientId: existing.client_id, file, created: true };
    }
  }
  // No usable file: any earlier administrator's secret is lost, so it is replaced.
  for (const old of await store.adminClients()) await store.deleteClient(old.clientId);
  const clientId = `admin-${randomUUID()}`;
  const secret = newSecret();
  await createAdmin(store, clientId, secret, now());
  await writeAdminFile(file, { client_id: clientId, client_secret: secret, token_url: tokenUrl, scope: ADMIN_SCOPE });
  options.log?.info({ file }, 'administrator client created; its credentials are in this file (mode 0600)');
  return { clientId, file, created: true };
}

async function createAdmin(store: AuthStore, clientId: string, secret: string, now: number): Promise<void> {
  await store.createClient({
    clientId,
    clientName: 'Vellum administrator',
    authMethod: 'client_secret_basic',
    secretHash: hashSecret(secret),
    grantTypes: ['client_credentials'],
    redirectUris: [],
    scope: ADMIN_SCOPE,
    admin: true,
    createdAt: now,
  });
}
