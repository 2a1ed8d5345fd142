// The typings, checked by the TypeScript compiler from npm (a devDependency) as a user's
// project sees them: `module: nodenext` (an ES module and CommonJS files: the `import` and the
// `require` entry's typings), `module: commonjs` and `moduleResolution: bundler`, each with
// `import Tilemore from 'tilemore-sdk'`; the compiled programs are run, so the types and the
// runtime agree on what the default import is. Each fixture misuses the API under
// `@ts-expect-error`, so typings that accepted anything (`any`) would fail the compile too.
// The default-import program is one file, types/default-import.ts, copied under each name a
// tsconfig compiles it as (the extension is what makes it an ES module or CommonJS).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const pkg = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const fixtures = path.join(pkg, 'test', 'types');
const tsc = path.join(pkg, 'node_modules', 'typescript', 'bin', 'tsc');

const PROGRAM = 'default-import.ts';
const COPIES = ['esm.mts', 'cjs.cts', 'commonjs.ts'];

// A user's project in a temporary folder: the fixtures, the program under each of its names,
// and node_modules/ as an install leaves it (tilemore-sdk -> this package, and @types).
function project(config) {
  const dir = mkdtempSync(path.join(tmpdir(), `tilemore-tsc-${config}-`));
  for (const name of readdirSync(fixtures)) {
    if (name !== 'node_modules' && name !== PROGRAM) copyFileSync(path.join(fixtures, name), path.join(dir, name));
  }
  for (const name of COPIES) copyFileSync(path.join(fixtures, PROGRAM), path.join(dir, name));
  mkdirSync(path.join(dir, 'node_modules'));
  symlinkSync(pkg, path.join(dir, 'node_modules', 'tilemore-sdk'), 'dir');
  symlinkSync(path.join(pkg, 'node_modules', '@types'), path.join(dir, 'node_modules', '@types'), 'dir');
  return dir;
}

// tsconfig.<name>.json -> the compiled programs to run (bundler: checked only, as a bundler's input)
const CASES = { nodenext: ['esm.mjs', 'cjs.cjs', 'require.cjs'], commonjs: ['commonjs.js'], bundler: [] };

for (const [config, programs] of Object.entries(CASES)) {
  test(`tsc passes with tsconfig.${config}.json, and the compiled code runs`, () => {
    assert.ok(existsSync(tsc), 'typescript is missing: run `npm install` in sdk/node');
    const dir = project(config);
    const out = path.join(dir, 'out'); // below dir: its node_modules serve the programs too
    try {
      try {
        execFileSync(process.execPath, [tsc, '-p', `tsconfig.${config}.json`, '--outDir', out],
          { cwd: dir, stdio: 'pipe' });
      } catch (e) {
        assert.fail(`tsc (${config}) failed:\n${e.stdout}${e.stderr}`);
      }
      for (const program of programs) {
        const printed = execFileSync(process.execPath, [path.join(out, program)]).toString();
        assert.equal(printed.trim(), 'function true function', program);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
