/**
 * Raw HTTP/1.1 on both sides of the gateway, for the fast-lane suites (fast-lane,
 * fast-lane-framing, fast-lane-pool, fast-lane-headers): a raw node:net client that writes
 * bytes and reads responses one at a time off one connection (framing kept as on the
 * wire), a node:net upstream that writes raw response bytes, a node:http upstream that
 * records what it received, and small readers that tell which path (the fast lane or the
 * general path) forwarded a request.
 *
 * Everything started here is registered with `defer` from helpers/net.ts; call `closeAll`
 * in `afterEach`.
 */
import net from 'node:net'
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { defer, readAll, sleep, startUpstream, withTimeout } from './net'

export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/

export const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex')

// ---------------------------------------------------------------------------------------
// A raw HTTP/1.1 client: writes bytes, reads responses one at a time off one connection.

export type HeaderLine = [string, string]

export interface RawResponse {
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

export function splitHeaderLine(line: string): HeaderLine {
  const i = line.indexOf(':')
  if (i <= 0) throw new Error(`not a header line: ${JSON.stringify(line)}`)
  return [line.slice(0, i), line.slice(i + 1).trim()]
}

/** Every value of header `name` (case-insensitive), in order. */
export function valuesOf(headers: HeaderLine[], name: string): string[] {
  return headers.filter(([n]) => n.toLowerCase() === name).map(([, v]) => v)
}

/** The only value of header `name`, or undefined; throws when it is repeated. */
export function headerOf(r: RawResponse, name: string): string | undefined {
  const values = valuesOf(r.headers, name)
  if (values.length > 1) throw new Error(`${name} is repeated: ${JSON.stringify(values)}`)
  return values[0]
}

/**
 * One response at the start of `buf`, with how many bytes it took; undefined when it is
 * not complete yet (a body delimited by the close is complete once `ended`).
 */
export function parseResponse(buf: Buffer, ended: boolean): { response: RawResponse; used: number } | undefined {
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

export class RawClient {
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
export function get(target: string, extra = '', host = 'gateway.test'): string {
  return `GET ${target} HTTP/1.1\r\nHost: ${host}\r\nX-Probe: 1\r\n${extra}\r\n`
}

/**
 * Which path forwarded a request, from the header names the upstream received (in order).
 * The fast lane writes the client's headers in their order without `host`, then its own
 * `host` and `x-forwarded-*`; the general path (hyper) rewrites `Host` where the client put
 * it. Clients here send `Host` first and `X-Probe` after it.
 */
export function forwardedBy(names: string[]): 'lane' | 'general' {
  const lower = names.map((n) => n.toLowerCase())
  const host = lower.indexOf('host')
  const probe = lower.indexOf('x-probe')
  if (host < 0 || probe < 0) throw new Error(`no host or x-probe among ${JSON.stringify(names)}`)
  return probe < host ? 'lane' : 'general'
}

/** Header names of node's `rawHeaders` (`[name, value, name, value, …]`). */
export const namesOf = (rawHeaders: string[]): string[] => rawHeaders.filter((_, i) => i % 2 === 0)

/** `(name) => values` over node's rawHeaders, case-insensitive. */
export function headerPairs(rawHeaders: string[]): (name: string) => string[] {
  return (name) => rawHeaders.filter((_, i) => i % 2 === 1 && rawHeaders[i - 1].toLowerCase() === name)
}

// ---------------------------------------------------------------------------------------
// Upstreams

export interface Seen {
  method: string
  url: string
  rawHeaders: string[]
  body: Buffer
}

/** A node:http upstream that records every request and answers `{ method, url, rawHeaders, length, sha256 }`. */
export async function recordingUpstream(options: { delay?: (url: string) => number } = {}) {
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

export interface Answer {
  method: string
  url: string
  rawHeaders: string[]
  length: number
  sha256: string
}
export const answerOf = (r: { body: Buffer }): Answer => JSON.parse(r.body.toString('utf8')) as Answer

/** A request head a raw upstream received. */
export interface UpstreamRequest {
  head: string
  method: string
  target: string
  headers: HeaderLine[]
  /** Which connection (1, 2, …, in accept order). */
  connection: number
  /** Which request on that connection (1, 2, …). */
  nth: number
}

export interface RawUpstream {
  port: number
  url: string
  readonly connections: number
  readonly closedConnections: number
  requests: UpstreamRequest[]
}

export type Responder = (req: UpstreamRequest, socket: net.Socket, upstream: RawUpstream) => void

/** A node:net upstream: parses request heads (skipping Content-Length bodies) and lets `respond` write raw bytes. */
export async function startRawUpstream(respond: Responder): Promise<RawUpstream> {
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
export const ok = (body: string, extra = ''): string => `HTTP/1.1 200 OK\r\n${extra}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`
