/**
 * The listener's HTTP/1.1 fast lane (crates/core/src/server/fast_lane/): on a plain-HTTP
 * listener, a GET on a pure proxy route is served by hand-written code (httparse heads,
 * its own upstream socket pool, bodies passed through as framed); the first request it
 * does not serve hands the connection, with the bytes already read, to hyper.
 *
 * This file: the headers the lane writes (to the client and to the upstream), its errors
 * and metrics, and that it answers as the general path does. See fast-lane.test.ts for the
 * other fast-lane suites.
 *
 * End to end on 127.0.0.1: raw node:net clients where the bytes matter (pipelining,
 * keep-alive, hand-off), raw node:net upstreams where the response bytes must be exact
 * (chunked, close-delimited, 1xx, garbage, stale keep-alive), node:http elsewhere. The
 * raw client and upstreams are in helpers/raw-http.ts.
 */
import net from 'node:net'
import { once } from 'node:events'
import { afterEach, describe, expect, test } from 'vitest'
import { GatewayMetrics, MetricsMiddleware } from 'velithon-gateway'
import { closeAll, startProxy, waitFor } from './helpers/net'
import {
  forwardedBy,
  get,
  headerOf,
  headerPairs,
  namesOf,
  ok,
  RawClient,
  recordingUpstream,
  startRawUpstream,
  UUID,
  valuesOf,
  type RawResponse,
} from './helpers/raw-http'

afterEach(closeAll)

// ---------------------------------------------------------------------------------------

describe('headers', () => {
  test('the response: lower-case names, hop-by-hop headers removed, both Set-Cookie kept, one x-request-id', async () => {
    const upstream = await startRawUpstream((_req, socket) => {
      socket.write(
        'HTTP/1.1 200 OK\r\n' +
          'X-Mixed-Case: Value Kept\r\n' +
          'Connection: keep-alive, X-Hop\r\n' +
          'X-Hop: secret\r\n' +
          'Keep-Alive: timeout=5, max=100\r\n' +
          'Proxy-Authenticate: Basic realm="up"\r\n' +
          'Upgrade: h2c\r\n' +
          'Set-Cookie: a=1; Path=/\r\n' +
          'SET-COOKIE: b=2\r\n' +
          'X-Request-ID: the-upstreams-own\r\n' +
          'Content-Length: 2\r\n' +
          '\r\nok',
      )
    })
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const client = await RawClient.open(proxy.port)
    client.write(get('/gw/api/headers'))
    const r = await client.next()
    expect(r.status).toBe(200)
    expect(r.body.toString()).toBe('ok')
    for (const [name] of r.headers) expect(name, 'a header name').toBe(name.toLowerCase())
    const names = r.headers.map(([n]) => n)
    for (const hop of ['connection', 'keep-alive', 'x-hop', 'proxy-authenticate', 'upgrade']) {
      expect(names, `client got ${hop}`).not.toContain(hop)
    }
    expect(headerOf(r, 'x-mixed-case')).toBe('Value Kept')
    expect(valuesOf(r.headers, 'set-cookie')).toEqual(['a=1; Path=/', 'b=2'])
    expect(headerOf(r, 'date')).toMatch(/GMT$/)
    // Exactly one request id: the gateway's, which is also the one sent upstream.
    const id = headerOf(r, 'x-request-id')
    expect(id).toMatch(UUID)
    expect(valuesOf(upstream.requests[0].headers, 'x-request-id')).toEqual([id])
  }, 20_000)

  test("a client's X-Request-ID goes upstream and comes back; requestId false sends none; a renamed header is used", async () => {
    const upstream = await startRawUpstream((_req, socket) => socket.write(ok('ok')))
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const client = await RawClient.open(proxy.port)
    client.write(get('/gw/api/id', 'X-Request-ID: client-id-42\r\n'))
    const r = await client.next()
    expect(headerOf(r, 'x-request-id')).toBe('client-id-42')
    expect(valuesOf(upstream.requests[0].headers, 'x-request-id')).toEqual(['client-id-42'])

    const offUpstream = await startRawUpstream((_req, socket) => socket.write(ok('ok')))
    const off = await startProxy({ upstreams: [offUpstream.url], gateway: { requestId: false } })
    const offClient = await RawClient.open(off.port)
    offClient.write(get('/gw/api/id'))
    const o = await offClient.next()
    expect(o.status).toBe(200)
    expect(headerOf(o, 'x-request-id')).toBeUndefined()
    expect(valuesOf(offUpstream.requests[0].headers, 'x-request-id')).toEqual([])

    const renamedUpstream = await startRawUpstream((_req, socket) => socket.write(ok('ok')))
    const renamed = await startProxy({ upstreams: [renamedUpstream.url], gateway: { requestId: { header: 'X-Correlation-ID' } } })
    const renamedClient = await RawClient.open(renamed.port)
    renamedClient.write(get('/gw/api/id'))
    const c = await renamedClient.next()
    const correlation = headerOf(c, 'x-correlation-id')
    expect(correlation).toMatch(UUID)
    expect(headerOf(c, 'x-request-id')).toBeUndefined()
    expect(valuesOf(renamedUpstream.requests[0].headers, 'x-correlation-id')).toEqual([correlation])
  }, 20_000)

  test('upstream request: X-Forwarded-* set, Host rewritten, hop-by-hop and identity headers removed, the query byte for byte', async () => {
    const { upstream, seen } = await recordingUpstream()
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const client = await RawClient.open(proxy.port)
    client.write(
      get(
        '/gw/api/a/b?x=1&y=%20&z',
        'X-Forwarded-For: 203.0.113.9\r\n' +
          'X-Forwarded-Proto: https\r\n' +
          'X-Forwarded-Host: evil.example\r\n' +
          'Keep-Alive: timeout=5\r\n' +
          'Proxy-Authorization: Basic Zm9vOmJhcg==\r\n' +
          'Proxy-Connection: keep-alive\r\n' +
          'X-User-Id: forged\r\n' +
          'X_User_Id: forged-too\r\n' +
          'Accept: text/plain\r\n',
        'public.example:8443',
      ),
    )
    const r = await client.next()
    expect(r.status).toBe(200)
    const got = seen[0]
    expect(forwardedBy(namesOf(got.rawHeaders))).toBe('lane')
    expect(got.url).toBe('/gw/api/a/b?x=1&y=%20&z')
    const h = headerPairs(got.rawHeaders)
    expect(h('host')).toEqual([`127.0.0.1:${upstream.port}`])
    expect(h('x-forwarded-for')).toEqual(['127.0.0.1'])
    expect(h('x-forwarded-proto')).toEqual(['http'])
    expect(h('x-forwarded-host')).toEqual(['public.example:8443'])
    expect(h('accept')).toEqual(['text/plain'])
    expect(h('x-probe')).toEqual(['1'])
    for (const gone of ['keep-alive', 'proxy-authorization', 'proxy-connection', 'x-user-id', 'x_user_id', 'connection']) {
      expect(h(gone), `upstream got ${gone}`).toEqual([])
    }
  }, 20_000)

  test('upstream request: preserveHost keeps the client Host; a trusted proxy’s X-Forwarded-* are kept and For appended', async () => {
    const { upstream, seen } = await recordingUpstream()
    const preserving = await startProxy({ upstreams: [upstream.url], route: { preserveHost: true } })
    const a = await RawClient.open(preserving.port)
    a.write(get('/gw/api/p?q=%2F', '', 'public.example'))
    expect((await a.next()).status).toBe(200)
    expect(headerPairs(seen[0].rawHeaders)('host')).toEqual(['public.example'])
    expect(seen[0].url).toBe('/gw/api/p?q=%2F')

    const trusting = await startProxy({ upstreams: [upstream.url], app: { trustedProxies: ['127.0.0.1'] } })
    const b = await RawClient.open(trusting.port)
    b.write(
      get(
        '/gw/api/t',
        'X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: front.example\r\n',
        'public.example',
      ),
    )
    expect((await b.next()).status).toBe(200)
    const h = headerPairs(seen[1].rawHeaders)
    expect(forwardedBy(namesOf(seen[1].rawHeaders))).toBe('lane')
    expect(h('x-forwarded-for')).toEqual(['203.0.113.9, 127.0.0.1'])
    expect(h('x-forwarded-proto')).toEqual(['https'])
    expect(h('x-forwarded-host')).toEqual(['front.example'])
    expect(h('host')).toEqual([`127.0.0.1:${upstream.port}`])
  }, 20_000)
})

describe('errors and metrics', () => {
  test('a refused upstream is a 502 VG_UPSTREAM_CONNECT; a slow one a 504 VG_UPSTREAM_TIMEOUT; the connection keeps serving', async () => {
    const refused = net.createServer()
    refused.listen(0, '127.0.0.1')
    await once(refused, 'listening')
    const refusedPort = (refused.address() as net.AddressInfo).port
    await new Promise<void>((resolve) => refused.close(() => resolve()))
    const down = await startProxy({ upstreams: [`http://127.0.0.1:${refusedPort}`] })
    const a = await RawClient.open(down.port)
    a.write(get('/gw/api/x'))
    const r = await a.next()
    expect(r.status).toBe(502)
    expect(JSON.parse(r.body.toString()).code).toBe('VG_UPSTREAM_CONNECT')

    const upstream = await startRawUpstream((req, socket) => {
      if (!req.target.endsWith('/hang')) socket.write(ok('ok'))
    })
    const slow = await startProxy({ upstreams: [upstream.url], gateway: { timeout: '300ms' } })
    const b = await RawClient.open(slow.port)
    const started = Date.now()
    b.write(get('/gw/api/hang'))
    const t = await b.next()
    expect(t.status).toBe(504)
    expect(JSON.parse(t.body.toString()).code).toBe('VG_UPSTREAM_TIMEOUT')
    expect(Date.now() - started).toBeGreaterThanOrEqual(250)
    // The timed-out upstream connection is dropped, never reused.
    await waitFor(() => upstream.closedConnections === 1, 5_000, 'the timed-out upstream connection closing')
    b.write(get('/gw/api/fine'))
    const after = await b.next()
    expect(after.status).toBe(200)
    expect(after.body.toString()).toBe('ok')
  }, 20_000)

  test('lane requests are counted by the app metrics (statuses, upstream requests, idle pool connections)', async () => {
    const upstream = await startRawUpstream((req, socket) => {
      if (req.target.endsWith('/garbage')) socket.write('NOT HTTP\r\n\r\n')
      else if (req.target.endsWith('/missing')) socket.write('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n')
      else socket.write(ok('ok'))
    })
    const metrics = new GatewayMetrics()
    const proxy = await startProxy({
      upstreams: [upstream.url],
      gateway: { metrics },
      app: { middleware: [new MetricsMiddleware({ metrics })] },
    })
    const client = await RawClient.open(proxy.port)
    for (const path of ['/gw/api/a', '/gw/api/b', '/gw/api/missing', '/gw/api/garbage', '/gw/api/c']) {
      client.write(get(path))
      await client.next()
    }
    expect(upstream.requests).toHaveLength(5)
    // Every request was the lane's (each went over the same raw-pool connection but the one after the 502).
    expect(upstream.requests.every((r) => forwardedBy(r.headers.map(([n]) => n)) === 'lane')).toBe(true)
    await waitFor(() => metrics.getTotalRequests() === 5, 5_000, 'five requests counted')
    expect(metrics.getRequestsByStatus()).toEqual({ 200: 3, 404: 1, 502: 1 })
    // The connection goes back to the pool just after the answer is written.
    const idle = new RegExp(`velithon_pool_idle_connections\\{host="127\\.0\\.0\\.1:${upstream.port}"\\} 1\\b`)
    await waitFor(() => idle.test(metrics.toPrometheus()), 5_000, 'one idle pooled connection in the metrics')
  }, 20_000)
})

/**
 * The same GET through the lane and through the general path, each on a new connection.
 * `Connection: close, X-Via-General` names a header, which the lane leaves to hyper.
 */
async function bothPaths(port: number, target: string): Promise<{ lane: RawResponse; general: RawResponse }> {
  const viaLane = await RawClient.open(port)
  viaLane.write(get(target, 'Connection: close\r\n'))
  const lane = await viaLane.next()
  const viaGeneral = await RawClient.open(port)
  viaGeneral.write(get(target, 'Connection: close, X-Via-General\r\n'))
  return { lane, general: await viaGeneral.next() }
}

/** What must agree between the two paths: status, error code or body, and the end-to-end headers. */
function summary(r: RawResponse): Record<string, unknown> {
  const framing = new Set(['date', 'x-request-id', 'connection', 'content-length', 'transfer-encoding'])
  const json = /^application\/json/.test(valuesOf(r.headers, 'content-type')[0] ?? '')
  return {
    status: r.status,
    body: json ? (JSON.parse(r.body.toString()) as { code?: string }).code : r.body.toString('latin1'),
    headers: r.headers
      .filter(([n]) => !framing.has(n.toLowerCase()))
      .map(([n, v]) => `${n.toLowerCase()}: ${v}`)
      .sort(),
  }
}

describe('the lane answers as the general path does', () => {
  const cases: [string, string][] = [
    ['hop-by-hop and repeated headers', 'HTTP/1.1 200 OK\r\nX-A: 1\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 2\r\n\r\nok'],
    ['a chunked body', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\n\r\n'],
    ['a body delimited by the close', 'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil close'],
    ['early hints', 'HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello'],
    ['204', 'HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n'],
    ['304 with Content-Length', 'HTTP/1.1 304 Not Modified\r\nETag: "e"\r\nContent-Length: 10\r\n\r\n'],
    ['an unusual status', 'HTTP/1.1 299 Custom\r\nContent-Length: 2\r\n\r\nok'],
    ['an HTTP/1.0 answer', 'HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok'],
    ['garbage', 'NOT HTTP\r\n\r\n'],
    ['an unrequested 101', 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n'],
    ['conflicting Content-Length', 'HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nok'],
    ['a negative Content-Length', 'HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nok'],
    ['a folded header', 'HTTP/1.1 200 OK\r\nX-F: a\r\n b\r\nContent-Length: 2\r\n\r\nok'],
    ['an empty answer', ''],
    ['a Content-Length list of equal values', 'HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok'],
    ['Transfer-Encoding and Content-Length', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n2\r\nok\r\n0\r\n\r\n'],
  ]

  test.each(cases)('%s', async (_name, answer) => {
    const upstream = await startRawUpstream((_req, socket) => (answer === '' ? socket.end() : socket.end(answer)))
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const { lane, general } = await bothPaths(proxy.port, '/gw/api/x')
    expect(summary(lane)).toEqual(summary(general))
    expect(forwardedBy(upstream.requests[0].headers.map(([n]) => n))).toBe('lane')
    expect(forwardedBy(upstream.requests[1].headers.map(([n]) => n))).toBe('general')
  }, 20_000)

  test('request headers reach the upstream as the general path sends them', async () => {
    const heads: string[] = []
    const upstream = await startRawUpstream((req, socket) => {
      heads.push(req.head)
      socket.write(ok(''))
    })
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const odd =
      'X-Trail: value  \t\r\nX-Empty:\r\nX_Custom_Thing: 1\r\nx_user_roles: admin\r\nRemote-User: bob\r\n' +
      'X-Obs: caf\xe9\r\nCookie: a=1\r\nCookie: b=2\r\nTrailer: X-T\r\nProxy-Connection: keep-alive\r\nKeep-Alive: 5\r\n' +
      'Proxy-Authorization: x\r\nForwarded: for=1.2.3.4\r\nVia: 1.1 other\r\nX-Forwarded-For: 9.9.9.9, 8.8.8.8\r\n' +
      `X-${'N'.repeat(100)}: long\r\nX-Request-ID: ok-1\r\n`
    const send1 = async (connection: string) => {
      const client = await RawClient.open(proxy.port)
      client.write(Buffer.from(`GET /gw/api/h?q=1 HTTP/1.1\r\nHost: gateway.test\r\nX-Probe: 1\r\n${odd}Connection: ${connection}\r\n\r\n`, 'latin1'))
      expect((await client.next()).status).toBe(200)
    }
    await send1('close')
    await send1('close, X-Via-General')
    const lines = (head: string) =>
      head
        .split('\r\n')
        .slice(1)
        .map((l) => `${l.slice(0, l.indexOf(':')).toLowerCase()}:${l.slice(l.indexOf(':') + 1).trim()}`)
        .sort()
    expect(forwardedBy(upstream.requests[0].headers.map(([n]) => n))).toBe('lane')
    expect(forwardedBy(upstream.requests[1].headers.map(([n]) => n))).toBe('general')
    expect(heads[0].split('\r\n')[0]).toBe(heads[1].split('\r\n')[0])
    expect(lines(heads[0])).toEqual(lines(heads[1]))
  }, 20_000)

  // Content-Length takes digits only, as hyper reads it (not Rust's u64::from_str, which
  // takes a leading `+`).
  test('Content-Length: +2 from the upstream is refused (502), as the general path does', async () => {
    const upstream = await startRawUpstream((_req, socket) => socket.end('HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok'))
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const { lane, general } = await bothPaths(proxy.port, '/gw/api/x')
    expect(summary(general)).toMatchObject({ status: 502, body: 'VG_UPSTREAM_PROTOCOL' })
    expect(summary(lane)).toEqual(summary(general))
  }, 20_000)

  // The lane's head limit is hyper's (about 400 KiB), for requests and responses.
  test('an 80 KiB response head is passed on, as the general path does', async () => {
    const big = 'v'.repeat(80 * 1024)
    const upstream = await startRawUpstream((_req, socket) => socket.end(`HTTP/1.1 200 OK\r\nX-Big: ${big}\r\nContent-Length: 2\r\n\r\nok`))
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const { lane, general } = await bothPaths(proxy.port, '/gw/api/x')
    expect(general.status).toBe(200)
    expect(headerOf(general, 'x-big')).toBe(big)
    expect(lane.status).toBe(200)
    expect(headerOf(lane, 'x-big')).toBe(big)
    expect(lane.body.toString()).toBe('ok')
  }, 20_000)
})
