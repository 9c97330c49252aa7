import type { GatewayMetrics } from './metrics/gateway-metrics'
import type { NativeClient, NativeLoadBalancer, NativeRetryPolicy, NativeTransforms, NativeTransport } from './native'

/** One native proxy route, as the data plane will get it. */
export interface ProxyRouteDefinition {
  readonly kind: 'proxy'
  readonly path: string
  readonly methods: string[] | undefined
  readonly balancer: NativeLoadBalancer
  readonly client: NativeClient
  readonly retry: NativeRetryPolicy
  readonly transforms: NativeTransforms
  readonly stripPath: boolean
  readonly preserveHost: boolean
  readonly timeoutMs: number
  /** Upstream TLS options and HTTP/2; undefined for the client's defaults. */
  readonly transport?: NativeTransport
}

export type RouteDefinition = ProxyRouteDefinition

/**
 * A group of routes to mount on an app with `app.includeRouter(router, { prefix })`.
 * `gateway.getRouter()` returns the gateway's; routes added later are included too,
 * until the app listens.
 */
export class GatewayRouter {
  #routes: RouteDefinition[]
  #onClose: () => void
  #metrics: GatewayMetrics | undefined

  /** @internal `onClose` runs when an app that included this router closes. */
  constructor(routes: RouteDefinition[], onClose: () => void = () => {}, metrics?: GatewayMetrics) {
    this.#routes = routes
    this.#onClose = onClose
    this.#metrics = metrics
  }

  /** @internal The metrics of the gateway behind this router. */
  static metricsOf(router: GatewayRouter): GatewayMetrics | undefined {
    return router.#metrics
  }

  /** @internal */
  static closeOf(router: GatewayRouter): void {
    router.#onClose()
  }

  get routes(): readonly RouteDefinition[] {
    return this.#routes
  }
}
