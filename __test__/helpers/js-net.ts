/**
 * Helpers for the JS-handler suites (handlers, forward, custom-strategy, handler-load):
 * real node:http upstreams on 127.0.0.1 port 0, node:http clients, bounded waits and a
 * registry of things to close per suite. The client and small utilities are those of
 * helpers/net.ts, re-exported here.
 */
import http from 'node:http'
import net from 'node:net'
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { withTimeout, type Reply } from './net'

// The client and small utilities are shared with the foundation suites.
export { readAll, refusedPort, send, sleep, withTimeout, type Reply, type SendOptions } from './net'

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

export function sha256(data: Buffer | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex')
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

export function jsonOf<T = Record<string, unknown>>(reply: Reply): T {
  return JSON.parse(reply.body.toString('utf8')) as T
}

/** Splits `buf` into chunks of `size` bytes (for chunked uploads). */
export function chunksOf(buf: Buffer, size: number): Buffer[] {
  const out: Buffer[] = []
  for (let i = 0; i < buf.length; i += size) out.push(buf.subarray(i, i + size))
  return out
}
