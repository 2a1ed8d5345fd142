// Typings of tilemore-sdk for `import` (ES modules). The declarations live once, in index.d.ts
// (the `require` entry's), and are re-exported here. `export *` never carries a default export
// (and an ES module's default import of a CommonJS file would be its whole `module.exports`),
// so the default is named: `import Tilemore from 'tilemore-sdk'` is the class, as in index.mjs.
export * from './index.js';
export { Tilemore as default } from './index.js';
