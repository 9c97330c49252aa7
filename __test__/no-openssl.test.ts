/**
 * No OpenSSL anywhere: TLS is rustls on ring. The built addon links no libssl/libcrypto
 * (checked with `ldd` on Linux, `otool -L` on macOS), and Cargo.lock holds none of the
 * crates that would bring OpenSSL or aws-lc in.
 */
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const require = createRequire(import.meta.url)

/** The .node file `binding.cjs` loads: the prebuilt package's, else the local build. */
function addonPath(): string {
  const { platformTag } = require(join(ROOT, 'binding.cjs')) as { platformTag: () => string }
  const tag = platformTag()
  try {
    return require.resolve(`velithon-gateway-${tag}`, { paths: [ROOT] })
  } catch {
    return join(ROOT, `velithon-gateway.${tag}.node`)
  }
}

const tool =
  process.platform === 'linux' ? { cmd: 'ldd', args: [] as string[] } : process.platform === 'darwin' ? { cmd: 'otool', args: ['-L'] } : undefined
const haveTool = tool !== undefined && spawnSync(tool.cmd, ['--version']).error === undefined

describe('no OpenSSL', () => {
  it.skipIf(!haveTool)('the addon links no libssl or libcrypto', () => {
    const file = addonPath()
    expect(existsSync(file)).toBe(true)
    const r = spawnSync(tool!.cmd, [...tool!.args, file], { encoding: 'utf8' })
    expect(r.status).toBe(0)
    const deps = r.stdout
    expect(deps.length).toBeGreaterThan(0)
    expect(deps).not.toMatch(/libssl|libcrypto/i)
  })

  it('Cargo.lock has no openssl-sys, native-tls or aws-lc-sys', () => {
    const lock = readFileSync(join(ROOT, 'Cargo.lock'), 'utf8')
    const names = [...lock.matchAll(/^name = "([^"]+)"$/gm)].map((m) => m[1])
    expect(names).toContain('rustls')
    expect(names).toContain('ring')
    for (const banned of ['openssl', 'openssl-sys', 'native-tls', 'aws-lc-sys', 'aws-lc-rs']) {
      expect(names).not.toContain(banned)
    }
  })
})
