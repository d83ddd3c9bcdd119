#!/usr/bin/env node
// The `vellum` command (package.json "bin"): loads tsx's ESM hooks in this process, then runs
// the TypeScript entry src/cli/vellum.ts. Needs Node 24 (package.json "engines"); within the
// repository, `npm run vellum -- …` and `npx vellum …` use the project's own Node 24.
const major = Number(process.versions.node.split('.')[0]);
if (major < 24) {
  process.stderr.write(`vellum: Node.js 24 or later is required (this is ${process.version}); try "npm run vellum -- …"\n`);
  process.exit(2);
}
let register;
try {
  ({ register } = await import('tsx/esm/api'));
} catch {
  process.stderr.write('vellum: the "tsx" package is missing (install with "npm ci", dev dependencies included)\n');
  process.exit(2);
}
register();
const { run } = await import('./vellum.ts');
await run();
