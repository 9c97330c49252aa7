/**
 * Load-balancing strategies. Built-in strategies run in Rust and never call into
 * JavaScript. Subclass `LoadBalancingStrategy` and override `selectServer` for your own
 * rule: it is called for every request (from pure routes through the callback bridge,
 * from `forwardRequest` directly), may be async, and when it throws, times out or
 * answers with a server that is not in the list, round robin picks instead (counted in
 * `loadBalancer.strategyFallbacks`, reported once through the balancer's `onError`).
 */
import { ConfigError } from './errors'
import { show, upstreamUrl } from './options'

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

/** A server picked at random, uniformly. Runs in Rust. */
export class RandomStrategy extends LoadBalancingStrategy {
  override get nativeKind(): string | undefined {
    return this.selectServer === RandomStrategy.prototype.selectServer ? 'random' : undefined
  }

  selectServer(servers: string[]): string {
    return servers[Math.floor(Math.random() * servers.length)]
  }
}

/**
 * Smooth weighted round robin, as NGINX does it: weights 3:2:1 give exactly 3, 2 and 1
 * picks in every 6, interleaved (a b a c b a), so 50% / 33% / 17% of requests. (The
 * spec's comment on weights 3:2:1 says 60/40/20, which adds up to 120%.) Runs in Rust.
 */
export class WeightedStrategy extends LoadBalancingStrategy {
  /** Weight by server URL. */
  readonly servers: Readonly<Record<string, number>>

  constructor(weights: Record<string, number>) {
    super()
    if (weights === null || typeof weights !== 'object' || Array.isArray(weights) || Object.keys(weights).length === 0) {
      throw new ConfigError('weights', `WeightedStrategy: expected an object mapping server URLs to weights, got ${show(weights)}`)
    }
    const out: Record<string, number> = {}
    for (const [url, weight] of Object.entries(weights)) {
      out[upstreamUrl('WeightedStrategy', `weights[${JSON.stringify(url)}]`, url)] = weightOf('WeightedStrategy', url, weight)
    }
    this.servers = Object.freeze(out)
  }

  override get nativeKind(): string | undefined {
    return this.selectServer === WeightedStrategy.prototype.selectServer ? 'weighted' : undefined
  }

  #current = new Map<string, number>()

  /** The same rule in JS, for calling it yourself; the gateway uses the native one. */
  selectServer(servers: string[]): string {
    let total = 0
    let best: string | undefined
    for (const s of servers) {
      const w = this.servers[s] ?? 1
      const cur = (this.#current.get(s) ?? 0) + w
      this.#current.set(s, cur)
      total += w
      if (best === undefined || cur > (this.#current.get(best) ?? 0)) best = s
    }
    const chosen = best ?? servers[0]
    this.#current.set(chosen, (this.#current.get(chosen) ?? 0) - total)
    return chosen
  }
}

/** The server with the fewest requests in flight; ties shared in turn. Runs in Rust. */
export class LeastConnectionsStrategy extends LoadBalancingStrategy {
  override get nativeKind(): string | undefined {
    return this.selectServer === LeastConnectionsStrategy.prototype.selectServer ? 'least_connections' : undefined
  }

  /** In JS there is no in-flight count: the first server. The gateway uses the native rule. */
  selectServer(servers: string[]): string {
    return servers[0]
  }
}

/**
 * Power of two choices over peak-EWMA latency, as linkerd2-proxy and Finagle: two
 * random servers, the one with the lower latency × (requests in flight + 1) wins, so
 * traffic moves away from a server that slows down. Runs in Rust.
 */
export class PowerOfTwoChoicesStrategy extends LoadBalancingStrategy {
  override get nativeKind(): string | undefined {
    return this.selectServer === PowerOfTwoChoicesStrategy.prototype.selectServer ? 'p2c' : undefined
  }

  /** In JS there is no latency estimate: a random server. The gateway uses the native rule. */
  selectServer(servers: string[]): string {
    return servers[Math.floor(Math.random() * servers.length)]
  }
}

/** What consistent hashing hashes: the client IP, a header, a cookie, or the path. */
export type HashKey = 'ip' | 'path' | { header: string } | { cookie: string }

/**
 * Consistent hashing on a ring of virtual nodes: the same key goes to the same server,
 * and adding or removing one of N servers moves only about 1/N of the keys. A request
 * without the key (no such header or cookie) goes round robin. Runs in Rust.
 */
export class ConsistentHashStrategy extends LoadBalancingStrategy {
  readonly key: HashKey
  /** @internal */
  readonly nativeKey: string

  constructor(options: { key?: HashKey } = {}) {
    super()
    const key = (options ?? {}).key ?? 'ip'
    const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
    let nativeKey: string | undefined
    if (key === 'ip' || key === 'path') nativeKey = key
    else if (key && typeof key === 'object' && 'header' in key && typeof key.header === 'string' && TOKEN.test(key.header)) {
      nativeKey = `header:${key.header.toLowerCase()}`
    } else if (key && typeof key === 'object' && 'cookie' in key && typeof key.cookie === 'string' && TOKEN.test(key.cookie)) {
      nativeKey = `cookie:${key.cookie}`
    }
    if (nativeKey === undefined) {
      throw new ConfigError(
        'key',
        `ConsistentHashStrategy: option "key" must be 'ip', 'path', { header: name } or { cookie: name }, got ${show(key)}`,
      )
    }
    this.key = key
    this.nativeKey = nativeKey
  }

  override get nativeKind(): string | undefined {
    return this.selectServer === ConsistentHashStrategy.prototype.selectServer ? 'consistent_hash' : undefined
  }

  /** In JS: the first server. The gateway uses the native ring. */
  selectServer(servers: string[]): string {
    return servers[0]
  }
}

/** @internal A weight: a whole number from 1 to 1000. */
export function weightOf(owner: string, url: string, weight: unknown): number {
  if (typeof weight !== 'number' || !Number.isInteger(weight) || weight < 1 || weight > 1000) {
    throw new ConfigError(
      'weights',
      `${owner}: the weight of ${JSON.stringify(url)} must be a whole number from 1 to 1000 (zero and negative weights are not allowed), got ${show(weight)}`,
    )
  }
  return weight
}
