/**
 * Real servers and clients for the end-to-end suites: node:http upstreams on 127.0.0.1
 * port 0, node:http / raw node:net clients, and a registry that closes everything a test
 * opened (call `closeAll` in `afterEach`).
 */
import http from 'node:http'
import net from 'node:net'
import { once } from 'node:events'
import {
  Gateway,
  LoadBalancer,
  RoundRobinStrategy,
  Velithon,
  type AddressInfo,
  type GatewayOptions,
  type GatewayRouteOptions,
  type VelithonOptions,
} from 'velithon-gateway'

// ---------------------------------------------------------------------------------------
// Cleanup registry

type Closer = () => Promise<unknown> | unknown
const closers: Closer[] = []

/** Registers something to close after the current test (last registered, first closed). */
export function defer(close: Closer): void {
  closers.push(close)
}

/** Closes everything registered with `defer`, each bounded to a few seconds. */
export async function closeAll(): Promise<void> {
  const errors: unknown[] = []
  while (closers.length > 0) {
    const close = closers.pop() as Closer
    try {
      await withTimeout(Promise.resolve().then(close), 15_000, 'closing a test resource')
    } catch (err) {
      errors.push(err)
    }
  }
  if (errors.length > 0) throw errors[0]
}

// ---------------------------------------------------------------------------------------
// Small utilities

/** Rejects when `promise` has not settled within `ms`. */
export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** Polls `check` until it returns true or `ms` passes. */
export async function waitFor(check: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await sleep(10)
  }
}

export async function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of stream) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer))
  return Buffer.concat(chunks)
}

// ---------------------------------------------------------------------------------------
// Upstreams

export type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => unknown

export interface Upstream {
  readonly server: http.Server
  readonly port: number
  /** `http://127.0.0.1:<port>` */
  readonly url: string
  /** TCP connections this upstream has accepted. */
  readonly connections: number
  /** Requests it has received. */
  readonly requests: number
  close(): Promise<void>
}

/** Starts a node:http server on 127.0.0.1, port 0; closed after the test. */
export async function startUpstream(handler: Handler): Promise<Upstream> {
  const sockets = new Set<net.Socket>()
  let connections = 0
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
  server.on('connection', (socket: net.Socket) => {
    connections++
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
    get connections() {
      return connections
    },
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
  defer(() => upstream.close())
  return upstream
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
// The gateway

/** `app.listen({ port: 0 })`, with `app.close()` registered for after the test. */
export async function listen(app: Velithon): Promise<AddressInfo> {
  defer(() => app.close({ timeout: '2s' }))
  return app.listen({ port: 0, host: '127.0.0.1' })
}

// ---------------------------------------------------------------------------------------
// Clients

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

/** One request with node:http; resolves with the whole response. */
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

export interface RawReply {
  /** Everything the server sent. */
  raw: Buffer
  statusLine: string
  /** Header lines as sent, `[name, value]`. */
  headers: [string, string][]
  body: Buffer
}

/**
 * Writes `request` bytes to a raw TCP socket and reads until the server closes it
 * (send `Connection: close`). For byte-level checks node:http would normalise away.
 */
export async function rawExchange(port: number, request: string | Buffer, timeoutMs = 10_000): Promise<RawReply> {
  const socket = net.connect(port, '127.0.0.1')
  const chunks: Buffer[] = []
  socket.on('data', (c: Buffer) => chunks.push(c))
  const done = new Promise<void>((resolve, reject) => {
    socket.on('end', () => resolve())
    socket.on('close', () => resolve())
    socket.on('error', reject)
  })
  await once(socket, 'connect')
  socket.write(request)
  try {
    await withTimeout(done, timeoutMs, 'a raw response')
  } finally {
    socket.destroy()
  }
  const raw = Buffer.concat(chunks)
  const split = raw.indexOf('\r\n\r\n')
  if (split < 0) throw new Error(`no complete response head in ${JSON.stringify(raw.toString('latin1'))}`)
  const [statusLine, ...lines] = raw.subarray(0, split).toString('latin1').split('\r\n')
  const headers = lines.map((line): [string, string] => {
    const i = line.indexOf(':')
    return [line.slice(0, i).trim().toLowerCase(), line.slice(i + 1).trim()]
  })
  return { raw, statusLine, headers, body: raw.subarray(split + 4) }
}

/** Resolves with the error code of a connect attempt (`'ECONNREFUSED'`), or `'connected'`. */
export function tryConnect(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1')
    socket.setTimeout(5_000, () => {
      socket.destroy()
      resolve('timeout')
    })
    socket.on('connect', () => {
      socket.destroy()
      resolve('connected')
    })
    socket.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? String(err)))
  })
}

/** An upstream handler that echoes what it received as JSON. */
export function echoHandler(name = 'upstream'): Handler {
  return async (req, res) => {
    const body = await readAll(req)
    const payload = JSON.stringify({
      name,
      method: req.method,
      url: req.url,
      headers: req.headers,
      rawHeaders: req.rawHeaders,
      body: body.toString('utf8'),
      bodyLength: body.length,
    })
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) })
    res.end(payload)
  }
}

export interface Echo {
  name: string
  method: string
  url: string
  headers: http.IncomingHttpHeaders
  rawHeaders: string[]
  body: string
  bodyLength: number
}

export function echoOf(reply: Reply | RawReply): Echo {
  return JSON.parse(reply.body.toString('utf8')) as Echo
}

/** The gateway's small JSON error body. */
export interface ErrorBody {
  error: string
  code: string
  message: string
}

export function errorOf(reply: Reply | RawReply): ErrorBody {
  return JSON.parse(reply.body.toString('utf8')) as ErrorBody
}

// ---------------------------------------------------------------------------------------
// A whole gateway in one call

export interface ProxySetup {
  /** Upstream URLs: several make a LoadBalancer, one string is a `route(…, { upstream })`. */
  upstreams: string[] | string
  /** Route pattern; default `'/api/{path:path}'`. */
  pattern?: string
  route?: Omit<GatewayRouteOptions, 'upstream' | 'loadBalancer'>
  gateway?: Omit<GatewayOptions, 'loadBalancer'>
  app?: VelithonOptions
  /** includeRouter prefix; default `'/gw'`. */
  prefix?: string
}

export interface RunningProxy {
  app: Velithon
  gateway: Gateway
  address: AddressInfo
  url: string
  port: number
}

/** Builds Velithon + Gateway (+ LoadBalancer) as a user would and listens on port 0. */
export async function startProxy(setup: ProxySetup): Promise<RunningProxy> {
  const pattern = setup.pattern ?? '/api/{path:path}'
  const gatewayOptions: GatewayOptions = { timeout: '10s', connectTimeout: '2s', ...setup.gateway }
  let gateway: Gateway
  if (typeof setup.upstreams === 'string') {
    gateway = new Gateway(gatewayOptions)
    gateway.route(pattern, { ...setup.route, upstream: setup.upstreams })
  } else {
    const loadBalancer = new LoadBalancer({ upstreamServers: setup.upstreams, strategy: new RoundRobinStrategy() })
    gateway = new Gateway({ ...gatewayOptions, loadBalancer })
    gateway.route(pattern, { ...setup.route })
  }
  const app = new Velithon({ workerThreads: 2, ...setup.app })
  app.includeRouter(gateway.getRouter(), { prefix: setup.prefix ?? '/gw' })
  const address = await listen(app)
  return { app, gateway, address, url: address.url, port: address.port }
}
