import { ConfigError } from '../errors'
import type { NativeHealthOptions } from '../native'
import { knownKeys, object, optionalFunction, positiveDuration, positiveInt, show, statusCodes, type Duration } from '../options'

/** What a custom health check found. `latency` is in milliseconds. */
export class HealthCheckResult {
  readonly healthy: boolean
  readonly latency: number | undefined
  readonly error: string | undefined

  constructor(init: { healthy: boolean; latency?: number; error?: string }) {
    const opts = object('HealthCheckResult', init)
    knownKeys('HealthCheckResult', opts, ['healthy', 'latency', 'error'])
    if (typeof opts.healthy !== 'boolean') {
      throw new ConfigError('healthy', `HealthCheckResult: option "healthy" must be true or false, got ${show(opts.healthy)}`)
    }
    if (opts.latency !== undefined && (typeof opts.latency !== 'number' || !Number.isFinite(opts.latency) || opts.latency < 0)) {
      throw new ConfigError('latency', `HealthCheckResult: option "latency" must be milliseconds (≥ 0), got ${show(opts.latency)}`)
    }
    if (opts.error !== undefined && typeof opts.error !== 'string') {
      throw new ConfigError('error', `HealthCheckResult: option "error" must be a string, got ${show(opts.error)}`)
    }
    this.healthy = opts.healthy
    this.latency = opts.latency as number | undefined
    this.error = opts.error as string | undefined
  }
}

/** A custom check of one server: a `HealthCheckResult`, a plain `{ healthy, … }`, or a boolean. */
export type CustomCheckFunction = (
  serverUrl: string,
) => HealthCheckResult | { healthy: boolean; latency?: number; error?: string } | boolean | Promise<HealthCheckResult | { healthy: boolean; latency?: number; error?: string } | boolean>

export interface HealthCheckerOptions {
  /** How often every server is checked (jittered ±10%). Default `'10s'`. */
  checkInterval?: Duration
  /** How long one check may take. Default `'2s'`. */
  timeout?: Duration
  /** Requested with GET on each server. Default `'/health'`. */
  checkPath?: string
  /** The status (or statuses) of a healthy answer. Default 200. */
  expectedStatus?: number | number[]
  /** Failed checks in a row that take a server out of rotation. Default 3. */
  consecutiveFailures?: number
  /** Passed checks in a row that bring it back. Default 1. */
  consecutiveSuccesses?: number
  /** Your own check instead of the HTTP GET; it runs in JS on each check. */
  customCheckFunction?: CustomCheckFunction
}

function atLeast(owner: string, name: string, ms: number, min: number, value: unknown): number {
  if (ms < min) throw new ConfigError(name, `${owner}: option "${name}" must be at least ${min} ms, got ${show(value)}`)
  return ms
}

const OWNER = 'HealthChecker'
const KNOWN = [
  'checkInterval',
  'timeout',
  'checkPath',
  'expectedStatus',
  'consecutiveFailures',
  'consecutiveSuccesses',
  'customCheckFunction',
] as const

/**
 * Active health checks, run from Rust on a jittered schedule (a custom check calls
 * into JS). Give it to a `LoadBalancer` as `healthChecker`; checks stop when the load
 * balancer, its gateway or the app using it closes.
 */
export class HealthChecker {
  /** @internal */
  readonly native: NativeHealthOptions
  readonly customCheckFunction: CustomCheckFunction | undefined

  constructor(options: HealthCheckerOptions = {}) {
    const opts = object(OWNER, options)
    knownKeys(OWNER, opts, KNOWN)
    const path = opts.checkPath ?? '/health'
    if (typeof path !== 'string' || !path.startsWith('/') || /[\s#]/.test(path)) {
      throw new ConfigError('checkPath', `${OWNER}: option "checkPath" must be a path starting with '/', got ${show(path)}`)
    }
    const expected = typeof opts.expectedStatus === 'number' ? [opts.expectedStatus] : opts.expectedStatus
    if (Array.isArray(expected) && expected.length === 0) {
      throw new ConfigError('expectedStatus', `${OWNER}: option "expectedStatus" must name at least one status, got []`)
    }
    this.native = {
      intervalMs: atLeast(OWNER, 'checkInterval', positiveDuration(OWNER, 'checkInterval', opts.checkInterval, 10_000), 50, opts.checkInterval),
      timeoutMs: positiveDuration(OWNER, 'timeout', opts.timeout, 2_000),
      path,
      expectedStatus: statusCodes(OWNER, 'expectedStatus', expected, [200]),
      consecutiveFailures: positiveInt(OWNER, 'consecutiveFailures', opts.consecutiveFailures, 3),
      consecutiveSuccesses: positiveInt(OWNER, 'consecutiveSuccesses', opts.consecutiveSuccesses, 1),
    }
    this.customCheckFunction = optionalFunction(OWNER, 'customCheckFunction', opts.customCheckFunction)
  }

  /** @internal Runs the custom check and reports `(healthy, latencyMs | -1, error)`; never throws. */
  static runCustom(
    check: CustomCheckFunction,
    server: string,
    answer: (healthy: boolean, latencyMs: number, error: string) => void,
  ): void {
    const started = performance.now()
    const settle = (value: unknown) => {
      const elapsed = performance.now() - started
      if (typeof value === 'boolean') return answer(value, elapsed, value ? '' : 'the check returned false')
      if (value && typeof value === 'object' && typeof (value as { healthy?: unknown }).healthy === 'boolean') {
        const r = value as { healthy: boolean; latency?: unknown; error?: unknown }
        const latency = typeof r.latency === 'number' && r.latency >= 0 ? r.latency : elapsed
        return answer(r.healthy, latency, typeof r.error === 'string' ? r.error : '')
      }
      answer(false, -1, `customCheckFunction returned ${show(value)}, not a HealthCheckResult`)
    }
    const fail = (err: unknown) => answer(false, -1, err instanceof Error ? err.message || err.name : String(err))
    try {
      const result = check(server)
      if (result && typeof (result as PromiseLike<unknown>).then === 'function') {
        ;(result as Promise<unknown>).then(settle, fail)
      } else settle(result)
    } catch (err) {
      fail(err)
    }
  }
}
