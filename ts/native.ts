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
}

export interface NativeProxyRouteOptions {
  stripPath: boolean
  preserveHost: boolean
  timeoutMs: number
}

export interface NativeLoadBalancer {
  setServers(servers: string[]): void
  servers(): string[]
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
