/**
 * RateLimitMiddleware end to end, against real upstreams on loopback.
 *
 * Memory store: GCRA as redis-cell (`requestsPerMinute: 60, burst: b` → b + 1 at once,
 * then one per second), exact at the boundary and under concurrency, 429 JSON with
 * Retry-After, RateLimit-* on every answer, before routing, keys by header and by JS
 * function (sync, async, throwing → the client IP), per-hour limits, option errors.
 *
 * Redis store: a real redis-server started by the test; two gateway instances share one
 * limit; Redis killed mid-test → fail open (default) / closed; restarted on the same
 * port → limits apply again; a Redis that never answers → the store timeout decides.
 */
import net from 'node:net'
import { once } from 'node:events'
import { afterEach, describe, expect, it } from 'vitest'
import { ConfigError, Gateway, RateLimitMiddleware, Velithon, type RateLimitMiddlewareOptions, type RateLimitRequest } from 'velithon-gateway'
import { closeAll, defer, errorOf, listen, send, sleep, startUpstream, type Reply } from './helpers/net'
import { redisCommand, redisServerPath, startRedis } from './helpers/redis'

afterEach(async () => {
  await closeAll()
})

/** An upstream answering 200 'ok' and a Velithon app forwarding `/api/…` to it, rate limited. */
async function limitedApp(options: RateLimitMiddlewareOptions, extra?: (app: Velithon) => void) {
  const upstream = await startUpstream((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.end('ok')
  })
  const gateway = new Gateway({ timeout: '10s' })
  gateway.route('/api/{path:path}', { upstream: upstream.url })
  const app = new Velithon({ workerThreads: 2, middleware: [new RateLimitMiddleware(options)] })
  app.includeRouter(gateway.getRouter())
  extra?.(app)
  const { url } = await listen(app)
  return { url, upstream, gateway, app }
}

interface Limits {
  status: number
  limit: string | undefined
  remaining: string | undefined
  reset: string | undefined
  retryAfter: string | undefined
}

function limitsOf(r: Reply): Limits {
  const h = (name: string) => r.headers[name] as string | undefined
  return {
    status: r.status,
    limit: h('ratelimit-limit'),
    remaining: h('ratelimit-remaining'),
    reset: h('ratelimit-reset'),
    retryAfter: h('retry-after'),
  }
}

/** A 429 of the rate limit: JSON body with VG_RATE_LIMITED, Retry-After ≥ 1, the headers. */
function expectRefused(r: Reply, retryAfter?: number): void {
  expect(r.status, r.body.toString()).toBe(429)
  expect(r.headers['content-type']).toMatch(/^application\/json/)
  const body = errorOf(r)
  expect(body.code).toBe('VG_RATE_LIMITED')
  expect(typeof body.error).toBe('string')
  expect(typeof body.message).toBe('string')
  expect(r.headers['retry-after']).toMatch(/^\d+$/)
  expect(Number(r.headers['retry-after'])).toBeGreaterThanOrEqual(1)
  if (retryAfter !== undefined) expect(Number(r.headers['retry-after'])).toBe(retryAfter)
  expect(r.headers['ratelimit-remaining']).toBe('0')
  expect(r.headers['ratelimit-limit']).toMatch(/^\d+$/)
  expect(r.headers['ratelimit-reset']).toMatch(/^\d+$/)
}

/** Sends (every `everyMs`) until an answer satisfies `done`, for at most `ms`; returns it. */
async function pollUntil(make: () => Promise<Reply>, done: (r: Reply) => boolean, ms: number, what: string, everyMs = 25): Promise<Reply> {
  const deadline = Date.now() + ms
  for (;;) {
    const r = await make()
    if (done(r)) return r
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${r.status} ${JSON.stringify(limitsOf(r))})`)
    await sleep(everyMs)
  }
}

describe('RateLimitMiddleware, memory store', () => {
  it('60/min with burst 4: exactly 5 at once, then 429 + Retry-After: 1; RateLimit-* on every answer; one more after ~1 s', async () => {
    const { url, upstream } = await limitedApp({ requestsPerMinute: 60, burst: 4 })
    const t0 = performance.now()
    const replies: Reply[] = []
    for (let i = 0; i < 7; i++) replies.push(await send(`${url}/api/${i}`))
    const burstMs = performance.now() - t0
    expect(burstMs, 'the 7 requests must fit well inside the 1 s emission interval').toBeLessThan(900)

    expect(replies.map((r) => r.status)).toEqual([200, 200, 200, 200, 200, 429, 429])
    expect(replies.map((r) => r.headers['ratelimit-limit'])).toEqual(new Array(7).fill('5'))
    expect(replies.map((r) => r.headers['ratelimit-remaining'])).toEqual(['4', '3', '2', '1', '0', '0', '0'])
    // Seconds until fully replenished: one more per request taken.
    expect(replies.map((r) => r.headers['ratelimit-reset'])).toEqual(['1', '2', '3', '4', '5', '5', '5'])
    for (const r of replies.slice(0, 5)) {
      expect(r.body.toString()).toBe('ok')
      expect(r.headers['retry-after']).toBeUndefined()
    }
    for (const r of replies.slice(5)) expectRefused(r, 1)
    expect(upstream.requests).toBe(5)

    // One request is replenished a second after the first: poll (refusals consume nothing).
    const passed = await pollUntil(() => send(`${url}/api/again`), (r) => r.status === 200, 5_000, 'a request to pass again')
    const waitedMs = performance.now() - t0
    expect(waitedMs).toBeGreaterThanOrEqual(990)
    expect(limitsOf(passed)).toMatchObject({ limit: '5', remaining: '0', reset: '5' })
    // Exactly one: the next is refused again.
    expectRefused(await send(`${url}/api/again`), 1)
    expect(upstream.requests).toBe(6)
    console.log(`[rate-limit] burst of 7 in ${burstMs.toFixed(0)} ms; the 6th pass came ${waitedMs.toFixed(0)} ms after the first request`)
  })

  it('is exact under concurrency: 40 requests at once, exactly burst + 1 pass', async () => {
    const { url, upstream } = await limitedApp({ requestsPerMinute: 60, burst: 9 })
    const replies = await Promise.all(Array.from({ length: 40 }, (_, i) => send(`${url}/api/${i}`)))
    const ok = replies.filter((r) => r.status === 200)
    expect(ok).toHaveLength(10)
    for (const r of replies.filter((x) => x.status !== 200)) expectRefused(r, 1)
    expect(ok.map((r) => r.headers['ratelimit-remaining']).sort((a, b) => Number(a) - Number(b))).toEqual(['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'])
    expect(upstream.requests).toBe(10)
  })

  it('decides before routing: misses and JS handlers are limited too and carry the headers', async () => {
    const { url } = await limitedApp({ requestsPerMinute: 60, burst: 2 }, (app) => app.get('/hello', () => ({ hi: true })))
    const a = await send(`${url}/nowhere`)
    expect(a.status).toBe(404)
    expect(errorOf(a).code).toBe('VG_NO_ROUTE')
    expect(limitsOf(a)).toMatchObject({ limit: '3', remaining: '2' })
    const b = await send(`${url}/hello`)
    expect(b.status).toBe(200)
    expect(limitsOf(b)).toMatchObject({ limit: '3', remaining: '1' })
    const c = await send(`${url}/api/x`, { method: 'POST', body: 'x' })
    expect(c.status).toBe(200)
    expect(limitsOf(c)).toMatchObject({ limit: '3', remaining: '0' })
    // Exhausted: a path with no route is refused with 429, not answered 404.
    expectRefused(await send(`${url}/nowhere`), 1)
    expectRefused(await send(`${url}/hello`), 1)
  })

  it("key: { header: 'x-api-key' } keeps a bucket per key; without the header, the client IP's", async () => {
    const { url } = await limitedApp({ requestsPerMinute: 60, burst: 2, key: { header: 'X-Api-Key' } })
    const run = async (headers: Record<string, string>, n: number) => {
      const out: number[] = []
      for (let i = 0; i < n; i++) out.push((await send(`${url}/api/k`, { headers })).status)
      return out
    }
    expect(await run({ 'x-api-key': 'alpha' }, 4)).toEqual([200, 200, 200, 429])
    expect(await run({ 'x-api-key': 'beta' }, 4)).toEqual([200, 200, 200, 429])
    expect(await run({}, 4)).toEqual([200, 200, 200, 429])
    // A key that looks like the client IP is still its own bucket.
    expect(await run({ 'x-api-key': '127.0.0.1' }, 4)).toEqual([200, 200, 200, 429])
    expect(await run({ 'x-api-key': 'alpha' }, 1)).toEqual([429])
    expect(await run({ 'x-api-key': 'gamma' }, 1)).toEqual([200])
  })

  it('keyFunction: sync and async keys; a throw, a rejection or no key falls back to the client IP', async () => {
    const calls: RateLimitRequest[] = []
    const keyFunction = (req: RateLimitRequest): string | undefined | Promise<string | undefined> => {
      calls.push(req)
      const mode = req.headers['x-mode']
      if (mode === 'throw') throw new Error('no key for you')
      if (mode === 'reject') return Promise.reject(new Error('no key for you (async)'))
      if (mode === 'async') return sleep(5).then(() => req.headers['x-tenant'])
      return req.headers['x-tenant']
    }
    const { url } = await limitedApp({ requestsPerMinute: 60, burst: 2, keyFunction })
    const one = async (headers: Record<string, string>) => (await send(`${url}/api/f?q=1`, { headers })).status

    // Tenant t1, keyed synchronously: 3 then refused.
    const t1: number[] = []
    for (let i = 0; i < 4; i++) t1.push(await one({ 'x-tenant': 't1' }))
    expect(t1).toEqual([200, 200, 200, 429])
    // Tenant t2, keyed asynchronously: a bucket of its own.
    const t2: number[] = []
    for (let i = 0; i < 4; i++) t2.push(await one({ 'x-tenant': 't2', 'x-mode': 'async' }))
    expect(t2).toEqual([200, 200, 200, 429])
    // The same key, however it was computed, is the same bucket.
    expect(await one({ 'x-tenant': 't1', 'x-mode': 'async' })).toBe(429)

    // No key (throw, reject, undefined): all three share the client IP's bucket.
    expect(await one({ 'x-mode': 'throw' })).toBe(200)
    expect(await one({ 'x-mode': 'reject' })).toBe(200)
    expect(await one({})).toBe(200)
    expect(await one({ 'x-mode': 'throw' })).toBe(429)
    expect(await one({ 'x-mode': 'reject', 'x-tenant': 'ignored' })).toBe(429)
    expect(await one({})).toBe(429)
    // A function key equal to the IP is not the IP's bucket.
    expect(await one({ 'x-tenant': '127.0.0.1' })).toBe(200)

    const first = calls[0]
    expect(first.method).toBe('GET')
    expect(first.path).toBe('/api/f')
    expect(first.client).toBe('127.0.0.1')
    expect(first.headers['x-tenant']).toBe('t1')
    expect(Object.keys(first.headers).every((k) => k === k.toLowerCase())).toBe(true)
    expect(calls).toHaveLength(16) // every request asked the function once
  })

  it('keyFunction that never answers: after keyTimeout the client IP is the key', async () => {
    const { url } = await limitedApp({ requestsPerMinute: 60, burst: 1, keyFunction: () => new Promise<string>(() => {}), keyTimeout: '100ms' })
    const t0 = performance.now()
    const statuses: number[] = []
    for (let i = 0; i < 3; i++) statuses.push((await send(`${url}/api/t`)).status)
    const ms = performance.now() - t0
    expect(statuses).toEqual([200, 200, 429])
    // Each decision waited out the key timeout first.
    expect(ms).toBeGreaterThanOrEqual(3 * 95)
  })

  it('requestsPerHour binds when it is the tighter limit (Retry-After in the hour scale)', async () => {
    const { url } = await limitedApp({ requestsPerMinute: 60, requestsPerHour: 3, burst: 2 })
    const replies: Reply[] = []
    for (let i = 0; i < 4; i++) replies.push(await send(`${url}/api/h`))
    expect(replies.map((r) => r.status)).toEqual([200, 200, 200, 429])
    expect(replies.map((r) => r.headers['ratelimit-limit'])).toEqual(['3', '3', '3', '3'])
    expect(replies.map((r) => r.headers['ratelimit-remaining'])).toEqual(['2', '1', '0', '0'])
    // The hour limit reports: one request per 20 minutes.
    expect(replies.slice(0, 3).map((r) => r.headers['ratelimit-reset'])).toEqual(['1200', '2400', '3600'])
    expectRefused(replies[3])
    const retryAfter = Number(replies[3].headers['retry-after'])
    expect(retryAfter).toBeGreaterThanOrEqual(1199)
    expect(retryAfter).toBeLessThanOrEqual(1200)

    // Per hour alone, no burst: one, then a wait of 3600 / 120 = 30 s.
    const hourly = await limitedApp({ requestsPerHour: 120 })
    expect((await send(`${hourly.url}/api/h`)).status).toBe(200)
    const refused = await send(`${hourly.url}/api/h`)
    expectRefused(refused)
    expect(Number(refused.headers['retry-after'])).toBeGreaterThanOrEqual(29)
    expect(Number(refused.headers['retry-after'])).toBeLessThanOrEqual(30)
  })

  it('keys by the client behind a trusted proxy (X-Forwarded-For), and ignores it from anyone else', async () => {
    // The data plane documents RateKey::ClientIp as "the client's address (after trusted
    // proxies)": behind a trusted load balancer each client has its own bucket.
    const upstream = await startUpstream((_req, res) => res.end('ok'))
    const build = async (trustedProxies: string[]) => {
      const gateway = new Gateway()
      gateway.route('/api/{path:path}', { upstream: upstream.url })
      const app = new Velithon({ workerThreads: 1, trustedProxies, middleware: [new RateLimitMiddleware({ requestsPerMinute: 60 })] })
      app.includeRouter(gateway.getRouter())
      return (await listen(app)).url
    }
    const viaProxy = async (url: string, client: string) => (await send(`${url}/api/x`, { headers: { 'x-forwarded-for': client } })).status

    // From an untrusted peer, X-Forwarded-For is the client's word: one bucket (the peer's).
    const untrusted = await build(['10.0.0.0/8'])
    expect([await viaProxy(untrusted, '203.0.113.1'), await viaProxy(untrusted, '203.0.113.2'), await viaProxy(untrusted, '203.0.113.3')]).toEqual([200, 429, 429])

    // From a trusted proxy, each forwarded client is limited on its own.
    const trusted = await build(['127.0.0.1'])
    expect([await viaProxy(trusted, '203.0.113.1'), await viaProxy(trusted, '203.0.113.2'), await viaProxy(trusted, '203.0.113.3')]).toEqual([200, 200, 200])
    expect(await viaProxy(trusted, '203.0.113.1')).toBe(429)
  })

  it('rejects bad options with a ConfigError naming the option', () => {
    const cases: Array<[unknown, string]> = [
      [{}, 'requestsPerMinute'],
      [{ requestsPerMinute: 0 }, 'requestsPerMinute'],
      [{ requestsPerMinute: 1.5 }, 'requestsPerMinute'],
      [{ requestsPerMinute: '60' }, 'requestsPerMinute'],
      [{ requestsPerHour: -1 }, 'requestsPerHour'],
      [{ requestsPerMinute: 60, burst: -1 }, 'burst'],
      [{ requestsPerMinute: 60, burst: 0.5 }, 'burst'],
      [{ requestsPerMinute: 60, key: 'cookie' }, 'key'],
      [{ requestsPerMinute: 60, key: { header: 'bad header' } }, 'key'],
      [{ requestsPerMinute: 60, key: 'ip', keyFunction: () => 'k' }, 'key'],
      [{ requestsPerMinute: 60, keyFunction: 'k' }, 'keyFunction'],
      [{ requestsPerMinute: 60, store: 'disk' }, 'store'],
      [{ requestsPerMinute: 60, store: { redis: 'http://127.0.0.1:6379' } }, 'store'],
      [{ requestsPerMinute: 60, onStoreError: 'maybe' }, 'onStoreError'],
      [{ requestsPerMinute: 60, storeTimeout: 'soon' }, 'storeTimeout'],
      [{ requestsPerMinute: 60, keyTimeout: -5 }, 'keyTimeout'],
      [{ requestsPerMinute: 60, perMinute: 5 }, 'perMinute'],
    ]
    for (const [options, option] of cases) {
      let error: unknown
      try {
        new RateLimitMiddleware(options as RateLimitMiddlewareOptions)
      } catch (e) {
        error = e
      }
      expect(error, JSON.stringify(options)).toBeInstanceOf(ConfigError)
      expect((error as ConfigError).option, JSON.stringify(options)).toBe(option)
      expect((error as ConfigError).code).toBe('VG_INVALID_OPTION')
      expect((error as Error).message, JSON.stringify(options)).toContain(option)
    }
    // And the good ones construct.
    expect(() => new RateLimitMiddleware({ requestsPerMinute: 60, burst: 9, key: { header: 'x-api-key' }, store: { redis: 'redis://127.0.0.1:6379/2' }, onStoreError: 'closed', storeTimeout: '100ms' })).not.toThrow()
    expect(() => new Velithon({ middleware: [new RateLimitMiddleware({ requestsPerMinute: 1 }), new RateLimitMiddleware({ requestsPerMinute: 2 })] })).toThrow(ConfigError)
  })
})

// ---------------------------------------------------------------------------------------

describe.skipIf(!redisServerPath())('RateLimitMiddleware, Redis store', () => {
  /** Two gateway instances (two apps, two Gateways) limited through the same Redis. */
  async function twoInstances(redisUrl: string, extra: Partial<RateLimitMiddlewareOptions>[] = [{}, {}]) {
    const upstream = await startUpstream((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.end('ok')
    })
    const urls: string[] = []
    for (const more of extra) {
      const gateway = new Gateway({ timeout: '10s' })
      gateway.route('/api/{path:path}', { upstream: upstream.url })
      const app = new Velithon({
        workerThreads: 2,
        middleware: [new RateLimitMiddleware({ requestsPerMinute: 60, burst: 9, key: { header: 'x-api-key' }, store: { redis: redisUrl }, ...more })],
      })
      app.includeRouter(gateway.getRouter())
      urls.push((await listen(app)).url)
    }
    return { urls, upstream }
  }

  /** `n` requests with `key`, alternating between the instances; replies in order. */
  async function interleaved(urls: string[], key: string, n: number): Promise<Reply[]> {
    const out: Reply[] = []
    for (let i = 0; i < n; i++) out.push(await send(`${urls[i % urls.length]}/api/${i}`, { headers: { 'x-api-key': key } }))
    return out
  }

  function expectShared(replies: Reply[], label: string) {
    expect(replies.map((r) => r.status), label).toEqual([...new Array(10).fill(200), ...new Array(replies.length - 10).fill(429)])
    expect(replies.map((r) => r.headers['ratelimit-limit']), label).toEqual(new Array(replies.length).fill('10'))
    // One count-down across both instances: the state is in Redis.
    expect(replies.slice(0, 10).map((r) => r.headers['ratelimit-remaining']), label).toEqual(['9', '8', '7', '6', '5', '4', '3', '2', '1', '0'])
    for (const r of replies.slice(10)) expectRefused(r, 1)
  }

  it('two instances share one limit; Redis down → open passes, closed refuses; Redis back → limits apply again', async () => {
    const redis = await startRedis()
    // Instance 0 keeps the default (fail open), instance 1 fails closed.
    const { urls, upstream } = await twoInstances(redis.url, [{}, { onStoreError: 'closed' }])

    // Interleaved, one at a time: 10 pass in total, then both refuse.
    const t0 = performance.now()
    const first = await interleaved(urls, 'shared-1', 14)
    const phaseMs = performance.now() - t0
    expect(phaseMs, 'the 14 requests must fit well inside the 1 s emission interval').toBeLessThan(900)
    expectShared(first, 'interleaved')
    expect(first.slice(0, 10).map((_, i) => i % 2)).toEqual([0, 1, 0, 1, 0, 1, 0, 1, 0, 1])

    // At once, 30 requests spread over both: exactly 10 pass.
    const burst = await Promise.all(Array.from({ length: 30 }, (_, i) => send(`${urls[i % 2]}/api/b${i}`, { headers: { 'x-api-key': 'shared-2' } })))
    expect(burst.filter((r) => r.status === 200)).toHaveLength(10)
    for (const r of burst.filter((x) => x.status !== 200)) expectRefused(r)
    expect(upstream.requests).toBe(20)
    // Two keys' state lives in Redis (nothing else is stored there).
    expect(await redisCommand(redis.port, ['DBSIZE'])).toBe(':2\r\n')

    // Redis goes away.
    await redis.stop()
    const outage: Array<{ instance: number; reply: Reply; ms: number }> = []
    for (let i = 0; i < 10; i++) {
      const started = performance.now()
      const reply = await send(`${urls[i % 2]}/api/o${i}`, { headers: { 'x-api-key': 'shared-3' } })
      outage.push({ instance: i % 2, reply, ms: performance.now() - started })
    }
    for (const { instance, reply } of outage) {
      if (instance === 0) {
        // Open: through, and the headers say "full" (the store could not tell).
        expect(reply.status).toBe(200)
        expect(limitsOf(reply)).toMatchObject({ limit: '10', remaining: '10' })
      } else {
        expectRefused(reply, 1)
      }
    }
    const worstMs = Math.max(...outage.map((o) => o.ms))
    // Bounded by the 250 ms store timeout (plus slack), never hanging.
    expect(worstMs).toBeLessThan(2_000)

    // Redis comes back on the same port, empty.
    const again = await startRedis(redis.port)
    expect(again.port).toBe(redis.port)
    let probe = 0
    // The open instance uses the store again when a fresh key shows 9 remaining (open says 10).
    await pollUntil(
      () => send(`${urls[0]}/api/p`, { headers: { 'x-api-key': `probe-a-${probe++}` } }),
      (r) => r.status === 200 && r.headers['ratelimit-remaining'] === '9',
      10_000,
      'the fail-open instance to reach Redis again',
    )
    await pollUntil(
      () => send(`${urls[1]}/api/p`, { headers: { 'x-api-key': `probe-b-${probe++}` } }),
      (r) => r.status === 200,
      10_000,
      'the fail-closed instance to reach Redis again',
    )
    const t1 = performance.now()
    const after = await interleaved(urls, 'shared-4', 14)
    expect(performance.now() - t1).toBeLessThan(900)
    expectShared(after, 'after the restart')
    console.log(
      `[rate-limit] redis: 14 interleaved in ${phaseMs.toFixed(0)} ms; during the outage the slowest decision took ${worstMs.toFixed(0)} ms; reconnected after ${probe} probes`,
    )
  })

  it('a Redis that accepts but never answers: the 250 ms store timeout decides (open passes, closed refuses)', async () => {
    // A black hole: accepts connections and reads, never replies.
    const sockets = new Set<net.Socket>()
    const hole = net.createServer((s) => {
      sockets.add(s)
      s.on('data', () => {})
      s.on('close', () => sockets.delete(s))
    })
    hole.listen(0, '127.0.0.1')
    await once(hole, 'listening')
    defer(
      () =>
        new Promise<void>((resolve) => {
          for (const s of sockets) s.destroy()
          hole.close(() => resolve())
        }),
    )
    const port = (hole.address() as net.AddressInfo).port
    const { urls } = await twoInstances(`redis://127.0.0.1:${port}`, [{}, { onStoreError: 'closed' }])

    const timed = async (url: string) => {
      const started = performance.now()
      const reply = await send(`${url}/api/t`, { headers: { 'x-api-key': 'k' } })
      return { reply, ms: performance.now() - started }
    }
    const open = await timed(urls[0])
    expect(open.reply.status).toBe(200)
    // It waited for the store first: at least the timeout, and not much more.
    expect(open.ms).toBeGreaterThanOrEqual(240)
    expect(open.ms).toBeLessThan(2_000)
    const closed = await timed(urls[1])
    expectRefused(closed.reply, 1)
    expect(closed.ms).toBeGreaterThanOrEqual(240)
    expect(closed.ms).toBeLessThan(2_000)
    // Later calls within the backoff are decided at once; all stay bounded.
    for (let i = 0; i < 4; i++) {
      const r = await timed(urls[i % 2])
      expect(r.reply.status).toBe(i % 2 === 0 ? 200 : 429)
      expect(r.ms).toBeLessThan(2_000)
    }
    console.log(`[rate-limit] black-hole redis: first decisions after ${open.ms.toFixed(0)} ms (open) and ${closed.ms.toFixed(0)} ms (closed)`)
  })

  it('per-hour and per-minute limits together through Redis; a password in the URL; a wrong one fails open/closed', async () => {
    const redis = await startRedis(undefined, 's3cret')
    const url = `redis://:s3cret@127.0.0.1:${redis.port}/3`
    const { urls } = await twoInstances(url, [{ requestsPerHour: 3, burst: 2 }, { requestsPerHour: 3, burst: 2 }])
    const replies = await interleaved(urls, 'hourly', 4)
    expect(replies.map((r) => r.status)).toEqual([200, 200, 200, 429])
    expect(replies.map((r) => r.headers['ratelimit-remaining'])).toEqual(['2', '1', '0', '0'])
    expectRefused(replies[3])
    const retryAfter = Number(replies[3].headers['retry-after'])
    expect(retryAfter).toBeGreaterThanOrEqual(1199)
    expect(retryAfter).toBeLessThanOrEqual(1200)
    // The state went to database 3, not 0.
    expect(await redisCommand(redis.port, [['AUTH', 's3cret'], ['DBSIZE']])).toBe('+OK\r\n:0\r\n')
    expect(await redisCommand(redis.port, [['AUTH', 's3cret'], ['SELECT', '3'], ['DBSIZE']])).toBe('+OK\r\n+OK\r\n:1\r\n')

    // A wrong password is a store error: the fail mode decides.
    const wrong = `redis://:nope@127.0.0.1:${redis.port}`
    const bad = await twoInstances(wrong, [{}, { onStoreError: 'closed' }])
    for (let i = 0; i < 3; i++) {
      const open = await send(`${bad.urls[0]}/api/w${i}`, { headers: { 'x-api-key': 'w' } })
      expect(open.status).toBe(200)
      expect(limitsOf(open)).toMatchObject({ limit: '10', remaining: '10' })
      expectRefused(await send(`${bad.urls[1]}/api/w${i}`, { headers: { 'x-api-key': 'w' } }), 1)
    }
  })
})

