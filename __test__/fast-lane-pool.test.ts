/**
 * The listener's HTTP/1.1 fast lane (crates/core/src/server/fast_lane/): on a plain-HTTP
 * listener, a GET on a pure proxy route is served by hand-written code (httparse heads,
 * its own upstream socket pool, bodies passed through as framed); the first request it
 * does not serve hands the connection, with the bytes already read, to hyper.
 *
 * This file: the lane's upstream connection pool (reuse, stale and idle connections,
 * limits) and the client connection (keep-alive, Connection: close, timeouts, app.close()).
 * See fast-lane.test.ts for the other fast-lane suites.
 *
 * End to end on 127.0.0.1: raw node:net clients where the bytes matter (pipelining,
 * keep-alive, hand-off), raw node:net upstreams where the response bytes must be exact
 * (chunked, close-delimited, 1xx, garbage, stale keep-alive), node:http elsewhere. The
 * raw client and upstreams are in helpers/raw-http.ts.
 */
import net from 'node:net'
import { afterEach, describe, expect, test } from 'vitest'
import { closeAll, defer, send, sleep, startProxy, waitFor, withTimeout } from './helpers/net'
import { answerOf, forwardedBy, get, headerOf, namesOf, ok, RawClient, recordingUpstream, startRawUpstream } from './helpers/raw-http'

afterEach(closeAll)

// ---------------------------------------------------------------------------------------

describe('the upstream connection pool', () => {
  test('a pooled connection the upstream closed meanwhile: the next GET still gets 200', async () => {
    const upstream = await startRawUpstream((req, socket) => {
      socket.write(ok(`conn${req.connection}`, 'Connection: keep-alive\r\n'))
      setTimeout(() => socket.destroy(), 20)
    })
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const first = await send(`${proxy.url}/gw/api/a`)
    expect(first.status).toBe(200)
    expect(first.body.toString()).toBe('conn1')
    await sleep(100)
    const second = await send(`${proxy.url}/gw/api/a`)
    expect(second.status).toBe(200)
    expect(second.body.toString()).toBe('conn2')
  }, 20_000)

  test('a pooled connection closed under the request (no answer): the GET is sent once more on a new connection', async () => {
    // The second request on any connection is dropped without an answer, as by an
    // upstream whose idle timeout fires just as the request arrives.
    const upstream = await startRawUpstream((req, socket) => {
      if (req.nth >= 2) socket.destroy()
      else socket.write(ok(`conn${req.connection}`))
    })
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const client = await RawClient.open(proxy.port)
    client.write(get('/gw/api/x'))
    expect((await client.next()).body.toString()).toBe('conn1')
    client.write(get('/gw/api/x'))
    const retried = await client.next()
    expect(retried.status).toBe(200)
    expect(retried.body.toString()).toBe('conn2')
    expect(upstream.requests.map((r) => `${r.connection}.${r.nth}`)).toEqual(['1.1', '1.2', '2.1'])
  }, 20_000)

  test('a new connection closed without an answer is a 502, not retried; a pooled one is retried only once', async () => {
    let answer = true
    const upstream = await startRawUpstream((_req, socket) => {
      if (answer) socket.write(ok('ok'))
      else socket.destroy()
    })
    const proxy = await startProxy({ upstreams: [upstream.url] })

    // A pooled connection first, then the upstream starts dropping every request.
    expect((await send(`${proxy.url}/gw/api/x`)).status).toBe(200)
    answer = false
    const afterPooled = await send(`${proxy.url}/gw/api/x`)
    expect(afterPooled.status).toBe(502)
    expect(JSON.parse(afterPooled.body.toString()).code).toBe('VG_UPSTREAM_PROTOCOL')
    // The pooled connection, then one new one.
    expect(upstream.requests).toHaveLength(3)

    const fresh = await send(`${proxy.url}/gw/api/x`)
    expect(fresh.status).toBe(502)
    expect(upstream.requests).toHaveLength(4)
  }, 20_000)

  test("an upstream answer with Connection: close is not pooled, though the upstream leaves the socket open", async () => {
    const upstream = await startRawUpstream((req, socket) => socket.write(ok(`conn${req.connection}`, 'Connection: close\r\n')))
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const client = await RawClient.open(proxy.port)
    for (const expected of ['conn1', 'conn2', 'conn3']) {
      client.write(get('/gw/api/x'))
      const r = await client.next()
      expect(r.body.toString()).toBe(expected)
      expect(headerOf(r, 'connection')).toBeUndefined()
    }
    expect(upstream.requests.map((r) => r.nth)).toEqual([1, 1, 1])
    await waitFor(() => upstream.closedConnections >= 2, 5_000, 'the gateway closing the used connections')
  }, 20_000)

  test('a close in Connection is not undone by a later keep-alive: that connection is not pooled', async () => {
    const upstream = await startRawUpstream((req, socket) =>
      socket.write(ok(`conn${req.connection}`, req.nth === 1 ? 'Connection: close\r\nConnection: keep-alive\r\n' : 'Connection: close, keep-alive\r\n')),
    )
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const client = await RawClient.open(proxy.port)
    for (const expected of ['conn1', 'conn2', 'conn3']) {
      client.write(get('/gw/api/x'))
      expect((await client.next()).body.toString()).toBe(expected)
    }
    expect(upstream.requests.map((r) => r.nth)).toEqual([1, 1, 1])
  }, 20_000)

  test('an upstream that closes connections idle for 40 ms, asked about every 40 ms: every GET still gets 200', async () => {
    // As a server with a 40 ms keep-alive timeout: the connection closes 40 ms after an
    // answer unless a request came meanwhile. The client's requests come around then, so
    // the lane must notice closed pooled connections (or re-send on one closed under it).
    const idleTimers = new Map<net.Socket, NodeJS.Timeout>()
    const upstream = await startRawUpstream((req, socket) => {
      clearTimeout(idleTimers.get(socket))
      socket.write(ok(`answer:${req.target}`))
      idleTimers.set(
        socket,
        setTimeout(() => socket.destroy(), 40),
      )
    })
    defer(() => idleTimers.forEach((t) => clearTimeout(t)))
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const client = await RawClient.open(proxy.port)
    const failures: string[] = []
    for (let i = 0; i < 60; i++) {
      client.write(get(`/gw/api/race/${i}`))
      const r = await client.next()
      if (r.status !== 200 || r.body.toString() !== `answer:/gw/api/race/${i}`) failures.push(`${i}: ${r.status} ${r.body.toString()}`)
      await sleep(36 + (i % 5) * 2) // 36 … 44 ms
    }
    expect(failures).toEqual([])
    expect(upstream.connections).toBeGreaterThan(1)
  }, 30_000)

  test('no cross-talk: 20 keep-alive clients × 25 pipelined GETs, mixed framings, each gets its own answers', async () => {
    const upstream = await startRawUpstream((req, socket) => {
      const body = `answer:${req.target}`
      const n = Number(/\/(\d+)$/.exec(req.target)?.[1] ?? 0)
      const write = () => {
        if (socket.destroyed) return
        if (n % 3 === 0) socket.write(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`)
        else socket.write(ok(body))
      }
      if (n % 5 === 0) setTimeout(write, 2)
      else write()
    })
    const proxy = await startProxy({ upstreams: [upstream.url] })
    await Promise.all(
      Array.from({ length: 20 }, async (_, c) => {
        const client = await RawClient.open(proxy.port)
        for (let batch = 0; batch < 5; batch++) {
          const targets = Array.from({ length: 5 }, (_, k) => `/gw/api/c${c}/${batch * 5 + k}`)
          client.write(targets.map((t) => get(t)).join(''))
          for (const t of targets) {
            const r = await client.next()
            expect(r.status).toBe(200)
            expect(r.body.toString()).toBe(`answer:${t}`)
          }
        }
      }),
    )
    expect(upstream.requests).toHaveLength(500)
    expect(upstream.connections).toBeLessThanOrEqual(20)
  }, 30_000)

  test('an idle pooled connection older than keepAliveTimeout is not reused', async () => {
    const upstream = await startRawUpstream((req, socket) => socket.write(ok(`conn${req.connection}`)))
    const proxy = await startProxy({ upstreams: [upstream.url], gateway: { keepAliveTimeout: '150ms' } })
    expect((await send(`${proxy.url}/gw/api/x`)).body.toString()).toBe('conn1')
    expect((await send(`${proxy.url}/gw/api/x`)).body.toString()).toBe('conn1')
    await sleep(400)
    expect((await send(`${proxy.url}/gw/api/x`)).body.toString()).toBe('conn2')
  }, 20_000)

  // The lane honours the route's connection slots, or leaves such routes to hyper (work in
  // progress changes which): either way, GETs must see the limit.
  test('maxConnectionsPerHost holds for GETs: a second concurrent GET waits, then 503 VG_POOL_TIMEOUT', async () => {
    const { upstream } = await recordingUpstream({ delay: (url) => (url.endsWith('/slow') ? 800 : 0) })
    const proxy = await startProxy({
      upstreams: [upstream.url],
      gateway: { maxConnectionsPerHost: 1, connectionPoolTimeout: '200ms' },
    })
    const slow = send(`${proxy.url}/gw/api/slow`)
    await waitFor(() => upstream.requests === 1, 5_000, 'the slow request upstream')
    const started = Date.now()
    const waiting = await send(`${proxy.url}/gw/api/fast`)
    expect(waiting.status).toBe(503)
    expect(JSON.parse(waiting.body.toString()).code).toBe('VG_POOL_TIMEOUT')
    expect(Date.now() - started).toBeGreaterThanOrEqual(150)
    expect((await slow).status).toBe(200)
    expect((await send(`${proxy.url}/gw/api/fast`)).status).toBe(200)
    expect(upstream.requests).toBe(2)
  }, 20_000)
})

describe('the client connection', () => {
  test('Connection: close is answered with connection: close, and the gateway closes the socket', async () => {
    const { upstream, seen } = await recordingUpstream()
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const client = await RawClient.open(proxy.port)
    client.write(get('/gw/api/bye', 'Connection: close\r\n'))
    const r = await client.next()
    expect(r.status).toBe(200)
    expect(answerOf(r).url).toBe('/gw/api/bye')
    expect(headerOf(r, 'connection')).toBe('close')
    await client.waitEnd()
    await withTimeout(client.closed, 5_000, 'the socket closing')
    // The client's Connection header is about its own hop.
    expect(namesOf(seen[0].rawHeaders).map((n) => n.toLowerCase())).not.toContain('connection')
    expect(forwardedBy(namesOf(seen[0].rawHeaders))).toBe('lane')
  }, 20_000)

  test('a client that leaves while the upstream works: the upstream connection is closed and the lease released', async () => {
    const upstream = await startRawUpstream((req, socket) => {
      if (req.target.endsWith('/hang')) return // never answers
      socket.write(ok('ok'))
    })
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const client = await RawClient.open(proxy.port)
    client.write(get('/gw/api/hang'))
    await waitFor(() => upstream.requests.length === 1, 5_000, 'the request upstream')
    expect(forwardedBy(upstream.requests[0].headers.map(([n]) => n))).toBe('lane')
    const status = () => Object.values(proxy.gateway.getUpstreamStatus())[0]
    expect(status().inFlight).toBe(1)
    client.socket.destroy()
    await waitFor(() => upstream.closedConnections === 1, 5_000, 'the gateway closing the upstream connection')
    await waitFor(() => status().inFlight === 0, 5_000, 'the in-flight count going back to 0')
    expect((await send(`${proxy.url}/gw/api/next`)).status).toBe(200)
  }, 20_000)

  /** A gateway with one idle keep-alive lane connection and one waiting on a slow upstream, then `app.close()`. */
  async function closeWhileBusy() {
    const { upstream } = await recordingUpstream({ delay: (url) => (url.endsWith('/slow') ? 400 : 0) })
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const idle = await RawClient.open(proxy.port)
    idle.write(get('/gw/api/first'))
    expect((await idle.next()).status).toBe(200)
    const busy = await RawClient.open(proxy.port)
    busy.write(get('/gw/api/slow'))
    await waitFor(() => upstream.requests === 2, 5_000, 'the slow request upstream')
    const closing = proxy.app.close({ timeout: '5s' })
    return { idle, busy, closing }
  }

  test('app.close(): an in-flight GET is answered, then its connection and idle keep-alive ones are closed', async () => {
    const { idle, busy, closing } = await closeWhileBusy()
    const r = await busy.next()
    expect(r.status).toBe(200)
    expect(answerOf(r).url).toBe('/gw/api/slow')
    await busy.waitEnd()
    expect(busy.unread.length).toBe(0)
    await idle.waitEnd()
    expect(idle.unread.length).toBe(0)
    await withTimeout(closing, 5_000, 'app.close()')
  }, 20_000)

  // The lane decides `connection: close` when it writes the client's head, so a request
  // already in flight when app.close() begins is answered with it, as hyper does.
  test('app.close(): the in-flight GET is answered with connection: close, as the general path does', async () => {
    const { busy, closing } = await closeWhileBusy()
    const r = await busy.next()
    expect(r.status).toBe(200)
    expect(headerOf(r, 'connection')).toBe('close')
    await withTimeout(closing, 5_000, 'app.close()')
  }, 20_000)

  test('an idle keep-alive connection, and a request head that never completes, are closed after requestHeaderTimeout', async () => {
    const { upstream, seen } = await recordingUpstream()
    const proxy = await startProxy({ upstreams: [upstream.url], app: { requestHeaderTimeout: '500ms' } })

    const idle = await RawClient.open(proxy.port)
    idle.write(get('/gw/api/x'))
    expect((await idle.next()).status).toBe(200)
    const idleSince = Date.now()
    await idle.waitEnd(5_000)
    expect(Date.now() - idleSince).toBeGreaterThanOrEqual(300)

    const slow = await RawClient.open(proxy.port)
    const slowSince = Date.now()
    slow.write('GET /gw/api/never HTTP/1.1\r\nHost: gateway.test\r\n')
    await slow.waitEnd(5_000)
    expect(Date.now() - slowSince).toBeGreaterThanOrEqual(300)
    expect(seen.map((s) => s.url)).toEqual(['/gw/api/x'])
  }, 20_000)
})
