// The typings, checked by the TypeScript compiler from npm (a devDependency) as a user's
// project sees them: `module: nodenext` (an ES module and CommonJS files: the `import` and the
// `require` entry's typings), `module: commonjs` and `moduleResolution: bundler`, each with
// `import Tilemore from 'tilemore-sdk'`; the compiled programs are run, so the types and the
// runtime agree on what the default import is. Each fixture misuses the API under
// `@ts-expect-error`, so typings that accepted anything (`any`) would fail the compile too.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const pkg = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const fixtures = path.join(pkg, 'test', 'types');
const tsc = path.join(pkg, 'node_modules', 'typescript', 'bin', 'tsc');

function linkPackage(dir) { // node_modules/tilemore-sdk -> this package, as an install makes it
  const link = path.join(dir, 'node_modules', 'tilemore-sdk');
  if (existsSync(link)) return;
  mkdirSync(path.dirname(link), { recursive: true });
  symlinkSync(path.relative(path.dirname(link), pkg), link, 'dir');
}

// tsconfig.<name>.json -> the compiled programs to run (bundler: checked only, as a bundler's input)
const CASES = { nodenext: ['esm.mjs', 'cjs.cjs', 'require.cjs'], commonjs: ['commonjs.js'], bundler: [] };

for (const [config, programs] of Object.entries(CASES)) {
  test(`tsc passes with tsconfig.${config}.json, and the compiled code runs`, () => {
    assert.ok(existsSync(tsc), 'typescript is missing: run `npm install` in sdk/node');
    linkPackage(fixtures);
    const out = mkdtempSync(path.join(tmpdir(), `tilemore-tsc-${config}-`));
    try {
      try {
        execFileSync(process.execPath, [tsc, '-p', `tsconfig.${config}.json`, '--outDir', out],
          { cwd: fixtures, stdio: 'pipe' });
      } catch (e) {
        assert.fail(`tsc (${config}) failed:\n${e.stdout}${e.stderr}`);
      }
      linkPackage(out);
      for (const program of programs) {
        const printed = execFileSync(process.execPath, [path.join(out, program)]).toString();
        assert.equal(printed.trim(), 'function true function', program);
      }
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
}
