import { ConfigError, ErrorCodes, VelithonError, callHook, native } from './errors'
import { nativeBinding, type NativeLoadBalancer } from './native'
import { duration, knownKeys, object, show, upstreamUrl, type Duration } from './options'
import { LoadBalancingStrategy, RoundRobinStrategy, type RequestContext } from './strategies'

export interface LoadBalancerOptions {
  /** Upstream server URLs, e.g. `'http://127.0.0.1:9001'`. A path is put before every forwarded path. */
  upstreamServers: string[]
  /** How a server is picked; round robin by default. */
  strategy?: LoadBalancingStrategy
  /** How long a custom strategy's `selectServer` may take before round robin picks. Default `'1s'`. */
  strategyTimeout?: Duration
  /** Told (once per balancer) when a custom strategy fails; default: console.error. */
  onError?: (error: unknown) => void
}

const OWNER = 'LoadBalancer'
const KNOWN = ['upstreamServers', 'strategy', 'strategyTimeout', 'onError'] as const

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
  #select: ((servers: string[], ctx: RequestContext) => Promise<string>) | undefined

  constructor(options: LoadBalancerOptions) {
    const opts = object(OWNER, options)
    knownKeys(OWNER, opts, KNOWN)
    const servers = serverList(opts.upstreamServers)
    const strategy = opts.strategy ?? new RoundRobinStrategy()
    if (!(strategy instanceof LoadBalancingStrategy)) {
      throw new ConfigError(
        'strategy',
        `${OWNER}: option "strategy" must be a LoadBalancingStrategy such as new RoundRobinStrategy(), got ${show(strategy)}`,
      )
    }
    const timeoutMs = duration(OWNER, 'strategyTimeout', opts.strategyTimeout, 1000)
    if (opts.onError !== undefined && typeof opts.onError !== 'function') {
      throw new ConfigError('onError', `${OWNER}: option "onError" must be a function, got ${show(opts.onError)}`)
    }
    this.strategy = strategy
    const { NativeLoadBalancer } = nativeBinding()
    this.#native = native(() => new NativeLoadBalancer(servers, strategy.nativeKind ?? 'round_robin'))
    if (strategy.nativeKind === undefined) {
      this.#select = userSelector(strategy, timeoutMs, (opts.onError as ((e: unknown) => void) | undefined) ?? defaultReport)
      const select = this.#select
      // From pure routes: the data plane asks through the callback bridge, with a little
      // more time than the wrapper's own timeout (which answers '' first).
      native(() =>
        this.#native.setSelector(
          (servers: string[], ctx) => select(servers, {
            method: ctx.method,
            path: ctx.path,
            headers: headerRecord(ctx.headers),
            client: { address: ctx.clientAddress, port: ctx.clientPort },
          }),
          timeoutMs + 500,
        ),
      )
    }
  }

  /** The current upstream servers. */
  get upstreamServers(): string[] {
    return this.#native.servers()
  }

  /** How often a custom strategy's answer was replaced by round robin. */
  get strategyFallbacks(): number {
    return this.#native.fallbackCount()
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

  /** @internal The JS strategy's pick for `forwardRequest` ('' = fall back), if it has one. */
  static selectorOf(lb: LoadBalancer): ((servers: string[], ctx: RequestContext) => Promise<string>) | undefined {
    return lb.#select
  }
}

function defaultReport(error: unknown): void {
  console.error('velithon-gateway: a custom load-balancing strategy failed; using round robin:', error)
}

/** Wraps a user's `selectServer`: sync or async, bounded in time, validated; '' = fall back. */
function userSelector(
  strategy: LoadBalancingStrategy,
  timeoutMs: number,
  onError: (error: unknown) => void,
): (servers: string[], ctx: RequestContext) => Promise<string> {
  let reported = false
  const report = (error: unknown) => {
    if (reported) return
    reported = true
    callHook(onError, error)
  }
  return async (servers, ctx) => {
    let timer: NodeJS.Timeout | undefined
    try {
      const answer = await Promise.race([
        Promise.resolve().then(() => strategy.selectServer(servers, ctx)),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new VelithonError(ErrorCodes.CALLBACK_TIMEOUT, `selectServer did not answer within ${timeoutMs} ms`)),
            timeoutMs,
          )
        }),
      ])
      if (typeof answer === 'string' && servers.includes(answer)) return answer
      report(new VelithonError(ErrorCodes.CALLBACK_FAILED, `selectServer returned ${show(answer)}, which is not one of the servers`))
    } catch (err) {
      report(err)
    } finally {
      clearTimeout(timer)
    }
    return ''
  }
}

function headerRecord(flat: string[]): Record<string, string> {
  const out: Record<string, string> = {}
  for (let i = 0; i < flat.length; i += 2) {
    const k = flat[i]
    out[k] = k in out ? `${out[k]}, ${flat[i + 1]}` : flat[i + 1]
  }
  return out
}

export { headerRecord }
