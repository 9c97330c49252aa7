import { ConfigError } from './errors'
import { LoadBalancer } from './load-balancer'
import { nativeBinding, type NativeClient } from './native'
import {
  boolean,
  duration,
  knownKeys,
  methods,
  object,
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
import type { NativeForwardOptions, NativeLoadBalancer } from './native'

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
  /** How long a TCP/TLS connect to an upstream may take. Default `'10s'`. */
  connectTimeout?: Duration
  /** Idle keep-alive connections kept per upstream server. Default 100. */
  connectionPoolSize?: number
  /** Concurrent connections per upstream server; unlimited by default (as undici). */
  maxConnectionsPerHost?: number
  /**
   * How long an idle pooled connection is kept. Default `'4s'` (as undici): below the
   * 5 s idle timeout of Node's and Apache's servers, so the gateway drops an idle
   * connection before the upstream closes it under a request.
   */
  keepAliveTimeout?: Duration
  /** How long a request waits for a free connection when `maxConnectionsPerHost` is reached (503 after). Default `'30s'`. */
  connectionPoolTimeout?: Duration
}

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
  /** This route's upstream timeout; the gateway's by default. */
  timeout?: Duration
}

const OWNER = 'Gateway'
const KNOWN = [
  'loadBalancer',
  'timeout',
  'connectTimeout',
  'connectionPoolSize',
  'maxConnectionsPerHost',
  'keepAliveTimeout',
  'connectionPoolTimeout',
] as const
const ROUTE_KNOWN = ['loadBalancer', 'upstream', 'methods', 'stripPath', 'preserveHost', 'timeout'] as const

function loadBalancerOption(owner: string, value: unknown): LoadBalancer | undefined {
  if (value === undefined || value instanceof LoadBalancer) return value
  throw new ConfigError('loadBalancer', `${owner}: option "loadBalancer" must be a LoadBalancer, got ${show(value)}`)
}

/** Forwards requests to upstream servers through one pooled client. */
export class Gateway {
  readonly loadBalancer: LoadBalancer | undefined
  readonly timeoutMs: number
  #client: NativeClient
  #routes: RouteDefinition[] = []
  #router = new GatewayRouter(this.#routes)

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
    }
    const { NativeClient } = nativeBinding()
    this.#client = native(() => new NativeClient(clientOptions))
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
    let balancer
    if (opts.upstream !== undefined) {
      const url = upstreamUrl(owner, 'upstream', opts.upstream)
      const { NativeLoadBalancer } = nativeBinding()
      balancer = native(() => new NativeLoadBalancer([url], 'round_robin'))
    } else {
      const chosen = lb ?? this.loadBalancer
      if (!chosen) {
        throw new ConfigError(
          'loadBalancer',
          `${owner}: needs a "loadBalancer" or an "upstream" (the Gateway has no default loadBalancer)`,
        )
      }
      balancer = LoadBalancer.nativeOf(chosen)
    }
    this.#routes.push({
      kind: 'proxy',
      path,
      methods: methods(owner, 'methods', opts.methods),
      balancer,
      client: this.#client,
      stripPath: boolean(owner, 'stripPath', opts.stripPath, false),
      preserveHost: boolean(owner, 'preserveHost', opts.preserveHost, false),
      timeoutMs: duration(owner, 'timeout', opts.timeout, this.timeoutMs),
    })
    return this
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
      server = await select(lb.upstreamServers, {
        ...request.context,
        method: request.method,
        path: request.path,
        headers: headerRecord(request.rawHeaders.flat()),
        client: request.client,
      })
    }
    return forwardWith(owner, request, LoadBalancer.nativeOf(lb), this.#client, options, this.timeoutMs, server)
  }

  /** @internal */
  static clientOf(gateway: Gateway): NativeClient {
    return gateway.#client
  }

  /** The gateway's routes, to mount with `app.includeRouter(router, { prefix })`. */
  getRouter(): GatewayRouter {
    return this.#router
  }
}

/** @internal Shared by `forwardRequest` and `forwardTo`. */
export async function forwardWith(
  owner: string,
  request: Request,
  balancer: NativeLoadBalancer,
  client: NativeClient,
  options: ForwardOptions,
  defaultTimeoutMs: number,
  server: string | undefined,
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
  const head = await bridge.forward(id, balancer, client, nativeOptions)
  return new ForwardedResponse(request, head)
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
// Visible ASCII, space and tab: values cross to Rust as text, so no obs-text bytes.
const FIELD_VALUE = /^[\t\x20-\x7e]*$/

function flatHeaderOption(owner: string, value: unknown): string[] {
  if (value === undefined) return []
  const entries: unknown[] = Array.isArray(value)
    ? value
    : value !== null && typeof value === 'object'
      ? Object.entries(value)
      : [value]
  const out: string[] = []
  for (const entry of entries) {
    const ok = Array.isArray(entry) && entry.length === 2 && typeof entry[0] === 'string' && typeof entry[1] === 'string'
    if (!ok || !TOKEN.test(entry[0]) || !FIELD_VALUE.test(entry[1])) {
      throw new ConfigError(
        'additionalHeaders',
        `${owner}: option "additionalHeaders" must map header names to string values of visible ASCII, got ${show(entry)}`,
      )
    }
    out.push(entry[0].toLowerCase(), entry[1])
  }
  return out
}
