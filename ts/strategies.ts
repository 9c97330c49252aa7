/**
 * Load-balancing strategies. Built-in strategies run in Rust and never call into
 * JavaScript. Subclass `LoadBalancingStrategy` and override `selectServer` for your own
 * rule: it is called for every request (from pure routes through the callback bridge,
 * from `forwardRequest` directly), may be async, and when it throws, times out or
 * answers with a server that is not in the list, round robin picks instead (counted in
 * `loadBalancer.strategyFallbacks`, reported once through the balancer's `onError`).
 */

/** What a strategy knows of the request. `forwardRequest` adds the handler's `request.context` keys. */
export interface RequestContext {
  method: string
  path: string
  /** Lower-case names; repeated headers joined with ', '. */
  headers: Record<string, string>
  client: { address: string; port: number }
  [key: string]: unknown
}

export abstract class LoadBalancingStrategy {
  /** Picks one of `servers` (URLs as configured). */
  abstract selectServer(servers: string[], requestContext: RequestContext): string | Promise<string>

  /** @internal The native strategy behind a built-in one; undefined for user strategies. */
  get nativeKind(): string | undefined {
    return undefined
  }
}

/** Each server in turn, in the order given. Runs in Rust. */
export class RoundRobinStrategy extends LoadBalancingStrategy {
  #next = 0

  override get nativeKind(): string | undefined {
    // A subclass with its own selectServer is a user strategy, run in JS.
    return this.selectServer === RoundRobinStrategy.prototype.selectServer ? 'round_robin' : undefined
  }

  /** The same rule in JS, for calling it yourself; the gateway uses the native one. */
  selectServer(servers: string[]): string {
    return servers[this.#next++ % servers.length]
  }
}
