import { isIP } from 'node:net'
import { ConfigError, callHook, nativeAsync, native } from './errors'
import { Request } from './http/request'
import { errorReply, toReply } from './http/response'
import { HandlerBridge } from './bridge'
import { nativeBinding, type Dispatch, type HandlerReply, type NativeApp } from './native'
import { boolean, duration, knownKeys, methods, object, positiveInt, routePattern, show, type Duration } from './options'
import { GatewayRouter, type RouteDefinition } from './router'
import { GatewayMetrics } from './metrics/gateway-metrics'
import { MetricsMiddleware } from './metrics/metrics-middleware'
import { RateLimitMiddleware } from './metrics/rate-limit-middleware'
import { installMiddleware } from './metrics/install'
import { listenTls, tlsError, type ListenTlsOptions } from './listen-tls'

/** What a handler may return: a `Response`, `JSONResponse`, the result of
 * `forwardRequest`/`forwardTo`, a string or Buffer, a plain value (sent as JSON), or
 * nothing (204). */
export type HandlerResult = unknown
export type Handler = (request: Request) => HandlerResult | Promise<HandlerResult>

/** Where an error a handler let escape is reported (the client gets a JSON 500). */
export type ErrorHook = (error: unknown, request: Request) => void

export interface VelithonOptions {
  /** Data-plane threads; one per core by default. */
  workerThreads?: number
  /** How long a client may take to send a request head (slowloris guard). Default `'30s'`. */
  requestHeaderTimeout?: Duration
  /** How long `close()` lets in-flight requests finish. Default `'10s'`. */
  shutdownTimeout?: Duration
  /**
   * Peers whose `X-Forwarded-*` headers are believed (addresses or CIDR blocks). From
   * anyone else those headers are replaced. Default: none.
   */
  trustedProxies?: string[]
  /** How long a JS handler may take before the client gets 504. Default `'30s'`. */
  handlerTimeout?: Duration
  /** The most a handler may read of a request body (413 beyond). Default 10 MiB. */
  maxBodySize?: number
  /** Called with every error a handler throws (default: printed with console.error). */
  onError?: ErrorHook
  /** What every request goes through: `MetricsMiddleware`, `RateLimitMiddleware`. */
  middleware?: Array<MetricsMiddleware | RateLimitMiddleware>
  /** Propagate W3C `traceparent` upstream, making one when a request has none (or a malformed one). Default false. */
  traceparent?: boolean
}

export interface ListenOptions {
  /** Port to bind; 0 picks a free one. Default 8000. */
  port?: number
  /** IP address to bind (`'localhost'` means 127.0.0.1). Default `'127.0.0.1'`. */
  host?: string
  /**
   * Serve HTTPS with this certificate and key (PEM). ALPN offers HTTP/2 and HTTP/1.1;
   * `app.reloadTls()` swaps the certificate without a restart. Default: plain HTTP
   * (which also speaks HTTP/2 to clients with prior knowledge, h2c).
   */
  tls?: ListenTlsOptions
}

export interface AddressInfo {
  host: string
  port: number
  /** `http://host:port` (`https://…` with TLS), ready for a client. */
  url: string
}

const OWNER = 'Velithon'

/** Apps that are listening: referenced here until close(). */
const LISTENING = new Set<Velithon>()
const KNOWN = [
  'workerThreads',
  'requestHeaderTimeout',
  'shutdownTimeout',
  'trustedProxies',
  'handlerTimeout',
  'maxBodySize',
  'onError',
  'middleware',
  'traceparent',
] as const

type AppRoute =
  | { kind: 'router'; prefix: string; router: GatewayRouter }
  | { kind: 'handler'; path: string; methods: string[] | undefined; handler: Handler }

function middlewareOption(value: unknown): Array<MetricsMiddleware | RateLimitMiddleware> {
  if (value === undefined) return []
  const ok = Array.isArray(value) && value.every((m) => m instanceof MetricsMiddleware || m instanceof RateLimitMiddleware)
  if (!ok) {
    throw new ConfigError('middleware', `${OWNER}: option "middleware" must be an array of MetricsMiddleware and RateLimitMiddleware, got ${show(value)}`)
  }
  const list = value as Array<MetricsMiddleware | RateLimitMiddleware>
  for (const kind of [MetricsMiddleware, RateLimitMiddleware]) {
    if (list.filter((m) => m instanceof kind).length > 1) {
      throw new ConfigError('middleware', `${OWNER}: option "middleware" has more than one ${kind.name}`)
    }
  }
  return [...list]
}

function defaultOnError(error: unknown, request: Request): void {
  console.error(`velithon-gateway: the handler of ${request.method} ${request.path} failed:`, error)
}
const CIDR = /^([^/]+)(?:\/(\d{1,3}))?$/

function trustedProxies(value: unknown): string[] {
  if (value === undefined) return []
  if (!Array.isArray(value)) {
    throw new ConfigError('trustedProxies', `${OWNER}: option "trustedProxies" must be an array of IPs or CIDR blocks, got ${show(value)}`)
  }
  return value.map((entry) => {
    const m = typeof entry === 'string' ? CIDR.exec(entry) : null
    const family = m ? isIP(m[1]) : 0
    const bits = m?.[2] === undefined ? 0 : Number(m[2])
    if (!m || family === 0 || bits > (family === 4 ? 32 : 128)) {
      throw new ConfigError('trustedProxies', `${OWNER}: option "trustedProxies" has ${show(entry)}, which is not an IP address or CIDR block`)
    }
    return entry as string
  })
}

/**
 * The app: routes and a listener. The listener and every native route run in the Rust
 * data plane; `listen()` starts it and `close()` drains and stops it.
 */
export class Velithon {
  #options: {
    workerThreads: number
    requestHeaderTimeoutMs: number
    shutdownTimeoutMs: number
    trustedProxies: string[]
    handlerTimeoutMs: number
    maxBodySize: number
  }
  #onError: ErrorHook
  #middleware: Array<MetricsMiddleware | RateLimitMiddleware>
  #traceparent: boolean
  #metrics: GatewayMetrics | undefined
  #routes: AppRoute[] = []
  #native: NativeApp | undefined
  #address: AddressInfo | undefined
  /** Whether the listener serves TLS (so `reloadTls` has something to reload). */
  #tls = false
  #keepAlive: NodeJS.Timeout | undefined
  #listening: Promise<unknown> | undefined
  #closing: Promise<void> | undefined

  constructor(options: VelithonOptions = {}) {
    const opts = object(OWNER, options)
    knownKeys(OWNER, opts, KNOWN)
    this.#options = {
      workerThreads: positiveInt(OWNER, 'workerThreads', opts.workerThreads, 0) ?? 0,
      requestHeaderTimeoutMs: duration(OWNER, 'requestHeaderTimeout', opts.requestHeaderTimeout, 30_000),
      shutdownTimeoutMs: duration(OWNER, 'shutdownTimeout', opts.shutdownTimeout, 10_000),
      trustedProxies: trustedProxies(opts.trustedProxies),
      handlerTimeoutMs: duration(OWNER, 'handlerTimeout', opts.handlerTimeout, 30_000),
      maxBodySize: positiveInt(OWNER, 'maxBodySize', opts.maxBodySize, 10 * 1024 * 1024),
    }
    if (opts.onError !== undefined && typeof opts.onError !== 'function') {
      throw new ConfigError('onError', `${OWNER}: option "onError" must be a function, got ${show(opts.onError)}`)
    }
    this.#onError = (opts.onError as ErrorHook | undefined) ?? defaultOnError
    this.#middleware = middlewareOption(opts.middleware)
    this.#traceparent = boolean(OWNER, 'traceparent', opts.traceparent, false)
  }

  /** The metrics this app records into (after `listen()`), if any. */
  get metrics(): GatewayMetrics | undefined {
    return this.#metrics
  }

  /** Request summaries the `MetricsMiddleware` collector missed because it fell behind. */
  get collectorDropped(): number {
    return this.#native?.collectorDropped() ?? 0
  }

  /**
   * Adds a route answered by a JS function. `methods` defaults to GET (which also
   * answers HEAD).
   */
  route(path: string, handler: Handler, options: { methods?: string[] } = {}): this {
    const owner = `${OWNER}.route(${show(path)})`
    this.#assertNotStarted('route')
    routePattern(owner, 'path', path)
    if (typeof handler !== 'function') {
      throw new ConfigError('handler', `${owner}: the handler must be a function, got ${show(handler)}`)
    }
    const opts = object(owner, options)
    knownKeys(owner, opts, ['methods'])
    this.#routes.push({ kind: 'handler', path, methods: methods(owner, 'methods', opts.methods) ?? ['GET'], handler })
    return this
  }

  get(path: string, handler: Handler): this {
    return this.route(path, handler, { methods: ['GET'] })
  }

  post(path: string, handler: Handler): this {
    return this.route(path, handler, { methods: ['POST'] })
  }

  put(path: string, handler: Handler): this {
    return this.route(path, handler, { methods: ['PUT'] })
  }

  patch(path: string, handler: Handler): this {
    return this.route(path, handler, { methods: ['PATCH'] })
  }

  delete(path: string, handler: Handler): this {
    return this.route(path, handler, { methods: ['DELETE'] })
  }

  head(path: string, handler: Handler): this {
    return this.route(path, handler, { methods: ['HEAD'] })
  }

  options(path: string, handler: Handler): this {
    return this.route(path, handler, { methods: ['OPTIONS'] })
  }

  /** Mounts a router (e.g. `gateway.getRouter()`) under `prefix`. */
  includeRouter(router: GatewayRouter, options: { prefix?: string } = {}): this {
    this.#assertNotStarted('includeRouter')
    if (!(router instanceof GatewayRouter)) {
      throw new ConfigError('router', `${OWNER}.includeRouter: expected a router such as gateway.getRouter(), got ${show(router)}`)
    }
    const opts = object(`${OWNER}.includeRouter`, options)
    knownKeys(`${OWNER}.includeRouter`, opts, ['prefix'])
    const prefix = opts.prefix ?? ''
    if (typeof prefix !== 'string' || (prefix !== '' && (!prefix.startsWith('/') || prefix.endsWith('/') || /[{}?#]/.test(prefix)))) {
      throw new ConfigError('prefix', `${OWNER}.includeRouter: option "prefix" must look like "/gateway" (no trailing '/'), got ${show(prefix)}`)
    }
    this.#routes.push({ kind: 'router', prefix, router })
    return this
  }

  /** The bound address while listening. */
  get address(): AddressInfo | undefined {
    return this.#address
  }

  /** Starts the data plane and binds; resolves to the bound address. */
  async listen(options: ListenOptions = {}): Promise<AddressInfo> {
    this.#assertNotStarted('listen')
    const opts = object(`${OWNER}.listen`, options)
    knownKeys(`${OWNER}.listen`, opts, ['port', 'host', 'tls'])
    const port = opts.port ?? 8000
    if (typeof port !== 'number' || !Number.isInteger(port) || port < 0 || port > 65535) {
      throw new ConfigError('port', `${OWNER}.listen: option "port" must be a whole number from 0 to 65535, got ${show(port)}`)
    }
    const hostOption = opts.host ?? '127.0.0.1'
    const host = hostOption === 'localhost' ? '127.0.0.1' : hostOption
    if (typeof host !== 'string' || isIP(host) === 0) {
      throw new ConfigError('host', `${OWNER}.listen: option "host" must be an IP address or 'localhost', got ${show(hostOption)}`)
    }
    const tls = listenTls(`${OWNER}.listen`, opts.tls)

    const { NativeApp } = nativeBinding()
    const app = native(() => new NativeApp(this.#options))
    const handlers: Handler[] = []
    for (const route of this.#routes) {
      if (route.kind === 'router') {
        for (const r of route.router.routes) addRoute(app, route.prefix, r)
      } else {
        native(() => app.addHandlerRoute(route.path, route.methods, handlers.length))
        handlers.push(route.handler)
      }
    }
    if (handlers.length > 0) {
      const bridge = new HandlerBridge(app)
      native(() => app.setHandlers(this.#dispatcher(handlers, bridge), bridge.complete))
    }
    this.#metrics = installMiddleware(app, this.#middleware, this.#traceparent, this.#routes)
    this.#native = app
    const listening = nativeAsync(() => app.listen(host, port, tls))
    this.#listening = listening
    let bound: { host: string; port: number }
    try {
      bound = await listening
    } catch (err) {
      this.#native = undefined // a failed listen (port in use, …) may be retried
      throw tlsError(`${OWNER}.listen`, err)
    }
    // The listener lives in Rust, invisible to Node's event loop: a referenced timer
    // keeps the process alive while listening, and the app stays reachable (so the
    // garbage collector cannot close a listener whose app went out of scope); close()
    // releases both.
    LISTENING.add(this)
    this.#keepAlive = setInterval(() => {}, 1 << 30)
    const urlHost = bound.host.includes(':') ? `[${bound.host}]` : bound.host
    this.#tls = tls !== undefined
    const scheme = this.#tls ? 'https' : 'http'
    this.#address = { host: bound.host, port: bound.port, url: `${scheme}://${urlHost}:${bound.port}` }
    return this.#address
  }

  /**
   * Swaps the listener's certificate and key without a restart (synchronous: the PEM is
   * parsed and checked before this returns). Connections accepted from now on get the
   * new certificate; connections already open keep theirs. If the new pair is bad, this
   * throws a `ConfigError` naming `tls.cert` or `tls.key` and the old pair stays.
   */
  reloadTls(tls: ListenTlsOptions): void {
    const owner = `${OWNER}.reloadTls`
    // `null` as the whole argument gets the same message as any other non-object.
    const pem = listenTls(owner, tls ?? null)!
    const app = this.#native
    if (!app || !this.#tls) {
      throw new ConfigError('tls', `${owner}: the app is not listening with TLS (call listen({ tls }) first)`)
    }
    try {
      native(() => app.reloadTls(pem.cert, pem.key))
    } catch (err) {
      throw tlsError(owner, err)
    }
  }

  /**
   * Stops accepting connections, lets in-flight requests finish (up to `timeout`,
   * default the app's `shutdownTimeout`), then closes the rest. Safe to call twice.
   */
  close(options: { timeout?: Duration } = {}): Promise<void> {
    if (!this.#closing) {
      let graceMs: number
      try {
        graceMs = duration(`${OWNER}.close`, 'timeout', object(`${OWNER}.close`, options).timeout, this.#options.shutdownTimeoutMs)
      } catch (err) {
        // Like listen(): a bad option rejects the Promise instead of throwing.
        return Promise.reject(err)
      }
      const app = this.#native
      const listening = this.#listening
      this.#closing = (async () => {
        try {
          // A close() during listen() waits for the listener, then closes it.
          if (listening) await listening.catch(() => undefined)
          if (app) await nativeAsync(() => app.close(graceMs))
        } finally {
          // The gateways mounted here stop their health checks and discovery.
          for (const route of this.#routes) if (route.kind === 'router') GatewayRouter.closeOf(route.router)
          LISTENING.delete(this)
          clearInterval(this.#keepAlive)
          this.#keepAlive = undefined
          this.#address = undefined
          this.#tls = false
        }
      })()
    }
    return this.#closing
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }

  /**
   * The one JS function the data plane calls for every handler route. It never throws
   * and always answers the token: with the handler's reply, or an error reply.
   */
  #dispatcher(handlers: Handler[], bridge: HandlerBridge): Dispatch {
    const onError = this.#onError
    return (token, routeId, requestId, method, url, headers, params, clientAddress, clientPort, httpVersion) => {
      const request = new Request(bridge, requestId, method, url, headers, params, clientAddress, clientPort, httpVersion)
      const answer = (reply: HandlerReply) => {
        try {
          bridge.respond(token, reply)
        } catch {
          // the client went away or the data plane stopped: nothing is waiting
        }
      }
      const fail = (err: unknown) => {
        const reply = errorReply(err)
        if (reply.status >= 500 && reply.status !== 502 && reply.status !== 503 && reply.status !== 504) {
          callHook(onError, err, request)
        }
        answer(reply)
      }
      const succeed = (result: unknown) => {
        let reply: HandlerReply
        try {
          reply = toReply(result, request)
        } catch (err) {
          fail(err)
          return
        }
        answer(reply)
      }
      try {
        const result = handlers[routeId](request)
        if (result !== null && typeof (result as PromiseLike<unknown>)?.then === 'function') {
          ;(result as PromiseLike<unknown>).then(succeed, fail)
        } else {
          succeed(result)
        }
      } catch (err) {
        fail(err)
      }
    }
  }

  #assertNotStarted(what: string): void {
    if (this.#native) {
      throw new ConfigError('app', `${OWNER}.${what}: the app has already been started; add routes before listen()`)
    }
  }
}

function addRoute(app: NativeApp, prefix: string, route: RouteDefinition): void {
  const path = prefix + route.path
  native(() =>
    app.addProxyRoute(path, route.methods, route.balancer, route.client, route.retry, route.transforms, {
      stripPath: route.stripPath,
      preserveHost: route.preserveHost,
      timeoutMs: route.timeoutMs,
    }, route.transport),
  )
}
