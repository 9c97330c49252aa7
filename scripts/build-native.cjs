#!/usr/bin/env node
'use strict'
// Builds the native addon from source with cargo and puts it where binding.cjs looks:
// `velithon-gateway.<platform>.node` at the package root.
//   node scripts/build-native.cjs              release build
//   node scripts/build-native.cjs --debug      debug build (faster to compile)
//   node scripts/build-native.cjs --if-missing skip when a prebuilt or local addon exists
const { spawnSync } = require('node:child_process')
const { copyFileSync, existsSync, renameSync } = require('node:fs')
const { join } = require('node:path')

const root = join(__dirname, '..')
const args = new Set(process.argv.slice(2))
const debug = args.has('--debug')

function platformTag() {
  // Same rule as binding.cjs, without loading the addon.
  const { platform, arch } = process
  if (platform === 'linux') {
    const header = process.report.getReport().header
    return `linux-${arch}-${header.glibcVersionRuntime ? 'gnu' : 'musl'}`
  }
  if (platform === 'win32') return `win32-${arch}-msvc`
  return `${platform}-${arch}`
}

const tag = platformTag()
const dest = join(root, `velithon-gateway.${tag}.node`)

if (args.has('--if-missing')) {
  try {
    require.resolve(`velithon-gateway-${tag}`, { paths: [root] })
    console.log(`velithon-gateway: using the prebuilt package velithon-gateway-${tag}`)
    process.exit(0)
  } catch {}
  if (existsSync(dest) && !process.env.VELITHON_FORCE_BUILD) {
    console.log(`velithon-gateway: ${dest} exists; run \`npm run build:native\` to rebuild`)
    process.exit(0)
  }
  if (!existsSync(join(root, 'Cargo.toml'))) {
    console.error(`velithon-gateway: no prebuilt addon for ${tag} and no Rust sources to build one`)
    process.exit(1)
  }
}

const cargo = process.env.CARGO || 'cargo'
const probe = spawnSync(cargo, ['--version'], { stdio: 'ignore' })
if (probe.error || probe.status !== 0) {
  console.error(
    `velithon-gateway: no prebuilt addon for ${tag}, and \`${cargo}\` was not found to build one.\n` +
      'Install Rust (https://rustup.rs) and run `npm rebuild velithon-gateway`.',
  )
  process.exit(1)
}

const cargoArgs = ['build', '--lib', '-p', 'velithon-gateway-node']
if (!debug) cargoArgs.push('--release')
console.log(`velithon-gateway: building the native addon (${debug ? 'debug' : 'release'})…`)
const built = spawnSync(cargo, cargoArgs, { cwd: root, stdio: 'inherit' })
if (built.status !== 0) {
  console.error('velithon-gateway: cargo build failed')
  process.exit(built.status || 1)
}

const targetDir = process.env.CARGO_TARGET_DIR || join(root, 'target')
const profile = debug ? 'debug' : 'release'
const file =
  process.platform === 'win32'
    ? 'velithon_gateway.dll'
    : process.platform === 'darwin'
      ? 'libvelithon_gateway.dylib'
      : 'libvelithon_gateway.so'
const src = join(targetDir, profile, file)
// Copy, then rename over: a process that has the old addon loaded keeps its inode.
copyFileSync(src, `${dest}.tmp`)
renameSync(`${dest}.tmp`, dest)
console.log(`velithon-gateway: wrote ${dest}`)
