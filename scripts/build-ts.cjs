#!/usr/bin/env node
'use strict'
// Compiles ts/ to CommonJS (dist/cjs) with declarations, then writes the ESM entry
// (dist/esm) as a re-export of the same module, so ESM and CommonJS users share one
// instance (one set of error classes: `instanceof` works across both).
const { spawnSync } = require('node:child_process')
const { mkdirSync, writeFileSync, rmSync, existsSync } = require('node:fs')
const { join } = require('node:path')

const root = join(__dirname, '..')
const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc')
if (!existsSync(tsc)) {
  // Installed as a dependency without dev tools: the published package ships dist/.
  console.log('velithon-gateway: typescript not installed; skipping the TypeScript build')
  process.exit(0)
}
rmSync(join(root, 'dist'), { recursive: true, force: true })
const r = spawnSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.json')], { stdio: 'inherit' })
if (r.status !== 0) process.exit(r.status || 1)

writeFileSync(join(root, 'dist', 'cjs', 'package.json'), '{ "type": "commonjs" }\n')

// The ESM entry: named exports read from the CommonJS build itself, so no name can drift.
const names = Object.keys(require(join(root, 'dist', 'cjs', 'index.js'))).filter((n) => n !== 'default' && n !== '__esModule')
mkdirSync(join(root, 'dist', 'esm'), { recursive: true })
writeFileSync(
  join(root, 'dist', 'esm', 'index.js'),
  `import cjs from '../cjs/index.js'\nexport const { ${names.join(', ')} } = cjs\nexport default cjs\n`,
)
writeFileSync(join(root, 'dist', 'esm', 'index.d.ts'), "export * from '../cjs/index.js'\n")
console.log(`velithon-gateway: built dist/ (${names.length} exports)`)
