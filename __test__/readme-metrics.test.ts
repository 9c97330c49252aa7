// The README's "Metrics, rate limits and tracing" examples, run against local upstreams
// (their ports replace 9001/9002, a redis-server started here replaces 6379, and port 0
// replaces 8080). Keep the two in step.
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import {
  Velithon,
  Gateway,
  GatewayMetrics,
  LoadBalancer,
  HealthChecker,
  CircuitBreaker,
  MetricsMiddleware,
  RateLimitMiddleware,
} from 'velithon-gateway'
import { closeAll } from './helpers/net'
import { redisServerPath, startRedis } from './helpers/redis'

const opened: Array<() => Promise<unknown> | unknown> = []
afterEach(async () => {
  while (opened.length) await opened.pop()!()
  await closeAll() // redis-server processes
})

/** An upstream answering its name, 500 on paths with /fail, and what traceparent it got. */
async function upstream(name: string): Promise<string> {
  const server = http.createServer((req, res) => {
    if (req.url?.includes('/fail')) {
      res.statusCode = 500
      return res.end('failed')
    }
    res.setHeader('x-traceparent-seen', req.headers.traceparent ?? 'none')
    res.end(name)
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  opened.push(() => new Promise((r) => server.close(r)))
  server.on('connection', (s) => opened.push(() => s.destroy()))
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

async function serve(app: Velithon): Promise<string> {
  const { url } = await app.listen({ port: 0, host: '127.0.0.1' })
  opened.push(() => app.close())
  return url
}

async function statuses(url: string, n: number, headers: Record<string, string> = {}): Promise<number[]> {
  const out: number[] = []
  for (let i = 0; i < n; i++) {
    const res = await fetch(url, { headers })
    await res.arrayBuffer()
    out.push(res.status)
  }
  return out
}

const times = (n: number, v: number) => new Array<number>(n).fill(v)

describe('README: metrics', () => {
  it('counts, serves /metrics, feeds the collector and answers /stats', async () => {
    const [u1, u2] = await Promise.all([upstream('u1'), upstream('u2')])

    // --- as in the README ---
    const metrics = new GatewayMetrics() // or leave it out and read gateway.metrics
    const loadBalancer = new LoadBalancer({
      upstreamServers: [u1, u2],
      healthChecker: new HealthChecker({ checkInterval: '5s' }),
      circuitBreaker: new CircuitBreaker({ failureThreshold: 5 }),
    })
    const gateway = new Gateway({ loadBalancer, metrics })
    gateway.route('/api/{path:path}')

    const failures: string[] = []
    const app = new Velithon({
      middleware: [
        new MetricsMiddleware({
          path: '/metrics', // the default; `false` serves no endpoint
          // Called after each response, in batches, off the request path.
          collectorFunction: (request, response, durationMs) => {
            if (response.status >= 500) failures.push(`${request.method} ${request.route} ${response.status} ${durationMs.toFixed(1)}ms`)
          },
        }),
      ],
    })
    app.includeRouter(gateway.getRouter())
    app.get('/stats', () => ({
      total: metrics.getTotalRequests(),
      byStatus: metrics.getRequestsByStatus(), // { 200: 1234, 502: 3 }
      meanMs: metrics.getAverageResponseTime(),
      latency: metrics.getLatency(), // { count, meanMs, p50Ms, p90Ms, p99Ms }
      upstreams: metrics.getUpstreamHealthStatus(), // by URL: { available, healthy, inFlight, latencyMs }
      breakers: metrics.getCircuitBreakerStatus(), // by URL: { state, timesOpened, retryInMs, … }
    }))
    const base = await serve(app) // README: app.listen({ port: 8080 })
    // --- end ---

    expect(gateway.metrics).toBe(metrics)
    expect(await statuses(`${base}/api/items`, 8)).toEqual(times(8, 200))
    expect(await statuses(`${base}/api/fail`, 2)).toEqual([500, 500])
    expect(await statuses(`${base}/nope`, 1)).toEqual([404])

    const prom = await fetch(`${base}/metrics`)
    expect(prom.status).toBe(200)
    expect(prom.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/)
    const text = await prom.text()
    expect(text).toContain('# TYPE velithon_requests_total counter')
    expect(text).toContain('velithon_requests_total{status="200"} 8')
    expect(text).toContain('velithon_requests_total{status="500"} 2')
    expect(text).toContain(`velithon_upstream_up{server="${u1}"} 1`)
    expect(text).toContain(`velithon_circuit_breaker_state{server="${u2}",state="closed"} 1`)
    for (const name of [
      'velithon_request_duration_seconds',
      'velithon_route_requests_total',
      'velithon_route_request_duration_seconds',
      'velithon_upstream_requests_total',
      'velithon_upstream_errors_total',
      'velithon_upstream_request_duration_seconds',
      'velithon_retries_total',
      'velithon_rejections_total',
      'velithon_upstream_in_flight',
    ]) {
      expect(text, name).toContain(`# TYPE ${name} `)
    }

    const stats = await (await fetch(`${base}/stats`)).json()
    // The /metrics scrape is not counted; /stats is counted once answered (after this snapshot).
    expect(stats.total).toBe(11)
    expect(stats.byStatus).toEqual({ 200: 8, 404: 1, 500: 2 })
    expect(stats.meanMs).toBeGreaterThan(0)
    expect(stats.latency.count).toBe(11)
    expect(stats.latency.p50Ms).toBeLessThanOrEqual(stats.latency.p99Ms)
    expect(stats.upstreams[u1]).toMatchObject({ available: true, healthy: true, inFlight: 0 })
    expect(stats.breakers[u2].state).toBe('closed')

    await new Promise((r) => setTimeout(r, 200))
    expect(failures).toHaveLength(2)
    expect(failures[0]).toMatch(/^GET \/api\/\{path:path\} 500 \d+\.\dms$/)
  })
})

describe('README: rate limits', () => {
  it('perClient: 10 at once, then 429 with Retry-After', async () => {
    const u1 = await upstream('u1')
    const gateway = new Gateway()
    gateway.route('/api/{path:path}', { upstream: u1 })
    // Per client IP, in this process: 10 at once, then one a second.
    const perClient = new RateLimitMiddleware({ requestsPerMinute: 60, burst: 9 })
    const app = new Velithon({ middleware: [perClient] })
    app.includeRouter(gateway.getRouter())
    const base = await serve(app)

    expect(await statuses(`${base}/api/x`, 12)).toEqual([...times(10, 200), 429, 429])
    const refused = await fetch(`${base}/api/x`)
    expect(refused.status).toBe(429)
    expect(refused.headers.get('retry-after')).toBe('1')
    expect(refused.headers.get('ratelimit-limit')).toBe('10')
    expect((await refused.json()).code).toBe('VG_RATE_LIMITED')
  })

  it('perTenant: a bucket per x-tenant-id, the client IP without one', async () => {
    const u1 = await upstream('u1')
    const gateway = new Gateway()
    gateway.route('/api/{path:path}', { upstream: u1 })
    // Your own key, computed in JS (sync or async); undefined, '' or a throw → the client IP.
    const perTenant = new RateLimitMiddleware({
      requestsPerMinute: 120,
      keyFunction: (request) => request.headers['x-tenant-id'],
    })
    const app = new Velithon({ middleware: [perTenant] })
    app.includeRouter(gateway.getRouter())
    const base = await serve(app)
    // 120 a minute with no burst: one at once per key.
    expect(await statuses(`${base}/api/x`, 2, { 'x-tenant-id': 'acme' })).toEqual([200, 429])
    expect(await statuses(`${base}/api/x`, 2, { 'x-tenant-id': 'globex' })).toEqual([200, 429])
    expect(await statuses(`${base}/api/x`, 2)).toEqual([200, 429])
  })

  it.skipIf(!redisServerPath())('perKey: shared through Redis by two replicas; both limits apply', async () => {
    const redis = await startRedis()
    const u1 = await upstream('u1')
    const bases: string[] = []
    for (let replica = 0; replica < 2; replica++) {
      // --- as in the README ---
      const gateway = new Gateway()
      gateway.route('/api/{path:path}', { upstream: u1 })
      // Per API key, shared by every replica through Redis; both limits apply.
      const perKey = new RateLimitMiddleware({
        requestsPerMinute: 60,
        requestsPerHour: 1_000,
        burst: 19,
        key: { header: 'x-api-key' }, // requests without the header: per client IP
        store: { redis: redis.url }, // README: 'redis://127.0.0.1:6379'
        onStoreError: 'open', // the default; 'closed' answers 429 while Redis is unreachable
      })
      const app = new Velithon({ middleware: [perKey] }) // one RateLimitMiddleware per app
      app.includeRouter(gateway.getRouter())
      // --- end ---
      bases.push(await serve(app))
    }
    const out: number[] = []
    for (let i = 0; i < 24; i++) {
      const res = await fetch(`${bases[i % 2]}/api/x`, { headers: { 'x-api-key': 'k1' } })
      await res.arrayBuffer()
      out.push(res.status)
    }
    expect(out).toEqual([...times(20, 200), ...times(4, 429)])
    // Another key has its own 20.
    expect(await statuses(`${bases[1]}/api/x`, 1, { 'x-api-key': 'k2' })).toEqual([200])

    // Redis gone: fail open, the README's default.
    await redis.stop()
    expect(await statuses(`${bases[0]}/api/x`, 3, { 'x-api-key': 'k1' })).toEqual([200, 200, 200])
  })
})

describe('README: tracing', () => {
  it('traceparent: true makes one when absent, keeps a valid one; handlers see it', async () => {
    const u1 = await upstream('u1')
    const gateway = new Gateway()
    gateway.route('/api/{path:path}', { upstream: u1 })

    const app = new Velithon({ traceparent: true }) // off by default
    app.includeRouter(gateway.getRouter())
    app.get('/whoami', (request) => ({ traceparent: request.headers.get('traceparent') }))
    const base = await serve(app)

    const made = (await fetch(`${base}/api/x`)).headers.get('x-traceparent-seen')
    expect(made).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/)
    const valid = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
    expect((await fetch(`${base}/api/x`, { headers: { traceparent: valid } })).headers.get('x-traceparent-seen')).toBe(valid)
    const seen = await (await fetch(`${base}/whoami`, { headers: { traceparent: '00-bad' } })).json()
    expect(seen.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/)

    // Off by default.
    const plain = new Velithon()
    plain.includeRouter(gateway.getRouter())
    const plainBase = await serve(plain)
    expect((await fetch(`${plainBase}/api/x`)).headers.get('x-traceparent-seen')).toBe('none')
  })
})
