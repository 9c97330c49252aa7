/**
 * The native addon, loaded on first use by `binding.cjs` at the package root. These
 * interfaces mirror `crates/node`; only the facade touches them.
 */
import { join } from 'node:path'
import { fromNative } from './errors'

export interface NativeClientOptions {
  connectTimeoutMs: number
  keepAliveTimeoutMs: number
  connectionPoolSize: number
  maxConnectionsPerHost?: number
  connectionPoolTimeoutMs: number
  upgradeIdleTimeoutMs: number
}

export interface NativeAppOptions {
  workerThreads: number
  requestHeaderTimeoutMs: number
  trustedProxies: string[]
  handlerTimeoutMs: number
  maxBodySize: number
}

/** The listener's certificate chain and private key, PEM bytes. */
export interface NativeListenTls {
  cert: Buffer
  key: Buffer
}

/** Upstream TLS options (PEM bytes) and the HTTP version, for a `NativeTransport`. */
export interface NativeTransportOptions {
  ca?: Buffer
  cert?: Buffer
  key?: Buffer
  servername?: string
  rejectUnauthorized: boolean
  http2: boolean
}

/** Upstream TLS options and HTTP/2 with a pool of their own (built from a client's settings). */
export interface NativeTransport {
  readonly __nativeTransport?: never
}

export interface NativeProxyRouteOptions {
  stripPath: boolean
  preserveHost: boolean
  timeoutMs: number
}

export interface HandlerReply {
  status: number
  headers: string[]
  body?: Buffer
  forwarded: boolean
}

export interface NativeForwardOptions {
  server?: string
  timeoutMs: number
  additionalHeaders: string[]
  preserveHost: boolean
}

/** The result of `readBody` (body) or `forward` (status, headers), or `error` as `VG_CODE: message`. */
export interface Completion {
  ok: boolean
  status: number
  /** `name\nvalue\n…` */
  headers: string
  body?: Buffer
  error: string
}

/** One handler request: `headers` is `name\nvalue\n…`, `params` flat name/value pairs. */
export type Dispatch = (
  token: number,
  routeId: number,
  requestId: number,
  method: string,
  url: string,
  headers: string,
  params: string[],
  clientAddress: string,
  clientPort: number,
  httpVersion: string,
) => void
export type Complete = (token: number, ok: boolean, status: number, headers: string, body: Buffer | null, error: string) => void

export interface SelectContext {
  method: string
  path: string
  /** `name\nvalue\n…` */
  headers: string
  clientAddress: string
  clientPort: number
}

export interface NativeBreakerOptions {
  failureThreshold: number
  timeoutDurationMs: number
  halfOpenRequests: number
  successThreshold: number
  failureStatusCodes: number[]
  failureRate?: number
  minimumRequests: number
  rollingWindowMs: number
}

export interface NativeOutlierOptions {
  consecutiveFailures: number
  baseEjectionMs: number
  maxEjectionMs: number
  maxEjectedPercent: number
}

export interface NativeHealthOptions {
  intervalMs: number
  timeoutMs: number
  path: string
  expectedStatus: number[]
  consecutiveFailures: number
  consecutiveSuccesses: number
  /** The load balancer's upstream TLS options and HTTP version, if it has any. */
  tls?: NativeTransportOptions
}

export interface NativeRetryOptions {
  maxAttempts: number
  baseDelayMs: number
  backoffFactor: number
  maxDelayMs: number
  retryableStatusCodes: number[]
  retryableErrors: string[]
  retryNonIdempotent: boolean
  perTryTimeoutMs?: number
  maxReplayBody: number
  budgetRatio?: number
  budgetMinPerSecond: number
}

/** `(token, attempt, method, server, status (0 = none), headers "k\nv\n…", errorCode)` */
export type RetryDecide = (
  token: number,
  attempt: number,
  method: string,
  server: string,
  status: number,
  headers: string,
  error: string,
) => void

export interface NativeRetryPolicy {
  completeRetry(token: number, answer: number): boolean
}

/** One server's state, as the data plane reports it. */
export interface NativeServerStatus {
  url: string
  available: boolean
  weight: number
  inFlight: number
  requests: number
  failures: number
  latencyMs: number
  health: {
    healthy: boolean
    consecutiveFailures: number
    consecutiveSuccesses: number
    lastLatencyMs: number | null
    checks: number
    lastError: string | null
  }
  breaker: {
    state: 'closed' | 'open' | 'half_open'
    consecutiveFailures: number
    halfOpenSuccesses: number
    probesInFlight: number
    timesOpened: number
    retryInMs: number | null
  } | null
  ejectedMsLeft: number | null
}

export interface HeaderRuleOptions {
  remove: string[]
  /** Flat name/value pairs. */
  modify: string[]
  add: string[]
}

export interface PathRuleOptions {
  stripPrefix?: string
  addPrefix?: string
  mappings: Array<{ from: string; to: string; prefix: boolean }>
  rewritePattern?: string
  rewriteReplacement?: string
}

export interface NativeTransformOptions {
  stripIncoming: string[]
  requestId?: string
  requestHeaders: HeaderRuleOptions[]
  path: PathRuleOptions[]
  responseHeaders: HeaderRuleOptions[]
  requestFunctions: boolean
  responseFunctions: boolean
  requestBody?: { contentTypes: string[]; maxSize: number }
  responseBody?: { contentTypes: string[]; maxSize: number }
}

export interface NativeTransforms {
  completeHeaders(token: number, ok: boolean, pairs: string[], error: string): boolean
  completeBody(token: number, ok: boolean, body: Buffer | null, error: string): boolean
}

export interface NativeLoadBalancer {
  setServers(servers: string[], weights: number[]): void
  servers(): string[]
  availableServers(): string[]
  setSelector(select: (token: number, servers: string[], ctx: SelectContext) => void, timeoutMs: number): void
  completeSelect(token: number, url: string): boolean
  fallbackCount(): number
  setCircuitBreaker(options: NativeBreakerOptions): boolean
  hasCircuitBreaker(): boolean
  setOutlierDetection(options: NativeOutlierOptions): boolean
  startHealthChecks(options: NativeHealthOptions, check?: ((token: number, server: string) => void) | null): void
  completeCheck(token: number, healthy: boolean, latencyMs: number, error: string): boolean
  stopHealthChecks(): void
  status(): NativeServerStatus[]
}

export interface NativeClient {
  readonly __nativeClient?: never
}

export interface NativeMetrics {
  watch(balancer: NativeLoadBalancer): void
  watchClient(client: NativeClient): void
  snapshot(): Record<string, unknown>
  prometheus(): string
}

export interface NativeMiddlewareOptions {
  metrics: boolean
  metricsPath?: string
  traceparent: boolean
  rateLimit?: {
    requestsPerMinute?: number
    requestsPerHour?: number
    burst: number
    key: string
    redisUrl?: string
    failOpen: boolean
    redisTimeoutMs: number
    keyTimeoutMs: number
  }
  collectorQueue: number
  collectorBatch: number
}

export interface NativeApp {
  setMiddleware(
    options: NativeMiddlewareOptions,
    metrics: NativeMetrics,
    key: ((token: number, method: string, path: string, headers: string, client: string) => void) | null,
    collect: ((json: string) => void) | null,
  ): void
  completeKey(token: number, key: string): boolean
  collectorDone(): void
  /** Summaries the collector could not take (JS fell behind). */
  collectorDropped(): number
  addProxyRoute(
    pattern: string,
    methods: string[] | undefined | null,
    balancer: NativeLoadBalancer,
    client: NativeClient,
    retry: NativeRetryPolicy,
    transforms: NativeTransforms,
    options: NativeProxyRouteOptions,
    transport?: NativeTransport | null,
  ): void
  addHandlerRoute(pattern: string, methods: string[] | undefined | null, routeId: number): void
  setHandlers(dispatch: Dispatch, complete: Complete): void
  respond(token: number, status: number, headers: string, body: Buffer | undefined, forwarded: boolean): boolean
  readBody(requestId: number, token: number): void
  forward(
    requestId: number,
    token: number,
    balancer: NativeLoadBalancer,
    client: NativeClient,
    retry: NativeRetryPolicy,
    transforms: NativeTransforms,
    options: NativeForwardOptions,
    transport?: NativeTransport | null,
  ): void
  /** HTTPS when `tls` is given (PEM certificate chain and private key). */
  listen(host: string, port: number, tls?: NativeListenTls | null): Promise<{ host: string; port: number }>
  /** Swaps the listener's certificate for new connections; throws if not listening with TLS. */
  reloadTls(cert: Buffer, key: Buffer): void
  close(graceMs: number): Promise<void>
}

export interface NativeBinding {
  /** '' when the path rule is valid, else why not. */
  checkPathRule(rule: PathRuleOptions): string
  NativeLoadBalancer: new (servers: string[], weights: number[], strategy: string, hashKey?: string | null) => NativeLoadBalancer
  NativeRetryPolicy: new (options: NativeRetryOptions, decide: RetryDecide | null | undefined, decideTimeoutMs: number) => NativeRetryPolicy
  NativeMetrics: new () => NativeMetrics
  NativeTransforms: new (
    options: NativeTransformOptions,
    headerFn: ((token: number, phase: number, method: string, path: string, status: number, headers: string) => void) | null,
    bodyFn: ((token: number, phase: number, body: Buffer, contentType: string) => void) | null,
    timeoutMs: number,
  ) => NativeTransforms
  NativeClient: new (options: NativeClientOptions) => NativeClient
  NativeTransport: new (client: NativeClient, options: NativeTransportOptions) => NativeTransport
  /** The checks of `new NativeTransport` without a client; throws `VG_INVALID_CONFIG` naming `tls.*`. */
  validateTransportOptions(options: NativeTransportOptions): void
  NativeApp: new (options: NativeAppOptions) => NativeApp
}

let binding: NativeBinding | undefined

/** The addon; loading it the first time may throw `VG_NATIVE_MISSING`. */
export function nativeBinding(): NativeBinding {
  if (!binding) {
    try {
      // dist/cjs/native.js → ../../binding.cjs at the package root.
      binding = require(join(__dirname, '..', '..', 'binding.cjs')) as NativeBinding
    } catch (err) {
      throw fromNative(err)
    }
  }
  return binding
}

/** `name\nvalue\n…` (how header lists cross the FFI: one string) as flat pairs. */
export function splitHeaders(joined: string): string[] {
  return joined === '' ? [] : joined.split('\n')
}

/**
 * A joined header list as an object for user functions: lower-case names, repeated
 * headers joined with ', ', no prototype (a header named `constructor` is just a header).
 */
export function headerObject(joined: string): Record<string, string> {
  const flat = splitHeaders(joined)
  const out: Record<string, string> = Object.create(null)
  for (let i = 0; i < flat.length; i += 2) {
    const k = flat[i]
    out[k] = k in out ? `${out[k]}, ${flat[i + 1]}` : flat[i + 1]
  }
  return out
}
