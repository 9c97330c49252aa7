/**
 * The package as users load it: ESM `import` and CommonJS `require('velithon-gateway')`
 * both work, expose the same classes, and share one module instance (so `instanceof`
 * holds across them).
 */
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, test } from 'vitest'
import * as esm from 'velithon-gateway'
import { ConfigError, Gateway } from 'velithon-gateway'

const ROOT = fileURLToPath(new URL('..', import.meta.url))

const PUBLIC_CLASSES = [
  'Velithon',
  'Gateway',
  'GatewayRouter',
  'LoadBalancer',
  'LoadBalancingStrategy',
  'RoundRobinStrategy',
  'VelithonError',
  'ConfigError',
  'ListenError',
  'UpstreamError',
  'CircuitBreakerOpenError',
]

/** Runs a Node script with the repo root as cwd (so 'velithon-gateway' resolves to this package). */
function node(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, args, { cwd: ROOT, encoding: 'utf8', timeout: 20_000 })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

function exportedNames(mod: object): string[] {
  return Object.keys(mod)
    .filter((n) => n !== 'default' && n !== '__esModule')
    .sort()
}

describe('package.json', () => {
  test('every file main/module/types/exports point to exists', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as Record<string, unknown>
    const paths = new Set<string>()
    const collect = (value: unknown): void => {
      if (typeof value === 'string') {
        if (value.startsWith('./') && !value.endsWith('package.json')) paths.add(value)
      } else if (value && typeof value === 'object') {
        for (const v of Object.values(value)) collect(v)
      }
    }
    collect(pkg.main)
    collect(pkg.module)
    collect(pkg.types)
    collect(pkg.exports)
    expect(paths.size).toBeGreaterThan(0)
    const missing = [...paths].filter((p) => !existsSync(join(ROOT, p)))
    expect(missing, `package.json points to files that do not exist: ${missing.join(', ')}`).toEqual([])
  })
})

describe('ESM', () => {
  test('the test imports dist natively: instanceof ConfigError works', () => {
    expect(() => new Gateway({ timeout: 'abc' as never })).toThrow(ConfigError)
    let caught: unknown
    try {
      new Gateway({ timeout: 'abc' as never })
    } catch (err) {
      caught = err
    }
    expect(caught instanceof ConfigError).toBe(true)
  })

  test('exposes every public class', () => {
    for (const name of PUBLIC_CLASSES) {
      expect(typeof (esm as Record<string, unknown>)[name], name).toBe('function')
    }
    expect(esm.ErrorCodes.INVALID_OPTION).toBe('VG_INVALID_OPTION')
  })

  test("a plain Node ESM script can import 'velithon-gateway'", () => {
    const r = node([
      '--input-type=module',
      '-e',
      `import * as g from 'velithon-gateway'
       let ok = false
       try { new g.Gateway({ timeout: 'abc' }) } catch (e) { ok = e instanceof g.ConfigError }
       console.log(JSON.stringify({ names: Object.keys(g).filter((n) => n !== 'default').sort(), ok }))`,
    ])
    expect(r.stderr).toBe('')
    expect(r.status).toBe(0)
    const out = JSON.parse(r.stdout) as { names: string[]; ok: boolean }
    expect(out.names).toEqual(exportedNames(esm))
    expect(out.ok).toBe(true)
  })
})

describe('CommonJS', () => {
  test("require('velithon-gateway') works from a CommonJS script and exposes the same classes", () => {
    const r = node([
      '-e',
      `const g = require('velithon-gateway')
       let ok = false
       try { new g.Gateway({ timeout: 'abc' }) } catch (e) { ok = e instanceof g.ConfigError && e.code === 'VG_INVALID_OPTION' }
       import('velithon-gateway').then((m) => {
         console.log(JSON.stringify({
           names: Object.keys(g).filter((n) => n !== 'default' && n !== '__esModule').sort(),
           ok,
           sameAsEsm: m.ConfigError === g.ConfigError && m.Velithon === g.Velithon,
         }))
       })`,
    ])
    expect(r.stderr).toBe('')
    expect(r.status).toBe(0)
    const out = JSON.parse(r.stdout) as { names: string[]; ok: boolean; sameAsEsm: boolean }
    expect(out.names).toEqual(exportedNames(esm))
    for (const name of PUBLIC_CLASSES) expect(out.names).toContain(name)
    expect(out.ok).toBe(true)
    expect(out.sameAsEsm).toBe(true)
  })

  test('require via createRequire on the package root returns the very classes the ESM import has', () => {
    const require = createRequire(join(ROOT, 'package.json'))
    const cjs = require('velithon-gateway') as typeof esm
    expect(exportedNames(cjs)).toEqual(exportedNames(esm))
    for (const name of PUBLIC_CLASSES) {
      expect((cjs as Record<string, unknown>)[name], name).toBe((esm as Record<string, unknown>)[name])
    }
    // So an error thrown through one is an instance of the other's class.
    expect(() => new cjs.Gateway({ timeout: 'abc' as never })).toThrow(ConfigError)
  })
})
