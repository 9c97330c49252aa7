import type { NativeClient, NativeLoadBalancer } from './native'

/** One native proxy route, as the data plane will get it. */
export interface ProxyRouteDefinition {
  readonly kind: 'proxy'
  readonly path: string
  readonly methods: string[] | undefined
  readonly balancer: NativeLoadBalancer
  readonly client: NativeClient
  readonly stripPath: boolean
  readonly preserveHost: boolean
  readonly timeoutMs: number
}

export type RouteDefinition = ProxyRouteDefinition

/**
 * A group of routes to mount on an app with `app.includeRouter(router, { prefix })`.
 * `gateway.getRouter()` returns the gateway's; routes added later are included too,
 * until the app listens.
 */
export class GatewayRouter {
  #routes: RouteDefinition[]

  /** @internal */
  constructor(routes: RouteDefinition[]) {
    this.#routes = routes
  }

  get routes(): readonly RouteDefinition[] {
    return this.#routes
  }
}
