/**
 * HTTP/2 to upstreams: `http2: true` by prior knowledge (h2c) on http://, HTTP/2 chosen
 * by ALPN on https://, many requests multiplexed on one upstream session, and gRPC-style
 * exchanges (te: trailers up, response trailers back down to an HTTP/2 client).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import http2 from 'node:http2'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { AddressInfo } from 'node:net'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { ConfigError, Gateway, LoadBalancer, Velithon, type GatewayOptions, type GatewayRouteOptions } from 'velithon-gateway'
import { createCa, type Pem, type TestCa } from './helpers/certs'

const opened: Array<() => unknown> = []
afterEach(async () => {
  while (opened.length) await opened.pop()!()
})

let ca: TestCa
let cert: Pem
beforeAll(async () => {
  ca = await createCa()
  cert = await ca.issue({ hosts: ['127.0.0.1'] })
  // The platform's root store (read once per process, at the first Gateway) is what
  // SSL_CERT_FILE names, so the default client trusts the test CA too.
  const dir = mkdtempSync(join(tmpdir(), 'vg-h2-'))
  writeFileSync(join(dir, 'ca.pem'), ca.cert)
  process.env.SSL_CERT_FILE = join(dir, 'ca.pem')
  return () => rmSync(dir, { recursive: true, force: true })
})

interface H2Upstream {
  url: string
  /** HTTP/2 sessions opened to it (one per connection). */
  sessions: () => number
  /** Streams (requests) per session, in order of the sessions. */
  streamsPerSession: () => number[]
  /** The headers of the last request. */
  last: () => http2.IncomingHttpHeaders | undefined
}

type StreamHandler = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void

/** Answers JSON with the HTTP version and path, after `delayMs`. */
const echo =
  (delayMs = 0): StreamHandler =>
  (stream, headers) => {
    setTimeout(() => {
      if (stream.destroyed) return
      stream.respond({ ':status': 200, 'content-type': 'application/json' })
      stream.end(JSON.stringify({ version: '2.0', path: headers[':path'], authority: headers[':authority'] }))
    }, delayMs)
  }

async function h2Upstream(secure: boolean, onStream: StreamHandler = echo()): Promise<H2Upstream> {
  const server = secure
    ? http2.createSecureServer({ ...cert, allowHTTP1: true })
    : http2.createServer()
  const perSession: number[] = []
  let last: http2.IncomingHttpHeaders | undefined
  const live = new Set<http2.ServerHttp2Session>()
  server.on('session', (session) => {
    const at = perSession.push(0) - 1
    live.add(session)
    session.on('close', () => live.delete(session))
    session.on('stream', () => perSession[at]++)
  })
  server.on('stream', (stream, headers) => {
    last = headers
    onStream(stream, headers)
  })
  // allowHTTP1: an HTTP/1.1 request says so (the tests expect none).
  if (secure) {
    server.on('request', (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => {
      if (req.httpVersion === '2.0') return
      res.setHeader('content-type', 'application/json')
      res.end(JSON.stringify({ version: req.httpVersion }))
    })
  }
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  opened.push(
    () =>
      new Promise<void>((r) => {
        for (const s of live) s.destroy()
        server.close(() => r())
      }),
  )
  const port = (server.address() as AddressInfo).port
  return {
    url: `${secure ? 'https' : 'http'}://127.0.0.1:${port}`,
    sessions: () => perSession.length,
    streamsPerSession: () => [...perSession],
    last: () => last,
  }
}

async function serve(gateway: Gateway): Promise<string> {
  const app = new Velithon()
  app.includeRouter(gateway.getRouter())
  const { url } = await app.listen({ port: 0, host: '127.0.0.1' })
  opened.push(() => app.close())
  return url
}

async function through(upstream: string, gatewayOptions: GatewayOptions, route: GatewayRouteOptions = {}): Promise<string> {
  const gateway = new Gateway(gatewayOptions)
  gateway.route('/u/{path:path}', { upstream, ...route })
  return (await serve(gateway)) + '/u'
}

async function json(url: string): Promise<Record<string, unknown>> {
  const res = await fetch(url)
  expect(res.status).toBe(200)
  return (await res.json()) as Record<string, unknown>
}

describe('HTTP/2 to upstreams', () => {
  it('http2: true speaks h2c (prior knowledge) to an http:// upstream', async () => {
    const up = await h2Upstream(false)
    const base = await through(up.url, { http2: true })
    const body = await json(`${base}/a?q=1`)
    expect(body.version).toBe('2.0')
    expect(body.path).toBe('/u/a?q=1')
    expect(body.authority).toBe(up.url.slice('http://'.length))
    expect(up.last()?.['x-forwarded-for']).toBe('127.0.0.1')
  })

  it('https:// upstreams get HTTP/2 when ALPN picks it, without any http2 option', async () => {
    const up = await h2Upstream(true)
    const base = await through(up.url, { tls: { ca: ca.cert } })
    expect((await json(`${base}/b`)).version).toBe('2.0')
  })

  it('http2 on a route or a load balancer, over TLS too', async () => {
    const up = await h2Upstream(true)
    const base = await through(up.url, {}, { tls: { ca: ca.cert }, http2: true })
    expect((await json(`${base}/c`)).version).toBe('2.0')
  })

  it('100 concurrent requests share one upstream HTTP/2 session (h2c)', async () => {
    const up = await h2Upstream(false, echo(50))
    const base = await through(up.url, { http2: true })
    const bodies = await Promise.all(Array.from({ length: 100 }, (_, i) => json(`${base}/n/${i}`)))
    expect(new Set(bodies.map((b) => b.path)).size).toBe(100)
    expect(up.sessions()).toBe(1)
    expect(up.streamsPerSession()).toEqual([100])
  })

  it('maxConnectionsPerHost does not cap streams on an http2: true upstream (one connection)', async () => {
    const up = await h2Upstream(false, echo(300))
    const base = await through(up.url, { http2: true, maxConnectionsPerHost: 1, connectionPoolTimeout: '100ms' })
    const statuses = await Promise.all(
      Array.from({ length: 3 }, async (_, i) => {
        const res = await fetch(`${base}/slow/${i}`)
        await res.arrayBuffer()
        return res.status
      }),
    )
    expect(statuses).toEqual([200, 200, 200])
    expect(up.sessions()).toBe(1)
  })

  it('100 concurrent requests share one upstream HTTP/2 session (TLS, http2: true)', async () => {
    const up = await h2Upstream(true, echo(50))
    const base = await through(up.url, { tls: { ca: ca.cert }, http2: true })
    await Promise.all(Array.from({ length: 100 }, (_, i) => json(`${base}/n/${i}`)))
    expect(up.sessions()).toBe(1)
  })

  it('with ALPN (no http2 option) a cold burst makes one connection and multiplexes on it', async () => {
    const up = await h2Upstream(true, echo(50))
    const base = await through(up.url, { tls: { ca: ca.cert } })
    await Promise.all(Array.from({ length: 100 }, (_, i) => json(`${base}/n/${i}`)))
    expect(up.sessions()).toBe(1)
    expect(up.streamsPerSession()).toEqual([100])
    await Promise.all(Array.from({ length: 100 }, (_, i) => json(`${base}/m/${i}`)))
    expect(up.streamsPerSession()).toEqual([200])
  })

  it('the same for https:// upstreams without any option (the default client)', async () => {
    // The platform roots trust the test CA here through SSL_CERT_FILE (see beforeAll).
    const up = await h2Upstream(true, echo(50))
    const base = await through(up.url, {})
    await Promise.all(Array.from({ length: 100 }, (_, i) => json(`${base}/n/${i}`)))
    expect(up.sessions()).toBe(1)
    expect(up.streamsPerSession()).toEqual([100])
  })
})

describe('gRPC-style exchanges', () => {
  it('te: trailers reaches the upstream and response trailers reach an HTTP/2 client', async () => {
    const up = await h2Upstream(false, (stream) => {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true })
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0', 'grpc-message': 'all good' }))
      stream.end(Buffer.from([0, 0, 0, 0, 2, 8, 1])) // a length-prefixed message
    })
    const base = await through(up.url, { http2: true })
    const client = http2.connect(base.slice(0, -'/u'.length))
    opened.push(() => client.close())
    const req = client.request({
      ':method': 'POST',
      ':path': '/u/pkg.Service/Method',
      'content-type': 'application/grpc',
      te: 'trailers',
    })
    req.end(Buffer.from([0, 0, 0, 0, 0]))
    const [headers, data, trailers] = await new Promise<[http2.IncomingHttpHeaders, Buffer, http2.IncomingHttpHeaders]>((resolve, reject) => {
      let head: http2.IncomingHttpHeaders = {}
      let tail: http2.IncomingHttpHeaders = {}
      const chunks: Buffer[] = []
      req.on('response', (h) => (head = h))
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('trailers', (t) => (tail = t))
      req.on('end', () => resolve([head, Buffer.concat(chunks), tail]))
      req.on('error', reject)
    })
    expect(headers[':status']).toBe(200)
    expect(headers['content-type']).toBe('application/grpc')
    expect([...data]).toEqual([0, 0, 0, 0, 2, 8, 1])
    expect(trailers['grpc-status']).toBe('0')
    expect(trailers['grpc-message']).toBe('all good')
    expect(up.last()?.te).toBe('trailers')
  })

  it('te values other than trailers are not forwarded', async () => {
    const up = await h2Upstream(false)
    const base = await through(up.url, { http2: true })
    const res = await fetch(`${base}/x`, { headers: { te: 'gzip, trailers' } })
    expect(res.status).toBe(200)
    await res.arrayBuffer()
    expect(up.last()?.te).toBeUndefined()
  })
})

describe('preserveHost and HTTP/2', () => {
  // HTTP/2 names the upstream in :authority; a Host that differs is not allowed (RFC 9113 §8.3.1).
  const refused = (fn: () => unknown) => {
    let err: unknown
    try {
      fn()
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(ConfigError)
    expect((err as ConfigError).option).toBe('preserveHost')
    expect((err as ConfigError).message).toContain('RFC 9113')
  }

  it('route() refuses preserveHost with http2: true at any level', () => {
    refused(() => new Gateway().route('/r', { upstream: 'http://127.0.0.1:1', http2: true, preserveHost: true }))
    refused(() => new Gateway({ http2: true }).route('/r', { upstream: 'http://127.0.0.1:1', preserveHost: true }))
    const lb = new LoadBalancer({ upstreamServers: ['http://127.0.0.1:1'], http2: true })
    refused(() => new Gateway({ loadBalancer: lb }).route('/r', { preserveHost: true }))
    // The most specific level decides: a route's http2: false allows it.
    new Gateway({ http2: true }).route('/r', { upstream: 'http://127.0.0.1:1', http2: false, preserveHost: true })
    new Gateway().route('/r', { upstream: 'http://127.0.0.1:1', preserveHost: true })
  })

  it('forwardRequest refuses preserveHost to an http2: true load balancer', async () => {
    const up = await h2Upstream(false)
    const lb = new LoadBalancer({ upstreamServers: [up.url], http2: true })
    const gateway = new Gateway()
    const app = new Velithon()
    let seen: unknown
    app.get('/f', async (request) => {
      try {
        return await gateway.forwardRequest(request, lb, { preserveHost: true })
      } catch (err) {
        seen = err
        return { refused: true }
      }
    })
    app.get('/ok', (request) => gateway.forwardRequest(request, lb))
    const { url } = await app.listen({ port: 0, host: '127.0.0.1' })
    opened.push(() => app.close())
    await (await fetch(`${url}/f`)).arrayBuffer()
    expect(seen).toBeInstanceOf(ConfigError)
    expect((seen as ConfigError).option).toBe('preserveHost')
    expect((await json(`${url}/ok`)).version).toBe('2.0')
  })
})
