import { ConfigError, ErrorCodes, VelithonError, callHook, native } from './errors'
import { nativeBinding, splitHeaders, type NativeLoadBalancer } from './native'
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
  #select: Select | undefined

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
      const select = userSelector(strategy, timeoutMs, (opts.onError as ((e: unknown) => void) | undefined) ?? defaultReport)
      this.#select = select
      const lb = this.#native
      // From pure routes: the data plane asks through the callback bridge and waits a
      // little longer than the wrapper's own timeout (which answers '' first).
      native(() =>
        lb.setSelector((token, servers, ctx) => {
          try {
            const answer = select(servers, {
              method: ctx.method,
              path: ctx.path,
              headers: headerRecord(splitHeaders(ctx.headers)),
              client: { address: ctx.clientAddress, port: ctx.clientPort },
            })
            if (typeof answer === 'string') lb.completeSelect(token, answer)
            else answer.then((url) => lb.completeSelect(token, url)).catch(() => lb.completeSelect(token, ''))
          } catch {
            lb.completeSelect(token, '') // never throw out of a bridge callback
          }
        }, timeoutMs + 500),
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
  static selectorOf(lb: LoadBalancer): Select | undefined {
    return lb.#select
  }
}

function defaultReport(error: unknown): void {
  console.error('velithon-gateway: a custom load-balancing strategy failed; using round robin:', error)
}

/** A strategy's pick: a server URL, or '' to fall back. Never throws or rejects. */
type Select = (servers: string[], ctx: RequestContext) => string | Promise<string>

/**
 * Wraps a user's `selectServer`: sync answers are checked at once (no timer); async ones
 * race `strategyTimeout`. A throw, a rejection, a timeout or a server not in the list
 * give '' (fall back) and are reported once.
 */
function userSelector(strategy: LoadBalancingStrategy, timeoutMs: number, onError: (error: unknown) => void): Select {
  let reported = false
  const report = (error: unknown) => {
    if (reported) return
    reported = true
    callHook(onError, error)
  }
  const check = (servers: string[], answer: unknown): string => {
    if (typeof answer === 'string' && servers.includes(answer)) return answer
    report(new VelithonError(ErrorCodes.CALLBACK_FAILED, `selectServer returned ${show(answer)}, which is not one of the servers`))
    return ''
  }
  const failed = (error: unknown): string => {
    report(error)
    return ''
  }
  return (servers, ctx) => {
    let answer: unknown
    try {
      answer = strategy.selectServer(servers, ctx)
    } catch (err) {
      return failed(err)
    }
    if (!answer || typeof (answer as PromiseLike<unknown>).then !== 'function') return check(servers, answer)
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new VelithonError(ErrorCodes.CALLBACK_TIMEOUT, `selectServer did not answer within ${timeoutMs} ms`)),
        timeoutMs,
      )
    })
    return Promise.race([answer as PromiseLike<unknown>, late])
      .then((a) => check(servers, a), failed)
      .finally(() => clearTimeout(timer))
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
