/**
 * Option validation, once, at construction: every error names the option and the bad
 * value. The native side trusts what passes here.
 */
import { ConfigError } from './errors'

/** Milliseconds, or a string with a unit: `'250ms'`, `'30s'`, `'5m'`, `'1h'`. */
export type Duration = number | `${number}ms` | `${number}s` | `${number}m` | `${number}h`

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }
const DURATION = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)$/

export function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value)
  if (typeof value === 'function') return 'a function'
  try {
    const json = JSON.stringify(value)
    return json === undefined ? String(value) : json
  } catch {
    return String(value)
  }
}

/** Parses a duration option into milliseconds. */
export function duration(owner: string, name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback
  let ms: number | undefined
  if (typeof value === 'number' && Number.isFinite(value) && value >= 0) ms = value
  else if (typeof value === 'string') {
    const m = DURATION.exec(value.trim())
    if (m) ms = Number(m[1]) * UNITS[m[2]]
  }
  if (ms === undefined || ms > 2_147_483_647) {
    throw new ConfigError(
      name,
      `${owner}: option "${name}" must be a duration (milliseconds, or a string like '250ms', '30s', '5m'), got ${show(value)}`,
    )
  }
  return ms
}

export function positiveInt(owner: string, name: string, value: unknown, fallback: number): number
export function positiveInt(owner: string, name: string, value: unknown, fallback?: undefined): number | undefined
export function positiveInt(owner: string, name: string, value: unknown, fallback?: number): number | undefined {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > 0xffff_ffff) {
    throw new ConfigError(name, `${owner}: option "${name}" must be a positive whole number, got ${show(value)}`)
  }
  return value
}

export function boolean(owner: string, name: string, value: unknown, fallback: boolean): boolean {
  if (value === undefined) return fallback
  if (typeof value !== 'boolean') {
    throw new ConfigError(name, `${owner}: option "${name}" must be true or false, got ${show(value)}`)
  }
  return value
}

export function object(owner: string, value: unknown): Record<string, unknown> {
  if (value === undefined) return {}
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new ConfigError('options', `${owner}: options must be an object, got ${show(value)}`)
  }
  return value as Record<string, unknown>
}

/** Rejects option names the owner does not know (catches typos like `stripPaths`). */
export function knownKeys(owner: string, options: Record<string, unknown>, known: readonly string[]): void {
  for (const key of Object.keys(options)) {
    if (!known.includes(key)) {
      throw new ConfigError(key, `${owner}: unknown option "${key}" (known options: ${known.join(', ')})`)
    }
  }
}

/** An upstream URL: http(s), a host, no credentials, no query. Returns it unchanged. */
export function upstreamUrl(owner: string, name: string, value: unknown): string {
  const fail = (why: string): never => {
    throw new ConfigError(name, `${owner}: option "${name}" ${why}, got ${show(value)}`)
  }
  if (typeof value !== 'string' || value.length === 0) return fail('must be a URL string')
  let url: URL
  try {
    url = new URL(value)
  } catch {
    return fail('must be an absolute URL like "http://127.0.0.1:9001"')
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') fail('must start with http:// or https://')
  if (!url.hostname) fail('must name a host')
  if (url.username || url.password) fail('must not carry credentials (send an Authorization header instead)')
  if (url.search || url.hash) fail('must not have a query string or fragment')
  return value
}

const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'TRACE', 'CONNECT']

export function methods(owner: string, name: string, value: unknown): string[] | undefined {
  if (value === undefined) return undefined
  if (!Array.isArray(value) || value.length === 0) {
    throw new ConfigError(name, `${owner}: option "${name}" must be a non-empty array of HTTP methods, got ${show(value)}`)
  }
  return value.map((m) => {
    const upper = typeof m === 'string' ? m.toUpperCase() : ''
    if (!METHODS.includes(upper)) {
      throw new ConfigError(name, `${owner}: option "${name}" has ${show(m)}, which is not an HTTP method`)
    }
    return upper
  })
}

const PARAM = /^\{([A-Za-z_][A-Za-z0-9_]*)(?::(str|int|float|uuid|path))?\}$/

/** A route pattern: `/users/{id:int}`, `/api/{path:path}` (a path parameter comes last). */
export function routePattern(owner: string, name: string, value: unknown): string {
  const fail = (why: string): never => {
    throw new ConfigError(name, `${owner}: ${name} ${show(value)} ${why}`)
  }
  if (typeof value !== 'string' || !value.startsWith('/')) return fail("must be a string starting with '/'")
  const segments = value.slice(1).split('/')
  const seen = new Set<string>()
  segments.forEach((seg, i) => {
    if (!seg.includes('{') && !seg.includes('}')) return
    const m = PARAM.exec(seg)
    if (!m) fail(`has a bad parameter segment ${show(seg)} (use {name}, {name:int}, {name:float}, {name:uuid} or {name:path})`)
    const [, param, kind] = m as RegExpExecArray
    if (seen.has(param)) fail(`names the parameter ${show(param)} twice`)
    seen.add(param)
    if (kind === 'path' && i !== segments.length - 1) fail('has a {…:path} parameter that is not the last segment')
  })
  return value
}

/** A duration that must be more than zero (intervals, timeouts that can't be "none"). */
export function positiveDuration(owner: string, name: string, value: unknown, fallback: number): number {
  const ms = duration(owner, name, value, fallback)
  if (ms <= 0) {
    throw new ConfigError(name, `${owner}: option "${name}" must be a duration above zero, got ${show(value)}`)
  }
  return ms
}

/** A list of HTTP status codes (100–599). */
export function statusCodes(owner: string, name: string, value: unknown, fallback: number[]): number[] {
  if (value === undefined) return fallback
  const ok =
    Array.isArray(value) && value.every((v) => typeof v === 'number' && Number.isInteger(v) && v >= 100 && v <= 599)
  if (!ok) {
    throw new ConfigError(name, `${owner}: option "${name}" must be an array of HTTP status codes (100–599), got ${show(value)}`)
  }
  return [...new Set(value as number[])]
}

/** A number in [min, max]. */
export function numberIn(owner: string, name: string, value: unknown, min: number, max: number, fallback: number): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max) {
    throw new ConfigError(name, `${owner}: option "${name}" must be a number from ${min} to ${max}, got ${show(value)}`)
  }
  return value
}

/** An optional function. */
export function optionalFunction<F>(owner: string, name: string, value: unknown): F | undefined {
  if (value === undefined) return undefined
  if (typeof value !== 'function') {
    throw new ConfigError(name, `${owner}: option "${name}" must be a function, got ${show(value)}`)
  }
  return value as F
}
