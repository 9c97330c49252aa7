import { ConfigError, native } from './errors'
import { nativeBinding, type NativeLoadBalancer } from './native'
import { knownKeys, object, show, upstreamUrl } from './options'
import { LoadBalancingStrategy, RoundRobinStrategy } from './strategies'

export interface LoadBalancerOptions {
  /** Upstream server URLs, e.g. `'http://127.0.0.1:9001'`. A path is put before every forwarded path. */
  upstreamServers: string[]
  /** How a server is picked; round robin by default. */
  strategy?: LoadBalancingStrategy
}

const OWNER = 'LoadBalancer'
const KNOWN = ['upstreamServers', 'strategy'] as const

function serverList(value: unknown): string[] {
  if (!Array.isArray(value) || value.length === 0) {
    throw new ConfigError(
      'upstreamServers',
      `${OWNER}: option "upstreamServers" must be a non-empty array of URLs, got ${show(value)}`,
    )
  }
  const list = value.map((v, i) => upstreamUrl(OWNER, `upstreamServers[${i}]`, v))
  const dup = list.find((u, i) => list.indexOf(u) !== i)
  if (dup) {
    throw new ConfigError('upstreamServers', `${OWNER}: option "upstreamServers" lists ${show(dup)} twice`)
  }
  return list
}

/** A set of upstream servers and the strategy that picks one per request. */
export class LoadBalancer {
  readonly strategy: LoadBalancingStrategy
  #native: NativeLoadBalancer

  constructor(options: LoadBalancerOptions) {
    const opts = object(OWNER, options)
    knownKeys(OWNER, opts, KNOWN)
    const servers = serverList(opts.upstreamServers)
    const strategy = opts.strategy ?? new RoundRobinStrategy()
    if (!(strategy instanceof LoadBalancingStrategy)) {
      throw new ConfigError(
        'strategy',
        `${OWNER}: option "strategy" must be a strategy such as new RoundRobinStrategy(), got ${show(strategy)}`,
      )
    }
    this.strategy = strategy
    const { NativeLoadBalancer } = nativeBinding()
    this.#native = native(() => new NativeLoadBalancer(servers, strategy.kind))
  }

  /** The current upstream servers. */
  get upstreamServers(): string[] {
    return this.#native.servers()
  }

  /**
   * Replaces the server list atomically. Requests in flight finish where they are;
   * servers that stay keep their pooled connections.
   */
  setServers(servers: string[]): void {
    const list = serverList(servers)
    native(() => this.#native.setServers(list))
  }

  /** @internal */
  static nativeOf(lb: LoadBalancer): NativeLoadBalancer {
    return lb.#native
  }
}
