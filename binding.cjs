'use strict'
// Loads the native addon: an installed prebuilt package for this platform first, then a
// local build (`npm install` / `npm run build:native` writes it beside this file).
// Fails with a message that lists every file it looked for.
const { existsSync } = require('node:fs')
const { join } = require('node:path')

function isMusl() {
  if (process.platform !== 'linux') return false
  try {
    const report = process.report && process.report.getReport()
    const header = report && (typeof report === 'string' ? JSON.parse(report) : report).header
    return !(header && header.glibcVersionRuntime)
  } catch {
    return false
  }
}

function platformTag() {
  const { platform, arch } = process
  if (platform === 'linux') return `linux-${arch}-${isMusl() ? 'musl' : 'gnu'}`
  if (platform === 'win32') return `win32-${arch}-msvc`
  return `${platform}-${arch}`
}

function load() {
  const tag = platformTag()
  const tried = []
  const pkg = `velithon-gateway-${tag}`
  try {
    return require(pkg)
  } catch (err) {
    tried.push(`${pkg} (prebuilt package): ${err && err.code === 'MODULE_NOT_FOUND' ? 'not installed' : err.message}`)
  }
  const local = join(__dirname, `velithon-gateway.${tag}.node`)
  if (existsSync(local)) {
    try {
      return require(local)
    } catch (err) {
      tried.push(`${local}: ${err.message}`)
    }
  } else {
    tried.push(`${local}: no such file`)
  }
  const error = new Error(
    `velithon-gateway: no native addon for ${tag}. Looked for:\n  - ${tried.join('\n  - ')}\n` +
      'Build it from source with `npm run build:native` (needs Rust and cargo).',
  )
  error.code = 'VG_NATIVE_MISSING'
  throw error
}

module.exports = load()
module.exports.platformTag = platformTag
