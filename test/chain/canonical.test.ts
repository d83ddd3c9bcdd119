/**
 * `canonicalJson`'s fast path for plain JSON must give exactly what the RFC 8785 library gives —
 * on every official R4 example (the content every leaf commits to) and on the edge cases where
 * plain JSON ends and the library takes over — or refuse the same way.
 */
import fs from 'node:fs';
import path from 'node:path';
import canonicalize from 'canonicalize';
import t from 'tap';
import { canonicalJson } from '../../src/chain/leaf.ts';
import { CORPORA } from '../helpers/corpora.ts';

function* exampleFiles(dir: string): Generator<string> {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) yield* exampleFiles(full);
    else if (entry.name.endsWith('.json')) yield full;
  }
}

t.test('every official R4 example canonicalises as the library does', async (t) => {
  let count = 0;
  const differing: string[] = [];
  for (const file of exampleFiles(path.join(CORPORA, 'r4-examples'))) {
    const value = JSON.parse(fs.readFileSync(file, 'utf8')) as unknown;
    if (canonicalJson(value) !== canonicalize(value)) differing.push(path.basename(file));
    count++;
  }
  t.ok(count > 500, `${count} examples compared`);
  t.same(differing, [], 'no example differs');
});

t.test('edge cases agree with the library', async (t) => {
  const deep: unknown[] = [];
  let cursor = deep;
  for (let i = 0; i < 200; i++) {
    const next: unknown[] = [];
    cursor.push(next, i);
    cursor = next;
  }
  const cases: Record<string, unknown> = {
    numbers: { a: 1e21, b: 1e-7, c: -0, d: 0.1 + 0.2, e: 123456789012345680000, f: -1.5e-300, g: 5e-324 },
    'key order by UTF-16 code units': { '\u20ac': 1, '\ud83d\ude00': 2, a: 3, A: 4, '': 5, '10': 6, '9': 7 },
    'strings needing escapes': { s: 'line\nquote"back\\slash\u0000\u001f\u007f\u2028', 'k"\n': 'v' },
    'nested arrays and objects': [[], {}, [null, true, false], { x: [{ y: [] }] }],
    'null prototype object': Object.assign(Object.create(null) as object, { b: 1, a: 2 }),
    'a Date (toJSON)': { when: new Date(Date.UTC(2026, 11, 3)) },
    'boxed primitives': { n: Object(5) as unknown, s: Object('x') as unknown, b: Object(false) as unknown },
    'undefined members and array items': { a: undefined, b: [undefined, 1] },
    'deep nesting past the fast path': deep,
    'non-ASCII text': { name: 'Zoë Ærøskøbing 患者 🩺' },
  };
  for (const [name, value] of Object.entries(cases)) t.equal(canonicalJson(value), canonicalize(value), name);
});

t.test('what the library refuses is refused with VLM_CHAIN_LEAF_BAD_CONTENT', async (t) => {
  const cyclic: Record<string, unknown> = { a: 1 };
  cyclic.self = { back: cyclic };
  const bad: Record<string, unknown> = {
    'lone surrogate in a value': { s: '\ud800' },
    'lone surrogate in a key': { '\udc00': 1 },
    NaN: [Number.NaN],
    Infinity: { x: Number.POSITIVE_INFINITY },
    cycle: cyclic,
  };
  for (const [name, value] of Object.entries(bad)) {
    t.throws(() => canonicalize(value), name);
    try {
      canonicalJson(value);
      t.fail(`${name}: accepted`);
    } catch (err) {
      t.equal((err as { code?: string }).code, 'VLM_CHAIN_LEAF_BAD_CONTENT', name);
    }
  }
});
