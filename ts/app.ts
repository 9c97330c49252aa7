import { isIP } from 'node:net'
import { ConfigError, nativeAsync, native } from './errors'
import { nativeBinding, type NativeApp } from './native'
import { duration, knownKeys, object, positiveInt, show, type Duration } from './options'
import { GatewayRouter, type RouteDefinition } from './router'

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
}

export interface ListenOptions {
  /** Port to bind; 0 picks a free one. Default 8000. */
  port?: number
  /** IP address to bind (`'localhost'` means 127.0.0.1). Default `'127.0.0.1'`. */
  host?: string
}

export interface AddressInfo {
  host: string
  port: number
  /** `http://host:port`, ready for a client. */
  url: string
}

const OWNER = 'Velithon'
const KNOWN = ['workerThreads', 'requestHeaderTimeout', 'shutdownTimeout', 'trustedProxies'] as const
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
  #options: { workerThreads: number; requestHeaderTimeoutMs: number; shutdownTimeoutMs: number; trustedProxies: string[] }
  #routes: { prefix: string; router: GatewayRouter }[] = []
  #native: NativeApp | undefined
  #address: AddressInfo | undefined
  #keepAlive: NodeJS.Timeout | undefined
  #closing: Promise<void> | undefined

  constructor(options: VelithonOptions = {}) {
    const opts = object(OWNER, options)
    knownKeys(OWNER, opts, KNOWN)
    this.#options = {
      workerThreads: positiveInt(OWNER, 'workerThreads', opts.workerThreads, 0) ?? 0,
      requestHeaderTimeoutMs: duration(OWNER, 'requestHeaderTimeout', opts.requestHeaderTimeout, 30_000),
      shutdownTimeoutMs: duration(OWNER, 'shutdownTimeout', opts.shutdownTimeout, 10_000),
      trustedProxies: trustedProxies(opts.trustedProxies),
    }
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
    this.#routes.push({ prefix, router })
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
    knownKeys(`${OWNER}.listen`, opts, ['port', 'host'])
    const port = opts.port ?? 8000
    if (typeof port !== 'number' || !Number.isInteger(port) || port < 0 || port > 65535) {
      throw new ConfigError('port', `${OWNER}.listen: option "port" must be a whole number from 0 to 65535, got ${show(port)}`)
    }
    const hostOption = opts.host ?? '127.0.0.1'
    const host = hostOption === 'localhost' ? '127.0.0.1' : hostOption
    if (typeof host !== 'string' || isIP(host) === 0) {
      throw new ConfigError('host', `${OWNER}.listen: option "host" must be an IP address or 'localhost', got ${show(hostOption)}`)
    }

    const { NativeApp } = nativeBinding()
    const app = native(() => new NativeApp(this.#options))
    for (const { prefix, router } of this.#routes) {
      for (const route of router.routes) addRoute(app, prefix, route)
    }
    this.#native = app
    const bound = await nativeAsync(() => app.listen(host, port))
    // The listener lives in Rust, invisible to Node's event loop: a referenced timer
    // keeps the process alive while listening; close() releases it.
    this.#keepAlive = setInterval(() => {}, 1 << 30)
    const urlHost = bound.host.includes(':') ? `[${bound.host}]` : bound.host
    this.#address = { host: bound.host, port: bound.port, url: `http://${urlHost}:${bound.port}` }
    return this.#address
  }

  /**
   * Stops accepting connections, lets in-flight requests finish (up to `timeout`,
   * default the app's `shutdownTimeout`), then closes the rest. Safe to call twice.
   */
  close(options: { timeout?: Duration } = {}): Promise<void> {
    if (!this.#closing) {
      const graceMs = duration(`${OWNER}.close`, 'timeout', object(`${OWNER}.close`, options).timeout, this.#options.shutdownTimeoutMs)
      const app = this.#native
      this.#closing = (async () => {
        try {
          if (app) await nativeAsync(() => app.close(graceMs))
        } finally {
          clearInterval(this.#keepAlive)
          this.#keepAlive = undefined
          this.#address = undefined
        }
      })()
    }
    return this.#closing
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
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
    app.addProxyRoute(path, route.methods, route.balancer, route.client, {
      stripPath: route.stripPath,
      preserveHost: route.preserveHost,
      timeoutMs: route.timeoutMs,
    }),
  )
}
