import { ConfigError } from '../errors'
import { duration, knownKeys, object, show, type Duration } from '../options'

/** What a key function sees. */
export interface RateLimitRequest {
  method: string
  path: string
  /** Lower-case names; repeated headers joined with ', '. */
  headers: Record<string, string>
  client: string
}

export interface RateLimitMiddlewareOptions {
  requestsPerMinute?: number
  requestsPerHour?: number
  /** Requests allowed at once beyond the steady rate. Default 0 (smooth). */
  burst?: number
  /** What a limit counts per: `'ip'` (default), `{ header: 'x-api-key' }`. */
  key?: 'ip' | { header: string }
  /** Your own key (runs in JS per request); `undefined`/'' falls back to the client IP. */
  keyFunction?: (request: RateLimitRequest) => string | undefined | Promise<string | undefined>
  /** `'memory'` (one process, default) or `{ redis: 'redis://host:port' }` (shared by every replica). */
  store?: 'memory' | { redis: string }
  /** When Redis cannot answer: `'open'` (default) lets requests through, `'closed'` refuses them with 429. */
  onStoreError?: 'open' | 'closed'
  /** How long a Redis decision may take before `onStoreError` applies. Default `'250ms'`. */
  storeTimeout?: Duration
  /** How long `keyFunction` may take (then the client IP is the key). Default `'1s'`. */
  keyTimeout?: Duration
}

const OWNER = 'RateLimitMiddleware'
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/

/**
 * Rate limits in Rust (GCRA, as redis-cell): `requestsPerMinute` and/or `requestsPerHour`
 * per key, with `burst`. Over the limit: `429` with `Retry-After`; every answer carries
 * `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`. With `store: { redis }`
 * every gateway replica shares the limit: one Lua script per decision, atomic, timed by
 * Redis's clock.
 */
export class RateLimitMiddleware {
  /** @internal */
  readonly native: {
    requestsPerMinute?: number
    requestsPerHour?: number
    burst: number
    key: string
    redisUrl?: string
    failOpen: boolean
    redisTimeoutMs: number
    keyTimeoutMs: number
  }
  readonly keyFunction: RateLimitMiddlewareOptions['keyFunction']

  constructor(options: RateLimitMiddlewareOptions) {
    const opts = object(OWNER, options)
    knownKeys(OWNER, opts, ['requestsPerMinute', 'requestsPerHour', 'burst', 'key', 'keyFunction', 'store', 'onStoreError', 'storeTimeout', 'keyTimeout'])
    const rate = (name: 'requestsPerMinute' | 'requestsPerHour') => {
      const v = opts[name]
      if (v === undefined) return undefined
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 100_000_000) {
        throw new ConfigError(name, `${OWNER}: option "${name}" must be a whole number above zero, got ${show(v)}`)
      }
      return v
    }
    const perMinute = rate('requestsPerMinute')
    const perHour = rate('requestsPerHour')
    if (perMinute === undefined && perHour === undefined) {
      throw new ConfigError('requestsPerMinute', `${OWNER}: give "requestsPerMinute" and/or "requestsPerHour"`)
    }
    const burst = opts.burst ?? 0
    if (typeof burst !== 'number' || !Number.isInteger(burst) || burst < 0 || burst > 1_000_000) {
      throw new ConfigError('burst', `${OWNER}: option "burst" must be a whole number from 0, got ${show(burst)}`)
    }
    if (opts.keyFunction !== undefined && typeof opts.keyFunction !== 'function') {
      throw new ConfigError('keyFunction', `${OWNER}: option "keyFunction" must be a function, got ${show(opts.keyFunction)}`)
    }
    if (opts.keyFunction !== undefined && opts.key !== undefined) {
      throw new ConfigError('key', `${OWNER}: give "key" or "keyFunction", not both`)
    }
    let key = 'ip'
    const k = opts.key
    if (opts.keyFunction) key = 'function'
    else if (k === undefined || k === 'ip') key = 'ip'
    else if (k !== null && typeof k === 'object' && typeof (k as { header?: unknown }).header === 'string' && TOKEN.test((k as { header: string }).header)) {
      key = `header:${(k as { header: string }).header.toLowerCase()}`
    } else {
      throw new ConfigError('key', `${OWNER}: option "key" must be 'ip' or { header: name }, got ${show(k)}`)
    }
    const store = opts.store ?? 'memory'
    let redisUrl: string | undefined
    if (store !== 'memory') {
      const url = (store as { redis?: unknown })?.redis
      if (typeof url !== 'string' || !/^rediss?:\/\/[^\s/]+(\/\d+)?$/.test(url)) {
        throw new ConfigError('store', `${OWNER}: option "store" must be 'memory' or { redis: 'redis://host:port' }, got ${show(store)}`)
      }
      redisUrl = url
    }
    const fail = opts.onStoreError ?? 'open'
    if (fail !== 'open' && fail !== 'closed') {
      throw new ConfigError('onStoreError', `${OWNER}: option "onStoreError" must be 'open' or 'closed', got ${show(fail)}`)
    }
    this.keyFunction = opts.keyFunction as RateLimitMiddlewareOptions['keyFunction']
    this.native = {
      requestsPerMinute: perMinute,
      requestsPerHour: perHour,
      burst,
      key,
      redisUrl,
      failOpen: fail === 'open',
      redisTimeoutMs: duration(OWNER, 'storeTimeout', opts.storeTimeout, 250),
      keyTimeoutMs: duration(OWNER, 'keyTimeout', opts.keyTimeout, 1000),
    }
  }
}
