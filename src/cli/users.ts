/**
 * `vellum users add --username <name> --fhir-user <Patient/…|Practitioner/…|PractitionerRole/…>`
 * — create a login user of the embedded authorization server (the same rules as
 * `POST /auth/users`), reading the password from standard input so that it never appears in the
 * process list or the shell history. Works on the data dir of VELLUM_DATA_DIR, with the server
 * running or not.
 */
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from '../config.ts';
import { OAuthError, type AuthContext } from '../fhir/auth/oauth.ts';
import { createUser } from '../fhir/auth/registration.ts';
import { SqliteAuthStore } from '../storage/sqlite/sqlite-auth-store.ts';
import type { Io } from './verify.ts';

export const USERS_USAGE = `Usage: printf '%s' "$PASSWORD" | vellum users add --username <name> --fhir-user <Patient/id | Practitioner/id | PractitionerRole/id> [--json]

Create a login user for the SMART standalone launch (the password is read from standard input).
Exit status: 0 created, 1 refused (invalid or taken), 2 usage error.
`;

export async function runUsers(argv: string[], io: Io, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        username: { type: 'string' },
        'fhir-user': { type: 'string' },
        json: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (err) {
    io.stderr.write(`vellum users: ${(err as Error).message}\n\n${USERS_USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    io.stdout.write(USERS_USAGE);
    return 0;
  }
  if (positionals[0] !== 'add' || positionals.length !== 1 || !values.username || !values['fhir-user']) {
    io.stderr.write(`vellum users: give "add", --username and --fhir-user\n\n${USERS_USAGE}`);
    return 2;
  }
  let dataDir: string;
  try {
    dataDir = loadConfig(env).dataDir;
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    io.stderr.write(`vellum users: ${err.message}\n`);
    return 2;
  }
  const chunks: Buffer[] = [];
  for await (const chunk of io.stdin ?? []) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
  const password = Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
  const store = SqliteAuthStore.open(path.join(dataDir, 'auth.db'));
  try {
    const ctx = { store, now: () => Math.floor(Date.now() / 1000) } as unknown as AuthContext;
    const res = await createUser(ctx, { username: values.username, password, fhir_user: values['fhir-user'] }).catch((err: unknown) => {
      if (!(err instanceof OAuthError)) throw err;
      return { status: err.status, body: { error: err.error, error_description: err.description } };
    });
    io.stdout.write(values.json ? `${JSON.stringify(res.body)}\n` : res.status === 201 ? `created user ${values.username} (${values['fhir-user']})\n` : '');
    if (res.status !== 201) {
      io.stderr.write(`vellum users: refused: ${JSON.stringify(res.body)}\n`);
      return 1;
    }
    return 0;
  } finally {
    await store.close();
  }
}
