/**
 * The listener's HTTP/1.1 fast lane (crates/core/src/server/fast_lane/): on a plain-HTTP
 * listener, a GET on a pure proxy route is served by hand-written code (httparse heads,
 * its own upstream socket pool, bodies passed through as framed); the first request it
 * does not serve hands the connection, with the bytes already read, to hyper.
 *
 * End to end on 127.0.0.1: raw node:net clients where the bytes matter (pipelining,
 * keep-alive, hand-off), raw node:net upstreams where the response bytes must be exact
 * (chunked, close-delimited, 1xx, garbage, stale keep-alive), node:http elsewhere.
 */
import http from 'node:http'
import http2 from 'node:http2'
import net from 'node:net'
import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { afterEach, describe, expect, test } from 'vitest'
import { GatewayMetrics, MetricsMiddleware } from 'velithon-gateway'
import { closeAll, defer, readAll, send, sleep, startProxy, startUpstream, waitFor, withTimeout } from './helpers/net'

afterEach(closeAll)

const MiB = 1024 * 1024
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/

const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex')

// ---------------------------------------------------------------------------------------
// A raw HTTP/1.1 client: writes bytes, reads responses one at a time off one connection.

type HeaderLine = [string, string]

interface RawResponse {
  statusLine: string
  status: number
  /** Header lines as sent (names not lower-cased here). */
  headers: HeaderLine[]
  /** The body as framed on the wire (chunk-size lines included). */
  wire: Buffer
  /** The body, de-chunked. */
  body: Buffer
  trailers: HeaderLine[]
}

function splitHeaderLine(line: string): HeaderLine {
  const i = line.indexOf(':')
  if (i <= 0) throw new Error(`not a header line: ${JSON.stringify(line)}`)
  return [line.slice(0, i), line.slice(i + 1).trim()]
}

/** Every value of header `name` (case-insensitive), in order. */
function valuesOf(headers: HeaderLine[], name: string): string[] {
  return headers.filter(([n]) => n.toLowerCase() === name).map(([, v]) => v)
}

/** The only value of header `name`, or undefined; throws when it is repeated. */
function headerOf(r: RawResponse, name: string): string | undefined {
  const values = valuesOf(r.headers, name)
  if (values.length > 1) throw new Error(`${name} is repeated: ${JSON.stringify(values)}`)
  return values[0]
}

/**
 * One response at the start of `buf`, with how many bytes it took; undefined when it is
 * not complete yet (a body delimited by the close is complete once `ended`).
 */
function parseResponse(buf: Buffer, ended: boolean): { response: RawResponse; used: number } | undefined {
  const headEnd = buf.indexOf('\r\n\r\n')
  if (headEnd < 0) return undefined
  const [statusLine, ...lines] = buf.subarray(0, headEnd).toString('latin1').split('\r\n')
  const headers = lines.map(splitHeaderLine)
  const status = Number(statusLine.split(' ')[1])
  const start = headEnd + 4
  const trailers: HeaderLine[] = []
  const done = (end: number, body: Buffer) => ({
    response: { statusLine, status, headers, wire: buf.subarray(start, end), body, trailers },
    used: end,
  })
  if ((status >= 100 && status < 200) || status === 204 || status === 304) return done(start, Buffer.alloc(0))
  const codings = valuesOf(headers, 'transfer-encoding')
  if (codings.length > 0) {
    if (!/(^|,)\s*chunked\s*$/i.test(codings.join(','))) throw new Error(`unexpected transfer-encoding ${codings.join(',')}`)
    const pieces: Buffer[] = []
    let p = start
    for (;;) {
      const lineEnd = buf.indexOf('\r\n', p)
      if (lineEnd < 0) return undefined
      const sizeLine = buf.subarray(p, lineEnd).toString('latin1')
      const sizeText = sizeLine.split(';')[0].trim()
      if (!/^[0-9a-fA-F]{1,15}$/.test(sizeText)) throw new Error(`bad chunk-size line ${JSON.stringify(sizeLine)}`)
      const size = parseInt(sizeText, 16)
      p = lineEnd + 2
      if (size === 0) {
        for (;;) {
          const end = buf.indexOf('\r\n', p)
          if (end < 0) return undefined
          const line = buf.subarray(p, end).toString('latin1')
          p = end + 2
          if (line === '') return done(p, Buffer.concat(pieces))
          trailers.push(splitHeaderLine(line))
        }
      }
      if (buf.length < p + size + 2) return undefined
      pieces.push(buf.subarray(p, p + size))
      if (buf[p + size] !== 0x0d || buf[p + size + 1] !== 0x0a) {
        throw new Error(`chunk data not followed by CRLF at ${p + size}: ${JSON.stringify(buf.subarray(p, p + size + 8).toString('latin1'))}`)
      }
      p += size + 2
    }
  }
  const lengths = valuesOf(headers, 'content-length')
  if (lengths.length > 0) {
    if (new Set(lengths).size !== 1) throw new Error(`conflicting content-length ${lengths.join(',')}`)
    const end = start + Number(lengths[0])
    if (buf.length < end) return undefined
    return done(end, buf.subarray(start, end))
  }
  if (!ended) return undefined
  return done(buf.length, buf.subarray(start))
}

class RawClient {
  #buf = Buffer.alloc(0)
  #ended = false
  #wake: (() => void) | undefined
  /** Resolves when the socket has closed. */
  readonly closed: Promise<void>

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.#buf = Buffer.concat([this.#buf, chunk])
      this.#notify()
    })
    const end = () => {
      this.#ended = true
      this.#notify()
    }
    socket.on('end', end)
    socket.on('close', end)
    socket.on('error', end) // a reset ends the reading too; tests look at what came
    this.closed = new Promise<void>((resolve) => socket.once('close', () => resolve()))
    defer(() => socket.destroy())
  }

  static async open(port: number, options: { allowHalfOpen?: boolean } = {}): Promise<RawClient> {
    const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: options.allowHalfOpen ?? false })
    socket.setNoDelay(true)
    const client = new RawClient(socket)
    await withTimeout(once(socket, 'connect'), 5_000, 'connecting to the gateway')
    return client
  }

  /** The server closed its side (or the connection failed). */
  get ended(): boolean {
    return this.#ended
  }

  /** Bytes received and not taken by `next()`. */
  get unread(): Buffer {
    return this.#buf
  }

  write(data: string | Buffer): void {
    this.socket.write(data)
  }

  #notify(): void {
    const wake = this.#wake
    this.#wake = undefined
    wake?.()
  }

  #changed(ms: number, what: string): Promise<void> {
    return withTimeout(new Promise<void>((resolve) => (this.#wake = resolve)), Math.max(ms, 1), what)
  }

  /** The next complete response on the connection. */
  async next(timeoutMs = 10_000): Promise<RawResponse> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const parsed = parseResponse(this.#buf, this.#ended)
      if (parsed) {
        this.#buf = this.#buf.subarray(parsed.used)
        return parsed.response
      }
      if (this.#ended) {
        throw new Error(`the connection ended before a complete response; unread: ${JSON.stringify(this.#buf.toString('latin1').slice(0, 600))}`)
      }
      await this.#changed(deadline - Date.now(), `a response (so far: ${JSON.stringify(this.#buf.toString('latin1').slice(0, 300))})`)
    }
  }

  /** Waits until the server has closed the connection. */
  async waitEnd(timeoutMs = 5_000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (!this.#ended) await this.#changed(deadline - Date.now(), 'the gateway closing the connection')
  }
}

/**
 * A GET as a raw client writes it. `Host` comes first and `X-Probe` second, so
 * `forwardedBy` can tell which path forwarded it.
 */
function get(target: string, extra = '', host = 'gateway.test'): string {
  return `GET ${target} HTTP/1.1\r\nHost: ${host}\r\nX-Probe: 1\r\n${extra}\r\n`
}

/**
 * Which path forwarded a request, from the header names the upstream received (in order).
 * The fast lane writes the client's headers in their order without `host`, then its own
 * `host` and `x-forwarded-*`; the general path (hyper) rewrites `Host` where the client put
 * it. Clients here send `Host` first and `X-Probe` after it.
 */
function forwardedBy(names: string[]): 'lane' | 'general' {
  const lower = names.map((n) => n.toLowerCase())
  const host = lower.indexOf('host')
  const probe = lower.indexOf('x-probe')
  if (host < 0 || probe < 0) throw new Error(`no host or x-probe among ${JSON.stringify(names)}`)
  return probe < host ? 'lane' : 'general'
}

/** Header names of node's `rawHeaders` (`[name, value, name, value, …]`). */
const namesOf = (rawHeaders: string[]): string[] => rawHeaders.filter((_, i) => i % 2 === 0)

/** `(name) => values` over node's rawHeaders, case-insensitive. */
function headerPairs(rawHeaders: string[]): (name: string) => string[] {
  return (name) => rawHeaders.filter((_, i) => i % 2 === 1 && rawHeaders[i - 1].toLowerCase() === name)
}

// ---------------------------------------------------------------------------------------
// Upstreams

interface Seen {
  method: string
  url: string
  rawHeaders: string[]
  body: Buffer
}

/** A node:http upstream that records every request and answers `{ method, url, rawHeaders, length, sha256 }`. */
async function recordingUpstream(options: { delay?: (url: string) => number } = {}) {
  const seen: Seen[] = []
  const upstream = await startUpstream(async (req, res) => {
    const body = await readAll(req)
    seen.push({ method: req.method ?? '', url: req.url ?? '', rawHeaders: req.rawHeaders, body })
    const ms = options.delay?.(req.url ?? '') ?? 0
    if (ms > 0) await sleep(ms)
    const payload = JSON.stringify({ method: req.method, url: req.url, rawHeaders: req.rawHeaders, length: body.length, sha256: sha256(body) })
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) })
    res.end(payload)
  })
  return { upstream, seen }
}

interface Answer {
  method: string
  url: string
  rawHeaders: string[]
  length: number
  sha256: string
}
const answerOf = (r: { body: Buffer }): Answer => JSON.parse(r.body.toString('utf8')) as Answer

/** A request head a raw upstream received. */
interface UpstreamRequest {
  head: string
  method: string
  target: string
  headers: HeaderLine[]
  /** Which connection (1, 2, …, in accept order). */
  connection: number
  /** Which request on that connection (1, 2, …). */
  nth: number
}

interface RawUpstream {
  port: number
  url: string
  readonly connections: number
  readonly closedConnections: number
  requests: UpstreamRequest[]
}

type Responder = (req: UpstreamRequest, socket: net.Socket, upstream: RawUpstream) => void

/** A node:net upstream: parses request heads (skipping Content-Length bodies) and lets `respond` write raw bytes. */
async function startRawUpstream(respond: Responder): Promise<RawUpstream> {
  const sockets = new Set<net.Socket>()
  let connections = 0
  let closedConnections = 0
  const requests: UpstreamRequest[] = []
  const server = net.createServer((socket) => {
    const connection = ++connections
    sockets.add(socket)
    socket.on('close', () => {
      closedConnections++
      sockets.delete(socket)
    })
    socket.on('error', () => {})
    let buf = Buffer.alloc(0)
    let skip = 0
    let nth = 0
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk])
      for (;;) {
        if (skip > 0) {
          const n = Math.min(skip, buf.length)
          buf = buf.subarray(n)
          skip -= n
          if (skip > 0) return
        }
        const end = buf.indexOf('\r\n\r\n')
        if (end < 0) return
        const head = buf.subarray(0, end).toString('latin1')
        buf = buf.subarray(end + 4)
        const [requestLine, ...lines] = head.split('\r\n')
        const [method, target] = requestLine.split(' ')
        const headers = lines.map(splitHeaderLine)
        skip = Number(valuesOf(headers, 'content-length')[0] ?? 0)
        const req: UpstreamRequest = { head, method, target, headers, connection, nth: ++nth }
        requests.push(req)
        if (!socket.destroyed) respond(req, socket, upstream)
      }
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const port = (server.address() as net.AddressInfo).port
  const upstream: RawUpstream = {
    port,
    url: `http://127.0.0.1:${port}`,
    get connections() {
      return connections
    },
    get closedConnections() {
      return closedConnections
    },
    requests,
  }
  defer(
    () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        for (const s of sockets) s.destroy()
      }),
  )
  return upstream
}

/** `HTTP/1.1 200 OK` with a Content-Length body. */
const ok = (body: string, extra = ''): string => `HTTP/1.1 200 OK\r\n${extra}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`

// ---------------------------------------------------------------------------------------

describe('pipelining', () => {
  test('two GETs in one write get two responses, in order, each with its body', async () => {
    // The first answer is the slower one: a lane that answered out of order would show it.
    const { upstream, seen } = await recordingUpstream({ delay: (url) => (url.endsWith('/one') ? 150 : 0) })
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const client = await RawClient.open(proxy.port)
    client.write(get('/gw/api/one') + get('/gw/api/two?n=2'))
    const first = await client.next()
    const second = await client.next()
    expect(first.statusLine).toBe('HTTP/1.1 200 OK')
    expect(second.statusLine).toBe('HTTP/1.1 200 OK')
    expect(answerOf(first).url).toBe('/gw/api/one')
    expect(answerOf(second).url).toBe('/gw/api/two?n=2')
    expect(seen.map((s) => forwardedBy(namesOf(s.rawHeaders)))).toEqual(['lane', 'lane'])
    // One after the other over one pooled upstream connection.
    expect(upstream.connections).toBe(1)
    // Nothing else came, and the connection still serves.
    await sleep(50)
    expect(client.unread.length).toBe(0)
    expect(client.ended).toBe(false)
    client.write(get('/gw/api/three'))
    expect(answerOf(await client.next()).url).toBe('/gw/api/three')
  }, 20_000)

  test('30 GETs in one write get 30 responses in order', async () => {
    const { upstream, seen } = await recordingUpstream()
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const client = await RawClient.open(proxy.port)
    const n = 30
    client.write(Array.from({ length: n }, (_, i) => get(`/gw/api/item/${i}?i=${i}`)).join(''))
    for (let i = 0; i < n; i++) {
      const r = await client.next()
      expect(r.status, `response ${i}`).toBe(200)
      expect(answerOf(r).url).toBe(`/gw/api/item/${i}?i=${i}`)
    }
    expect(seen.every((s) => forwardedBy(namesOf(s.rawHeaders)) === 'lane')).toBe(true)
    expect(upstream.connections).toBe(1)
  }, 20_000)

  test('a GET with Connection: close followed by a pipelined GET: one response, then the gateway closes', async () => {
    const { upstream, seen } = await recordingUpstream()
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const client = await RawClient.open(proxy.port)
    client.write(get('/gw/api/first', 'Connection: close\r\n') + get('/gw/api/second'))
    const r = await client.next()
    expect(r.status).toBe(200)
    expect(answerOf(r).url).toBe('/gw/api/first')
    expect(headerOf(r, 'connection')).toBe('close')
    await client.waitEnd()
    expect(client.unread.toString('latin1')).toBe('')
    expect(seen.map((s) => s.url)).toEqual(['/gw/api/first'])
  }, 20_000)

  test('a request head written a few bytes at a time is served', async () => {
    const { upstream, seen } = await recordingUpstream()
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const client = await RawClient.open(proxy.port)
    const request = get('/gw/api/slowly?a=1', 'Accept: */*\r\n')
    for (let i = 0; i < request.length; i += 7) {
      client.write(request.slice(i, i + 7))
      await sleep(2)
    }
    const r = await client.next()
    expect(r.status).toBe(200)
    expect(answerOf(r).url).toBe('/gw/api/slowly?a=1')
    expect(forwardedBy(namesOf(seen[0].rawHeaders))).toBe('lane')
  }, 20_000)
})

describe('pipelining and a half-closed client', () => {
  // hyper drops a request whose client has shut its side once nothing more is buffered
  // (its half-close is off): the lane does the same, and still answers what came before.
  test('two GETs, then the client shuts its side: the first is answered, then the gateway closes, as hyper does', async () => {
    const { upstream } = await recordingUpstream()
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const client = await RawClient.open(proxy.port, { allowHalfOpen: true })
    client.socket.end(get('/gw/api/one') + get('/gw/api/two'))
    const first = await client.next()
    expect(first.status).toBe(200)
    expect(answerOf(first).url).toBe('/gw/api/one')
    await client.waitEnd()
    expect(client.unread.length).toBe(0)

    // The general path (POSTs go there) does the same.
    const general = await RawClient.open(proxy.port, { allowHalfOpen: true })
    const post = (target: string) => `POST ${target} HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: 0\r\n\r\n`
    general.socket.end(post('/gw/api/one') + post('/gw/api/two'))
    expect(answerOf(await general.next()).url).toBe('/gw/api/one')
    await general.waitEnd()
    expect(general.unread.length).toBe(0)
  }, 20_000)
})

describe('hand-off to the general path', () => {
  // A body that looks like a request: a parser that lost the framing would forward it.
  const postBody = Buffer.concat([
    Buffer.from('GET /gw/api/smuggled HTTP/1.1\r\nHost: x\r\n\r\n'),
    randomBytes(100_000),
    Buffer.from('\r\n\r\n0\r\n\r\n'),
  ])
  const post = (target: string): Buffer =>
    Buffer.concat([
      Buffer.from(`POST ${target} HTTP/1.1\r\nHost: gateway.test\r\nX-Probe: 1\r\nContent-Type: application/octet-stream\r\nContent-Length: ${postBody.length}\r\n\r\n`),
      postBody,
    ])

  test('GET, then POST with a body, then GET on one keep-alive connection: all answered, the body byte for byte', async () => {
    const { upstream, seen } = await recordingUpstream()
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const client = await RawClient.open(proxy.port)

    client.write(get('/gw/api/before'))
    const a = await client.next()
    expect(a.status).toBe(200)
    expect(answerOf(a).url).toBe('/gw/api/before')

    client.write(post('/gw/api/upload'))
    const b = await client.next()
    expect(b.status).toBe(200)
    expect(answerOf(b)).toMatchObject({ method: 'POST', url: '/gw/api/upload', length: postBody.length, sha256: sha256(postBody) })

    client.write(get('/gw/api/after'))
    const c = await client.next()
    expect(c.status).toBe(200)
    expect(answerOf(c).url).toBe('/gw/api/after')

    expect(seen.map((s) => `${s.method} ${s.url}`)).toEqual(['GET /gw/api/before', 'POST /gw/api/upload', 'GET /gw/api/after'])
    expect(seen[1].body.equals(postBody)).toBe(true)
    // The lane served the first GET; from the POST on, the connection is hyper's.
    expect(seen.map((s) => forwardedBy(namesOf(s.rawHeaders)))).toEqual(['lane', 'general', 'general'])
    expect(client.ended).toBe(false)
  }, 20_000)

  test('GET + POST (with its body) + GET pipelined in one write: three answers in order, the body intact', async () => {
    const { upstream, seen } = await recordingUpstream()
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const client = await RawClient.open(proxy.port)
    client.write(Buffer.concat([Buffer.from(get('/gw/api/one')), post('/gw/api/two'), Buffer.from(get('/gw/api/three'))]))
    const answers = [await client.next(), await client.next(), await client.next()]
    expect(answers.map((r) => r.status)).toEqual([200, 200, 200])
    expect(answers.map((r) => `${answerOf(r).method} ${answerOf(r).url}`)).toEqual([
      'GET /gw/api/one',
      'POST /gw/api/two',
      'GET /gw/api/three',
    ])
    expect(answerOf(answers[1]).sha256).toBe(sha256(postBody))
    expect(seen).toHaveLength(3)
    expect(seen[1].body.equals(postBody)).toBe(true)
    expect(forwardedBy(namesOf(seen[0].rawHeaders))).toBe('lane')
  }, 20_000)

  test('a GET with 120 headers gets 431; with 100 it is served', async () => {
    const { upstream, seen } = await recordingUpstream()
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const many = (n: number) => Array.from({ length: n }, (_, i) => `X-H${i}: v${i}\r\n`).join('')

    const tooMany = await RawClient.open(proxy.port)
    tooMany.write(get('/gw/api/many', many(118))) // + Host + X-Probe = 120
    const r = await tooMany.next()
    expect(r.status).toBe(431)
    expect(seen).toHaveLength(0)

    const enough = await RawClient.open(proxy.port)
    enough.write(get('/gw/api/enough', many(98))) // + Host + X-Probe = 100
    const s = await enough.next()
    expect(s.status).toBe(200)
    expect(seen).toHaveLength(1)
    expect(namesOf(seen[0].rawHeaders).filter((n) => n.toLowerCase().startsWith('x-h'))).toHaveLength(98)
  }, 20_000)

  test('a GET with a 70 KiB head is served, and so is cleartext HTTP/2', async () => {
    // node:http refuses heads over 16 KiB; this upstream answers the Cookie's length.
    const upstream = await startRawUpstream((req, socket) => socket.write(ok(`cookie:${valuesOf(req.headers, 'cookie').join('').length}`)))
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const client = await RawClient.open(proxy.port)
    const cookie = 'c'.repeat(70 * 1024)
    client.write(get('/gw/api/big-head', `Cookie: ${cookie}\r\n`))
    const r = await client.next()
    expect(r.status).toBe(200)
    expect(r.body.toString()).toBe(`cookie:${cookie.length}`)

    const session = http2.connect(proxy.url)
    defer(() => session.destroy())
    const stream = session.request({ ':method': 'GET', ':path': '/gw/api/h2?x=1' })
    const [headers] = (await withTimeout(once(stream, 'response'), 10_000, 'an HTTP/2 response')) as [http2.IncomingHttpHeaders]
    const body = await withTimeout(readAll(stream), 10_000, 'an HTTP/2 body')
    expect(headers[':status']).toBe(200)
    expect(body.toString()).toBe('cookie:0')
    expect(upstream.requests.map((q) => q.target)).toEqual(['/gw/api/big-head', '/gw/api/h2?x=1'])
    session.close()
  }, 20_000)

  test('an HTTP/1.0 GET is answered with the body, and the connection closes after it', async () => {
    const { upstream, seen } = await recordingUpstream()
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const client = await RawClient.open(proxy.port)
    client.write('GET /gw/api/old?v=1.0 HTTP/1.0\r\nHost: gateway.test\r\nX-Probe: 1\r\n\r\n')
    const r = await client.next()
    expect(r.status).toBe(200)
    expect(answerOf(r).url).toBe('/gw/api/old?v=1.0')
    await client.waitEnd()
    expect(seen).toHaveLength(1)
  }, 20_000)
})

describe('upstream response framing', () => {
  test('a chunked response (with a chunk extension and a trailer) arrives whole, and the upstream connection is reused', async () => {
    const upstream = await startRawUpstream((_req, socket) => {
      void (async () => {
        const pieces = [
          'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n',
          '5;ext=1\r\nhello\r\n',
          '1\r\n \r\n6\r\nwor',
          'ld!\r\n',
          'A\r\n0123456789\r\n',
          '0\r\nX-Trailer: t\r\n\r\n',
        ]
        for (const piece of pieces) {
          if (socket.destroyed) return
          socket.write(piece)
          await sleep(15)
        }
      })()
    })
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const expected = 'hello world!0123456789'

    const first = await send(`${proxy.url}/gw/api/chunked`)
    expect(first.status).toBe(200)
    expect(first.body.toString()).toBe(expected)
    expect(first.headers['transfer-encoding']).toBe('chunked')
    expect(first.headers['content-length']).toBeUndefined()

    const second = await send(`${proxy.url}/gw/api/chunked`)
    expect(second.status).toBe(200)
    expect(second.body.toString()).toBe(expected)

    // Raw: the client's framing is sound chunked too.
    const client = await RawClient.open(proxy.port)
    client.write(get('/gw/api/chunked'))
    const third = await client.next()
    expect(third.body.toString()).toBe(expected)
    // On the wire: chunk data as sent, the extension and the trailer dropped (as hyper).
    expect(third.wire.toString('latin1')).toBe('5\r\nhello\r\n1\r\n \r\n6\r\nworld!\r\nA\r\n0123456789\r\n0\r\n\r\n')

    expect(upstream.requests).toHaveLength(3)
    expect(upstream.connections).toBe(1)
  }, 20_000)

  test('a close-delimited response arrives whole (re-chunked), and the client connection serves the next request', async () => {
    const upstream = await startRawUpstream((req, socket) => {
      void (async () => {
        socket.write('HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: text/plain\r\n\r\npart1-')
        await sleep(20)
        socket.write('part2-')
        await sleep(20)
        socket.end(`end-${req.nth}-${req.connection}`)
      })()
    })
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const client = await RawClient.open(proxy.port)

    client.write(get('/gw/api/close-delimited'))
    const first = await client.next()
    expect(first.status).toBe(200)
    expect(first.body.toString()).toBe('part1-part2-end-1-1')
    expect(headerOf(first, 'connection')).toBeUndefined()
    expect(headerOf(first, 'transfer-encoding')).toBe('chunked')

    client.write(get('/gw/api/close-delimited'))
    const second = await client.next()
    expect(second.status).toBe(200)
    expect(second.body.toString()).toBe('part1-part2-end-1-2')
    expect(client.ended).toBe(false)
    expect(upstream.connections).toBe(2)

    // node:http on its side agrees.
    const viaNode = await send(`${proxy.url}/gw/api/close-delimited`)
    expect(viaNode.body.toString()).toBe('part1-part2-end-1-3')
  }, 20_000)

  test('an HTTP/1.0 upstream answer without a length is read to the close', async () => {
    const upstream = await startRawUpstream((_req, socket) => {
      socket.write('HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nold ')
      setTimeout(() => socket.end('server'), 20)
    })
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const client = await RawClient.open(proxy.port)
    for (let i = 0; i < 2; i++) {
      client.write(get('/gw/api/old'))
      const r = await client.next()
      expect(r.status).toBe(200)
      expect(r.body.toString()).toBe('old server')
    }
    expect(upstream.connections).toBe(2)
  }, 20_000)

  test('103 Early Hints (and 100 Continue) before the 200: the client gets the 200 and its body', async () => {
    const upstream = await startRawUpstream((req, socket) => {
      void (async () => {
        if (req.target.endsWith('/together')) {
          socket.write('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n' + ok('hello'))
          return
        }
        socket.write('HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n')
        await sleep(30)
        socket.write('HTTP/1.1 103 Early Hints\r\nLink: </b.js>; rel=preload\r\n\r\n')
        await sleep(30)
        socket.write(ok('hello'))
      })()
    })
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const client = await RawClient.open(proxy.port)
    for (const path of ['/gw/api/apart', '/gw/api/together', '/gw/api/apart']) {
      client.write(get(path))
      const r = await client.next()
      expect(r.statusLine, path).toBe('HTTP/1.1 200 OK')
      expect(r.body.toString()).toBe('hello')
    }
    await sleep(30)
    expect(client.unread.length).toBe(0)
    expect(upstream.connections).toBe(1)
  }, 20_000)

  test('204 and a 304 with Content-Length have no body: the next request on the connection is answered', async () => {
    const upstream = await startRawUpstream((req, socket) => {
      if (req.target.endsWith('/204')) socket.write('HTTP/1.1 204 No Content\r\nX-Kind: none\r\n\r\n')
      else if (req.target.endsWith('/304')) socket.write('HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 10\r\n\r\n')
      else socket.write(ok('after'))
    })
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const client = await RawClient.open(proxy.port)
    client.write(get('/gw/api/204'))
    const noContent = await client.next()
    expect(noContent.status).toBe(204)
    expect(headerOf(noContent, 'x-kind')).toBe('none')
    expect(headerOf(noContent, 'transfer-encoding')).toBeUndefined()

    client.write(get('/gw/api/304', 'If-None-Match: "v1"\r\n'))
    const notModified = await client.next()
    expect(notModified.status).toBe(304)
    expect(headerOf(notModified, 'etag')).toBe('"v1"')

    client.write(get('/gw/api/next'))
    const next = await client.next()
    expect(next.status).toBe(200)
    expect(next.body.toString()).toBe('after')
    await sleep(30)
    expect(client.unread.length).toBe(0)
    expect(upstream.connections).toBe(1)
  }, 20_000)

  test('bytes after a Content-Length body are not passed on, and that upstream connection is not reused', async () => {
    const upstream = await startRawUpstream((req, socket) => {
      socket.write(ok(`body${req.connection}`) + 'HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nJUNK')
    })
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const client = await RawClient.open(proxy.port)
    client.write(get('/gw/api/extra'))
    const first = await client.next()
    expect(first.body.toString()).toBe('body1')
    client.write(get('/gw/api/extra'))
    const second = await client.next()
    expect(second.body.toString()).toBe('body2')
    await sleep(30)
    expect(client.unread.length).toBe(0)
    expect(upstream.connections).toBe(2)
  }, 20_000)

  test('a Content-Length body cut short by the upstream: the client connection is closed, not left waiting', async () => {
    const upstream = await startRawUpstream((req, socket) => {
      if (req.target.endsWith('/short')) {
        socket.write('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello')
        setTimeout(() => socket.end(), 30)
      } else {
        socket.write(ok('fine'))
      }
    })
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const client = await RawClient.open(proxy.port)
    client.write(get('/gw/api/short'))
    await client.waitEnd(5_000)
    const received = client.unread.toString('latin1')
    expect(received).toMatch(/^HTTP\/1\.1 200 OK\r\n/)
    expect(received.endsWith('\r\n\r\nhello')).toBe(true)

    const after = await send(`${proxy.url}/gw/api/fine`)
    expect(after.status).toBe(200)
    expect(after.body.toString()).toBe('fine')
  }, 20_000)

  test('an unrequested 101 is a 502 VG_UPSTREAM_PROTOCOL', async () => {
    const upstream = await startRawUpstream((_req, socket) => {
      socket.write('HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: foo\r\n\r\n')
    })
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const client = await RawClient.open(proxy.port)
    client.write(get('/gw/api/switch'))
    const r = await client.next()
    expect(r.status).toBe(502)
    expect(JSON.parse(r.body.toString()).code).toBe('VG_UPSTREAM_PROTOCOL')
  }, 20_000)

  test('garbage from the upstream is a 502 with a JSON VG_UPSTREAM_PROTOCOL body, and the client connection keeps serving', async () => {
    const upstream = await startRawUpstream((req, socket) => {
      if (req.target.endsWith('/garbage')) socket.write('NOT HTTP\r\n\r\n')
      else socket.write(ok('good'))
    })
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const client = await RawClient.open(proxy.port)
    client.write(get('/gw/api/garbage'))
    const bad = await client.next()
    expect(bad.statusLine).toBe('HTTP/1.1 502 Bad Gateway')
    expect(headerOf(bad, 'content-type')).toMatch(/^application\/json/)
    const error = JSON.parse(bad.body.toString()) as { error: string; code: string; message: string }
    expect(error.code).toBe('VG_UPSTREAM_PROTOCOL')
    expect(error.error).toBe('Bad Gateway')
    expect(typeof error.message).toBe('string')
    expect(headerOf(bad, 'x-request-id')).toMatch(UUID)

    client.write(get('/gw/api/good'))
    const good = await client.next()
    expect(good.status).toBe(200)
    expect(good.body.toString()).toBe('good')
  }, 20_000)
})

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

describe('big downloads', () => {
  const SIZE = 20 * MiB

  async function bigUpstream(payload: Buffer, chunked: boolean) {
    const seen: string[][] = []
    const upstream = await startUpstream(async (req, res) => {
      seen.push(req.rawHeaders)
      const headers: http.OutgoingHttpHeaders = { 'content-type': 'application/octet-stream' }
      if (!chunked) headers['content-length'] = payload.length
      res.writeHead(200, headers)
      for (let i = 0; i < payload.length; i += 256 * 1024) {
        if (!res.write(payload.subarray(i, i + 256 * 1024))) await once(res, 'drain')
      }
      res.end()
    })
    return { upstream, seen }
  }

  test('20 MiB with Content-Length arrives complete', async () => {
    const payload = randomBytes(SIZE)
    const { upstream, seen } = await bigUpstream(payload, false)
    const proxy = await startProxy({ upstreams: [upstream.url] })
    for (let i = 0; i < 2; i++) {
      const r = await send(`${proxy.url}/gw/api/big`, { headers: { host: `127.0.0.1:${proxy.port}`, 'x-probe': '1' }, timeoutMs: 30_000 })
      expect(r.status).toBe(200)
      expect(r.headers['content-length']).toBe(String(SIZE))
      expect(r.body.length).toBe(SIZE)
      expect(sha256(r.body)).toBe(sha256(payload))
    }
    expect(seen.map((h) => forwardedBy(namesOf(h)))).toEqual(['lane', 'lane'])
    expect(upstream.connections).toBe(1)
  }, 60_000)

  test('20 MiB chunked arrives complete', async () => {
    const payload = randomBytes(SIZE)
    const { upstream, seen } = await bigUpstream(payload, true)
    const proxy = await startProxy({ upstreams: [upstream.url] })
    for (let i = 0; i < 2; i++) {
      const r = await send(`${proxy.url}/gw/api/big`, { headers: { host: `127.0.0.1:${proxy.port}`, 'x-probe': '1' }, timeoutMs: 30_000 })
      expect(r.status).toBe(200)
      expect(r.headers['transfer-encoding']).toBe('chunked')
      expect(r.body.length).toBe(SIZE)
      expect(sha256(r.body)).toBe(sha256(payload))
    }
    expect(seen.map((h) => forwardedBy(namesOf(h)))).toEqual(['lane', 'lane'])
    expect(upstream.connections).toBe(1)
  }, 60_000)

  test('8 MiB delimited by the upstream closing arrives complete', async () => {
    const payload = randomBytes(8 * MiB)
    const upstream = await startRawUpstream((_req, socket) => {
      void (async () => {
        socket.write('HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n')
        for (let i = 0; i < payload.length; i += 100_000) {
          if (!socket.write(payload.subarray(i, i + 100_000))) await once(socket, 'drain')
        }
        socket.end()
      })()
    })
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const r = await send(`${proxy.url}/gw/api/big`, { timeoutMs: 30_000 })
    expect(r.status).toBe(200)
    expect(r.body.length).toBe(payload.length)
    expect(sha256(r.body)).toBe(sha256(payload))
  }, 60_000)
})
