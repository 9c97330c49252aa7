/**
 * Active health checks against real upstreams on loopback: an HTTP check takes a server
 * out after consecutiveFailures (traffic avoids it) and back after consecutiveSuccesses;
 * expectedStatus and checkPath; a custom check takes a server out within one interval;
 * a custom check that throws, rejects, hangs or returns garbage counts as unhealthy;
 * checks stop when the load balancer, the gateway or the app closes; with every server
 * down clients get 503 VG_NO_HEALTHY_UPSTREAM with Retry-After; bad options.
 */
import { afterEach, describe, expect, it } from 'vitest'
import {
  ConfigError,
  HealthCheckResult,
  HealthChecker,
  LoadBalancer,
  RoundRobinStrategy,
  UpstreamError,
  Velithon,
  Gateway,
  type HealthCheckerOptions,
} from 'velithon-gateway'
import { closeAll, defer, errorOf, refusedPort, send, sleep, waitFor } from './helpers/net'
import {
  OK,
  configErrorOf,
  fail,
  okOf,
  sendMany,
  startFaultUpstream,
  startGateway,
  upstreamOf,
  type FaultUpstream,
} from './helpers/fault'

afterEach(async () => {
  await closeAll()
})

async function upstreams(n: number): Promise<FaultUpstream[]> {
  return Promise.all(Array.from({ length: n }, (_, i) => startFaultUpstream(`s${i}`)))
}

function balancer(urls: string[], health: HealthCheckerOptions): LoadBalancer {
  return new LoadBalancer({
    upstreamServers: urls,
    strategy: new RoundRobinStrategy(),
    healthChecker: new HealthChecker(health),
  })
}

/** Waits until every server was checked at least `n` times. */
async function checkedAll(status: () => { health: { checks: number } }[], n = 1): Promise<void> {
  await waitFor(() => status().every((s) => s.health.checks >= n), 10_000, `every server checked ${n}×`)
}

// ---------------------------------------------------------------------------------------

describe('HTTP health checks', () => {
  it('take a server out after consecutiveFailures (traffic avoids it) and back after consecutiveSuccesses', async () => {
    const ups = await upstreams(3)
    const sick = ups[1]
    const loadBalancer = balancer(
      ups.map((u) => u.url),
      { checkInterval: '100ms', timeout: '500ms', consecutiveFailures: 2, consecutiveSuccesses: 2 },
    )
    const { url, gateway } = await startGateway({ loadBalancer })
    await checkedAll(() => loadBalancer.status())
    expect(loadBalancer.status().every((s) => s.health.healthy && s.available)).toBe(true)
    const probe = sick.healthHits[0]
    expect(probe.method).toBe('GET')
    expect(probe.path).toBe('/health')
    expect(probe.headers['user-agent']).toBe('velithon-gateway-health-check')

    sick.healthMode = fail(500)
    await waitFor(() => !upstreamOf(gateway, sick.url).health.healthy, 10_000, 'the sick server to be marked down')
    let s = upstreamOf(gateway, sick.url)
    expect(s.available).toBe(false)
    expect(s.health.consecutiveFailures, 'not before consecutiveFailures checks failed').toBeGreaterThanOrEqual(2)
    expect(s.health.lastError).toContain('500')

    const before = sick.count
    const replies = await sendMany(`${url}/api/x`, 30, 3)
    expect(replies.every((r) => r.status === 200)).toBe(true)
    expect(sick.count, 'no request reached the server marked down').toBe(before)
    expect(new Set(replies.map((r) => okOf(r).name))).toEqual(new Set(['s0', 's2']))

    sick.healthMode = OK
    await waitFor(() => upstreamOf(gateway, sick.url).health.healthy, 10_000, 'the server to be back up')
    s = upstreamOf(gateway, sick.url)
    expect(s.available).toBe(true)
    expect(s.health.consecutiveSuccesses, 'not before consecutiveSuccesses checks passed').toBeGreaterThanOrEqual(2)
    expect(s.health.lastError).toBeNull()
    const again = await sendMany(`${url}/api/y`, 30, 3)
    expect(again.every((r) => r.status === 200)).toBe(true)
    expect(sick.count).toBeGreaterThan(before)
  })

  it('checkPath and expectedStatus (a list) decide what healthy means', async () => {
    const up = await startFaultUpstream('ready', { healthPath: '/ready', healthMode: fail(204) })
    const loadBalancer = balancer([up.url], {
      checkInterval: '60ms',
      checkPath: '/ready',
      expectedStatus: [200, 204],
      consecutiveFailures: 1,
    })
    defer(() => loadBalancer.close())
    await checkedAll(() => loadBalancer.status(), 3)
    let s = loadBalancer.status()[0]
    expect(s.health.healthy).toBe(true)
    expect(s.health.consecutiveSuccesses).toBeGreaterThanOrEqual(3)
    expect(s.health.lastLatencyMs).toBeGreaterThan(0)
    expect(up.healthHits.every((h) => h.path === '/ready')).toBe(true)
    expect(up.count, 'nothing but /ready was requested').toBe(0)

    up.healthMode = fail(503)
    await waitFor(() => !loadBalancer.status()[0].health.healthy, 10_000, 'down on 503')
    s = loadBalancer.status()[0]
    expect(s.health.lastError).toContain('503')
  })

  it('a checkPath with a query string is requested as given', async () => {
    const up = await startFaultUpstream('x', { healthPath: '/status' })
    const loadBalancer = balancer([up.url], { checkInterval: '60ms', checkPath: '/status?deep=1' })
    defer(() => loadBalancer.close())
    await waitFor(() => up.healthHits.length >= 1, 10_000, 'a check')
    expect(up.healthHits[0].url).toBe('/status?deep=1')
    await checkedAll(() => loadBalancer.status())
    expect(loadBalancer.status()[0].health.healthy).toBe(true)
  })

  it('a single expectedStatus number works', async () => {
    const up = await startFaultUpstream('x', { healthMode: fail(202) })
    const loadBalancer = balancer([up.url], { checkInterval: '60ms', expectedStatus: 202, consecutiveFailures: 1 })
    defer(() => loadBalancer.close())
    await checkedAll(() => loadBalancer.status(), 2)
    expect(loadBalancer.status()[0].health.healthy).toBe(true)
    up.healthMode = OK // 200 is not 202
    await waitFor(() => !loadBalancer.status()[0].health.healthy, 10_000, 'down on 200')
  })

  it('a check with no answer within timeout fails; so does a refused connection', async () => {
    const slow = await startFaultUpstream('slow', { healthMode: { kind: 'hang' } })
    const dead = `http://127.0.0.1:${await refusedPort()}`
    const loadBalancer = balancer([slow.url, dead], { checkInterval: '100ms', timeout: '150ms', consecutiveFailures: 1 })
    defer(() => loadBalancer.close())
    await waitFor(() => loadBalancer.status().every((s) => !s.health.healthy), 10_000, 'both down')
    const [s, d] = loadBalancer.status()
    expect(s.health.lastError).toContain('150')
    expect(typeof d.health.lastError).toBe('string')
    expect((d.health.lastError ?? '').length).toBeGreaterThan(0)
  })

  it('after setServers the new servers are checked and the removed ones no longer', async () => {
    const [a, b] = await upstreams(2)
    const loadBalancer = balancer([a.url], { checkInterval: '60ms' })
    defer(() => loadBalancer.close())
    await waitFor(() => a.healthHits.length >= 1, 10_000, 'a checked')
    expect(b.healthHits).toHaveLength(0)
    loadBalancer.setServers([b.url])
    await waitFor(() => b.healthHits.length >= 2, 10_000, 'b checked twice')
    const aHits = a.healthHits.length
    await sleep(300)
    expect(a.healthHits.length, 'the removed server is not checked any more').toBe(aHits)
    expect(loadBalancer.status().map((s) => s.url)).toEqual([b.url])
    expect(loadBalancer.status()[0].health.checks).toBeGreaterThanOrEqual(2)
  })

  it('healthCheckInterval shorthand checks GET /health', async () => {
    const up = await startFaultUpstream('x')
    const loadBalancer = new LoadBalancer({ upstreamServers: [up.url], healthCheckInterval: '80ms' })
    defer(() => loadBalancer.close())
    expect(loadBalancer.healthChecker).toBeInstanceOf(HealthChecker)
    await waitFor(() => up.healthHits.length >= 2, 10_000, 'two checks')
    expect(up.healthHits[0].path).toBe('/health')
    expect(loadBalancer.status()[0].health.checks).toBeGreaterThanOrEqual(2)
  })
})

// ---------------------------------------------------------------------------------------

describe('custom checks', () => {
  it('a custom check marking a server down takes it out of rotation within one interval', async () => {
    const ups = await upstreams(3)
    const victim = ups[2]
    const down = new Set<string>()
    const asked = new Set<string>()
    const interval = 300
    const loadBalancer = balancer(
      ups.map((u) => u.url),
      {
        checkInterval: interval,
        consecutiveFailures: 1,
        customCheckFunction: (server) => {
          asked.add(server)
          return !down.has(server)
        },
      },
    )
    const { url, gateway } = await startGateway({ loadBalancer })
    await checkedAll(() => loadBalancer.status())
    expect(asked).toEqual(new Set(ups.map((u) => u.url)))

    const started = Date.now()
    down.add(victim.url)
    await waitFor(() => !upstreamOf(gateway, victim.url).available, 5_000, 'the custom check to take it out')
    const ms = Date.now() - started
    console.log(`CUSTOM-CHECK-OUT ms=${ms} interval=${interval}`)
    // One jittered interval (≤ 1.1×) plus the round itself.
    expect(ms).toBeLessThan(interval * 1.1 + 500)
    const s = upstreamOf(gateway, victim.url)
    expect(s.health.healthy).toBe(false)
    expect(s.health.lastError).toBeTruthy()

    const before = victim.count
    const replies = await sendMany(`${url}/api/x`, 20, 2)
    expect(replies.every((r) => r.status === 200)).toBe(true)
    expect(victim.count).toBe(before)
    // A custom check replaces the HTTP one.
    expect(ups.every((u) => u.healthHits.length === 0)).toBe(true)
  })

  it('HealthCheckResult and plain results: healthy, latency (ms) and error are reported', async () => {
    const [a, b, c] = await Promise.all([refusedPort(), refusedPort(), refusedPort()]).then((ps) => ps.map((p) => `http://127.0.0.1:${p}`))
    const loadBalancer = balancer([a, b, c], {
      checkInterval: '60ms',
      consecutiveFailures: 1,
      customCheckFunction: async (server) => {
        if (server === a) return new HealthCheckResult({ healthy: false, latency: 42, error: 'disk full' })
        if (server === b) return { healthy: true, latency: 7 }
        return new HealthCheckResult({ healthy: true })
      },
    })
    defer(() => loadBalancer.close())
    await checkedAll(() => loadBalancer.status(), 2)
    const [sa, sb, sc] = loadBalancer.status()
    expect(sa.health.healthy).toBe(false)
    expect(sa.health.lastError).toBe('disk full')
    expect(sa.health.lastLatencyMs).toBeCloseTo(42, 0)
    expect(sa.available).toBe(false)
    expect(sb.health.healthy).toBe(true)
    expect(sb.health.lastLatencyMs).toBeCloseTo(7, 0)
    expect(sb.health.lastError).toBeNull()
    expect(sc.health.healthy).toBe(true)
    expect(sc.health.lastLatencyMs).toBeGreaterThan(0)
  })

  it('a custom check that throws, rejects, hangs or returns garbage counts as unhealthy', async () => {
    const kinds = ['throw', 'reject', 'string', 'null', 'undefined', 'badHealthy', 'hang', 'good'] as const
    const ports = await Promise.all(kinds.map(() => refusedPort()))
    const urls = ports.map((p) => `http://127.0.0.1:${p}`)
    const kindOf = new Map(urls.map((u, i) => [u, kinds[i]]))
    const loadBalancer = balancer(urls, {
      checkInterval: '80ms',
      timeout: '200ms',
      consecutiveFailures: 1,
      customCheckFunction: ((server: string) => {
        switch (kindOf.get(server)) {
          case 'throw':
            throw new Error('boom')
          case 'reject':
            return Promise.reject(new Error('nope'))
          case 'string':
            return 'yes'
          case 'null':
            return null
          case 'undefined':
            return undefined
          case 'badHealthy':
            return { healthy: 'true' }
          case 'hang':
            return new Promise(() => {})
          default:
            return true
        }
      }) as never,
    })
    defer(() => loadBalancer.close())
    await waitFor(
      () => loadBalancer.status().filter((s) => !s.health.healthy).length === kinds.length - 1,
      10_000,
      'every bad check to mark its server down',
    )
    const byKind = Object.fromEntries(loadBalancer.status().map((s) => [kindOf.get(s.url), s]))
    expect(byKind.good.health.healthy).toBe(true)
    expect(byKind.good.available).toBe(true)
    expect(byKind.throw.health.lastError).toContain('boom')
    expect(byKind.reject.health.lastError).toContain('nope')
    for (const k of ['string', 'null', 'undefined', 'badHealthy'] as const) {
      expect(byKind[k].health.healthy, k).toBe(false)
      expect(byKind[k].health.lastError, k).toBeTruthy()
    }
    expect(byKind.hang.health.lastError).toContain('200')
  })
})

// ---------------------------------------------------------------------------------------

describe('stopping', () => {
  async function expectNoMoreChecks(up: FaultUpstream, calls: () => number): Promise<void> {
    await sleep(150) // a round already started may finish
    const hits = up.healthHits.length
    const made = calls()
    await sleep(500) // ten intervals
    expect(up.healthHits.length, 'health endpoint requests after close').toBe(hits)
    expect(calls(), 'custom checks after close').toBe(made)
  }

  it('loadBalancer.close() stops the checks; requests still work', async () => {
    const up = await startFaultUpstream('x')
    let custom = 0
    const http = balancer([up.url], { checkInterval: '50ms' })
    const viaFn = new LoadBalancer({
      upstreamServers: [`http://127.0.0.1:${await refusedPort()}`],
      healthChecker: new HealthChecker({ checkInterval: '50ms', customCheckFunction: () => (custom++, true) }),
    })
    defer(() => http.close())
    defer(() => viaFn.close())
    await waitFor(() => up.healthHits.length >= 2 && custom >= 2, 10_000, 'checks running')
    http.close()
    viaFn.close()
    http.close() // idempotent
    await expectNoMoreChecks(up, () => custom)
    const { url } = await startGateway({ loadBalancer: http })
    expect((await send(`${url}/api/x`)).status).toBe(200)
  })

  it('gateway.close() stops the checks of its balancers', async () => {
    const up = await startFaultUpstream('x')
    const loadBalancer = balancer([up.url], { checkInterval: '50ms' })
    defer(() => loadBalancer.close())
    const gateway = new Gateway({ loadBalancer })
    await waitFor(() => up.healthHits.length >= 2, 10_000, 'checks running')
    gateway.close()
    await expectNoMoreChecks(up, () => 0)
  })

  it('app.close() of an app that included the gateway router stops the checks', async () => {
    const up = await startFaultUpstream('x')
    const loadBalancer = balancer([up.url], { checkInterval: '50ms' })
    defer(() => loadBalancer.close())
    const gateway = new Gateway({ loadBalancer })
    gateway.route('/api/{p:path}')
    const app = new Velithon({ workerThreads: 1 })
    app.includeRouter(gateway.getRouter())
    defer(() => app.close())
    const { url } = await app.listen({ port: 0, host: '127.0.0.1' })
    expect((await send(`${url}/api/x`)).status).toBe(200)
    await waitFor(() => up.healthHits.length >= 2, 10_000, 'checks running')
    await app.close()
    await expectNoMoreChecks(up, () => 0)
  })
})

// ---------------------------------------------------------------------------------------

describe('no healthy server', () => {
  it('every server down: 503 VG_NO_HEALTHY_UPSTREAM with Retry-After (pure route and forwardRequest); recovers', async () => {
    const ups = await upstreams(2)
    for (const u of ups) u.healthMode = fail(500)
    const loadBalancer = balancer(
      ups.map((u) => u.url),
      { checkInterval: '80ms', consecutiveFailures: 1 },
    )
    const caught: unknown[] = []
    const { url } = await startGateway({
      loadBalancer,
      handlers: (app, gw) =>
        app.get('/h/{p:path}', async (req) => {
          try {
            return await gw.forwardRequest(req)
          } catch (err) {
            caught.push(err)
            throw err
          }
        }),
      app: { onError: () => {} },
    })
    await waitFor(() => loadBalancer.status().every((s) => !s.available), 10_000, 'every server down')

    const r = await send(`${url}/api/x`)
    expect(r.status).toBe(503)
    expect(errorOf(r).code).toBe('VG_NO_HEALTHY_UPSTREAM')
    expect(r.headers['retry-after']).toMatch(/^\d+$/)
    expect(Number(r.headers['retry-after'])).toBeGreaterThanOrEqual(1)

    const h = await send(`${url}/h/x`)
    expect(h.status).toBe(503)
    expect(errorOf(h).code).toBe('VG_NO_HEALTHY_UPSTREAM')
    expect(caught[0]).toBeInstanceOf(UpstreamError)
    expect((caught[0] as UpstreamError).code).toBe('VG_NO_HEALTHY_UPSTREAM')
    expect(ups[0].count + ups[1].count).toBe(0)

    ups[0].healthMode = OK
    await waitFor(() => loadBalancer.status().find((s) => s.url === ups[0].url)?.available === true, 10_000, 'one back')
    expect((await send(`${url}/api/x`)).status).toBe(200)
    expect(ups[0].count).toBe(1)
  })
})

// ---------------------------------------------------------------------------------------

describe('option validation', () => {
  const cases: [string, () => unknown, string][] = [
    ['checkInterval 0', () => new HealthChecker({ checkInterval: 0 }), 'checkInterval'],
    ["checkInterval 'often'", () => new HealthChecker({ checkInterval: 'often' as never }), 'checkInterval'],
    ['timeout 0', () => new HealthChecker({ timeout: 0 }), 'timeout'],
    ["checkPath 'health'", () => new HealthChecker({ checkPath: 'health' }), 'checkPath'],
    ["checkPath '/a b'", () => new HealthChecker({ checkPath: '/a b' }), 'checkPath'],
    ['expectedStatus 99', () => new HealthChecker({ expectedStatus: 99 }), 'expectedStatus'],
    ['expectedStatus [200, 600]', () => new HealthChecker({ expectedStatus: [200, 600] }), 'expectedStatus'],
    ["expectedStatus '200'", () => new HealthChecker({ expectedStatus: '200' as never }), 'expectedStatus'],
    ['consecutiveFailures 0', () => new HealthChecker({ consecutiveFailures: 0 }), 'consecutiveFailures'],
    ['consecutiveSuccesses 1.5', () => new HealthChecker({ consecutiveSuccesses: 1.5 }), 'consecutiveSuccesses'],
    ["customCheckFunction 'x'", () => new HealthChecker({ customCheckFunction: 'x' as never }), 'customCheckFunction'],
    ['HealthChecker unknown key', () => new HealthChecker({ path: '/health' } as never), 'path'],
    ["HealthCheckResult healthy 'yes'", () => new HealthCheckResult({ healthy: 'yes' as never }), 'healthy'],
    ['HealthCheckResult latency -1', () => new HealthCheckResult({ healthy: true, latency: -1 }), 'latency'],
    ['HealthCheckResult latency Infinity', () => new HealthCheckResult({ healthy: true, latency: Infinity }), 'latency'],
    ['HealthCheckResult latency NaN', () => new HealthCheckResult({ healthy: true, latency: NaN }), 'latency'],
    ['HealthCheckResult error 5', () => new HealthCheckResult({ healthy: false, error: 5 as never }), 'error'],
    ['HealthCheckResult unknown key', () => new HealthCheckResult({ healthy: true, ms: 3 } as never), 'ms'],
    [
      'LoadBalancer healthChecker {}',
      () => new LoadBalancer({ upstreamServers: ['http://127.0.0.1:1'], healthChecker: { checkInterval: '1s' } as never }),
      'healthChecker',
    ],
    [
      'LoadBalancer healthCheckInterval 0',
      () => new LoadBalancer({ upstreamServers: ['http://127.0.0.1:1'], healthCheckInterval: 0 }),
      'healthCheckInterval',
    ],
    [
      'LoadBalancer healthChecker and healthCheckInterval',
      () => new LoadBalancer({ upstreamServers: ['http://127.0.0.1:1'], healthChecker: new HealthChecker(), healthCheckInterval: '1s' }),
      'healthCheckInterval',
    ],
  ]
  for (const [name, make, option] of cases) {
    it(`${name} → ConfigError naming "${option}"`, () => {
      const err = configErrorOf(make)
      expect(err).toBeInstanceOf(ConfigError)
      expect(err.code).toBe('VG_INVALID_OPTION')
      expect(err.option).toBe(option)
      expect(err.message).toContain(option)
    })
  }

  it('valid options construct; HealthCheckResult keeps its fields', () => {
    expect(
      new HealthChecker({
        checkInterval: '1s',
        timeout: 500,
        checkPath: '/status?deep=1',
        expectedStatus: [200, 204],
        consecutiveFailures: 1,
        consecutiveSuccesses: 5,
        customCheckFunction: () => true,
      }),
    ).toBeInstanceOf(HealthChecker)
    const r = new HealthCheckResult({ healthy: false, latency: 12.5, error: 'x' })
    expect([r.healthy, r.latency, r.error]).toEqual([false, 12.5, 'x'])
    const plain = new HealthCheckResult({ healthy: true })
    expect([plain.healthy, plain.latency, plain.error]).toEqual([true, undefined, undefined])
  })
})
