/**
 * Helpers for the JS-handler suites (handlers, forward, custom-strategy, handler-load):
 * real node:http upstreams on 127.0.0.1 port 0, node:http clients, bounded waits and a
 * registry of things to close. Kept apart from helpers/net.ts on purpose.
 */
import http from 'node:http'
import net from 'node:net'
import { createHash } from 'node:crypto'
import { once } from 'node:events'

// ---------------------------------------------------------------------------------------
// Cleanup

type Closer = () => Promise<unknown> | unknown

/** A stack of things to close; `closeAll` closes them, last first, each bounded. */
export class Closers {
  #list: Closer[] = []

  add(close: Closer): void {
    this.#list.push(close)
  }

  async closeAll(): Promise<void> {
    const errors: unknown[] = []
    while (this.#list.length > 0) {
      const close = this.#list.pop() as Closer
      try {
        await withTimeout(Promise.resolve().then(close), 15_000, 'closing a test resource')
      } catch (err) {
        errors.push(err)
      }
    }
    if (errors.length > 0) throw errors[0]
  }
}

// ---------------------------------------------------------------------------------------
// Small utilities

export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

export async function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of stream) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer))
  return Buffer.concat(chunks)
}

export function sha256(data: Buffer | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex')
}

/** A port on 127.0.0.1 where nothing listens (bound, then closed). */
export async function refusedPort(): Promise<number> {
  const server = net.createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const port = (server.address() as net.AddressInfo).port
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

// ---------------------------------------------------------------------------------------
// Upstreams

export type UpstreamHandler = (req: http.IncomingMessage, res: http.ServerResponse) => void | Promise<void>

export interface Upstream {
  readonly server: http.Server
  readonly port: number
  readonly url: string
  readonly requests: number
  close(): Promise<void>
}

/** A node:http server on 127.0.0.1:0; registered with `closers`. */
export async function startUpstream(closers: Closers, handler: UpstreamHandler): Promise<Upstream> {
  const sockets = new Set<net.Socket>()
  let requests = 0
  const server = http.createServer((req, res) => {
    requests++
    Promise.resolve()
      .then(() => handler(req, res))
      .catch((err: unknown) => {
        if (!res.headersSent) res.writeHead(599, { 'content-type': 'text/plain' })
        res.end(`upstream handler failed: ${String(err)}`)
      })
  })
  server.keepAliveTimeout = 5_000
  server.on('connection', (socket: net.Socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const port = (server.address() as net.AddressInfo).port
  let closed: Promise<void> | undefined
  const upstream: Upstream = {
    server,
    port,
    url: `http://127.0.0.1:${port}`,
    get requests() {
      return requests
    },
    close() {
      closed ??= new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
        for (const s of sockets) s.destroy()
      })
      return closed
    },
  }
  closers.add(() => upstream.close())
  return upstream
}

// ---------------------------------------------------------------------------------------
// Client

export interface Reply {
  status: number
  headers: http.IncomingHttpHeaders
  rawHeaders: string[]
  body: Buffer
}

export interface SendOptions {
  method?: string
  headers?: http.OutgoingHttpHeaders
  /** A whole body (sent with Content-Length), or chunks (sent chunked). */
  body?: string | Buffer | (string | Buffer)[]
  agent?: http.Agent | false
  timeoutMs?: number
}

/** One request with node:http; resolves with the whole response, bounded in time. */
export function send(url: string, options: SendOptions = {}): Promise<Reply> {
  const { method = 'GET', headers = {}, body, agent = false, timeoutMs = 20_000 } = options
  return new Promise<Reply>((resolve, reject) => {
    const outHeaders: http.OutgoingHttpHeaders = { ...headers }
    if (typeof body === 'string' || Buffer.isBuffer(body)) outHeaders['content-length'] = Buffer.byteLength(body)
    const req = http.request(url, { method, headers: outHeaders, agent }, (res) => {
      readAll(res).then(
        (buf) => resolve({ status: res.statusCode ?? 0, headers: res.headers, rawHeaders: res.rawHeaders, body: buf }),
        reject,
      )
    })
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`${method} ${url}: no answer within ${timeoutMs} ms`)))
    req.on('error', reject)
    if (Array.isArray(body)) {
      // Chunked: write piece by piece, honouring back-pressure.
      ;(async () => {
        for (const chunk of body) {
          if (!req.write(chunk)) await once(req, 'drain')
        }
        req.end()
      })().catch(reject)
    } else {
      req.end(body)
    }
  })
}

export function jsonOf<T = Record<string, unknown>>(reply: Reply): T {
  return JSON.parse(reply.body.toString('utf8')) as T
}

/** Splits `buf` into chunks of `size` bytes (for chunked uploads). */
export function chunksOf(buf: Buffer, size: number): Buffer[] {
  const out: Buffer[] = []
  for (let i = 0; i < buf.length; i += size) out.push(buf.subarray(i, i + size))
  return out
}
