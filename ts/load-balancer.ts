import { ConfigError, ErrorCodes, VelithonError, callHook, native } from './errors'
import { followDiscovery, type DiscoveryFollower, type DiscoveryStatus, type ServiceDiscovery } from './discovery'
import { nativeBinding, splitHeaders, type NativeLoadBalancer, type NativeServerStatus } from './native'
import { duration, knownKeys, object, positiveDuration, positiveInt, show, upstreamUrl, type Duration } from './options'
import { CircuitBreaker } from './resilience/circuit-breaker'
import { HealthChecker } from './resilience/health-checker'
import { OutlierDetection } from './resilience/outlier-detection'
import { BodyTransformer } from './transform/body-transformer'
import type { Transformer } from './transform/compile'
import { HeaderTransformer } from './transform/header-transformer'
import { PathTransformer } from './transform/path-transformer'
import { http2Option, nativeTransportOptions, sameTransport, tlsOption, type TlsConfig, type UpstreamTlsOptions } from './upstream-tls'
import {
  ConsistentHashStrategy,
  LoadBalancingStrategy,
  RoundRobinStrategy,
  WeightedStrategy,
  weightOf,
  type RequestContext,
} from './strategies'

/** A server URL, or a URL with its weight (read by `WeightedStrategy`). */
export type ServerEntry = string | { url: string; weight?: number }

export interface LoadBalancerOptions {
  /** Upstream server URLs, e.g. `'http://127.0.0.1:9001'`. A path is put before every forwarded path. */
  upstreamServers?: ServerEntry[]
  /** How a server is picked; round robin by default. */
  strategy?: LoadBalancingStrategy
  /** How long a custom strategy's `selectServer` may take before the built-in pick. Default `'1s'`. */
  strategyTimeout?: Duration
  /** Told when a custom strategy fails (once per balancer) or service discovery fails (once per outage); default: console.error. */
  onError?: (error: unknown) => void
  /** Active health checks of every server. */
  healthChecker?: HealthChecker
  /** Shorthand for `healthChecker: new HealthChecker({ checkInterval })`. */
  healthCheckInterval?: Duration
  /** A circuit breaker per server. */
  circuitBreaker?: CircuitBreaker
  /** Shorthand for `circuitBreaker: new CircuitBreaker({ failureThreshold })`. */
  circuitBreakerThreshold?: number
  /** Passive health checks on live traffic (eject servers that keep failing). */
  outlierDetection?: OutlierDetection
  /** Where the servers come from, instead of `upstreamServers`: followed for changes. */
  discovery?: ServiceDiscovery
  /** The service to follow in `discovery`. */
  service?: string
  /** Transformers for every route and `forwardRequest` to this balancer (after the gateway's, before the route's). */
  transformers?: Transformer[]
  /** TLS options for these servers (replaces the gateway's `tls` as a whole; a route's replaces this one). */
  tls?: UpstreamTlsOptions
  /** HTTP/2 to these servers: h2c by prior knowledge on `http://`, ALPN `h2` only on `https://`. Default: the gateway's. */
  http2?: boolean
}

const OWNER = 'LoadBalancer'
const KNOWN = [
  'upstreamServers',
  'strategy',
  'strategyTimeout',
  'onError',
  'healthChecker',
  'healthCheckInterval',
  'circuitBreaker',
  'circuitBreakerThreshold',
  'outlierDetection',
  'discovery',
  'service',
  'transformers',
  'tls',
  'http2',
] as const

/** One server's state, for status pages. */
export interface UpstreamStatus extends NativeServerStatus {}

function entries(value: unknown, option: string, allowEmpty: boolean, weights?: Readonly<Record<string, number>>): [string[], number[]] {
  if (!Array.isArray(value) || (value.length === 0 && !allowEmpty)) {
    throw new ConfigError(option, `${OWNER}: option "${option}" must be a non-empty array of URLs, got ${show(value)}`)
  }
  const urls: string[] = []
  const ws: number[] = []
  value.forEach((entry: unknown, i) => {
    const name = `${option}[${i}]`
    if (entry !== null && typeof entry === 'object' && !Array.isArray(entry)) {
      const e = entry as Record<string, unknown>
      knownKeys(OWNER, e, ['url', 'weight'])
      const url = upstreamUrl(OWNER, `${name}.url`, e.url)
      urls.push(url)
      ws.push(e.weight === undefined ? (weights?.[url] ?? 1) : weightOf(OWNER, url, e.weight))
    } else {
      const url = upstreamUrl(OWNER, name, entry)
      urls.push(url)
      ws.push(weights?.[url] ?? 1)
    }
  })
  const dup = urls.find((u, i) => urls.indexOf(u) !== i)
  if (dup) {
    throw new ConfigError(option, `${OWNER}: option "${option}" lists ${show(dup)} twice`)
  }
  return [urls, ws]
}

/** A set of upstream servers and the strategy that picks one per request. */
export class LoadBalancer {
  readonly strategy: LoadBalancingStrategy
  readonly healthChecker: HealthChecker | undefined
  readonly circuitBreaker: CircuitBreaker | undefined
  readonly transformers: readonly Transformer[]
  #native: NativeLoadBalancer
  #select: Select | undefined
  #follower: DiscoveryFollower | undefined
  #closed = false
  #tls: TlsConfig | undefined
  #http2: boolean | undefined
  #protocol: { readonly tls: TlsConfig | undefined; readonly http2: boolean | undefined }
  /** What the health checks go with now (its own options, or those of the first gateway that used it). */
  #checkedWith: { tls: TlsConfig | undefined; http2: boolean | undefined }
  /** The first gateway that used this balancer (its options are the health checks'). */
  #adopted = false
  /** The options of later gateways warned about (one warning per distinct options). */
  #conflicts = new Set<string>()

  constructor(options: LoadBalancerOptions) {
    const opts = object(OWNER, options)
    knownKeys(OWNER, opts, KNOWN)
    const strategy = opts.strategy ?? new RoundRobinStrategy()
    if (!(strategy instanceof LoadBalancingStrategy)) {
      throw new ConfigError(
        'strategy',
        `${OWNER}: option "strategy" must be a LoadBalancingStrategy such as new RoundRobinStrategy(), got ${show(strategy)}`,
      )
    }
    const weights = strategy instanceof WeightedStrategy ? strategy.servers : undefined
    const discovery = opts.discovery as ServiceDiscovery | undefined
    if (discovery !== undefined && (discovery === null || typeof discovery !== 'object' || typeof discovery.watch !== 'function')) {
      throw new ConfigError('discovery', `${OWNER}: option "discovery" must be a ServiceDiscovery such as new ConsulServiceDiscovery(), got ${show(discovery)}`)
    }
    if (discovery && (typeof opts.service !== 'string' || opts.service === '')) {
      throw new ConfigError('service', `${OWNER}: option "service" must name the service to follow in "discovery", got ${show(opts.service)}`)
    }
    if (!discovery && opts.service !== undefined) {
      throw new ConfigError('service', `${OWNER}: option "service" needs a "discovery"`)
    }
    if (discovery && opts.upstreamServers !== undefined) {
      throw new ConfigError('upstreamServers', `${OWNER}: give "upstreamServers" or "discovery", not both`)
    }
    const [servers, serverWeights] = discovery
      ? [[], []]
      : entries(opts.upstreamServers, 'upstreamServers', false, weights)
    if (weights) {
      const missing = servers.find((u) => !(u in weights))
      if (missing && !(opts.upstreamServers as ServerEntry[]).some((e) => typeof e === 'object' && e.url === missing)) {
        throw new ConfigError('strategy', `${OWNER}: WeightedStrategy gives no weight to ${show(missing)}`)
      }
    }
    const timeoutMs = duration(OWNER, 'strategyTimeout', opts.strategyTimeout, 1000)
    if (opts.onError !== undefined && typeof opts.onError !== 'function') {
      throw new ConfigError('onError', `${OWNER}: option "onError" must be a function, got ${show(opts.onError)}`)
    }
    this.transformers = transformerList(opts.transformers)
    this.#tls = tlsOption(OWNER, opts.tls)
    this.#http2 = http2Option(OWNER, opts.http2)
    this.#protocol = Object.freeze({ tls: this.#tls, http2: this.#http2 })
    this.#checkedWith = { tls: this.#tls, http2: this.#http2 }
    this.healthChecker = healthCheckerOption(opts)
    this.circuitBreaker = circuitBreakerOption(opts)
    const outlier = opts.outlierDetection
    if (outlier !== undefined && !(outlier instanceof OutlierDetection)) {
      throw new ConfigError('outlierDetection', `${OWNER}: option "outlierDetection" must be an OutlierDetection, got ${show(outlier)}`)
    }
    this.strategy = strategy
    const { NativeLoadBalancer } = nativeBinding()
    const hashKey = strategy instanceof ConsistentHashStrategy ? strategy.nativeKey : null
    const lb = native(() => new NativeLoadBalancer(servers, serverWeights, strategy.nativeKind ?? 'round_robin', hashKey))
    this.#native = lb
    if (this.circuitBreaker) native(() => lb.setCircuitBreaker(this.circuitBreaker!.native))
    if (outlier) native(() => lb.setOutlierDetection(outlier.native))
    const report = (opts.onError as ((e: unknown) => void) | undefined) ?? defaultReport
    if (strategy.nativeKind === undefined) {
      const select = userSelector(strategy, timeoutMs, report)
      this.#select = select
      // From pure routes: the data plane asks through the callback bridge and waits a
      // little longer than the wrapper's own timeout (which answers '' first).
      native(() =>
        lb.setSelector((token, servers, ctx) => {
          try {
            const answer = select(servers, {
              method: ctx.method,
              path: ctx.path,
              headers: headerRecord(splitHeaders(ctx.headers)),
              client: { address: ctx.clientAddress, port: ctx.clientPort },
            })
            if (typeof answer === 'string') lb.completeSelect(token, answer)
            else answer.then((url) => lb.completeSelect(token, url)).catch(() => lb.completeSelect(token, ''))
          } catch {
            lb.completeSelect(token, '') // never throw out of a bridge callback
          }
        }, timeoutMs + 500),
      )
    }
    if (this.healthChecker) startHealthChecks(lb, this.healthChecker, this.#tls, this.#http2)
    if (discovery) {
      this.#follower = followDiscovery(
        discovery,
        opts.service as string,
        (list) => this.setServers(list),
        (error) => callHook(opts.onError ? report : discoveryReport, error),
      )
    }
  }

  /** The current upstream servers. */
  get upstreamServers(): string[] {
    return this.#native.servers()
  }

  /** How often a custom strategy's answer was replaced by the built-in pick. */
  get strategyFallbacks(): number {
    return this.#native.fallbackCount()
  }

  /** Resolves once a discovery source gave its first list (or failed); at once without one. */
  get ready(): Promise<void> {
    return this.#follower?.ready ?? Promise.resolve()
  }

  /** How following the discovery source is going; undefined without one. */
  get discoveryStatus(): DiscoveryStatus | undefined {
    return this.#follower?.status()
  }

  /**
   * Replaces the server list (and weights, for `{ url, weight }` entries) atomically.
   * Requests in flight finish where they are; servers that stay keep their pooled
   * connections, breaker, health and latency state.
   */
  setServers(servers: ServerEntry[]): void {
    const hasWeights = Array.isArray(servers) && servers.some((e) => e !== null && typeof e === 'object')
    const weights = this.strategy instanceof WeightedStrategy ? this.strategy.servers : undefined
    const [urls, ws] = entries(servers, 'servers', this.#follower !== undefined, weights)
    native(() => this.#native.setServers(urls, hasWeights || weights ? ws : []))
  }

  /** Every server's state: availability, in-flight requests, latency, health, breaker. */
  status(): UpstreamStatus[] {
    return this.#native.status()
  }

  /**
   * Stops health checks and discovery (idempotent). Requests still work with the servers
   * and states as they are; the app and the gateway call this when they close.
   */
  close(): void {
    if (this.#closed) return
    this.#closed = true
    this.#native.stopHealthChecks()
    this.#follower?.stop()
  }

  /** @internal */
  static nativeOf(lb: LoadBalancer): NativeLoadBalancer {
    return lb.#native
  }

  /** @internal This balancer's `tls` and `http2` (undefined: not set here). */
  static protocolOf(lb: LoadBalancer): { readonly tls: TlsConfig | undefined; readonly http2: boolean | undefined } {
    return lb.#protocol
  }

  /**
   * @internal A gateway forwards to this balancer, with its own `tls`/`http2` as the
   * defaults for what this balancer does not set: the health checks go as those requests
   * do. The first gateway wins; a later one with other options gets a warning.
   */
  static adopt(lb: LoadBalancer, owner: string, tls: TlsConfig | undefined, http2: boolean | undefined): void {
    lb.#adopt(owner, tls, http2)
  }

  #adopt(owner: string, gatewayTls: TlsConfig | undefined, gatewayHttp2: boolean | undefined): void {
    const checker = this.healthChecker
    // A customCheckFunction makes no request of the gateway's.
    if (!checker || checker.customCheckFunction || this.#closed) return
    const tls = this.#tls ?? gatewayTls
    const http2 = this.#http2 ?? gatewayHttp2
    const now = this.#checkedWith
    if (!this.#adopted) {
      this.#adopted = true
      if (sameTransport(now.tls, now.http2, tls, http2)) return
      this.#checkedWith = { tls, http2 }
      // Restarted with the effective options (stopping marks every server up again:
      // what the first checks found with the wrong options does not count).
      this.#native.stopHealthChecks()
      startHealthChecks(this.#native, checker, tls, http2)
      return
    }
    if (sameTransport(now.tls, now.http2, tls, http2)) return
    const key = `${tls?.id ?? ''}/${http2 ?? false}`
    if (this.#conflicts.has(key)) return
    this.#conflicts.add(key)
    process.emitWarning(
      `${owner}: this LoadBalancer (servers ${this.upstreamServers.join(', ') || 'none yet'}) is used by more than one ` +
        'gateway with different upstream tls/http2 options; its health checks keep those of the first gateway that used it. ' +
        'Give the LoadBalancer its own tls/http2 to choose.',
      { code: 'VG_LB_TRANSPORT_CONFLICT' },
    )
  }

  /** @internal The JS strategy's pick for `forwardRequest` ('' = fall back), if it has one. */
  static selectorOf(lb: LoadBalancer): Select | undefined {
    return lb.#select
  }
}

function transformerList(value: unknown): Transformer[] {
  if (value === undefined) return []
  const ok = Array.isArray(value) && value.every((t) => t instanceof HeaderTransformer || t instanceof PathTransformer || t instanceof BodyTransformer)
  if (!ok) {
    throw new ConfigError('transformers', `${OWNER}: option "transformers" must be an array of HeaderTransformer, PathTransformer or BodyTransformer, got ${show(value)}`)
  }
  return [...(value as Transformer[])]
}

function healthCheckerOption(opts: Record<string, unknown>): HealthChecker | undefined {
  if (opts.healthChecker !== undefined) {
    if (!(opts.healthChecker instanceof HealthChecker)) {
      throw new ConfigError('healthChecker', `${OWNER}: option "healthChecker" must be a HealthChecker, got ${show(opts.healthChecker)}`)
    }
    if (opts.healthCheckInterval !== undefined) {
      throw new ConfigError('healthCheckInterval', `${OWNER}: give "healthChecker" or "healthCheckInterval", not both`)
    }
    return opts.healthChecker
  }
  if (opts.healthCheckInterval === undefined) return undefined
  return new HealthChecker({ checkInterval: positiveDuration(OWNER, 'healthCheckInterval', opts.healthCheckInterval, 0) })
}

function circuitBreakerOption(opts: Record<string, unknown>): CircuitBreaker | undefined {
  if (opts.circuitBreaker !== undefined) {
    if (!(opts.circuitBreaker instanceof CircuitBreaker)) {
      throw new ConfigError('circuitBreaker', `${OWNER}: option "circuitBreaker" must be a CircuitBreaker, got ${show(opts.circuitBreaker)}`)
    }
    if (opts.circuitBreakerThreshold !== undefined) {
      throw new ConfigError('circuitBreakerThreshold', `${OWNER}: give "circuitBreaker" or "circuitBreakerThreshold", not both`)
    }
    return opts.circuitBreaker
  }
  if (opts.circuitBreakerThreshold === undefined) return undefined
  return new CircuitBreaker({ failureThreshold: positiveInt(OWNER, 'circuitBreakerThreshold', opts.circuitBreakerThreshold, 5) })
}

/**
 * Health checks go as the balancer's requests do: its `tls` and `http2`, else those of
 * the first gateway that uses it (see `LoadBalancer.adopt`).
 */
function startHealthChecks(lb: NativeLoadBalancer, checker: HealthChecker, tls: TlsConfig | undefined, http2: boolean | undefined): void {
  const custom = checker.customCheckFunction
  const check = custom
    ? (token: number, server: string) =>
        HealthChecker.runCustom(custom, server, (healthy, latencyMs, error) => lb.completeCheck(token, healthy, latencyMs, error))
    : null
  const options = tls || http2 ? { ...checker.native, tls: nativeTransportOptions(tls, http2 ?? false) } : checker.native
  native(() => lb.startHealthChecks(options, check))
}

function discoveryReport(error: unknown): void {
  console.error('velithon-gateway: service discovery failed; keeping the last good server list:', error)
}

function defaultReport(error: unknown): void {
  console.error('velithon-gateway: a custom load-balancing strategy failed; using round robin:', error)
}

/** A strategy's pick: a server URL, or '' to fall back. Never throws or rejects. */
type Select = (servers: string[], ctx: RequestContext) => string | Promise<string>

/**
 * Wraps a user's `selectServer`: sync answers are checked at once (no timer); async ones
 * race `strategyTimeout`. A throw, a rejection, a timeout or a server not in the list
 * give '' (fall back) and are reported once.
 */
function userSelector(strategy: LoadBalancingStrategy, timeoutMs: number, onError: (error: unknown) => void): Select {
  let reported = false
  const report = (error: unknown) => {
    if (reported) return
    reported = true
    callHook(onError, error)
  }
  const check = (servers: string[], answer: unknown): string => {
    if (typeof answer === 'string' && servers.includes(answer)) return answer
    report(new VelithonError(ErrorCodes.CALLBACK_FAILED, `selectServer returned ${show(answer)}, which is not one of the servers`))
    return ''
  }
  const failed = (error: unknown): string => {
    report(error)
    return ''
  }
  return (servers, ctx) => {
    let answer: unknown
    try {
      answer = strategy.selectServer(servers, ctx)
    } catch (err) {
      return failed(err)
    }
    if (!answer || typeof (answer as PromiseLike<unknown>).then !== 'function') return check(servers, answer)
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new VelithonError(ErrorCodes.CALLBACK_TIMEOUT, `selectServer did not answer within ${timeoutMs} ms`)),
        timeoutMs,
      )
    })
    return Promise.race([answer as PromiseLike<unknown>, late])
      .then((a) => check(servers, a), failed)
      .finally(() => clearTimeout(timer))
  }
}

function headerRecord(flat: string[]): Record<string, string> {
  const out: Record<string, string> = {}
  for (let i = 0; i < flat.length; i += 2) {
    const k = flat[i]
    out[k] = k in out ? `${out[k]}, ${flat[i + 1]}` : flat[i + 1]
  }
  return out
}

export { headerRecord }
