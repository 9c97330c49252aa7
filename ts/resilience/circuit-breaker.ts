import { ConfigError } from '../errors'
import type { NativeBreakerOptions } from '../native'
import { knownKeys, numberIn, object, positiveDuration, positiveInt, statusCodes, type Duration } from '../options'

export interface CircuitBreakerOptions {
  /** Failures in a row (connect error, timeout, a failure status) that open the breaker. Default 5. */
  failureThreshold?: number
  /** How long it stays open before letting probes through (half-open). Default `'60s'`. */
  timeoutDuration?: Duration
  /** Probes allowed at once while half-open. Default 1. */
  halfOpenRequests?: number
  /** Probe successes that close it again; any probe failure reopens it. Default 1. */
  successThreshold?: number
  /** Response statuses that count as failures. Default 500–599. */
  failureStatusCodes?: number[]
  /**
   * Failure-rate mode, in addition to `failureThreshold`: open when at least this share
   * (0–1) of the requests in `rollingWindow` failed, once there were `minimumRequests`.
   * Off by default.
   */
  failureRate?: number
  /** Requests in the window before `failureRate` may open the breaker. Default 20. */
  minimumRequests?: number
  /** The window of `failureRate`. Default `'10s'`. */
  rollingWindow?: Duration
}

const OWNER = 'CircuitBreaker'
const KNOWN = [
  'failureThreshold',
  'timeoutDuration',
  'halfOpenRequests',
  'successThreshold',
  'failureStatusCodes',
  'failureRate',
  'minimumRequests',
  'rollingWindow',
] as const
function nonEmpty(codes: number[]): number[] {
  if (codes.length === 0) {
    throw new ConfigError('failureStatusCodes', `${OWNER}: option "failureStatusCodes" must name at least one status, got []`)
  }
  return codes
}

const SERVER_ERRORS = Array.from({ length: 100 }, (_, i) => 500 + i)

/**
 * Circuit breaker settings. Each upstream server of a load balancer gets its own state
 * machine: closed → open after `failureThreshold` failures in a row; open for
 * `timeoutDuration`; then half-open, admitting `halfOpenRequests` probes at once;
 * closed after `successThreshold` probe successes, reopened by any probe failure.
 * A server whose breaker is open is skipped; when no server is left, clients get 503
 * with `Retry-After` and JS handlers get a `CircuitBreakerOpenError`.
 */
export class CircuitBreaker {
  /** @internal */
  readonly native: NativeBreakerOptions

  constructor(options: CircuitBreakerOptions = {}) {
    const opts = object(OWNER, options)
    knownKeys(OWNER, opts, KNOWN)
    const rate = opts.failureRate === undefined ? undefined : numberIn(OWNER, 'failureRate', opts.failureRate, 0.01, 1, 1)
    this.native = {
      failureThreshold: positiveInt(OWNER, 'failureThreshold', opts.failureThreshold, 5),
      timeoutDurationMs: positiveDuration(OWNER, 'timeoutDuration', opts.timeoutDuration, 60_000),
      halfOpenRequests: positiveInt(OWNER, 'halfOpenRequests', opts.halfOpenRequests, 1),
      successThreshold: positiveInt(OWNER, 'successThreshold', opts.successThreshold, 1),
      failureStatusCodes: nonEmpty(statusCodes(OWNER, 'failureStatusCodes', opts.failureStatusCodes, SERVER_ERRORS)),
      failureRate: rate,
      minimumRequests: positiveInt(OWNER, 'minimumRequests', opts.minimumRequests, 20),
      rollingWindowMs: positiveDuration(OWNER, 'rollingWindow', opts.rollingWindow, 10_000),
    }
  }
}
