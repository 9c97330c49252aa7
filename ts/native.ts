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
}

export interface NativeAppOptions {
  workerThreads: number
  requestHeaderTimeoutMs: number
  trustedProxies: string[]
  handlerTimeoutMs: number
  maxBodySize: number
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

export interface NativeLoadBalancer {
  setServers(servers: string[]): void
  servers(): string[]
  setSelector(select: (token: number, servers: string[], ctx: SelectContext) => void, timeoutMs: number): void
  completeSelect(token: number, url: string): boolean
  fallbackCount(): number
}

export interface NativeClient {
  readonly __nativeClient?: never
}

export interface NativeApp {
  addProxyRoute(
    pattern: string,
    methods: string[] | undefined | null,
    balancer: NativeLoadBalancer,
    client: NativeClient,
    options: NativeProxyRouteOptions,
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
    options: NativeForwardOptions,
  ): void
  listen(host: string, port: number): Promise<{ host: string; port: number }>
  close(graceMs: number): Promise<void>
}

export interface NativeBinding {
  NativeLoadBalancer: new (servers: string[], strategy: string) => NativeLoadBalancer
  NativeClient: new (options: NativeClientOptions) => NativeClient
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
