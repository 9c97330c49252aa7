import { ConfigError } from './errors'
import { LoadBalancer } from './load-balancer'
import { nativeBinding, type NativeClient } from './native'
import {
  boolean,
  duration,
  knownKeys,
  methods,
  object,
  positiveDuration,
  positiveInt,
  routePattern,
  show,
  upstreamUrl,
  type Duration,
} from './options'
import { GatewayRouter, type RouteDefinition } from './router'
import { native } from './errors'
import { Request } from './http/request'
import { ForwardedResponse } from './http/response'
import { headerRecord } from './load-balancer'
import type { NativeForwardOptions, NativeLoadBalancer, NativeRetryPolicy, NativeTransforms, NativeTransport } from './native'
import { nativeTransforms, type Transformer } from './transform/compile'
import { compileHeaderRules } from './transform/header-transformer'
import { checkPathRule, rewriteOption } from './transform/path-transformer'
import { GatewayMetrics } from './metrics/gateway-metrics'
import { CircuitBreaker } from './resilience/circuit-breaker'
import { RetryConfig } from './resilience/retry-config'
import type { UpstreamStatus } from './load-balancer'
import { Transports, http2Option, tlsOption, type TlsConfig, type UpstreamTlsOptions } from './upstream-tls'
import {
  DEFAULT_STRIPPED_HEADERS,
  breakerOption,
  flatHeaderOption,
  reportTransformError,
  requestIdOption,
  retryConfigValue,
  retryOption,
  stripOption,
  transformersOption,
} from './gateway-options'

const EMPTY: ForwardOptions = Object.freeze({})

export interface ForwardOptions {
  /** Headers set on the upstream request (replacing any the client sent with those names). */
  additionalHeaders?: Record<string, string> | [string, string][]
  /** This call's upstream timeout; the gateway's by default. */
  timeout?: Duration
  /** Send the client's `Host` instead of the upstream's. Default false. */
  preserveHost?: boolean
}

export interface GatewayOptions {
  /** The default load balancer of `route()`. */
  loadBalancer?: LoadBalancer
  /** How long to wait for an upstream's response head (504 after). Default `'30s'`. */
  timeout?: Duration
  /** How long a connect to an upstream may take, TCP and TLS handshake together (504 after). Default `'10s'`. */
  connectTimeout?: Duration
  /** Idle keep-alive connections kept per upstream server. Default 100. */
  connectionPoolSize?: number
  /**
   * Concurrent connections per upstream server (requests in flight); unlimited by default
   * (as undici). Not applied to `http2: true` upstreams, whose requests share one
   * multiplexed connection.
   */
  maxConnectionsPerHost?: number
  /**
   * How long an idle pooled connection is kept. Default `'4s'` (as undici): below the
   * 5 s idle timeout of Node's and Apache's servers, so the gateway drops an idle
   * connection before the upstream closes it under a request.
   */
  keepAliveTimeout?: Duration
  /** How long a request waits for a free connection when `maxConnectionsPerHost` is reached (503 after). Default `'30s'`. */
  connectionPoolTimeout?: Duration
  /**
   * How long an upgraded connection (a WebSocket) may pass no bytes in either direction
   * before the gateway closes both sides. Default `'60s'` (NGINX's `proxy_read_timeout`);
   * keep it above the application's ping interval.
   */
  upgradeIdleTimeout?: Duration
  /** A circuit breaker per server, for every load balancer this gateway uses that has none of its own. */
  circuitBreaker?: CircuitBreaker
  /** Retries for this gateway's routes and `forwardRequest`. None by default. */
  retryConfig?: RetryConfig
  /** Shorthand for `retryConfig: new RetryConfig({ maxAttempts: retryAttempts })`. */
  retryAttempts?: number
  /** With `retryAttempts`: the backoff factor. Default 2. */
  retryBackoffFactor?: number
  /** Header, path and body transformers for every route and `forwardRequest`, applied first. */
  transformers?: Transformer[]
  /** The request id header: set when a request has none, sent upstream, returned to the client. Default on, `X-Request-ID`; `false` turns it off. */
  requestId?: boolean | { header: string }
  /**
   * Identity headers removed from every client request before anything else, so a client
   * cannot forge what a handler sets with `additionalHeaders`. Default: `DEFAULT_STRIPPED_HEADERS`
   * (`x-user-id`, `x-user-roles`, …); `false` keeps them.
   */
  stripIncomingHeaders?: string[] | false
  /** How long a transformer function may take (504 after). Default `'5s'`. */
  transformTimeout?: Duration
  /** Told when a transformer function throws (the client gets a bare 500); default: console.error. */
  onError?: (error: unknown) => void
  /** Where the app that mounts this gateway counts requests: a `GatewayMetrics` (a new one by default); `false` records nothing. */
  metrics?: GatewayMetrics | false
  /**
   * TLS options for `https://` upstreams (Node's `tls.connect` names): `ca` (replaces the
   * platform's roots), `cert` + `key` (mutual TLS), `servername`, `rejectUnauthorized`.
   * A load balancer's or a route's `tls` replaces this one as a whole.
   */
  tls?: UpstreamTlsOptions
  /**
   * HTTP/2 to upstreams: by prior knowledge (h2c) on `http://`, ALPN `h2` only on
   * `https://`. Default false: `http://` is HTTP/1.1 and `https://` offers both by ALPN
   * (the upstream picks). A load balancer's or a route's `http2` wins.
   */
  http2?: boolean
}

export { DEFAULT_STRIPPED_HEADERS }

export interface GatewayRouteOptions {
  /** Where to send requests: a load balancer… */
  loadBalancer?: LoadBalancer
  /** …or one upstream URL. Without either, the gateway's `loadBalancer`. */
  upstream?: string
  /** Methods this route answers; all by default. A GET route also answers HEAD. */
  methods?: string[]
  /** Remove the part of the path before `{…:path}` before forwarding. Default false. */
  stripPath?: boolean
  /** Send the client's `Host` header instead of the upstream's. Default false. */
  preserveHost?: boolean
  /** This route's upstream timeout (all attempts together); the gateway's by default. */
  timeout?: Duration
  /** This route's retries; the gateway's by default, `false` for none. */
  retryConfig?: RetryConfig | false
  /** Shorthand: the gateway's retry rules (or the defaults) with `maxRetries + 1` attempts. */
  maxRetries?: number
  /** This route's transformers, applied after the gateway's and the load balancer's. */
  transformers?: Transformer[]
  /** A regular expression rewrite of the upstream path: `{ pattern: '^/v1/(.*)$', replacement: '/v2/$1' }`. */
  pathRewrite?: { pattern: string | RegExp; replacement: string }
  /** Headers set on the upstream request (after the transformers). */
  headersToAdd?: Record<string, string>
  /** Headers removed from the upstream request. */
  headersToRemove?: string[]
  /** This route's upstream TLS options; replaces the load balancer's and the gateway's as a whole. */
  tls?: UpstreamTlsOptions
  /** HTTP/2 to this route's upstreams (see `GatewayOptions.http2`); the load balancer's or gateway's by default. */
  http2?: boolean
}

/** A breaker's state, for status pages. */
export type CircuitBreakerStatus = NonNullable<UpstreamStatus['breaker']>

const OWNER = 'Gateway'
const KNOWN = [
  'loadBalancer',
  'timeout',
  'connectTimeout',
  'connectionPoolSize',
  'maxConnectionsPerHost',
  'keepAliveTimeout',
  'connectionPoolTimeout',
  'upgradeIdleTimeout',
  'circuitBreaker',
  'retryConfig',
  'retryAttempts',
  'retryBackoffFactor',
  'transformers',
  'requestId',
  'stripIncomingHeaders',
  'transformTimeout',
  'onError',
  'metrics',
  'tls',
  'http2',
] as const
const ROUTE_KNOWN = [
  'loadBalancer',
  'upstream',
  'methods',
  'stripPath',
  'preserveHost',
  'timeout',
  'retryConfig',
  'maxRetries',
  'transformers',
  'pathRewrite',
  'headersToAdd',
  'headersToRemove',
  'tls',
  'http2',
] as const

function loadBalancerOption(owner: string, value: unknown): LoadBalancer | undefined {
  if (value === undefined || value instanceof LoadBalancer) return value
  throw new ConfigError('loadBalancer', `${owner}: option "loadBalancer" must be a LoadBalancer, got ${show(value)}`)
}

/** Forwards requests to upstream servers through one pooled client. */
export class Gateway {
  readonly loadBalancer: LoadBalancer | undefined
  readonly timeoutMs: number
  readonly circuitBreaker: CircuitBreaker | undefined
  readonly retryConfig: RetryConfig | undefined
  readonly transformers: readonly Transformer[]
  /** Requests, statuses, latencies, upstream health and breakers (see `GatewayMetrics`). */
  readonly metrics: GatewayMetrics | undefined
  #requestId: string | undefined
  #stripIncoming: string[]
  #transformTimeoutMs: number
  #onError: (error: unknown) => void
  /** The transformations of `forwardRequest`, per load balancer (gateway + balancer layers). */
  #forwardTransforms = new Map<NativeLoadBalancer, NativeTransforms>()
  #client: NativeClient
  /** The client's transports, one per distinct upstream `tls`/`http2`. */
  #transports: Transports
  #tls: TlsConfig | undefined
  #http2: boolean | undefined
  #routes: RouteDefinition[] = []
  #router: GatewayRouter
  /** The one-server balancers of `upstream:` routes, by URL (one breaker per server). */
  #upstreams = new Map<string, NativeLoadBalancer>()
  /** Every balancer this gateway forwards to, for status and close. */
  #balancers = new Map<NativeLoadBalancer, LoadBalancer | undefined>()

  constructor(options: GatewayOptions = {}) {
    const opts = object(OWNER, options)
    knownKeys(OWNER, opts, KNOWN)
    this.loadBalancer = loadBalancerOption(OWNER, opts.loadBalancer)
    this.timeoutMs = duration(OWNER, 'timeout', opts.timeout, 30_000)
    const clientOptions = {
      connectTimeoutMs: duration(OWNER, 'connectTimeout', opts.connectTimeout, 10_000),
      keepAliveTimeoutMs: duration(OWNER, 'keepAliveTimeout', opts.keepAliveTimeout, 4_000),
      connectionPoolSize: positiveInt(OWNER, 'connectionPoolSize', opts.connectionPoolSize, 100),
      maxConnectionsPerHost: positiveInt(OWNER, 'maxConnectionsPerHost', opts.maxConnectionsPerHost),
      connectionPoolTimeoutMs: duration(OWNER, 'connectionPoolTimeout', opts.connectionPoolTimeout, 30_000),
      upgradeIdleTimeoutMs: duration(OWNER, 'upgradeIdleTimeout', opts.upgradeIdleTimeout, 60_000),
    }
    this.circuitBreaker = breakerOption(OWNER, opts.circuitBreaker)
    this.retryConfig = retryOption(opts)
    this.transformers = transformersOption(OWNER, opts.transformers)
    if (opts.metrics !== undefined && opts.metrics !== false && !(opts.metrics instanceof GatewayMetrics)) {
      throw new ConfigError('metrics', `${OWNER}: option "metrics" must be a GatewayMetrics or false, got ${show(opts.metrics)}`)
    }
    this.metrics = opts.metrics === false ? undefined : ((opts.metrics as GatewayMetrics | undefined) ?? new GatewayMetrics())
    this.#router = new GatewayRouter(this.#routes, () => this.close(), this.metrics)
    this.#requestId = requestIdOption(opts.requestId)
    this.#stripIncoming = stripOption(opts.stripIncomingHeaders)
    this.#transformTimeoutMs = positiveDuration(OWNER, 'transformTimeout', opts.transformTimeout, 5_000)
    if (opts.onError !== undefined && typeof opts.onError !== 'function') {
      throw new ConfigError('onError', `${OWNER}: option "onError" must be a function, got ${show(opts.onError)}`)
    }
    this.#onError = (opts.onError as ((e: unknown) => void) | undefined) ?? reportTransformError
    const { NativeClient } = nativeBinding()
    this.#tls = tlsOption(OWNER, opts.tls)
    this.#http2 = http2Option(OWNER, opts.http2)
    this.#client = native(() => new NativeClient(clientOptions))
    this.#transports = new Transports(this.#client)
    // Built now, so bad PEM fails here rather than at the first route or request.
    this.#transports.get(OWNER, this.#tls, this.#http2 ?? false)
    if (this.metrics) GatewayMetrics.watchClient(this.metrics, this.#client)
    if (this.loadBalancer) this.#use(this.loadBalancer)
  }

  /** Registers a balancer this gateway forwards to; gives it the gateway's breaker if it has none. */
  #use(lb: LoadBalancer | NativeLoadBalancer): NativeLoadBalancer {
    const nativeLb = lb instanceof LoadBalancer ? LoadBalancer.nativeOf(lb) : lb
    if (!this.#balancers.has(nativeLb)) {
      this.#balancers.set(nativeLb, lb instanceof LoadBalancer ? lb : undefined)
      // Its health checks go with this gateway's tls/http2 where it sets none itself.
      if (lb instanceof LoadBalancer) LoadBalancer.adopt(lb, OWNER, this.#tls, this.#http2)
      if (this.metrics) GatewayMetrics.watch(this.metrics, nativeLb, lb instanceof LoadBalancer ? lb : undefined)
      const breaker = this.circuitBreaker
      if (breaker && !nativeLb.hasCircuitBreaker()) native(() => nativeLb.setCircuitBreaker(breaker.native))
    }
    return nativeLb
  }

  /** Every upstream server's state (availability, in-flight requests, latency, health, breaker), by URL. */
  getUpstreamStatus(): Record<string, UpstreamStatus> {
    const out: Record<string, UpstreamStatus> = {}
    for (const lb of this.#balancers.keys()) {
      for (const status of lb.status()) out[status.url] = status
    }
    return out
  }

  /** The circuit breaker of every upstream server that has one, by URL: state, counts, time until half-open. */
  getCircuitBreakerStatus(): Record<string, CircuitBreakerStatus> {
    const out: Record<string, CircuitBreakerStatus> = {}
    for (const [url, status] of Object.entries(this.getUpstreamStatus())) {
      if (status.breaker) out[url] = status.breaker
    }
    return out
  }

  /** Stops the health checks and discovery of the load balancers this gateway uses (idempotent). */
  close(): void {
    for (const lb of this.#balancers.values()) lb?.close()
  }

  /**
   * Adds a route forwarded natively (no JavaScript per request). Mount the routes with
   * `app.includeRouter(gateway.getRouter(), { prefix })`.
   */
  route(path: string, options: GatewayRouteOptions = {}): this {
    const owner = `Gateway.route(${show(path)})`
    routePattern(owner, 'path', path)
    const opts = object(owner, options)
    knownKeys(owner, opts, ROUTE_KNOWN)
    const lb = loadBalancerOption(owner, opts.loadBalancer)
    if (lb && opts.upstream !== undefined) {
      throw new ConfigError('upstream', `${owner}: give "loadBalancer" or "upstream", not both`)
    }
    let balancer: NativeLoadBalancer
    if (opts.upstream !== undefined) {
      const url = upstreamUrl(owner, 'upstream', opts.upstream)
      let single = this.#upstreams.get(url)
      if (!single) {
        const { NativeLoadBalancer } = nativeBinding()
        single = native(() => new NativeLoadBalancer([url], [], 'round_robin', null))
        this.#upstreams.set(url, single)
      }
      balancer = this.#use(single)
    } else {
      const chosen = lb ?? this.loadBalancer
      if (!chosen) {
        throw new ConfigError(
          'loadBalancer',
          `${owner}: needs a "loadBalancer" or an "upstream" (the Gateway has no default loadBalancer)`,
        )
      }
      balancer = this.#use(chosen)
    }
    let retry = opts.retryConfig === false ? undefined : (retryConfigValue(owner, opts.retryConfig) ?? this.retryConfig)
    if (opts.maxRetries !== undefined) {
      if (opts.retryConfig !== undefined) {
        throw new ConfigError('maxRetries', `${owner}: give "retryConfig" or "maxRetries", not both`)
      }
      const n = opts.maxRetries
      if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > 100) {
        throw new ConfigError('maxRetries', `${owner}: option "maxRetries" must be a whole number from 0 to 100, got ${show(n)}`)
      }
      retry = n === 0 ? undefined : RetryConfig.withAttempts(retry, n + 1)
    }
    const routeHeaders =
      opts.headersToAdd !== undefined || opts.headersToRemove !== undefined
        ? compileHeaderRules(owner, { addHeaders: opts.headersToAdd, removeHeaders: opts.headersToRemove }, '', {
            add: 'headersToAdd',
            remove: 'headersToRemove',
            modify: 'headersToAdd',
          })
        : undefined
    if (routeHeaders && (routeHeaders.dynamicAdd.length > 0 || routeHeaders.dynamicModify.length > 0)) {
      throw new ConfigError('headersToAdd', `${owner}: option "headersToAdd" takes string values; use a HeaderTransformer for functions`)
    }
    const [transport, http2] = this.#transportFor(
      owner,
      lb ?? (opts.upstream === undefined ? this.loadBalancer : undefined),
      tlsOption(owner, opts.tls),
      http2Option(owner, opts.http2),
    )
    const preserveHost = boolean(owner, 'preserveHost', opts.preserveHost, false)
    if (preserveHost && http2) throw preserveHostWithHttp2(owner)
    const rewrite = rewriteOption(owner, 'pathRewrite', opts.pathRewrite)
    if (rewrite) checkPathRule(owner, 'pathRewrite', { mappings: [], rewritePattern: rewrite.pattern, rewriteReplacement: rewrite.replacement })
    const transforms = this.#transformsFor(
      [...(lb ?? (opts.upstream === undefined ? this.loadBalancer : undefined))?.transformers ?? [], ...transformersOption(owner, opts.transformers)],
      routeHeaders,
      rewrite && { mappings: [], rewritePattern: rewrite.pattern, rewriteReplacement: rewrite.replacement },
    )
    this.#routes.push({
      kind: 'proxy',
      path,
      methods: methods(owner, 'methods', opts.methods),
      balancer,
      client: this.#client,
      retry: RetryConfig.policyOf(retry),
      transforms,
      stripPath: boolean(owner, 'stripPath', opts.stripPath, false),
      preserveHost,
      timeoutMs: duration(owner, 'timeout', opts.timeout, this.timeoutMs),
      transport,
    })
    return this
  }

  /**
   * The transport for the most specific `tls` and `http2` (route, then load balancer,
   * then gateway; undefined for the defaults: no TLS options, no HTTP/2), and whether it
   * is HTTP/2 only.
   */
  #transportFor(owner: string, lb: LoadBalancer | undefined, tls?: TlsConfig, http2?: boolean): [NativeTransport | undefined, boolean] {
    const fromLb = lb ? LoadBalancer.protocolOf(lb) : undefined
    const h2 = http2 ?? fromLb?.http2 ?? this.#http2 ?? false
    return [this.#transports.get(owner, tls ?? fromLb?.tls ?? this.#tls, h2), h2]
  }

  /**
   * Forwards a handler's request to one of `loadBalancer`'s servers (the gateway's by
   * default). Resolves when the upstream's response head arrives; return the result from
   * the handler and the body streams to the client from Rust. Rejects with an
   * `UpstreamError` (code `VG_UPSTREAM_CONNECT`, `VG_UPSTREAM_TIMEOUT`, …) that, if the
   * handler lets it escape, answers the client with the same status as a pure route.
   */
  async forwardRequest(request: Request, loadBalancer?: LoadBalancer, options: ForwardOptions = EMPTY): Promise<ForwardedResponse> {
    const owner = 'Gateway.forwardRequest'
    if (!(request instanceof Request)) {
      throw new ConfigError('request', `${owner}: expected the handler's request, got ${show(request)}`)
    }
    const lb = loadBalancerOption(owner, loadBalancer) ?? this.loadBalancer
    if (!lb) {
      throw new ConfigError('loadBalancer', `${owner}: needs a loadBalancer (the Gateway has no default loadBalancer)`)
    }
    const select = LoadBalancer.selectorOf(lb)
    let server: string | undefined
    if (select) {
      // The strategy chooses among the servers that may take the request now.
      const available = LoadBalancer.nativeOf(lb).availableServers()
      server = await select(available.length > 0 ? available : lb.upstreamServers, {
        ...request.context,
        method: request.method,
        path: request.path,
        headers: headerRecord(request.rawHeaders.flat()),
        client: request.client,
      })
    }
    const nativeLb = this.#use(lb)
    let transforms = this.#forwardTransforms.get(nativeLb)
    if (!transforms) {
      transforms = this.#transformsFor(lb.transformers, undefined, undefined)
      this.#forwardTransforms.set(nativeLb, transforms)
    }
    const [transport, http2] = this.#transportFor(owner, lb)
    if (http2 && options !== EMPTY && (options as ForwardOptions | null)?.preserveHost === true) throw preserveHostWithHttp2(owner)
    return forwardWith(owner, request, nativeLb, this.#client, RetryConfig.policyOf(this.retryConfig), transforms, options, this.timeoutMs, server, transport)
  }

  /** The native transformations of the gateway's layer, then `more` (balancer, route). */
  #transformsFor(
    more: readonly Transformer[],
    routeHeaders: ReturnType<typeof compileHeaderRules> | undefined,
    routePath: { mappings: []; rewritePattern: string; rewriteReplacement: string } | undefined,
  ): NativeTransforms {
    return nativeTransforms({
      stripIncoming: this.#stripIncoming,
      requestId: this.#requestId,
      layers: [...this.transformers, ...more],
      routeHeaders,
      routePath,
      timeoutMs: this.#transformTimeoutMs,
      onError: this.#onError,
    })
  }

  /** @internal */
  static clientOf(gateway: Gateway): NativeClient {
    return gateway.#client
  }

  /** @internal The gateway layer's transformations alone (what `forwardTo` applies). */
  static transformsOf(gateway: Gateway): NativeTransforms {
    return gateway.#transformsFor([], undefined, undefined)
  }

  /** The gateway's routes, to mount with `app.includeRouter(router, { prefix })`. */
  getRouter(): GatewayRouter {
    return this.#router
  }
}

/**
 * `preserveHost` with `http2: true`: HTTP/2 names the upstream in `:authority`, and a
 * `host` that differs from it is not allowed (RFC 9113 §8.3.1).
 */
function preserveHostWithHttp2(owner: string): ConfigError {
  return new ConfigError(
    'preserveHost',
    `${owner}: option "preserveHost" cannot be used with http2: true: an HTTP/2 request names the upstream in :authority, ` +
      "and a Host header that differs from it is not allowed (RFC 9113 §8.3.1); the client's host is in X-Forwarded-Host",
  )
}

/** @internal Shared by `forwardRequest` and `forwardTo`. */
export async function forwardWith(
  owner: string,
  request: Request,
  balancer: NativeLoadBalancer,
  client: NativeClient,
  retry: NativeRetryPolicy,
  transforms: NativeTransforms,
  options: ForwardOptions,
  defaultTimeoutMs: number,
  server: string | undefined,
  transport?: NativeTransport,
): Promise<ForwardedResponse> {
  let nativeOptions: NativeForwardOptions
  if (options === EMPTY || (options && Object.keys(options).length === 0)) {
    // The common call, forwardRequest(request): nothing to check.
    nativeOptions = { server, timeoutMs: defaultTimeoutMs, additionalHeaders: [], preserveHost: false }
  } else {
    const opts = object(owner, options)
    knownKeys(owner, opts, ['additionalHeaders', 'timeout', 'preserveHost'])
    nativeOptions = {
      server,
      timeoutMs: duration(owner, 'timeout', opts.timeout, defaultTimeoutMs),
      additionalHeaders: flatHeaderOption(owner, opts.additionalHeaders),
      preserveHost: boolean(owner, 'preserveHost', opts.preserveHost, false),
    }
  }
  const { bridge, id } = Request.handleOf(request)
  const head = await bridge.forward(id, balancer, client, retry, transforms, nativeOptions, transport)
  return new ForwardedResponse(request, head)
}
