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

/** The request head handed to the dispatcher; headers and params are flat pairs. */
export interface RequestHead {
  method: string
  url: string
  path: string
  query: string
  headers: string[]
  params: string[]
  clientAddress: string
  clientPort: number
  httpVersion: string
}

export interface HandlerReply {
  status: number
  headers: string[]
  body?: Buffer
  forwarded: boolean
}

export interface ForwardedHead {
  status: number
  headers: string[]
}

export interface NativeForwardOptions {
  server?: string
  timeoutMs: number
  additionalHeaders: string[]
  preserveHost: boolean
}

export interface NativeRequest {
  readBody(): Promise<Buffer>
  forward(balancer: NativeLoadBalancer, client: NativeClient, options: NativeForwardOptions): Promise<ForwardedHead>
}

export type Dispatcher = (routeId: number, head: RequestHead, request: NativeRequest) => Promise<HandlerReply>

export interface NativeProxyRouteOptions {
  stripPath: boolean
  preserveHost: boolean
  timeoutMs: number
}

export interface SelectContext {
  method: string
  path: string
  headers: string[]
  clientAddress: string
  clientPort: number
}

export interface NativeLoadBalancer {
  setServers(servers: string[]): void
  servers(): string[]
  setSelector(select: (servers: string[], ctx: SelectContext) => Promise<string>, timeoutMs: number): void
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
  setDispatcher(dispatcher: Dispatcher): void
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
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      binding = require(join(__dirname, '..', '..', 'binding.cjs')) as NativeBinding
    } catch (err) {
      throw fromNative(err)
    }
  }
  return binding
}
