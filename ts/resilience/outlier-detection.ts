import type { NativeOutlierOptions } from '../native'
import { knownKeys, numberIn, object, positiveDuration, positiveInt, type Duration } from '../options'

export interface OutlierDetectionOptions {
  /** Failures in a row on live traffic that eject a server. Default 5. */
  consecutiveFailures?: number
  /** The first ejection's length; each further ejection lasts one more of these. Default `'30s'`. */
  baseEjectionTime?: Duration
  /** The longest an ejection lasts. Default `'300s'`. */
  maxEjectionTime?: Duration
  /** At most this share of servers (percent) is ejected at once; the last server never is. Default 50. */
  maxEjectionPercent?: number
}

const OWNER = 'OutlierDetection'
const KNOWN = ['consecutiveFailures', 'baseEjectionTime', 'maxEjectionTime', 'maxEjectionPercent'] as const

/**
 * Passive health checking on live traffic, as Envoy's outlier detection: a server that
 * fails `consecutiveFailures` requests in a row (connect errors, timeouts, 5xx) is
 * taken out of rotation for a time that grows with each ejection.
 */
export class OutlierDetection {
  /** @internal */
  readonly native: NativeOutlierOptions

  constructor(options: OutlierDetectionOptions = {}) {
    const opts = object(OWNER, options)
    knownKeys(OWNER, opts, KNOWN)
    this.native = {
      consecutiveFailures: positiveInt(OWNER, 'consecutiveFailures', opts.consecutiveFailures, 5),
      baseEjectionMs: positiveDuration(OWNER, 'baseEjectionTime', opts.baseEjectionTime, 30_000),
      maxEjectionMs: positiveDuration(OWNER, 'maxEjectionTime', opts.maxEjectionTime, 300_000),
      maxEjectedPercent: numberIn(OWNER, 'maxEjectionPercent', opts.maxEjectionPercent, 0, 100, 50),
    }
  }
}
