import { native } from '../errors'
import type { LoadBalancer } from '../load-balancer'
import { nativeBinding, type NativeClient, type NativeLoadBalancer, type NativeMetrics } from '../native'

/** Latency figures in milliseconds. */
export interface LatencySummary {
  count: number
  meanMs: number
  p50Ms: number
  p90Ms: number
  p99Ms: number
}

/** Everything counted, as the data plane reports it (see `snapshot()`). */
export type MetricsSnapshot = Record<string, unknown> & {
  totalRequests: number
  requestsByStatus: Record<string, number>
  averageResponseTimeMs: number
}

/**
 * The gateway's numbers, kept in Rust (atomics; a latency histogram with p50/p90/p99):
 * requests by status and class, per route and per upstream server, retries, rejections,
 * and the state of the watched load balancers' servers. `gateway.metrics` is one; an app
 * records into it once the gateway's router is included (or into the `metrics` of its
 * `MetricsMiddleware`). Durations run from the request head to the response head.
 */
export class GatewayMetrics {
  #native: NativeMetrics
  #balancers: LoadBalancer[] = []
  #natives: NativeLoadBalancer[] = []

  constructor() {
    const { NativeMetrics } = nativeBinding()
    this.#native = native(() => new NativeMetrics())
  }

  /** Requests answered (every status), since start. */
  getTotalRequests(): number {
    return this.snapshot().totalRequests
  }

  /** Requests by status code: `{ 200: 1234, 404: 2 }`. */
  getRequestsByStatus(): Record<number, number> {
    const out: Record<number, number> = {}
    for (const [k, v] of Object.entries(this.snapshot().requestsByStatus)) out[Number(k)] = v
    return out
  }

  /** The mean time to the response head, in milliseconds. */
  getAverageResponseTime(): number {
    return this.snapshot().averageResponseTimeMs
  }

  /** p50, p90, p99 and mean of the time to the response head. */
  getLatency(): LatencySummary {
    const l = (this.snapshot() as { latency?: Record<string, number> }).latency ?? {}
    return { count: l.count ?? 0, meanMs: l.meanMs ?? 0, p50Ms: l.p50Ms ?? 0, p90Ms: l.p90Ms ?? 0, p99Ms: l.p99Ms ?? 0 }
  }

  /** Every watched upstream server: available, health, in flight, latency, by URL. */
  getUpstreamHealthStatus(): Record<string, { available: boolean; healthy: boolean; inFlight: number; latencyMs: number }> {
    const out: Record<string, { available: boolean; healthy: boolean; inFlight: number; latencyMs: number }> = {}
    for (const lb of this.#natives) {
      for (const s of lb.status()) {
        out[s.url] = { available: s.available, healthy: s.health.healthy, inFlight: s.inFlight, latencyMs: s.latencyMs }
      }
    }
    return out
  }

  /** Every watched server's circuit breaker (those that have one), by URL. */
  getCircuitBreakerStatus(): Record<string, NonNullable<ReturnType<NativeLoadBalancer['status']>[number]['breaker']>> {
    const out: Record<string, NonNullable<ReturnType<NativeLoadBalancer['status']>[number]['breaker']>> = {}
    for (const lb of this.#natives) {
      for (const s of lb.status()) if (s.breaker) out[s.url] = s.breaker
    }
    return out
  }

  /** Everything counted, as one plain object. */
  snapshot(): MetricsSnapshot {
    return this.#native.snapshot() as MetricsSnapshot
  }

  /** The Prometheus text exposition format (0.0.4), as `/metrics` serves it. */
  toPrometheus(): string {
    return this.#native.prometheus()
  }

  /** @internal Reports `lb`'s servers with these metrics. */
  static watch(metrics: GatewayMetrics, lb: NativeLoadBalancer, owner?: LoadBalancer): void {
    if (metrics.#natives.includes(lb)) return
    metrics.#natives.push(lb)
    if (owner) metrics.#balancers.push(owner)
    metrics.#native.watch(lb)
  }

  /** @internal Reports `client`'s pool (idle connections per host). */
  static watchClient(metrics: GatewayMetrics, client: NativeClient): void {
    metrics.#native.watchClient(client)
  }

  /** @internal */
  static nativeOf(metrics: GatewayMetrics): NativeMetrics {
    return metrics.#native
  }
}
