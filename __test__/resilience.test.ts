/**
 * Circuit breakers and outlier detection against real upstreams on loopback: a server
 * killed under load is ejected with no client-visible error, a 503-ing server opens its
 * breaker (fast 503 VG_CIRCUIT_OPEN + Retry-After), half-open admits exactly
 * `halfOpenRequests` probes, timeouts and connect errors count, success/failure in
 * half-open, CircuitBreakerOpenError in JS handlers, passive ejection that never takes
 * the last server, status reports, and the ConfigErrors of bad options.
 */
import http from 'node:http'
import { afterEach, describe, expect, it, vi } from 'vitest'
import {
  CircuitBreaker,
  CircuitBreakerOpenError,
  ConfigError,
  ErrorCodes,
  Gateway,
  JSONResponse,
  LoadBalancer,
  OutlierDetection,
  RetryConfig,
  RoundRobinStrategy,
  VelithonError,
  type Duration,
} from 'velithon-gateway'
import { closeAll, defer, errorOf, refusedPort, send, sleep, waitFor, type Reply } from './helpers/net'
import {
  OK,
  attemptsTo,
  breakerOf,
  configErrorOf,
  fail,
  gate,
  okOf,
  runLoad,
  startFaultUpstream,
  startGateway,
  upstreamOf,
  type FaultUpstream,
} from './helpers/fault'

afterEach(async () => {
  await closeAll()
})

/** Asserts a gateway's own "breaker open" answer: 503, JSON code, Retry-After in [min, max]. */
function expectCircuitOpen(reply: Reply, retryAfter: [number, number] = [1, 3600]): void {
  expect(reply.status, reply.body.toString()).toBe(503)
  const body = errorOf(reply)
  expect(body.code).toBe('VG_CIRCUIT_OPEN')
  expect(typeof body.error).toBe('string')
  expect(typeof body.message).toBe('string')
  expect(body.message.length).toBeGreaterThan(0)
  const header = reply.headers['retry-after']
  expect(header, 'Retry-After header').toMatch(/^\d+$/)
  const secs = Number(header)
  expect(secs).toBeGreaterThanOrEqual(Math.max(1, retryAfter[0]))
  expect(secs).toBeLessThanOrEqual(retryAfter[1])
}

async function faultUpstreams(n: number, prefix = 's'): Promise<FaultUpstream[]> {
  return Promise.all(Array.from({ length: n }, (_, i) => startFaultUpstream(`${prefix}${i}`)))
}

// ---------------------------------------------------------------------------------------

describe('a server killed under load', () => {
  it('KILL-ONE-OF-THREE: zero client errors for GETs, the dead server gets no attempts once ejected', async () => {
    const ups = await faultUpstreams(3)
    const victim = ups[1]
    const loadBalancer = new LoadBalancer({
      upstreamServers: ups.map((u) => u.url),
      strategy: new RoundRobinStrategy(),
      circuitBreaker: new CircuitBreaker({ failureThreshold: 3, timeoutDuration: '30s' }),
      outlierDetection: new OutlierDetection({ consecutiveFailures: 3, baseEjectionTime: '30s' }),
    })
    const { url, gateway } = await startGateway({
      loadBalancer,
      gateway: {
        timeout: '5s',
        connectTimeout: '1s',
        retryConfig: new RetryConfig({ maxAttempts: 3, baseDelay: '2ms', maxDelay: '20ms' }),
      },
    })

    let killedAt = 0
    let ejectMs = -1
    let attemptsAtEjection = -1
    let victimReceivedAtKill = -1
    const ejected = () => {
      const s = upstreamOf(gateway, victim.url)
      return s.available === false || s.breaker?.state === 'open'
    }
    const killer = (async () => {
      await sleep(800)
      victimReceivedAtKill = victim.count
      killedAt = Date.now()
      await victim.close() // server.close() + destroy every socket
      // Poll every millisecond (waitFor's 10 ms would round the measurement up).
      while (!ejected()) {
        if (Date.now() - killedAt > 10_000) throw new Error('the killed server was not ejected within 10 s')
        await sleep(1)
      }
      ejectMs = Date.now() - killedAt
      attemptsAtEjection = attemptsTo(gateway, victim.url)
    })()
    const othersBefore = () => ups[0].count + ups[2].count
    let othersAtKill = -1
    void killer.then(() => (othersAtKill = othersBefore()))

    const result = await runLoad({ url, concurrency: 4, durationMs: 3_000 })
    await killer
    console.log(`KILL-ONE-OF-THREE requests=${result.requests} errors=${result.errors} ejectMs=${ejectMs}`)

    expect(result.errors, `client-visible failures: ${result.samples.join(' | ')}`).toBe(0)
    expect(result.requests).toBeGreaterThan(50)
    expect(victimReceivedAtKill, 'the victim took traffic before it was killed').toBeGreaterThan(0)
    expect(ejectMs).toBeGreaterThanOrEqual(0)
    // After ejection the gateway sent the dead server nothing more.
    expect(attemptsTo(gateway, victim.url)).toBe(attemptsAtEjection)
    const s = upstreamOf(gateway, victim.url)
    expect(s.available).toBe(false)
    // The survivors carried the load after the kill.
    expect(othersBefore()).toBeGreaterThan(othersAtKill)
    for (const live of [ups[0], ups[2]]) expect(upstreamOf(gateway, live.url).available).toBe(true)
  })
})

// ---------------------------------------------------------------------------------------

describe('circuit breaker', () => {
  it('opens on 503s, answers fast 503 VG_CIRCUIT_OPEN with Retry-After, admits exactly halfOpenRequests probes, closes on recovery', async () => {
    const up = await startFaultUpstream('flaky', { mode: fail(503) })
    const loadBalancer = new LoadBalancer({
      upstreamServers: [up.url],
      circuitBreaker: new CircuitBreaker({ failureThreshold: 3, timeoutDuration: '1500ms', halfOpenRequests: 2 }),
    })
    const { url, gateway } = await startGateway({ loadBalancer })

    for (let i = 0; i < 3; i++) {
      const r = await send(`${url}/api/x`)
      expect(r.status).toBe(503)
      expect(r.headers['x-upstream'], 'the upstream answered this one').toBe('flaky')
    }
    expect(up.count).toBe(3)
    let b = breakerOf(gateway, up.url)
    expect(b.state).toBe('open')
    expect(b.timesOpened).toBe(1)
    expect(b.consecutiveFailures).toBe(3)
    expect(b.retryInMs).toBeGreaterThan(0)
    expect(b.retryInMs).toBeLessThanOrEqual(1500)
    expect(upstreamOf(gateway, up.url).available).toBe(false)

    // Open: refused by the gateway, the upstream sees nothing.
    for (let i = 0; i < 5; i++) expectCircuitOpen(await send(`${url}/api/x`), [1, 2])
    expect(up.count).toBe(3)

    // After timeoutDuration the server admits probes again.
    await waitFor(() => upstreamOf(gateway, up.url).available, 5_000, 'the breaker to be due for probes')
    b = breakerOf(gateway, up.url)
    expect(['open', 'half_open']).toContain(b.state)
    if (b.state === 'open') expect(b.retryInMs).toBe(0)

    // Half-open with a slow probe: 6 concurrent requests, exactly 2 reach the upstream.
    const held = gate()
    defer(() => held.open()) // never leave an upstream answer hanging past the test
    up.mode = { kind: 'gate', gate: held }
    const done: Reply[] = []
    const all = Array.from({ length: 6 }, () => send(`${url}/api/probe`).then((r) => (done.push(r), r)))
    await waitFor(() => up.count === 5 && done.length === 4, 5_000, 'two probes held upstream and four refusals')
    for (const r of done) expectCircuitOpen(r, [1, 2])
    b = breakerOf(gateway, up.url)
    expect(b.state).toBe('half_open')
    expect(b.probesInFlight).toBe(2)
    expect(up.count).toBe(5)

    held.open()
    const replies = await Promise.all(all)
    expect(replies.filter((r) => r.status === 200)).toHaveLength(2)
    await waitFor(() => breakerOf(gateway, up.url).state === 'closed', 5_000, 'the breaker to close')
    b = breakerOf(gateway, up.url)
    expect(b.consecutiveFailures).toBe(0)
    expect(b.probesInFlight).toBe(0)
    expect(b.retryInMs).toBeNull()

    up.mode = OK
    const after = await send(`${url}/api/after`)
    expect(after.status).toBe(200)
    expect(okOf(after).path).toBe('/api/after')
    expect(up.count).toBe(6)
  })

  it('a slow upstream: 504 VG_UPSTREAM_TIMEOUT, counted by the breaker, which opens after failureThreshold', async () => {
    const up = await startFaultUpstream('slow', { mode: { kind: 'hang' } })
    const loadBalancer = new LoadBalancer({
      upstreamServers: [up.url],
      circuitBreaker: new CircuitBreaker({ failureThreshold: 2, timeoutDuration: '30s' }),
    })
    const { url, gateway } = await startGateway({ loadBalancer, gateway: { timeout: '200ms' } })

    const first = await send(`${url}/api/a`)
    expect(first.status).toBe(504)
    expect(errorOf(first).code).toBe('VG_UPSTREAM_TIMEOUT')
    let b = breakerOf(gateway, up.url)
    expect(b.state).toBe('closed')
    expect(b.consecutiveFailures).toBe(1)

    const second = await send(`${url}/api/b`)
    expect(second.status).toBe(504)
    expect(errorOf(second).code).toBe('VG_UPSTREAM_TIMEOUT')
    b = breakerOf(gateway, up.url)
    expect(b.state).toBe('open')
    expect(b.timesOpened).toBe(1)

    expectCircuitOpen(await send(`${url}/api/c`), [29, 30])
    expect(up.count).toBe(2)
    expect(upstreamOf(gateway, up.url).failures).toBe(2)
  })

  it('connection refused counts as a failure (502 VG_UPSTREAM_CONNECT, then open)', async () => {
    const dead = `http://127.0.0.1:${await refusedPort()}`
    const loadBalancer = new LoadBalancer({
      upstreamServers: [dead],
      circuitBreaker: new CircuitBreaker({ failureThreshold: 2, timeoutDuration: '30s' }),
    })
    const { url, gateway } = await startGateway({ loadBalancer, gateway: { connectTimeout: '1s' } })
    for (let i = 0; i < 2; i++) {
      const r = await send(`${url}/api/x`)
      expect(r.status).toBe(502)
      expect(errorOf(r).code).toBe('VG_UPSTREAM_CONNECT')
    }
    expect(breakerOf(gateway, dead).state).toBe('open')
    expectCircuitOpen(await send(`${url}/api/x`))
    expect(attemptsTo(gateway, dead)).toBe(2)
  })

  it('a failed half-open probe reopens it; successThreshold 2 needs two probe successes', async () => {
    const up = await startFaultUpstream('wobbly', { mode: fail(500) })
    const loadBalancer = new LoadBalancer({
      upstreamServers: [up.url],
      circuitBreaker: new CircuitBreaker({ failureThreshold: 1, timeoutDuration: '300ms', successThreshold: 2 }),
    })
    const { url, gateway } = await startGateway({ loadBalancer })
    const due = () => waitFor(() => upstreamOf(gateway, up.url).available, 5_000, 'the breaker to admit a probe')

    expect((await send(`${url}/api/1`)).status).toBe(500)
    expect(breakerOf(gateway, up.url).state).toBe('open')
    expect(breakerOf(gateway, up.url).timesOpened).toBe(1)
    expectCircuitOpen(await send(`${url}/api/refused`))

    // The probe fails: open again at once.
    await due()
    const probe = await send(`${url}/api/2`)
    expect(probe.status).toBe(500)
    expect(probe.headers['x-upstream']).toBe('wobbly')
    let b = breakerOf(gateway, up.url)
    expect(b.state).toBe('open')
    expect(b.timesOpened).toBe(2)
    expect(b.retryInMs).toBeGreaterThan(0)
    expectCircuitOpen(await send(`${url}/api/refused`))
    expect(up.count).toBe(2)

    // The server recovers: one success is not enough, the second closes it.
    up.mode = OK
    await due()
    expect((await send(`${url}/api/3`)).status).toBe(200)
    b = breakerOf(gateway, up.url)
    expect(b.state).toBe('half_open')
    expect(b.halfOpenSuccesses).toBe(1)
    expect((await send(`${url}/api/4`)).status).toBe(200)
    b = breakerOf(gateway, up.url)
    expect(b.state).toBe('closed')
    expect(b.halfOpenSuccesses).toBe(0)
    expect(b.timesOpened).toBe(2)
    expect((await send(`${url}/api/5`)).status).toBe(200)
    expect(up.count).toBe(5)
  })

  it('a half-open probe whose connection is reset reopens it too', async () => {
    const up = await startFaultUpstream('back')
    const loadBalancer = new LoadBalancer({
      upstreamServers: [up.url],
      circuitBreaker: new CircuitBreaker({ failureThreshold: 1, timeoutDuration: '200ms' }),
    })
    const { url, gateway } = await startGateway({ loadBalancer, gateway: { timeout: '300ms', connectTimeout: '1s' } })
    up.mode = { kind: 'reset' }
    const r = await send(`${url}/api/x`)
    expect(r.status).toBe(502)
    expect(errorOf(r).code).toBe('VG_UPSTREAM_PROTOCOL')
    expect(breakerOf(gateway, up.url).state).toBe('open')
    await waitFor(() => upstreamOf(gateway, up.url).available, 5_000, 'due for a probe')
    const probe = await send(`${url}/api/y`)
    expect(probe.status).toBe(502)
    expect(breakerOf(gateway, up.url).state).toBe('open')
    expect(breakerOf(gateway, up.url).timesOpened).toBe(2)
  })

  it('a half-open probe whose client went away frees its slot: the next request is admitted as a probe', async () => {
    const up = await startFaultUpstream('x', { mode: fail(503) })
    const loadBalancer = new LoadBalancer({
      upstreamServers: [up.url],
      circuitBreaker: new CircuitBreaker({ failureThreshold: 1, timeoutDuration: '300ms', halfOpenRequests: 1 }),
    })
    const { url, gateway } = await startGateway({ loadBalancer })
    expect((await send(`${url}/api/x`)).status).toBe(503)
    await waitFor(() => upstreamOf(gateway, up.url).available, 5_000, 'due for a probe')
    const held = gate()
    defer(() => held.open()) // never leave an upstream answer hanging past the test
    up.mode = { kind: 'gate', gate: held }
    const client = http.get(`${url}/api/probe`)
    client.on('error', () => {})
    await waitFor(() => up.count === 2, 5_000, 'the probe to reach the upstream')
    expect(breakerOf(gateway, up.url).probesInFlight).toBe(1)
    client.destroy()
    await waitFor(() => breakerOf(gateway, up.url).probesInFlight === 0, 5_000, 'the abandoned probe to free its slot')
    up.mode = OK
    const next = await send(`${url}/api/next`)
    expect(next.status).toBe(200)
    expect(up.count).toBe(3)
    expect(breakerOf(gateway, up.url).state).toBe('closed')
    held.open()
  })

  it('two `upstream:` routes to the same server share its breaker, and the status tells the truth', async () => {
    const up = await startFaultUpstream('x', { mode: fail(503) })
    const { url, gateway } = await startGateway({
      gateway: { circuitBreaker: new CircuitBreaker({ failureThreshold: 1, timeoutDuration: '30s' }) },
      route: false,
      routes: (gw) => {
        gw.route('/a/{p:path}', { upstream: up.url })
        gw.route('/b/{p:path}', { upstream: up.url })
      },
    })
    expect((await send(`${url}/a/x`)).status).toBe(503)
    expectCircuitOpen(await send(`${url}/a/x`))
    // Whatever the routes share, the reported state must be the state that refused /a.
    expect(breakerOf(gateway, up.url).state).toBe('open')
    expect(breakerOf(gateway, up.url).timesOpened).toBe(1)
    // One state machine per upstream server: /b is refused too, the server sees nothing more.
    expectCircuitOpen(await send(`${url}/b/x`))
    expect(up.count).toBe(1)
  })

  it('in a JS handler, forwardRequest rejects with CircuitBreakerOpenError; the handler can answer a fallback', async () => {
    const ups = await Promise.all([startFaultUpstream('a', { mode: fail(503) }), startFaultUpstream('b', { mode: fail(503) })])
    const loadBalancer = new LoadBalancer({
      upstreamServers: ups.map((u) => u.url),
      circuitBreaker: new CircuitBreaker({ failureThreshold: 1, timeoutDuration: '30s' }),
    })
    const caught: unknown[] = []
    const onError = vi.fn()
    const { url, gateway } = await startGateway({
      loadBalancer,
      route: false,
      app: { onError },
      handlers: (app, gw) => {
        app.get('/h/{p:path}', async (req) => {
          try {
            return await gw.forwardRequest(req)
          } catch (err) {
            caught.push(err)
            if (err instanceof CircuitBreakerOpenError) {
              return new JSONResponse({ fallback: true, code: err.code }, 200, { 'x-fallback': 'cache' })
            }
            throw err
          }
        })
        app.get('/raw/{p:path}', (req) => gw.forwardRequest(req))
      },
    })

    // Each server answers one 503 (passed through), which opens its breaker.
    for (let i = 0; i < 2; i++) {
      const r = await send(`${url}/h/x`)
      expect(r.status).toBe(503)
      expect(r.headers['x-upstream']).toMatch(/^[ab]$/)
    }
    expect(caught).toHaveLength(0)
    for (const u of ups) expect(breakerOf(gateway, u.url).state).toBe('open')

    const fb = await send(`${url}/h/y`)
    expect(fb.status).toBe(200)
    expect(fb.headers['x-fallback']).toBe('cache')
    expect(JSON.parse(fb.body.toString())).toEqual({ fallback: true, code: 'VG_CIRCUIT_OPEN' })
    expect(caught).toHaveLength(1)
    const err = caught[0] as CircuitBreakerOpenError
    expect(err).toBeInstanceOf(CircuitBreakerOpenError)
    expect(err).toBeInstanceOf(VelithonError)
    expect(err.code).toBe(ErrorCodes.CIRCUIT_OPEN)
    expect(err.name).toBe('CircuitBreakerOpenError')

    // Not caught: the client gets the same answer as from a pure route.
    const raw = await send(`${url}/raw/z`)
    expect(raw.status).toBe(503)
    expect(errorOf(raw).code).toBe('VG_CIRCUIT_OPEN')
    expect(ups[0].count + ups[1].count).toBe(2)
  })

  it('an uncaught CircuitBreakerOpenError answers like a pure route, Retry-After (seconds until half-open) included', async () => {
    const up = await startFaultUpstream('a', { mode: fail(503) })
    const loadBalancer = new LoadBalancer({
      upstreamServers: [up.url],
      circuitBreaker: new CircuitBreaker({ failureThreshold: 1, timeoutDuration: '30s' }),
    })
    const { url } = await startGateway({
      loadBalancer,
      app: { onError: () => {} },
      handlers: (app, gw) => app.get('/raw/{p:path}', (req) => gw.forwardRequest(req)),
    })
    expect((await send(`${url}/api/x`)).status).toBe(503)
    const pure = await send(`${url}/api/x`)
    expectCircuitOpen(pure, [29, 30])
    const raw = await send(`${url}/raw/x`)
    expectCircuitOpen(raw, [29, 30])
  })

  it('Gateway({ circuitBreaker }) gives every balancer it uses without one a breaker; a balancer keeps its own', async () => {
    const [a, b, c] = await Promise.all([
      startFaultUpstream('a', { mode: fail(503) }),
      startFaultUpstream('b', { mode: fail(503) }),
      startFaultUpstream('c', { mode: fail(503) }),
    ])
    const bare = new LoadBalancer({ upstreamServers: [b.url] })
    const own = new LoadBalancer({ upstreamServers: [c.url], circuitBreaker: new CircuitBreaker({ failureThreshold: 5 }) })
    const { url, gateway } = await startGateway({
      gateway: { circuitBreaker: new CircuitBreaker({ failureThreshold: 1, timeoutDuration: '30s' }) },
      route: false,
      routes: (gw) => {
        gw.route('/one/{p:path}', { upstream: a.url })
        gw.route('/lb/{p:path}', { loadBalancer: bare })
        gw.route('/own/{p:path}', { loadBalancer: own })
      },
    })
    for (const p of ['one', 'lb', 'own']) expect((await send(`${url}/${p}/x`)).status).toBe(503)
    const all = gateway.getCircuitBreakerStatus()
    expect(Object.keys(all).sort()).toEqual([a.url, b.url, c.url].sort())
    expect(all[a.url].state).toBe('open')
    expect(all[b.url].state).toBe('open')
    expect(all[c.url].state).toBe('closed')
    expect(all[c.url].consecutiveFailures).toBe(1)
    expectCircuitOpen(await send(`${url}/one/x`))
    expectCircuitOpen(await send(`${url}/lb/x`))
    expect((await send(`${url}/own/x`)).status).toBe(503)
    expect(c.count).toBe(2)
    bare.close()
    own.close()
  })

  it('circuitBreakerThreshold shorthand: opens after n failures, default timeoutDuration 60 s in Retry-After', async () => {
    const up = await startFaultUpstream('x', { mode: fail(502) })
    const loadBalancer = new LoadBalancer({ upstreamServers: [up.url], circuitBreakerThreshold: 2 })
    expect(loadBalancer.circuitBreaker).toBeInstanceOf(CircuitBreaker)
    const { url, gateway } = await startGateway({ loadBalancer })
    expect((await send(`${url}/api/1`)).status).toBe(502)
    expect(breakerOf(gateway, up.url).state).toBe('closed')
    expect((await send(`${url}/api/2`)).status).toBe(502)
    expect(breakerOf(gateway, up.url).state).toBe('open')
    expectCircuitOpen(await send(`${url}/api/3`), [59, 60])
  })

  it('failureStatusCodes decides what counts: 429 does, 500 then does not', async () => {
    const up = await startFaultUpstream('x', { mode: fail(500) })
    const loadBalancer = new LoadBalancer({
      upstreamServers: [up.url],
      circuitBreaker: new CircuitBreaker({ failureThreshold: 2, failureStatusCodes: [429], timeoutDuration: '30s' }),
    })
    const { url, gateway } = await startGateway({ loadBalancer })
    for (let i = 0; i < 3; i++) expect((await send(`${url}/api/x`)).status).toBe(500)
    expect(breakerOf(gateway, up.url).state).toBe('closed')
    expect(breakerOf(gateway, up.url).consecutiveFailures).toBe(0)
    up.mode = fail(429)
    expect((await send(`${url}/api/x`)).status).toBe(429)
    expect(breakerOf(gateway, up.url).consecutiveFailures).toBe(1)
    expect((await send(`${url}/api/x`)).status).toBe(429)
    expect(breakerOf(gateway, up.url).state).toBe('open')
  })

  it('failureRate mode opens on the share of failures once minimumRequests were seen', async () => {
    const statuses = [200, 500, 200, 500]
    let i = 0
    const up = await startFaultUpstream('x', { mode: () => (statuses[i++] === 500 ? fail(500) : OK) })
    const loadBalancer = new LoadBalancer({
      upstreamServers: [up.url],
      circuitBreaker: new CircuitBreaker({
        failureThreshold: 100,
        failureRate: 0.5,
        minimumRequests: 4,
        rollingWindow: '10s',
        timeoutDuration: '30s',
      }),
    })
    const { url, gateway } = await startGateway({ loadBalancer })
    for (let n = 0; n < 3; n++) await send(`${url}/api/x`)
    expect(breakerOf(gateway, up.url).state, '1 of 3 failed, below minimumRequests').toBe('closed')
    expect((await send(`${url}/api/x`)).status).toBe(500)
    expect(breakerOf(gateway, up.url).state, '2 of 4 failed').toBe('open')
    expectCircuitOpen(await send(`${url}/api/x`))
  })

  it('getCircuitBreakerStatus reports camelCase fields of every breaker', async () => {
    const up = await startFaultUpstream('x')
    const loadBalancer = new LoadBalancer({ upstreamServers: [up.url], circuitBreaker: new CircuitBreaker() })
    const { gateway } = await startGateway({ loadBalancer })
    const b = gateway.getCircuitBreakerStatus()[up.url] as unknown as Record<string, unknown>
    expect(Object.keys(b).sort()).toEqual(
      ['consecutiveFailures', 'halfOpenSuccesses', 'probesInFlight', 'retryInMs', 'state', 'timesOpened'].sort(),
    )
    expect(b).toEqual({
      state: 'closed',
      consecutiveFailures: 0,
      halfOpenSuccesses: 0,
      probesInFlight: 0,
      timesOpened: 0,
      retryInMs: null,
    })
    expect(upstreamOf(gateway, up.url).breaker).toEqual(b)
  })

  it('getUpstreamStatus and loadBalancer.status() report every server', async () => {
    const ups = await faultUpstreams(2)
    const loadBalancer = new LoadBalancer({ upstreamServers: ups.map((u) => u.url) })
    const { url, gateway } = await startGateway({ loadBalancer })
    for (let i = 0; i < 4; i++) expect((await send(`${url}/api/x`)).status).toBe(200)
    const all = gateway.getUpstreamStatus()
    expect(Object.keys(all).sort()).toEqual(ups.map((u) => u.url).sort())
    for (const u of ups) {
      const s = all[u.url]
      expect(s.url).toBe(u.url)
      expect(s.available).toBe(true)
      expect(s.weight).toBe(1)
      expect(s.inFlight).toBe(0)
      expect(s.requests).toBe(2)
      expect(s.failures).toBe(0)
      expect(typeof s.latencyMs).toBe('number')
      expect(s.health).toEqual({
        healthy: true,
        consecutiveFailures: 0,
        consecutiveSuccesses: 0,
        lastLatencyMs: null,
        checks: 0,
        lastError: null,
      })
      expect(s.breaker).toBeNull()
      expect(s.ejectedMsLeft).toBeNull()
    }
    const list = loadBalancer.status()
    expect(Array.isArray(list)).toBe(true)
    expect(list.map((s) => s.url)).toEqual(ups.map((u) => u.url))
    expect(gateway.getCircuitBreakerStatus()).toEqual({})
  })
})

// ---------------------------------------------------------------------------------------

describe('outlier detection', () => {
  it('ejects a server failing consecutively (ejectedMsLeft > 0, no traffic); it comes back after the ejection', async () => {
    const ups = await faultUpstreams(3)
    const bad = ups[1]
    bad.mode = fail(500)
    const loadBalancer = new LoadBalancer({
      upstreamServers: ups.map((u) => u.url),
      outlierDetection: new OutlierDetection({ consecutiveFailures: 3, baseEjectionTime: '700ms' }),
    })
    const { url, gateway } = await startGateway({ loadBalancer })
    let sent = 0
    while (upstreamOf(gateway, bad.url).ejectedMsLeft === null) {
      await send(`${url}/api/x`)
      if (++sent > 30) throw new Error('the failing server was never ejected')
    }
    expect(bad.count).toBe(3)
    const s = upstreamOf(gateway, bad.url)
    expect(s.ejectedMsLeft).toBeGreaterThan(0)
    expect(s.ejectedMsLeft).toBeLessThanOrEqual(700)
    expect(s.available).toBe(false)
    expect(s.breaker).toBeNull()

    // While ejected the others take everything (send fast enough to stay inside 700 ms
    // or stop when it is due again).
    bad.mode = OK
    const before = bad.count
    for (let i = 0; i < 10 && upstreamOf(gateway, bad.url).ejectedMsLeft !== null; i++) {
      const r = await send(`${url}/api/y`)
      expect(r.status).toBe(200)
      if (upstreamOf(gateway, bad.url).ejectedMsLeft !== null) expect(bad.count).toBe(before)
    }

    await waitFor(() => upstreamOf(gateway, bad.url).ejectedMsLeft === null, 5_000, 'the ejection to end')
    expect(upstreamOf(gateway, bad.url).available).toBe(true)
    for (let i = 0; i < 6; i++) expect((await send(`${url}/api/z`)).status).toBe(200)
    expect(bad.count).toBeGreaterThan(before)
  })

  it('each further ejection lasts one more baseEjectionTime, capped at maxEjectionTime', async () => {
    const ups = await faultUpstreams(3)
    const bad = ups[0]
    bad.mode = fail(500)
    const make = (max: Duration) =>
      new LoadBalancer({
        upstreamServers: ups.map((u) => u.url),
        outlierDetection: new OutlierDetection({ consecutiveFailures: 1, baseEjectionTime: '300ms', maxEjectionTime: max }),
      })
    const growing = await startGateway({ loadBalancer: make('10s') })
    const capped = await startGateway({ loadBalancer: make('400ms') })
    for (const [which, { url, gateway }, secondMax] of [
      ['growing', growing, 600],
      ['capped', capped, 400],
    ] as const) {
      const ejectOnce = async () => {
        for (let i = 0; upstreamOf(gateway, bad.url).ejectedMsLeft === null; i++) {
          if (i > 10) throw new Error(`${which}: never ejected`)
          await send(`${url}/api/x`)
        }
        return upstreamOf(gateway, bad.url).ejectedMsLeft as number
      }
      const first = await ejectOnce()
      expect(first, which).toBeLessThanOrEqual(300)
      await waitFor(() => upstreamOf(gateway, bad.url).ejectedMsLeft === null, 5_000, 'the first ejection to end')
      const second = await ejectOnce()
      expect(second, which).toBeGreaterThan(which === 'growing' ? 300 : 0)
      expect(second, which).toBeLessThanOrEqual(secondMax)
    }
  })

  it('never ejects the last server (two failing servers, maxEjectionPercent 100)', async () => {
    const ups = await faultUpstreams(2)
    for (const u of ups) u.mode = fail(500)
    const loadBalancer = new LoadBalancer({
      upstreamServers: ups.map((u) => u.url),
      outlierDetection: new OutlierDetection({ consecutiveFailures: 2, baseEjectionTime: '30s', maxEjectionPercent: 100 }),
    })
    const { url, gateway } = await startGateway({ loadBalancer })
    for (let i = 0; i < 20; i++) {
      const r = await send(`${url}/api/x`)
      expect(r.status, 'the upstream still answers; the gateway never runs out of servers').toBe(500)
    }
    const ejected = ups.filter((u) => upstreamOf(gateway, u.url).ejectedMsLeft !== null)
    expect(ejected).toHaveLength(1)
    const kept = ups.find((u) => !ejected.includes(u)) as FaultUpstream
    expect(upstreamOf(gateway, kept.url).available).toBe(true)
    expect(kept.count).toBeGreaterThan(15)
  })

  it('never ejects a lone server', async () => {
    const up = await startFaultUpstream('alone', { mode: fail(503) })
    const loadBalancer = new LoadBalancer({
      upstreamServers: [up.url],
      outlierDetection: new OutlierDetection({ consecutiveFailures: 1, maxEjectionPercent: 100 }),
    })
    const { url, gateway } = await startGateway({ loadBalancer })
    for (let i = 0; i < 5; i++) expect((await send(`${url}/api/x`)).status).toBe(503)
    expect(upstreamOf(gateway, up.url).ejectedMsLeft).toBeNull()
    expect(up.count).toBe(5)
  })

  it('maxEjectionPercent caps how many are out at once (4 failing, 50% → 2)', async () => {
    const ups = await faultUpstreams(4)
    for (const u of ups) u.mode = fail(502)
    const loadBalancer = new LoadBalancer({
      upstreamServers: ups.map((u) => u.url),
      outlierDetection: new OutlierDetection({ consecutiveFailures: 1, baseEjectionTime: '30s', maxEjectionPercent: 50 }),
    })
    const { url, gateway } = await startGateway({ loadBalancer })
    for (let i = 0; i < 16; i++) expect((await send(`${url}/api/x`)).status).toBe(502)
    const ejected = ups.filter((u) => upstreamOf(gateway, u.url).ejectedMsLeft !== null)
    expect(ejected).toHaveLength(2)
  })

  it("counts 5xx even when the circuit breaker's failureStatusCodes say otherwise", async () => {
    // OutlierDetection is documented to count connect errors, timeouts and 5xx; a
    // breaker that only counts 429 must not blind it to a server answering 500.
    const ups = await faultUpstreams(3)
    const bad = ups[0]
    bad.mode = fail(500)
    const loadBalancer = new LoadBalancer({
      upstreamServers: ups.map((u) => u.url),
      circuitBreaker: new CircuitBreaker({ failureStatusCodes: [429], failureThreshold: 100 }),
      outlierDetection: new OutlierDetection({ consecutiveFailures: 2, baseEjectionTime: '30s' }),
    })
    const { url, gateway } = await startGateway({ loadBalancer })
    for (let i = 0; i < 12; i++) await send(`${url}/api/x`)
    expect(bad.count, 'ejected after its second 500').toBe(2)
    expect(upstreamOf(gateway, bad.url).ejectedMsLeft).toBeGreaterThan(0)
    expect(breakerOf(gateway, bad.url).state, 'the breaker ignores 500 as configured').toBe('closed')
  })

  it('connect errors count: a dead server is ejected and the live one serves', async () => {
    const live = await startFaultUpstream('live')
    const dead = `http://127.0.0.1:${await refusedPort()}`
    const loadBalancer = new LoadBalancer({
      upstreamServers: [dead, live.url],
      outlierDetection: new OutlierDetection({ consecutiveFailures: 2, baseEjectionTime: '30s' }),
    })
    const { url, gateway } = await startGateway({ loadBalancer, gateway: { connectTimeout: '1s' } })
    const statuses: number[] = []
    for (let i = 0; i < 8; i++) statuses.push((await send(`${url}/api/x`)).status)
    expect(statuses.filter((s) => s === 502)).toHaveLength(2)
    expect(upstreamOf(gateway, dead).ejectedMsLeft).toBeGreaterThan(0)
    expect(attemptsTo(gateway, dead)).toBe(2)
    expect(statuses.slice(-4)).toEqual([200, 200, 200, 200])
  })
})

// ---------------------------------------------------------------------------------------

describe('option validation', () => {
  const cases: [string, () => unknown, string][] = [
    ['failureThreshold 0', () => new CircuitBreaker({ failureThreshold: 0 }), 'failureThreshold'],
    ['failureThreshold 1.5', () => new CircuitBreaker({ failureThreshold: 1.5 }), 'failureThreshold'],
    ['failureThreshold "3"', () => new CircuitBreaker({ failureThreshold: '3' as never }), 'failureThreshold'],
    ['timeoutDuration 0', () => new CircuitBreaker({ timeoutDuration: 0 }), 'timeoutDuration'],
    ["timeoutDuration '0s'", () => new CircuitBreaker({ timeoutDuration: '0s' }), 'timeoutDuration'],
    ["timeoutDuration 'soon'", () => new CircuitBreaker({ timeoutDuration: 'soon' as never }), 'timeoutDuration'],
    ['halfOpenRequests 0', () => new CircuitBreaker({ halfOpenRequests: 0 }), 'halfOpenRequests'],
    ['successThreshold -1', () => new CircuitBreaker({ successThreshold: -1 }), 'successThreshold'],
    ['failureStatusCodes [99]', () => new CircuitBreaker({ failureStatusCodes: [99] }), 'failureStatusCodes'],
    ['failureStatusCodes 500', () => new CircuitBreaker({ failureStatusCodes: 500 as never }), 'failureStatusCodes'],
    ['failureRate 0', () => new CircuitBreaker({ failureRate: 0 }), 'failureRate'],
    ['failureRate 1.5', () => new CircuitBreaker({ failureRate: 1.5 }), 'failureRate'],
    ['minimumRequests 0', () => new CircuitBreaker({ minimumRequests: 0 }), 'minimumRequests'],
    ['rollingWindow 0', () => new CircuitBreaker({ rollingWindow: 0 }), 'rollingWindow'],
    ['CircuitBreaker unknown key', () => new CircuitBreaker({ threshold: 3 } as never), 'threshold'],
    ['OutlierDetection consecutiveFailures 0', () => new OutlierDetection({ consecutiveFailures: 0 }), 'consecutiveFailures'],
    ['OutlierDetection baseEjectionTime 0', () => new OutlierDetection({ baseEjectionTime: 0 }), 'baseEjectionTime'],
    ['OutlierDetection maxEjectionTime -1', () => new OutlierDetection({ maxEjectionTime: -1 }), 'maxEjectionTime'],
    ['OutlierDetection maxEjectionPercent 101', () => new OutlierDetection({ maxEjectionPercent: 101 }), 'maxEjectionPercent'],
    ['OutlierDetection unknown key', () => new OutlierDetection({ interval: '1s' } as never), 'interval'],
    [
      'LoadBalancer circuitBreaker {}',
      () => new LoadBalancer({ upstreamServers: ['http://127.0.0.1:1'], circuitBreaker: {} as never }),
      'circuitBreaker',
    ],
    [
      'LoadBalancer circuitBreakerThreshold 0',
      () => new LoadBalancer({ upstreamServers: ['http://127.0.0.1:1'], circuitBreakerThreshold: 0 }),
      'circuitBreakerThreshold',
    ],
    [
      'LoadBalancer circuitBreaker and circuitBreakerThreshold',
      () => new LoadBalancer({ upstreamServers: ['http://127.0.0.1:1'], circuitBreaker: new CircuitBreaker(), circuitBreakerThreshold: 2 }),
      'circuitBreakerThreshold',
    ],
    [
      'LoadBalancer outlierDetection {}',
      () => new LoadBalancer({ upstreamServers: ['http://127.0.0.1:1'], outlierDetection: { consecutiveFailures: 1 } as never }),
      'outlierDetection',
    ],
    ['Gateway circuitBreaker {}', () => new Gateway({ circuitBreaker: { failureThreshold: 1 } as never }), 'circuitBreaker'],
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

  it('valid options and defaults construct', () => {
    const cb = new CircuitBreaker()
    expect(cb).toBeInstanceOf(CircuitBreaker)
    expect(
      new CircuitBreaker({
        failureThreshold: 1,
        timeoutDuration: 250,
        halfOpenRequests: 3,
        successThreshold: 2,
        failureStatusCodes: [500, 503],
        failureRate: 1,
        minimumRequests: 1,
        rollingWindow: '1m',
      }),
    ).toBeInstanceOf(CircuitBreaker)
    expect(new OutlierDetection({ maxEjectionPercent: 0 })).toBeInstanceOf(OutlierDetection)
    const lb = new LoadBalancer({ upstreamServers: ['http://127.0.0.1:1'], circuitBreaker: cb })
    expect(lb.circuitBreaker).toBe(cb)
    lb.close()
  })
})
