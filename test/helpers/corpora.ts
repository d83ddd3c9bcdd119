/**
 * Where the team's shared test corpora live: `../shared/corpora` beside the repository
 * (as in CI), or VELLUM_CORPORA.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export const CORPORA = process.env['VELLUM_CORPORA'] ?? path.resolve(repoRoot, '../shared/corpora');
