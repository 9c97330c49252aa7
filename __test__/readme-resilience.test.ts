// The README's "Load balancing", "Service discovery" and "Resilience" examples, run
// against local upstreams (their ports replace 9001-9003). Keep the two in step.
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import {
  Velithon,
  Gateway,
  LoadBalancer,
  WeightedStrategy,
  ConsistentHashStrategy,
  StaticServiceDiscovery,
  CircuitBreaker,
  RetryConfig,
  HealthChecker,
  OutlierDetection,
  CircuitBreakerOpenError,
  JSONResponse,
} from 'velithon-gateway'

const opened: Array<() => Promise<unknown> | unknown> = []
afterEach(async () => {
  while (opened.length) await opened.pop()!()
})

/** An upstream answering its name; `state.failing` makes it answer 503 (health included). */
async function upstream(name: string, state = { failing: false }): Promise<string> {
  const server = http.createServer((req, res) => {
    if (state.failing) {
      res.statusCode = 503
      return res.end('down')
    }
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

async function names(url: string, n: number, headers: Record<string, string> = {}): Promise<string[]> {
  const out: string[] = []
  for (let i = 0; i < n; i++) out.push(await (await fetch(url, { headers })).text())
  return out
}

describe('README: load balancing', () => {
  it('weights 3:2:1 interleave, a header sticks to one server, and setServers reweighs', async () => {
    const [u1, u2, u3] = await Promise.all([upstream('u1'), upstream('u2'), upstream('u3')])
    const weighted = new LoadBalancer({
      upstreamServers: [u1, u2, u3],
      strategy: new WeightedStrategy({ [u1]: 3, [u2]: 2, [u3]: 1 }),
    })
    const sticky = new LoadBalancer({
      upstreamServers: [u1, u2],
      strategy: new ConsistentHashStrategy({ key: { header: 'x-cart-id' } }),
    })
    const gateway = new Gateway()
    gateway.route('/shop/{path:path}', { loadBalancer: weighted })
    gateway.route('/carts/{path:path}', { loadBalancer: sticky })
    const app = new Velithon()
    app.includeRouter(gateway.getRouter())
    const base = await serve(app)

    expect(await names(`${base}/shop/x`, 6)).toEqual(['u1', 'u2', 'u1', 'u3', 'u2', 'u1'])
    const alice = await names(`${base}/carts/c`, 5, { 'x-cart-id': 'alice' })
    expect(new Set(alice).size).toBe(1)

    weighted.setServers([
      { url: u1, weight: 1 },
      { url: u2, weight: 1 },
    ])
    expect((await names(`${base}/shop/x`, 4)).sort()).toEqual(['u1', 'u1', 'u2', 'u2'])
    expect(weighted.status().map((s) => s.weight)).toEqual([1, 1])
  })

  it('follows a discovery source', async () => {
    const [u1, u2] = await Promise.all([upstream('u1'), upstream('u2')])
    const registry = new StaticServiceDiscovery({ users: [u1] })
    const users = new LoadBalancer({ discovery: registry, service: 'users' })
    opened.push(() => users.close())
    await users.ready
    expect(users.upstreamServers).toEqual([u1])
    registry.setServers('users', [u1, u2])
    expect(users.upstreamServers).toEqual([u1, u2])
    expect(users.discoveryStatus?.source).toBe('ok')
  })
})

describe('README: resilience', () => {
  it('retries onto the healthy server, opens the breaker, and the handler falls back', async () => {
    const flaky = { failing: false }
    const [u1, u2] = await Promise.all([upstream('u1', flaky), upstream('u2')])
    const loadBalancer = new LoadBalancer({
      upstreamServers: [u1, u2],
      // As in the README: checks every 5 s, so within this test they never take u1 out
      // (the breaker does); health checks have suites of their own.
      healthChecker: new HealthChecker({ checkInterval: '5s', timeout: '1s', checkPath: '/health', consecutiveFailures: 3 }),
      circuitBreaker: new CircuitBreaker({ failureThreshold: 5, timeoutDuration: '30s', halfOpenRequests: 1, successThreshold: 2 }),
      outlierDetection: new OutlierDetection({ consecutiveFailures: 5 }),
    })
    const gateway = new Gateway({
      loadBalancer,
      timeout: '10s',
      retryConfig: new RetryConfig({ maxAttempts: 3, backoffFactor: 2, retryableStatusCodes: [502, 503, 504] }),
    })
    gateway.route('/api/{path:path}')
    const app = new Velithon()
    app.includeRouter(gateway.getRouter())
    app.get('/checkout/{path:path}', async (request) => {
      try {
        return await gateway.forwardRequest(request)
      } catch (e) {
        if (e instanceof CircuitBreakerOpenError) return new JSONResponse({ error: 'checkout is resting' }, 503)
        throw e
      }
    })
    app.get('/health/gateway', () => ({ upstreams: gateway.getUpstreamStatus(), breakers: gateway.getCircuitBreakerStatus() }))
    const base = await serve(app)

    flaky.failing = true
    // Every request succeeds: a 503 from u1 is retried on u2.
    expect(new Set(await names(`${base}/api/x`, 12))).toEqual(new Set(['u2']))
    const health = await (await fetch(`${base}/health/gateway`)).json()
    expect(health.breakers[u1].state).toBe('open')
    expect(health.breakers[u2].state).toBe('closed')
    expect(health.upstreams[u2].available).toBe(true)

    // With u2 gone too, u1's open breaker leaves nothing: the handler's fallback answers.
    loadBalancer.setServers([u1])
    const res = await fetch(`${base}/checkout/pay`)
    expect(res.status).toBe(503)
    expect(await res.json()).toEqual({ error: 'checkout is resting' })
  })
})
