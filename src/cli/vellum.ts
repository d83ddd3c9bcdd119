/**
 * `vellum` — Vellum's command line (the package's `bin`, through `src/cli/bin.mjs`; also
 * `npm run vellum -- <command> …`). Commands:
 *
 * - `vellum verify <proof.json> --rpc <url> [--json] [--ipfs <kubo url>]` — the offline
 *   verifier (src/cli/verify.ts): checks an exported proof document against the chain
 *   without the server. Exit 0 verified, 1 not verified, 2 usage or I/O error.
 * - `vellum rebuild [--blocks-from <path>]... [--json]` — rebuild the index from the chain, IPFS
 *   and the master key (src/cli/rebuild.ts). Exit 0 rebuilt, 1 the log did not verify, 2 usage.
 * - `vellum reindex [--type <T>]... [--chunk <n>] [--json]` — re-extract every current resource's
 *   search rows after a SearchParameter change (src/cli/reindex.ts). Exit 0 done, 1 a version
 *   could not be read, 2 usage.
 *
 * - `vellum export|import|sync …` — Bulk Data exchange (src/cli/bulk.ts).
 * - `vellum migrate [--database postgres://…] [--json]` — apply the PostgreSQL schema migrations
 *   (src/cli/migrate.ts). Exit 0 done, 1 the database refused, 2 usage.
 *
 * Every command returns its exit code; nothing here calls `process.exit`, so commands can be
 * run in-process by tests.
 */
import { fileURLToPath } from 'node:url';
import { runVerify, type Io } from './verify.ts';

export const USAGE = `Usage: vellum <command> [options]

Commands:
  verify <proof.json> --rpc <url> [--json] [--ipfs <kubo url>]
      Check an exported proof document ($verify?export=true) against the chain, without the server.
  users add --username <name> --fhir-user <Patient/id | Practitioner/id> [--json]
      Create a login user for the SMART standalone launch (password on standard input).
  rebuild [--blocks-from <vellum.db | data dir>]... [--json]
      Rebuild the index of VELLUM_DATA_DIR from the chain, IPFS and the master key (server stopped).
  reindex [--type <Type>]... [--chunk <n>] [--json]
      Re-extract the search rows of every current resource of VELLUM_DATA_DIR (server stopped).
  verify --export <dir> --rpc <url> [--json] [--allow-pending]
      Check every line of a downloaded Bulk Data export against its proofs files and the chain.
  export --from <fhir base> --out <dir> [--client-id <id> --key <jwk> --token-url <url>]
      Run a Bulk Data export on any server and download it (files, proofs, manifest.json).
  import <dir> [--to <fhir base>] [--credentials <file>] [--chunk <n>] [--rpc <url>] [--json]
      Load ndjson files into a running Vellum through its write path (resumable, idempotent).
  sync --from <fhir base> [source credentials] [--to <fhir base>] [--once | --every <s>]
      Keep a Vellum in step with a Bulk Data server (export _since, verify, import, delete).
  migrate [--database postgres://…] [--json]
      Apply the PostgreSQL schema migrations not yet applied (URL default: VELLUM_DATABASE_URL).

Run "vellum <command> --help" for a command's options.
`;

/** Runs `vellum <argv…>` and returns the exit code. */
export async function main(argv: string[], io: Io): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'verify':
        return await runVerify(rest, io);
      case 'users':
        return await (await import('./users.ts')).runUsers(rest, io);
      case 'rebuild':
        // Loaded on demand: `verify` must stay light (no server, no Hardhat).
        return await (await import('./rebuild.ts')).runRebuild(rest, io);
      case 'reindex':
        return await (await import('./reindex.ts')).runReindex(rest, io);
      case 'migrate':
        return await (await import('./migrate.ts')).runMigrate(rest, io);
      case 'export':
      case 'import':
      case 'sync':
        return await (await import('./bulk.ts')).runBulk(command, rest, io);
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        (command === undefined ? io.stderr : io.stdout).write(USAGE);
        return command === undefined ? 2 : 0;
      default:
        io.stderr.write(`vellum: unknown command "${command}"\n\n${USAGE}`);
        return 2;
    }
  } catch (err) {
    // A bug or an environment failure nobody classified: still "could not decide", never "verified".
    io.stderr.write(`vellum: ${(err as Error)?.stack ?? String(err)}\n`);
    return 2;
  }
}

/** Runs the CLI in this process and exits with its code once the output is written. */
export async function run(): Promise<void> {
  const code = await main(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, stdin: process.stdin });
  // Exit explicitly: idle keep-alive sockets must not hold the verdict back.
  process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));
}

// `node --import tsx src/cli/vellum.ts …` runs it too.
if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) await run();
