import { ConfigError } from '../errors'
import { knownKeys, object, show } from '../options'
import { GatewayMetrics } from './gateway-metrics'

/** What a collector learns of one request (durations to the response head). */
export interface RequestSummary {
  method: string
  path: string
  /** The route pattern that answered ('' when none). */
  route: string
  client: string
  /** Lower-case name/value pairs as received. */
  requestHeaders: [string, string][]
}

export interface ResponseSummary {
  status: number
  responseHeaders: [string, string][]
}

export type CollectorFunction = (request: RequestSummary, response: ResponseSummary, durationMs: number) => void | Promise<void>

export interface MetricsMiddlewareOptions {
  /** Where to count (default: the included gateway's `metrics`, else a new one). */
  metrics?: GatewayMetrics
  /** Serve the Prometheus text at this path; `false` for none. Default `'/metrics'`. */
  path?: string | false
  /** Your function, called after each response (in batches, never delaying one). */
  collectorFunction?: CollectorFunction
  /** A JSON line per request on stdout (or to your function). */
  accessLog?: boolean | ((line: string) => void)
  /** Summaries waiting for a slow collector before new ones are dropped (counted in `dropped`). Default 10,000. */
  queueSize?: number
  /** Summaries handed to JS at once, at most. Default 256. */
  batchSize?: number
  /** Told when the collector throws (default: console.error, once). */
  onError?: (error: unknown) => void
}

const OWNER = 'MetricsMiddleware'

/**
 * Counts every request of the app into a `GatewayMetrics`, serves `/metrics`, and calls
 * your `collectorFunction(request, response, durationMs)` after each response. The data
 * plane only queues a summary: JS gets them in batches, one batch at a time, and when it
 * falls behind, summaries beyond `queueSize` are dropped and counted — a slow or throwing
 * collector never delays a response.
 */
export class MetricsMiddleware {
  readonly metrics: GatewayMetrics | undefined
  readonly path: string | undefined
  readonly collectorFunction: CollectorFunction | undefined
  readonly accessLog: ((line: string) => void) | undefined
  readonly queueSize: number
  readonly batchSize: number
  readonly onError: ((error: unknown) => void) | undefined

  constructor(options: MetricsMiddlewareOptions = {}) {
    const opts = object(OWNER, options)
    knownKeys(OWNER, opts, ['metrics', 'path', 'collectorFunction', 'accessLog', 'queueSize', 'batchSize', 'onError'])
    if (opts.metrics !== undefined && !(opts.metrics instanceof GatewayMetrics)) {
      throw new ConfigError('metrics', `${OWNER}: option "metrics" must be a GatewayMetrics, got ${show(opts.metrics)}`)
    }
    const path = opts.path === undefined ? '/metrics' : opts.path
    if (path !== false && (typeof path !== 'string' || !/^\/[^\s?#]*$/.test(path))) {
      throw new ConfigError('path', `${OWNER}: option "path" must be a path like '/metrics' or false, got ${show(path)}`)
    }
    for (const name of ['collectorFunction', 'onError'] as const) {
      if (opts[name] !== undefined && typeof opts[name] !== 'function') {
        throw new ConfigError(name, `${OWNER}: option "${name}" must be a function, got ${show(opts[name])}`)
      }
    }
    const log = opts.accessLog
    if (log !== undefined && typeof log !== 'boolean' && typeof log !== 'function') {
      throw new ConfigError('accessLog', `${OWNER}: option "accessLog" must be true, false or a function, got ${show(log)}`)
    }
    const count = (name: 'queueSize' | 'batchSize', fallback: number) => {
      const v = opts[name] ?? fallback
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 1_000_000) {
        throw new ConfigError(name, `${OWNER}: option "${name}" must be a whole number from 1 to 1,000,000, got ${show(v)}`)
      }
      return v
    }
    this.metrics = opts.metrics as GatewayMetrics | undefined
    this.path = path === false ? undefined : path
    this.collectorFunction = opts.collectorFunction as CollectorFunction | undefined
    this.accessLog = log === true ? (line) => process.stdout.write(`${line}\n`) : typeof log === 'function' ? (log as (l: string) => void) : undefined
    this.queueSize = count('queueSize', 10_000)
    this.batchSize = count('batchSize', 256)
    this.onError = opts.onError as ((e: unknown) => void) | undefined
  }
}
