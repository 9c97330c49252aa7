/**
 * Following a service. Two parts:
 *
 * - what every discovery source shares: the error type, the gate a watch delivers
 *   through (`WatchChannel`), a cancellable pause, URL building and option checks;
 * - `followDiscovery`, which keeps a consumer (a LoadBalancer's `setServers`) in step with a
 *   source and remembers how that is going (`status()`).
 */
import { ConfigError, ErrorCodes, VelithonError, callHook, type ErrorCode } from '../errors'
import { show } from '../options'
import type { ServiceDiscovery } from './index'

// ---------------------------------------------------------------------------------------
// Shared by the sources

/**
 * A discovery source failed or does not know a service. The code says how:
 * `VG_NO_ROUTE` (unknown service / no such host name), `VG_UPSTREAM_CONNECT` (the source
 * could not be reached), `VG_UPSTREAM_TIMEOUT`, `VG_UPSTREAM_PROTOCOL` (it answered with an
 * error status or a body that is not what its API documents). `followDiscovery` also
 * reports `VG_NO_HEALTHY_UPSTREAM` (an empty list) and `VG_INVALID_CONFIG` (its consumer
 * refused a list).
 */
export class ServiceDiscoveryError extends VelithonError {
  /** The service that was asked for. */
  readonly service: string
  constructor(code: ErrorCode, service: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options)
    this.name = 'ServiceDiscoveryError'
    this.service = service
  }
}

/** The form two server lists are compared in: sorted, without duplicates. */
export function listKey(servers: readonly string[]): string {
  return [...new Set(servers)].sort().join('\n')
}

/** Checks a service name (given to `getServers` / `watch`, or a key of a static list). */
export function serviceName(owner: string, service: unknown, option = 'service'): string {
  if (typeof service !== 'string' || service.length === 0 || /[\s/?#]/.test(service)) {
    throw new ConfigError(option, `${owner}: a service name must be a non-empty string without spaces, '/', '?' or '#', got ${show(service)}`)
  }
  return service
}

/**
 * One watcher's side of a watch: passes on only lists that changed (or the first one after
 * a failure), one error per failure streak, and nothing once stopped.
 */
export class WatchChannel {
  readonly #onChange: (servers: string[]) => void
  readonly #onError: (error: Error) => void
  #lastKey: string | undefined
  #failing = false
  #stopped = false

  constructor(owner: string, onChange: unknown, onError: unknown) {
    if (typeof onChange !== 'function') {
      throw new ConfigError('onChange', `${owner}.watch: onChange must be a function, got ${show(onChange)}`)
    }
    if (typeof onError !== 'function') {
      throw new ConfigError('onError', `${owner}.watch: onError must be a function, got ${show(onError)}`)
    }
    this.#onChange = onChange as (servers: string[]) => void
    this.#onError = onError as (error: Error) => void
  }

  get stopped(): boolean {
    return this.#stopped
  }

  /** A fresh list from the source. */
  deliver(servers: readonly string[]): void {
    if (this.#stopped) return
    const key = listKey(servers)
    const recovered = this.#failing
    this.#failing = false
    if (key === this.#lastKey && !recovered) return
    this.#lastKey = key
    callHook(this.#onChange, [...servers])
  }

  /** The source failed; only the first failure of a streak is passed on. */
  fail(error: Error): void {
    if (this.#stopped || this.#failing) return
    this.#failing = true
    callHook(this.#onError, error)
  }

  /** Returns true the first time. */
  stop(): boolean {
    if (this.#stopped) return false
    this.#stopped = true
    return true
  }
}

/** An unref'd sleep that `cancel()` ends at once (and every later `wait` too). */
export class Pause {
  #timer: NodeJS.Timeout | undefined
  #wake: (() => void) | undefined
  #cancelled = false

  wait(ms: number): Promise<void> {
    if (this.#cancelled) return Promise.resolve()
    return new Promise<void>((resolve) => {
      this.#wake = resolve
      this.#timer = setTimeout(() => {
        this.#timer = undefined
        this.#wake = undefined
        resolve()
      }, ms)
      this.#timer.unref()
    })
  }

  cancel(): void {
    this.#cancelled = true
    clearTimeout(this.#timer)
    this.#timer = undefined
    const wake = this.#wake
    this.#wake = undefined
    wake?.()
  }
}

/** `http://10.0.0.5:8080`, `http://[fd00::5]:8080` (a zone id is percent-encoded). */
export function serverUrl(scheme: 'http' | 'https', host: string, port: number): string {
  const bare = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host
  const shown = bare.includes(':') ? `[${bare.replace(/%(?!25)/, '%25')}]` : bare
  return `${scheme}://${shown}:${port}`
}

/** A TCP port option: a whole number 1–65535. */
export function portOption(owner: string, name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > 65535) {
    throw new ConfigError(name, `${owner}: option "${name}" must be a port number (a whole number from 1 to 65535), got ${show(value)}`)
  }
  return value
}

/** One of a few allowed strings. */
export function choiceOption<T extends string | number>(owner: string, name: string, value: unknown, allowed: readonly T[], fallback: T): T {
  if (value === undefined) return fallback
  if (!allowed.includes(value as T)) {
    throw new ConfigError(name, `${owner}: option "${name}" must be one of ${allowed.map((a) => show(a)).join(', ')}, got ${show(value)}`)
  }
  return value as T
}

/** Rejects a duration below `min` ms (for options where 0 would mean a busy loop). */
export function atLeast(owner: string, name: string, ms: number, min: number, what: string): number {
  if (ms < min) throw new ConfigError(name, `${owner}: option "${name}" must be at least ${what}, got ${show(ms)} ms`)
  return ms
}

// ---------------------------------------------------------------------------------------
// followDiscovery

/** How following a service is going. */
export interface DiscoveryStatus {
  /**
   * `'pending'`: no usable list yet; `'ok'`: the last answer was a usable list;
   * `'stale'`: the source failed or returned no servers, the last good list stays.
   */
  source: 'ok' | 'stale' | 'pending'
  /** The message of the latest failure (kept after recovery, as history). */
  lastError?: string
  /** `Date.now()` when the source last gave a usable list. */
  lastUpdate?: number
  /** The list in effect: the last one `apply` accepted. */
  servers: string[]
}

export interface DiscoveryFollower {
  status(): DiscoveryStatus
  /** Stops the watch (idempotent); `apply` and `report` are not called afterwards. */
  stop(): void
  /** Resolves on the first list or the first failure (or at `stop`), never rejects. */
  readonly ready: Promise<void>
}

/**
 * Keeps a consumer in step with a discovery source: `apply(list)` gets every changed,
 * non-empty list (e.g. `(list) => loadBalancer.setServers(list)`). When the source fails,
 * returns an empty list, or `apply` throws (say, a URL the consumer refuses), the last
 * good list stays in effect and `report` is told why (once per streak for source failures).
 */
export function followDiscovery(
  discovery: ServiceDiscovery,
  service: string,
  apply: (servers: string[]) => void,
  report: (error: Error) => void,
): DiscoveryFollower {
  const owner = 'followDiscovery'
  if (!discovery || typeof discovery.watch !== 'function') {
    throw new ConfigError('discovery', `${owner}: discovery must be a ServiceDiscovery (an object with watch()), got ${show(discovery)}`)
  }
  if (typeof apply !== 'function') throw new ConfigError('apply', `${owner}: apply must be a function, got ${show(apply)}`)
  if (typeof report !== 'function') throw new ConfigError('report', `${owner}: report must be a function, got ${show(report)}`)

  let stopped = false
  let source: DiscoveryStatus['source'] = 'pending'
  let lastError: string | undefined
  let lastUpdate: number | undefined
  let servers: string[] = []
  let appliedKey: string | undefined
  let markReady: () => void = () => {}
  const ready = new Promise<void>((resolve) => (markReady = resolve))

  const problem = (error: Error) => {
    source = appliedKey === undefined ? 'pending' : 'stale'
    lastError = error.message
    callHook(report, error)
  }

  const onChange = (list: string[]) => {
    if (stopped) return
    markReady()
    if (list.length === 0) {
      const keeping = appliedKey === undefined ? 'no list to keep yet' : `keeping the last ${servers.length}`
      problem(new ServiceDiscoveryError(ErrorCodes.NO_HEALTHY_UPSTREAM, service, `service discovery returned no servers for ${show(service)}; ${keeping}`))
      return
    }
    const key = listKey(list)
    if (key !== appliedKey) {
      try {
        apply([...list])
      } catch (err) {
        const cause = err instanceof Error ? err.message : String(err)
        problem(new ServiceDiscoveryError(ErrorCodes.INVALID_CONFIG, service, `the servers discovered for ${show(service)} were refused: ${cause}`, { cause: err }))
        return
      }
      appliedKey = key
      servers = [...list]
    }
    source = 'ok'
    lastUpdate = Date.now()
  }

  const onError = (error: Error) => {
    if (stopped) return
    markReady()
    problem(error instanceof Error ? error : new Error(String(error)))
  }

  const stopWatch = discovery.watch(service, onChange, onError)
  return {
    status: () => ({
      source,
      ...(lastError !== undefined && { lastError }),
      ...(lastUpdate !== undefined && { lastUpdate }),
      servers: [...servers],
    }),
    stop() {
      if (stopped) return
      stopped = true
      markReady()
      stopWatch()
    },
    ready,
  }
}
