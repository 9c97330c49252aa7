/**
 * RetryConfig against real upstreams on loopback: a failed attempt is retried on another
 * server, only idempotent methods unless retryNonIdempotent, a body replayed only when it
 * fit in maxReplayBodySize (and delivered whole when it did not), maxAttempts counts every
 * attempt, connect/timeout/reset failures are retried, customRetryFunction (sync, async,
 * throwing, timing out) and what it is told, the retry budget caps a storm, route-level
 * retryConfig, the route timeout bounds all attempts, perTryTimeout fails over, and the
 * ConfigErrors of bad options.
 */
import { randomBytes } from 'node:crypto'
import { afterEach, describe, expect, it, vi } from 'vitest'
import {
  ConfigError,
  Gateway,
  LoadBalancer,
  RetryConfig,
  RoundRobinStrategy,
  UpstreamError,
  type RetryAttempt,
} from 'velithon-gateway'
import { closeAll, errorOf, refusedPort, send, sleep } from './helpers/net'
import {
  attemptsTo,
  configErrorOf,
  fail,
  firstThen,
  okOf,
  sendMany,
  sha256,
  startFaultUpstream,
  startGateway,
  type FaultUpstream,
  type ModeChoice,
} from './helpers/fault'

afterEach(async () => {
  await closeAll()
})

async function upstreams(n: number, mode?: ModeChoice): Promise<FaultUpstream[]> {
  return Promise.all(Array.from({ length: n }, (_, i) => startFaultUpstream(`s${i}`, { mode })))
}

function balancer(ups: FaultUpstream[] | string[]): LoadBalancer {
  return new LoadBalancer({
    upstreamServers: ups.map((u) => (typeof u === 'string' ? u : u.url)),
    strategy: new RoundRobinStrategy(),
  })
}

const total = (ups: FaultUpstream[]): number => ups.reduce((n, u) => n + u.count, 0)

/** Fast retries: no test waits on backoff. */
const quick = (options: ConstructorParameters<typeof RetryConfig>[0] = {}): RetryConfig =>
  new RetryConfig({ baseDelay: '1ms', maxDelay: '5ms', ...options })

// ---------------------------------------------------------------------------------------

describe('retries on another server', () => {
  it('502 then 200 on another server: the client sees 200, each server was hit once', async () => {
    const ups = await upstreams(2, firstThen(fail(502)))
    const { url } = await startGateway({ loadBalancer: balancer(ups), gateway: { retryConfig: quick() } })
    const r = await send(`${url}/api/x`)
    expect(r.status).toBe(200)
    expect(ups.map((u) => u.count)).toEqual([1, 1])
    const failed = ups.find((u) => u.name !== okOf(r).name) as FaultUpstream
    expect(failed.hits).toHaveLength(1)
  })

  it('three failing servers, maxAttempts 3: each tried once; the last answer reaches the client', async () => {
    const ups = await upstreams(3, fail(503))
    const { url } = await startGateway({ loadBalancer: balancer(ups), gateway: { retryConfig: quick({ maxAttempts: 3 }) } })
    const r = await send(`${url}/api/x`)
    expect(r.status).toBe(503)
    expect(r.headers['x-upstream']).toMatch(/^s[012]$/)
    expect(ups.map((u) => u.count)).toEqual([1, 1, 1])
  })

  it('with a single server, the retries go back to it', async () => {
    const ups = await upstreams(1, fail(503))
    const { url } = await startGateway({ loadBalancer: balancer(ups), gateway: { retryConfig: quick({ maxAttempts: 3 }) } })
    expect((await send(`${url}/api/x`)).status).toBe(503)
    expect(ups[0].count).toBe(3)
  })

  it('maxAttempts counts every attempt, the first included', async () => {
    const ups = await upstreams(4, fail(503))
    const { url } = await startGateway({
      loadBalancer: balancer(ups),
      route: false,
      routes: (gw) => {
        for (const n of [1, 2, 4]) gw.route(`/m${n}/{p:path}`, { retryConfig: quick({ maxAttempts: n }) })
      },
    })
    for (const n of [1, 2, 4]) {
      const before = total(ups)
      expect((await send(`${url}/m${n}/x`)).status).toBe(503)
      expect(total(ups) - before, `maxAttempts ${n}`).toBe(n)
    }
  })

  it('only retryableStatusCodes are retried: 500 is not by default, is with [500]', async () => {
    const ups = await upstreams(2, fail(500))
    const { url } = await startGateway({
      loadBalancer: balancer(ups),
      gateway: { retryConfig: quick() },
      routes: (gw) => gw.route('/five/{p:path}', { retryConfig: quick({ retryableStatusCodes: [500] }) }),
    })
    expect((await send(`${url}/api/x`)).status).toBe(500)
    expect(total(ups)).toBe(1)
    const shared = firstThen(fail(500))
    for (const u of ups) u.mode = shared
    expect((await send(`${url}/five/x`)).status).toBe(200)
    expect(total(ups)).toBe(3)
  })

  it('a connection reset before the response is retried', async () => {
    const ups = await upstreams(2, firstThen({ kind: 'reset' }))
    const { url } = await startGateway({ loadBalancer: balancer(ups), gateway: { retryConfig: quick() } })
    const r = await send(`${url}/api/x`)
    expect(r.status).toBe(200)
    expect(ups.map((u) => u.count)).toEqual([1, 1])
  })

  it('connection refused (nothing listening) is retried onto a live server', async () => {
    const live = await startFaultUpstream('live')
    const dead = `http://127.0.0.1:${await refusedPort()}`
    const loadBalancer = new LoadBalancer({ upstreamServers: [dead, live.url], strategy: new RoundRobinStrategy() })
    const { url, gateway } = await startGateway({ loadBalancer, gateway: { retryConfig: quick(), connectTimeout: '1s' } })
    const replies = await sendMany(`${url}/api/x`, 6, 1)
    expect(replies.map((r) => r.status)).toEqual([200, 200, 200, 200, 200, 200])
    expect(live.count).toBe(6)
    expect(attemptsTo(gateway, dead)).toBeGreaterThanOrEqual(1)
    expect(gateway.getUpstreamStatus()[dead].failures).toBe(attemptsTo(gateway, dead))
  })

  it('retryableErrors decides which failures without a response are retried', async () => {
    const dead = `http://127.0.0.1:${await refusedPort()}`
    const { url, gateway } = await startGateway({
      loadBalancer: new LoadBalancer({ upstreamServers: [dead] }),
      gateway: { retryConfig: quick({ maxAttempts: 3 }), connectTimeout: '1s' },
      routes: (gw) => gw.route('/timeouts-only/{p:path}', { retryConfig: quick({ maxAttempts: 3, retryableErrors: ['VG_UPSTREAM_TIMEOUT'] }) }),
    })
    const r1 = await send(`${url}/api/x`)
    expect(r1.status).toBe(502)
    expect(errorOf(r1).code).toBe('VG_UPSTREAM_CONNECT')
    expect(attemptsTo(gateway, dead)).toBe(3)
    const r2 = await send(`${url}/timeouts-only/x`)
    expect(r2.status).toBe(502)
    expect(errorOf(r2).code).toBe('VG_UPSTREAM_CONNECT')
    expect(attemptsTo(gateway, dead)).toBe(4)
  })

  it('forwardRequest in a JS handler retries with the gateway retryConfig', async () => {
    const ups = await upstreams(2, firstThen(fail(502)))
    const { url } = await startGateway({
      loadBalancer: balancer(ups),
      gateway: { retryConfig: quick() },
      route: false,
      handlers: (app, gw) => app.get('/h/{p:path}', (req) => gw.forwardRequest(req)),
    })
    const r = await send(`${url}/h/x`)
    expect(r.status).toBe(200)
    expect(ups.map((u) => u.count)).toEqual([1, 1])
  })

  it('retryAttempts / retryBackoffFactor shorthand', async () => {
    const ups = await upstreams(3, fail(504))
    const { url, gateway } = await startGateway({
      loadBalancer: balancer(ups),
      gateway: { retryAttempts: 2, retryBackoffFactor: 1.5 },
    })
    expect(gateway.retryConfig).toBeInstanceOf(RetryConfig)
    expect(gateway.retryConfig?.maxAttempts).toBe(2)
    expect((await send(`${url}/api/x`)).status).toBe(504)
    expect(total(ups)).toBe(2)
  })

  it('no retryConfig: one attempt', async () => {
    const ups = await upstreams(2, fail(503))
    const { url } = await startGateway({ loadBalancer: balancer(ups) })
    expect((await send(`${url}/api/x`)).status).toBe(503)
    expect(total(ups)).toBe(1)
  })
})

// ---------------------------------------------------------------------------------------

describe('methods and bodies', () => {
  it('POST and PATCH are not retried by default: the upstream sees one request, the client its 502', async () => {
    const ups = await upstreams(2)
    const { url } = await startGateway({ loadBalancer: balancer(ups), gateway: { retryConfig: quick() } })
    for (const method of ['POST', 'PATCH']) {
      const shared = firstThen(fail(502))
      for (const u of ups) u.mode = shared
      const before = total(ups)
      const r = await send(`${url}/api/x`, { method, body: 'order=1' })
      expect(r.status, method).toBe(502)
      expect(total(ups) - before, method).toBe(1)
      const hit = ups.flatMap((u) => u.hits).at(-1)
      expect(hit?.method).toBe(method)
      expect(hit?.body.toString()).toBe('order=1')
    }
  })

  it('PUT and DELETE (idempotent) are retried', async () => {
    const ups = await upstreams(2)
    const { url } = await startGateway({ loadBalancer: balancer(ups), gateway: { retryConfig: quick() } })
    for (const method of ['PUT', 'DELETE']) {
      const shared = firstThen(fail(503))
      for (const u of ups) u.mode = shared
      const before = total(ups)
      const r = await send(`${url}/api/x`, { method, body: method === 'PUT' ? 'v=2' : undefined })
      expect(r.status, method).toBe(200)
      expect(total(ups) - before, method).toBe(2)
    }
  })

  it('retryNonIdempotent: a small POST body is replayed byte for byte (Content-Length and chunked)', async () => {
    const ups = await upstreams(2)
    const { url } = await startGateway({
      loadBalancer: balancer(ups),
      gateway: { retryConfig: quick({ retryNonIdempotent: true }) },
    })
    const body = randomBytes(20_000)
    for (const shape of ['length', 'chunked'] as const) {
      const shared = firstThen(fail(502))
      for (const u of ups) u.mode = shared
      const from = ups.map((u) => u.count)
      const r = await send(`${url}/api/x`, {
        method: 'POST',
        body: shape === 'length' ? body : [body.subarray(0, 7_000), body.subarray(7_000, 15_000), body.subarray(15_000)],
      })
      expect(r.status, shape).toBe(200)
      expect(okOf(r).bodyLength).toBe(body.length)
      const hits = ups.flatMap((u, i) => u.hits.slice(from[i]))
      expect(hits, shape).toHaveLength(2)
      for (const h of hits) {
        expect(h.method).toBe('POST')
        expect(h.body.length).toBe(body.length)
        expect(sha256(h.body)).toBe(sha256(body))
      }
    }
  })

  it('a body above maxReplayBodySize is not retried, but reaches the upstream whole (Content-Length and chunked)', async () => {
    const ups = await upstreams(2)
    const { url } = await startGateway({
      loadBalancer: balancer(ups),
      gateway: { retryConfig: quick({ retryNonIdempotent: true, maxReplayBodySize: 1024 }) },
    })
    const body = randomBytes(300_000)
    const chunks = Array.from({ length: 75 }, (_, i) => body.subarray(i * 4_000, (i + 1) * 4_000))
    for (const [shape, method] of [
      ['length', 'PUT'],
      ['chunked', 'POST'],
    ] as const) {
      const shared = firstThen(fail(502))
      for (const u of ups) u.mode = shared
      const from = ups.map((u) => u.count)
      const r = await send(`${url}/api/x`, { method, body: shape === 'length' ? body : chunks })
      expect(r.status, shape).toBe(502)
      const hits = ups.flatMap((u, i) => u.hits.slice(from[i]))
      expect(hits, shape).toHaveLength(1)
      expect(hits[0].body.length, shape).toBe(body.length)
      expect(sha256(hits[0].body), shape).toBe(sha256(body))
    }
    // A small body on the same config is still retried.
    const shared = firstThen(fail(502))
    for (const u of ups) u.mode = shared
    const small = await send(`${url}/api/x`, { method: 'POST', body: Buffer.alloc(1024, 7) })
    expect(small.status).toBe(200)
    expect(okOf(small).bodyLength).toBe(1024)
  })
})

// ---------------------------------------------------------------------------------------

describe('customRetryFunction', () => {
  it('sync true retries what the default rule would not, and is told status, headers, server, method, attempt', async () => {
    const ups = await upstreams(2, firstThen(fail(500, { 'x-why': 'boom' })))
    const calls: [RetryAttempt, number][] = []
    const retryConfig = quick({
      customRetryFunction: (attempt, n) => {
        calls.push([attempt, n])
        return attempt.status === 500
      },
    })
    const { url } = await startGateway({ loadBalancer: balancer(ups), gateway: { retryConfig } })
    const r = await send(`${url}/api/x`)
    expect(r.status).toBe(200)
    expect(total(ups)).toBe(2)
    const failed = ups.find((u) => u.name !== okOf(r).name) as FaultUpstream
    expect(calls.length).toBeGreaterThanOrEqual(1)
    const [first, n] = calls[0]
    expect(n).toBe(1)
    expect(first.status).toBe(500)
    expect(first.headers).toBeInstanceOf(Headers)
    expect(first.headers.get('x-why')).toBe('boom')
    expect(first.server).toBe(failed.url)
    expect(first.method).toBe('GET')
    expect(first.error).toBeUndefined()
  })

  it('sync false stops a retry the default rule would make', async () => {
    const ups = await upstreams(2, firstThen(fail(503)))
    const fn = vi.fn(() => false)
    const { url } = await startGateway({ loadBalancer: balancer(ups), gateway: { retryConfig: quick({ customRetryFunction: fn }) } })
    expect((await send(`${url}/api/x`)).status).toBe(503)
    expect(total(ups)).toBe(1)
    expect(fn).toHaveBeenCalledTimes(1)
  })

  it('undefined lets the default rule decide', async () => {
    const ups = await upstreams(2, firstThen(fail(503)))
    const fn = vi.fn(() => undefined)
    const { url } = await startGateway({ loadBalancer: balancer(ups), gateway: { retryConfig: quick({ customRetryFunction: fn }) } })
    expect((await send(`${url}/api/x`)).status).toBe(200)
    expect(total(ups)).toBe(2)
  })

  it('async: a Promise of true retries', async () => {
    const ups = await upstreams(2, firstThen(fail(418)))
    const fn = vi.fn(async (a: RetryAttempt) => {
      await sleep(20)
      return a.status === 418
    })
    const { url } = await startGateway({ loadBalancer: balancer(ups), gateway: { retryConfig: quick({ customRetryFunction: fn }) } })
    expect((await send(`${url}/api/x`)).status).toBe(200)
    expect(total(ups)).toBe(2)
  })

  it('throwing or rejecting: the default rule decides and onError is told', async () => {
    for (const how of ['throw', 'reject'] as const) {
      const ups = await upstreams(2, firstThen(fail(503)))
      const boom = new Error(`custom rule ${how}`)
      const onError = vi.fn()
      const retryConfig = quick({
        onError,
        customRetryFunction: how === 'throw' ? () => { throw boom } : () => Promise.reject(boom),
      })
      const { url } = await startGateway({ loadBalancer: balancer(ups), gateway: { retryConfig } })
      const r = await send(`${url}/api/x`)
      expect(r.status, how).toBe(200) // 503 is retried by the default rule
      expect(total(ups), how).toBe(2)
      expect(onError, how).toHaveBeenCalled()
      expect(onError.mock.calls[0][0], how).toBe(boom)
      // and a non-retryable status stays unretried under the default rule
      const shared = firstThen(fail(500))
      for (const u of ups) u.mode = shared
      expect((await send(`${url}/api/y`)).status, how).toBe(500)
      expect(total(ups), how).toBe(3)
    }
  })

  it('a rule that never answers: after customRetryTimeout the default rule decides', async () => {
    const ups = await upstreams(2, firstThen(fail(503)))
    const onError = vi.fn()
    const retryConfig = quick({ customRetryFunction: () => new Promise<boolean>(() => {}), customRetryTimeout: '100ms', onError })
    const { url } = await startGateway({ loadBalancer: balancer(ups), gateway: { retryConfig } })
    expect((await send(`${url}/api/x`)).status).toBe(200)
    expect(total(ups)).toBe(2)
  })

  it('is told the error of an attempt without a response (connection refused)', async () => {
    const live = await startFaultUpstream('live')
    const dead = `http://127.0.0.1:${await refusedPort()}`
    const calls: RetryAttempt[] = []
    const retryConfig = quick({
      customRetryFunction: (a) => {
        calls.push(a)
        return undefined
      },
    })
    const { url } = await startGateway({
      loadBalancer: new LoadBalancer({ upstreamServers: [dead, live.url], strategy: new RoundRobinStrategy() }),
      gateway: { retryConfig, connectTimeout: '1s' },
    })
    for (let i = 0; i < 2; i++) expect((await send(`${url}/api/x`)).status).toBe(200)
    const refused = calls.find((a) => a.server === dead)
    expect(refused, 'an attempt to the dead server was reported').toBeDefined()
    expect(refused?.status).toBeUndefined()
    expect(refused?.error).toBeInstanceOf(UpstreamError)
    expect(refused?.error?.code).toBe('VG_UPSTREAM_CONNECT')
    expect(refused?.method).toBe('GET')
  })

  it('is told VG_UPSTREAM_TIMEOUT when an attempt ran out of perTryTimeout', async () => {
    const ups = await upstreams(2, firstThen({ kind: 'hang' }))
    const calls: RetryAttempt[] = []
    const retryConfig = quick({
      perTryTimeout: '100ms',
      customRetryFunction: (a) => {
        calls.push(a)
        return undefined
      },
    })
    const { url } = await startGateway({ loadBalancer: balancer(ups), gateway: { retryConfig, timeout: '5s' } })
    expect((await send(`${url}/api/x`)).status).toBe(200)
    expect(calls[0].status).toBeUndefined()
    expect(calls[0].error).toBeInstanceOf(UpstreamError)
    expect(calls[0].error?.code).toBe('VG_UPSTREAM_TIMEOUT')
  })
})

// ---------------------------------------------------------------------------------------

describe('retry budget', () => {
  it('caps a retry storm: 300 requests to all-503 servers, budget 0.1 + 1/s → at most ~10% extra attempts', async () => {
    const ups = await upstreams(3, fail(503))
    const retryConfig = quick({ maxAttempts: 3, retryBudget: 0.1, minRetriesPerSecond: 1 })
    const { url } = await startGateway({ loadBalancer: balancer(ups), gateway: { retryConfig } })
    const replies = await sendMany(`${url}/api/x`, 300, 10)
    expect(replies.every((r) => r.status === 503)).toBe(true)
    const hits = total(ups)
    // requests + ratio × requests + minRetriesPerSecond × 10 s, a little slack for races
    expect(hits).toBeLessThanOrEqual(300 + 30 + 10 + 10)
    expect(hits, 'the budget still allows some retries').toBeGreaterThan(300 + 5)
  })

  it('retryBudget 0 with minRetriesPerSecond 0 allows no retry at all', async () => {
    const ups = await upstreams(3, fail(503))
    const retryConfig = quick({ maxAttempts: 3, retryBudget: 0, minRetriesPerSecond: 0 })
    const { url } = await startGateway({ loadBalancer: balancer(ups), gateway: { retryConfig } })
    const replies = await sendMany(`${url}/api/x`, 20, 4)
    expect(replies.every((r) => r.status === 503)).toBe(true)
    expect(total(ups)).toBe(20)
  })

  it('without a budget the same storm triples the load', async () => {
    const ups = await upstreams(3, fail(503))
    const retryConfig = quick({ maxAttempts: 3, retryBudget: false })
    const { url } = await startGateway({ loadBalancer: balancer(ups), gateway: { retryConfig } })
    const replies = await sendMany(`${url}/api/x`, 100, 10)
    expect(replies.every((r) => r.status === 503)).toBe(true)
    expect(total(ups)).toBe(300)
  })
})

// ---------------------------------------------------------------------------------------

describe('per-route config and timeouts', () => {
  it("route retryConfig: false disables the gateway's retries; a route RetryConfig replaces them", async () => {
    const ups = await upstreams(3, fail(503))
    const { url } = await startGateway({
      loadBalancer: balancer(ups),
      gateway: { retryConfig: quick({ maxAttempts: 3 }) },
      routes: (gw) => {
        gw.route('/none/{p:path}', { retryConfig: false })
        gw.route('/two/{p:path}', { retryConfig: quick({ maxAttempts: 2 }) })
      },
    })
    for (const [path, attempts] of [
      ['none', 1],
      ['two', 2],
      ['api', 3],
    ] as const) {
      const before = total(ups)
      expect((await send(`${url}/${path}/x`)).status).toBe(503)
      expect(total(ups) - before, path).toBe(attempts)
    }
  })

  it('the route timeout bounds all attempts together', async () => {
    const ups = await upstreams(3, { kind: 'hang' })
    const { url } = await startGateway({
      loadBalancer: balancer(ups),
      route: { timeout: '500ms', retryConfig: quick({ maxAttempts: 5, perTryTimeout: '400ms' }) },
      routes: (gw) => gw.route('/single/{p:path}', { timeout: '300ms', retryConfig: quick({ maxAttempts: 5 }) }),
    })
    const started = Date.now()
    const r = await send(`${url}/api/x`)
    const took = Date.now() - started
    expect(r.status).toBe(504)
    expect(errorOf(r).code).toBe('VG_UPSTREAM_TIMEOUT')
    // 5 attempts of 400 ms would take 2 s and reach 5 servers' worth of attempts.
    expect(total(ups)).toBeLessThanOrEqual(2)
    expect(took).toBeLessThan(1_900)

    // Without perTryTimeout the first attempt uses the whole route timeout: no retry.
    const before = total(ups)
    const single = await send(`${url}/single/x`)
    expect(single.status).toBe(504)
    expect(total(ups) - before).toBe(1)
  })

  it('perTryTimeout: a slow first server fails over to a fast second', async () => {
    const ups = await upstreams(2, firstThen({ kind: 'hang' }))
    const { url } = await startGateway({
      loadBalancer: balancer(ups),
      gateway: { timeout: '5s', retryConfig: quick({ perTryTimeout: '150ms' }) },
    })
    const r = await send(`${url}/api/x`)
    expect(r.status).toBe(200)
    expect(ups.map((u) => u.count)).toEqual([1, 1])
  })
})

// ---------------------------------------------------------------------------------------

describe('option validation', () => {
  const cases: [string, () => unknown, string][] = [
    ['maxAttempts 0', () => new RetryConfig({ maxAttempts: 0 }), 'maxAttempts'],
    ['maxAttempts 2.5', () => new RetryConfig({ maxAttempts: 2.5 }), 'maxAttempts'],
    ['backoffFactor 0.5', () => new RetryConfig({ backoffFactor: 0.5 }), 'backoffFactor'],
    ["baseDelay 'x'", () => new RetryConfig({ baseDelay: 'x' as never }), 'baseDelay'],
    ['maxDelay -1', () => new RetryConfig({ maxDelay: -1 }), 'maxDelay'],
    ['retryableStatusCodes [700]', () => new RetryConfig({ retryableStatusCodes: [700] }), 'retryableStatusCodes'],
    ["retryableErrors ['x']", () => new RetryConfig({ retryableErrors: ['x'] as never }), 'retryableErrors'],
    ["retryableErrors 'VG_UPSTREAM_CONNECT'", () => new RetryConfig({ retryableErrors: 'VG_UPSTREAM_CONNECT' as never }), 'retryableErrors'],
    ["retryNonIdempotent 'yes'", () => new RetryConfig({ retryNonIdempotent: 'yes' as never }), 'retryNonIdempotent'],
    ['perTryTimeout 0', () => new RetryConfig({ perTryTimeout: 0 }), 'perTryTimeout'],
    ['maxReplayBodySize -1', () => new RetryConfig({ maxReplayBodySize: -1 }), 'maxReplayBodySize'],
    ['retryBudget -0.1', () => new RetryConfig({ retryBudget: -0.1 }), 'retryBudget'],
    ['retryBudget true', () => new RetryConfig({ retryBudget: true as never }), 'retryBudget'],
    ['minRetriesPerSecond -1', () => new RetryConfig({ minRetriesPerSecond: -1 }), 'minRetriesPerSecond'],
    ['minRetriesPerSecond 1.5', () => new RetryConfig({ minRetriesPerSecond: 1.5 }), 'minRetriesPerSecond'],
    ["customRetryFunction 'x'", () => new RetryConfig({ customRetryFunction: 'x' as never }), 'customRetryFunction'],
    ['customRetryTimeout 0', () => new RetryConfig({ customRetryTimeout: 0 }), 'customRetryTimeout'],
    ['onError 1', () => new RetryConfig({ onError: 1 as never }), 'onError'],
    ['RetryConfig unknown key', () => new RetryConfig({ attempts: 3 } as never), 'attempts'],
    ['Gateway retryConfig {}', () => new Gateway({ retryConfig: { maxAttempts: 2 } as never }), 'retryConfig'],
    ['Gateway retryAttempts 0', () => new Gateway({ retryAttempts: 0 }), 'retryAttempts'],
    ['Gateway retryBackoffFactor 0.5', () => new Gateway({ retryAttempts: 2, retryBackoffFactor: 0.5 }), 'retryBackoffFactor'],
    ['Gateway retryBackoffFactor alone', () => new Gateway({ retryBackoffFactor: 2 }), 'retryBackoffFactor'],
    ['Gateway retryConfig and retryAttempts', () => new Gateway({ retryConfig: new RetryConfig(), retryAttempts: 2 }), 'retryAttempts'],
    [
      'route retryConfig true',
      () => new Gateway().route('/x/{p:path}', { upstream: 'http://127.0.0.1:1', retryConfig: true as never }),
      'retryConfig',
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

  it('valid options construct; maxAttempts is readable', () => {
    const rc = new RetryConfig({
      maxAttempts: 1,
      backoffFactor: 1,
      baseDelay: '1ms',
      maxDelay: '1s',
      retryableStatusCodes: [],
      retryableErrors: [],
      retryNonIdempotent: true,
      perTryTimeout: '250ms',
      maxReplayBodySize: 1,
      retryBudget: 0,
      minRetriesPerSecond: 0,
      customRetryFunction: () => undefined,
      customRetryTimeout: 10,
      onError: () => {},
    })
    expect(rc.maxAttempts).toBe(1)
    expect(new RetryConfig().maxAttempts).toBe(3)
    expect(new RetryConfig({ retryBudget: false })).toBeInstanceOf(RetryConfig)
  })
})

