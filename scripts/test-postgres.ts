/**
 * `npm run test:postgres` (the second half of `npm test`; not under test/, where tap would run it as a test): the storage, interaction, search,
 * consent, auth, audit, bulk and subscription tests again, with every in-process test server on
 * PostgreSQL (`VELLUM_TEST_DATABASE=postgres`, test/helpers/server.ts) — one throwaway cluster for the
 * whole run (or VELLUM_TEST_DATABASE_URL), a fresh database per server. Extra arguments are passed
 * to tap (e.g. a subset of files).
 */
import { spawnSync } from 'node:child_process';
import { startCluster } from '../test/helpers/postgres.ts';

/** The suites that run on either engine (the PostgreSQL-only tests are in the first run already). */
export const POSTGRES_SUITE = [
  'test/storage/repository.test.ts',
  'test/fhir/interactions/*.test.ts',
  'test/fhir/search/*.test.ts',
  'test/fhir/consent/*.test.ts',
  'test/fhir/auth/*.test.ts',
  'test/fhir/audit*.test.ts',
  'test/fhir/bulk/*.test.ts',
  'test/fhir/subscriptions/*.test.ts',
  'test/fhir/bundles/*.test.ts',
  'test/fhir/operations/*.test.ts',
  // Search on real data (Blaze's Synthea set, 92,114 resources) and the black-box conformance checks.
  'test/corpora/blaze-search.int.test.ts',
  'test/conformance.int.test.ts',
];

const url = process.env.VELLUM_TEST_DATABASE_URL ?? (await startCluster());
const args = process.argv.slice(2);
const result = spawnSync('npx', ['tap', ...(args.length ? args : POSTGRES_SUITE)], {
  stdio: 'inherit',
  env: { ...process.env, VELLUM_TEST_DATABASE: 'postgres', VELLUM_TEST_DATABASE_URL: url },
});
process.exitCode = result.status ?? 1;
