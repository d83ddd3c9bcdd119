/**
 * The search-case fixture (test/fixtures/search-cases.json): official R4 examples to load, and
 * queries with the ids they must find. Read by the SQLite and PostgreSQL index tests alike.
 */
import fs from 'node:fs';
import path from 'node:path';

export const R4_EXAMPLES = path.resolve(import.meta.dirname, '../../../shared/corpora/r4-examples');

export interface SearchCase {
  name: string;
  type: string | null;
  query: string;
  expect: string[];
  ordered?: boolean;
  total?: number;
}

export interface SearchCases {
  baseUrl: string;
  now: string;
  defaultLastUpdated: string;
  resources: { file: string; lastUpdated?: string; deleted?: boolean }[];
  cases: SearchCase[];
}

export function loadSearchCases(): SearchCases {
  return JSON.parse(fs.readFileSync(path.resolve(import.meta.dirname, '../fixtures/search-cases.json'), 'utf8')) as SearchCases;
}
