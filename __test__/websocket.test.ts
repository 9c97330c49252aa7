// WebSocket and other `Upgrade` proxying through pure routes and forwardRequest: real
// `ws` servers and clients (and raw sockets for what ws hides) on 127.0.0.1.
import http from 'node:http'
import net from 'node:net'
import { once } from 'node:events'
import { afterEach, describe, expect, it } from 'vitest'
import WebSocket, { WebSocketServer } from 'ws'
import https from 'node:https'
import { Gateway, JSONResponse, LoadBalancer, LeastConnectionsStrategy, Velithon } from 'velithon-gateway'
import { closeAll, defer, listen, startProxy, waitFor, withTimeout } from './helpers/net'
import { createCa } from './helpers/certs'

afterEach(closeAll)

interface WsUpstream {
  url: string
  port: number
  /** The upgrade requests it accepted. */
  handshakes: http.IncomingMessage[]
  sockets: WebSocket[]
  wss: WebSocketServer
}

/** A ws echo server on 127.0.0.1, port 0 ('close-me' makes it close with 4002). */
async function wsUpstream(name = 'upstream'): Promise<WsUpstream> {
  const server = http.createServer((_req, res) => res.end(name))
  const wss = new WebSocketServer({ server })
  const up: WsUpstream = { url: '', port: 0, handshakes: [], sockets: [], wss }
  wss.on('connection', (socket, req) => {
    up.handshakes.push(req)
    up.sockets.push(socket)
    socket.send(`hello from ${name}`)
    socket.on('message', (data, binary) => {
      if (!binary && data.toString() === 'close-me') socket.close(4002, 'upstream says bye')
      else socket.send(data, { binary })
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  up.port = (server.address() as net.AddressInfo).port
  up.url = `http://127.0.0.1:${up.port}`
  defer(
    () =>
      new Promise<void>((resolve) => {
        for (const s of wss.clients) s.terminate()
        wss.close()
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  )
  return up
}

/** Ends a client whatever state it is in (terminate throws before the handshake ends). */
function stop(ws: WebSocket): void {
  ws.on('error', () => {})
  if (ws.readyState !== WebSocket.CLOSED) ws.terminate()
}

/** Opens a ws client and waits for its first message (the upstream's greeting). */
async function connect(
  url: string,
  options?: WebSocket.ClientOptions & { protocols?: string[] },
): Promise<{ ws: WebSocket; greeting: string }> {
  const ws = new WebSocket(url, options?.protocols ?? [], options)
  defer(() => stop(ws))
  const [data] = (await withTimeout(once(ws, 'message'), 5_000, 'the greeting')) as [Buffer]
  return { ws, greeting: data.toString() }
}

/** Collects `count` messages from `ws`. */
function messages(ws: WebSocket, count: number): Promise<string[]> {
  const got: string[] = []
  return withTimeout(
    new Promise<string[]>((resolve) => {
      ws.on('message', (data) => {
        got.push(data.toString())
        if (got.length === count) resolve(got)
      })
    }),
    15_000,
    `${count} messages (got ${got.length})`,
  )
}

describe('WebSocket through a pure route', () => {
  it('echoes 1,000 messages in order, text and binary', async () => {
    const up = await wsUpstream()
    const gw = await startProxy({ upstreams: up.url, pattern: '/ws/{path:path}' })
    const { ws, greeting } = await connect(`ws://127.0.0.1:${gw.port}/gw/ws/chat`)
    expect(greeting).toBe('hello from upstream')
    const replies = messages(ws, 1000)
    const sent: string[] = []
    for (let i = 0; i < 1000; i++) {
      const text = `message ${i} ${'x'.repeat(i % 50)}`
      sent.push(text)
      ws.send(i % 2 === 0 ? text : Buffer.from(text))
    }
    expect(await replies).toEqual(sent)
    // The upstream saw the path the route forwards and one upgrade only.
    expect(up.handshakes).toHaveLength(1)
    expect(up.handshakes[0].url).toBe('/gw/ws/chat')
  })

  it('passes a 1 MiB message both ways', async () => {
    const up = await wsUpstream()
    const gw = await startProxy({ upstreams: up.url, pattern: '/ws/{path:path}' })
    const { ws } = await connect(`ws://127.0.0.1:${gw.port}/gw/ws/big`)
    const big = Buffer.alloc(1 << 20, 7)
    big[12345] = 1
    const reply = once(ws, 'message')
    ws.send(big)
    const [data] = (await withTimeout(reply, 10_000, 'the big reply')) as [Buffer]
    expect(Buffer.compare(data, big)).toBe(0)
  })

  it('sets X-Forwarded-* and the upstream Host on the upgrade request and keeps the WebSocket headers', async () => {
    const up = await wsUpstream()
    const gw = await startProxy({ upstreams: up.url, pattern: '/ws/{path:path}' })
    await connect(`ws://127.0.0.1:${gw.port}/gw/ws/h?q=a%20b`, {
      headers: { 'x-forwarded-for': '6.6.6.6', 'x-custom': 'kept' },
      protocols: ['chat.v1'],
    })
    const seen = up.handshakes[0]
    expect(seen.url).toBe('/gw/ws/h?q=a%20b')
    expect(seen.headers['x-forwarded-for']).toBe('127.0.0.1')
    expect(seen.headers['x-forwarded-proto']).toBe('http')
    expect(seen.headers['x-forwarded-host']).toBe(`127.0.0.1:${gw.port}`)
    expect(seen.headers.host).toBe(`127.0.0.1:${up.port}`)
    expect(seen.headers['x-custom']).toBe('kept')
    expect(seen.headers['sec-websocket-protocol']).toBe('chat.v1')
    expect(seen.headers.upgrade).toBe('websocket')
    expect(seen.headers.connection?.toLowerCase()).toBe('upgrade')
  })

  it("accepts Firefox's `Connection: keep-alive, Upgrade`", async () => {
    const up = await wsUpstream()
    const gw = await startProxy({ upstreams: up.url, pattern: '/ws/{path:path}' })
    const socket = net.connect(gw.port, '127.0.0.1')
    defer(() => socket.destroy())
    await once(socket, 'connect')
    socket.write(
      'GET /gw/ws/ff HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n' +
        'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
    )
    let head = ''
    await withTimeout(
      new Promise<void>((resolve) => {
        socket.on('data', (chunk: Buffer) => {
          head += chunk.toString('latin1')
          if (head.includes('\r\n\r\n')) resolve()
        })
      }),
      5_000,
      'the 101',
    )
    expect(head).toMatch(/^HTTP\/1\.1 101 /)
    expect(head.toLowerCase()).toContain('upgrade: websocket')
    expect(head.toLowerCase()).toContain('connection: upgrade')
    // RFC 6455's own example key and accept value: the upstream's answer, untouched.
    expect(head.toLowerCase()).toContain('sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=')
  })

  it('passes close frames both ways, with their codes and reasons', async () => {
    const up = await wsUpstream()
    const gw = await startProxy({ upstreams: up.url, pattern: '/ws/{path:path}' })

    const first = await connect(`ws://127.0.0.1:${gw.port}/gw/ws/a`)
    const upstreamClosed = once(up.sockets[0], 'close')
    first.ws.close(4001, 'client says bye')
    const [code, reason] = (await withTimeout(upstreamClosed, 5_000, 'the close at the upstream')) as [number, Buffer]
    expect(code).toBe(4001)
    expect(reason.toString()).toBe('client says bye')

    const second = await connect(`ws://127.0.0.1:${gw.port}/gw/ws/b`)
    const clientClosed = once(second.ws, 'close')
    second.ws.send('close-me')
    const [code2, reason2] = (await withTimeout(clientClosed, 5_000, 'the close at the client')) as [number, Buffer]
    expect(code2).toBe(4002)
    expect(reason2.toString()).toBe('upstream says bye')
  })

  it('answers the upstream refusal as it is (no 101, no tunnel)', async () => {
    const server = http.createServer((_req, res) => {
      res.writeHead(401, { 'content-type': 'text/plain' })
      res.end('who are you?')
    })
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    defer(() => new Promise((r) => server.close(r)))
    const port = (server.address() as net.AddressInfo).port
    const gw = await startProxy({ upstreams: `http://127.0.0.1:${port}`, pattern: '/ws/{path:path}' })
    const ws = new WebSocket(`ws://127.0.0.1:${gw.port}/gw/ws/x`)
    defer(() => stop(ws))
    const [, res] = (await withTimeout(once(ws, 'unexpected-response'), 5_000, 'the refusal')) as [
      unknown,
      http.IncomingMessage,
    ]
    expect(res.statusCode).toBe(401)
  })

  it('answers 502 with a JSON body when the upstream is down', async () => {
    const gw = await startProxy({ upstreams: 'http://127.0.0.1:1', pattern: '/ws/{path:path}' })
    const ws = new WebSocket(`ws://127.0.0.1:${gw.port}/gw/ws/x`)
    defer(() => stop(ws))
    const [, res] = (await withTimeout(once(ws, 'unexpected-response'), 5_000, 'the 502')) as [
      unknown,
      http.IncomingMessage,
    ]
    expect(res.statusCode).toBe(502)
    let body = ''
    for await (const chunk of res) body += chunk
    expect(JSON.parse(body).code).toBe('VG_UPSTREAM_CONNECT')
  })

  it('closes a tunnel that passed nothing for upgradeIdleTimeout, and keeps a busy one', async () => {
    const up = await wsUpstream()
    const gw = await startProxy({
      upstreams: up.url,
      pattern: '/ws/{path:path}',
      gateway: { upgradeIdleTimeout: '400ms' },
    })
    const idle = await connect(`ws://127.0.0.1:${gw.port}/gw/ws/idle`)
    const busy = await connect(`ws://127.0.0.1:${gw.port}/gw/ws/busy`)
    let busyClosed = false
    busy.ws.on('close', () => (busyClosed = true))
    const timer = setInterval(() => busy.ws.send('ping'), 100)
    defer(() => clearInterval(timer))
    const started = Date.now()
    const [code] = (await withTimeout(once(idle.ws, 'close'), 5_000, 'the idle close')) as [number]
    // No close frame: the gateway closed the connections (1006 at the client).
    expect(code).toBe(1006)
    expect(Date.now() - started).toBeGreaterThanOrEqual(300)
    await new Promise((r) => setTimeout(r, 600))
    expect(busyClosed).toBe(false)
    await waitFor(() => up.sockets[0]?.readyState === WebSocket.CLOSED, 5_000, 'the upstream side closed too')
  })

  it('app.close() gives open tunnels the shutdown grace, then cuts them', async () => {
    const up = await wsUpstream()
    const gw = await startProxy({ upstreams: up.url, pattern: '/ws/{path:path}', app: { shutdownTimeout: '400ms' } })
    const { ws } = await connect(`ws://127.0.0.1:${gw.port}/gw/ws/x`)
    let closedAt = 0
    const closed = once(ws, 'close').then(() => (closedAt = Date.now()))
    const started = Date.now()
    await gw.app.close()
    await withTimeout(closed, 5_000, 'the client side closed')
    // Not at once: the grace is for tunnels to end by themselves.
    expect(closedAt - started).toBeGreaterThanOrEqual(300)
    await waitFor(() => up.sockets[0]?.readyState === WebSocket.CLOSED, 5_000, 'the upstream side closed')
  })

  it('spreads upgrades over the servers and counts an open WebSocket as in flight', async () => {
    const a = await wsUpstream('a')
    const b = await wsUpstream('b')
    const loadBalancer = new LoadBalancer({
      upstreamServers: [a.url, b.url],
      strategy: new LeastConnectionsStrategy(),
    })
    const gateway = new Gateway({ loadBalancer })
    gateway.route('/ws/{path:path}', {})
    const app = new Velithon()
    app.includeRouter(gateway.getRouter())
    const { port } = await listen(app)
    const greetings: string[] = []
    for (let i = 0; i < 4; i++) greetings.push((await connect(`ws://127.0.0.1:${port}/ws/${i}`)).greeting)
    // Least connections: each open WebSocket counts, so they alternate.
    expect(greetings.sort()).toEqual(['hello from a', 'hello from a', 'hello from b', 'hello from b'])
    const status = gateway.getUpstreamStatus()
    expect(status[a.url].inFlight).toBe(2)
    expect(status[b.url].inFlight).toBe(2)
  })
})

describe('upgrades that must not become tunnels', () => {
  /** A raw upstream that answers every request with a 101 to `protocol`. */
  async function alwaysSwitching(protocol: string): Promise<string> {
    const server = net.createServer((socket) => {
      socket.once('data', () =>
        socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: ${protocol}\r\nConnection: Upgrade\r\n\r\n`),
      )
      socket.on('error', () => {})
    })
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    defer(() => new Promise((r) => server.close(r)))
    return `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`
  }

  it('a 101 to a request that did not ask for one is a 502', async () => {
    const gw = await startProxy({ upstreams: await alwaysSwitching('websocket') })
    const res = await fetch(`http://127.0.0.1:${gw.port}/gw/api/plain`)
    expect(res.status).toBe(502)
    expect((await res.json()).code).toBe('VG_UPSTREAM_PROTOCOL')
  })

  it('a 101 to a protocol the client did not offer is a 502', async () => {
    const gw = await startProxy({ upstreams: await alwaysSwitching('h2c'), pattern: '/ws/{path:path}' })
    const ws = new WebSocket(`ws://127.0.0.1:${gw.port}/gw/ws/x`)
    defer(() => stop(ws))
    const [, res] = (await withTimeout(once(ws, 'unexpected-response'), 5_000, 'the 502')) as [unknown, http.IncomingMessage]
    expect(res.statusCode).toBe(502)
  })

  it('an offer that includes h2c is not forwarded as an upgrade', async () => {
    const up = await wsUpstream('plain')
    const gw = await startProxy({ upstreams: up.url, pattern: '/ws/{path:path}' })
    const reply = await new Promise<string>((resolve, reject) => {
      const req = http.request({
        port: gw.port,
        host: '127.0.0.1',
        path: '/gw/ws/x',
        headers: { connection: 'Upgrade', upgrade: 'websocket, h2c', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' },
      })
      req.on('response', (r) => {
        let b = ''
        r.on('data', (c) => (b += c))
        r.on('end', () => resolve(`${r.statusCode} ${b}`))
      })
      req.on('upgrade', () => resolve('upgraded'))
      req.on('error', reject)
      req.end()
    })
    expect(reply).toBe('200 plain')
    expect(up.handshakes).toHaveLength(0)
  })

  it('a 101 that a handler replaces by another answer closes the upstream side and frees the server', async () => {
    const up = await wsUpstream()
    const loadBalancer = new LoadBalancer({ upstreamServers: [up.url] })
    const gateway = new Gateway({ loadBalancer })
    const app = new Velithon()
    app.get('/live', async (request) => {
      await gateway.forwardRequest(request)
      return new JSONResponse({ error: 'changed my mind' }, 403)
    })
    const { port } = await listen(app)
    const ws = new WebSocket(`ws://127.0.0.1:${port}/live`)
    defer(() => stop(ws))
    const [, res] = (await withTimeout(once(ws, 'unexpected-response'), 5_000, 'the 403')) as [unknown, http.IncomingMessage]
    expect(res.statusCode).toBe(403)
    await waitFor(() => up.sockets[0]?.readyState === WebSocket.CLOSED, 5_000, 'the upstream side closed')
    await waitFor(() => gateway.getUpstreamStatus()[up.url].inFlight === 0, 5_000, 'the server freed')
  })
})

describe('other upgrades and half-closes', () => {
  /** A raw upstream that switches to a line echo protocol and reports its socket's end. */
  async function rawUpgradeUpstream(): Promise<{ url: string; ended: Promise<void> }> {
    let onEnd!: () => void
    const ended = new Promise<void>((r) => (onEnd = r))
    const server = http.createServer((_req, res) => res.end('plain'))
    server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket) => {
      socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: ${req.headers.upgrade}\r\nConnection: Upgrade\r\n\r\n`)
      socket.allowHalfOpen = true
      let got = ''
      socket.on('data', (c: Buffer) => {
        got += c.toString()
        socket.write(c.toString().toUpperCase())
      })
      socket.on('end', () => {
        onEnd()
        // Half-closed by the client: this side may still talk, then close.
        socket.end(`\nbye after ${got.length} bytes`)
      })
    })
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    defer(() => {
      server.closeAllConnections()
      return new Promise((r) => server.close(r))
    })
    return { url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`, ended }
  }

  it('tunnels a non-WebSocket protocol and passes a half-close each way', async () => {
    const up = await rawUpgradeUpstream()
    const gw = await startProxy({ upstreams: up.url, pattern: '/tcp/{path:path}' })
    const socket = net.connect({ port: gw.port, host: '127.0.0.1', allowHalfOpen: true })
    defer(() => socket.destroy())
    await once(socket, 'connect')
    socket.write('GET /gw/tcp/x HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: line-echo\r\n\r\n')
    let text = ''
    socket.on('data', (c: Buffer) => (text += c.toString()))
    await waitFor(() => text.includes('\r\n\r\n'), 5_000, 'the 101')
    expect(text).toMatch(/^HTTP\/1\.1 101 /)
    const afterHead = () => text.slice(text.indexOf('\r\n\r\n') + 4)
    socket.write('hello')
    await waitFor(() => afterHead() === 'HELLO', 5_000, 'the echo')
    socket.end() // half-close: we send no more, but still read
    await withTimeout(up.ended, 5_000, 'the half-close at the upstream')
    await withTimeout(once(socket, 'end'), 5_000, 'the upstream closing its side')
    expect(afterHead()).toBe('HELLO\nbye after 5 bytes')
  })

  it('does not forward an h2c upgrade (the Upgrade header is dropped)', async () => {
    let seen: http.IncomingHttpHeaders | undefined
    const server = http.createServer((req, res) => {
      seen = req.headers
      res.end('plain answer')
    })
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    defer(() => new Promise((r) => server.close(r)))
    const gw = await startProxy({
      upstreams: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    })
    const res = await fetch(`http://127.0.0.1:${gw.port}/gw/api/x`, {
      headers: { connection: 'Upgrade, HTTP2-Settings', upgrade: 'h2c', 'http2-settings': 'AAMAAABkAAQCAAAAAAIAAAAA' },
    }).catch(() => undefined)
    // fetch (undici) refuses to send these headers itself; use node:http instead.
    if (res === undefined) {
      const body = await new Promise<string>((resolve, reject) => {
        const req = http.request(
          {
            port: gw.port,
            host: '127.0.0.1',
            path: '/gw/api/x',
            headers: { connection: 'Upgrade, HTTP2-Settings', upgrade: 'h2c', 'http2-settings': 'AAMAAABkAAQCAAAAAAIAAAAA' },
          },
          (r) => {
            let b = ''
            r.on('data', (c) => (b += c))
            r.on('end', () => resolve(`${r.statusCode} ${b}`))
          },
        )
        req.on('error', reject)
        req.end()
      })
      expect(body).toBe('200 plain answer')
    } else {
      expect(res.status).toBe(200)
    }
    expect(seen?.upgrade).toBeUndefined()
    expect(seen?.['http2-settings']).toBeUndefined()
  })
})

describe('WebSocket over TLS', () => {
  it('wss:// to a TLS listener tunnels to a ws:// upstream, X-Forwarded-Proto https', async () => {
    const ca = await createCa()
    const leaf = await ca.issue({ hosts: ['127.0.0.1'] })
    const up = await wsUpstream()
    const gateway = new Gateway()
    gateway.route('/ws/{path:path}', { upstream: up.url })
    const app = new Velithon()
    app.includeRouter(gateway.getRouter())
    const { port, url } = await app.listen({ port: 0, host: '127.0.0.1', tls: leaf })
    defer(() => app.close())
    expect(url.startsWith('https://')).toBe(true)
    const { ws, greeting } = await connect(`wss://127.0.0.1:${port}/ws/secure`, { ca: ca.cert })
    expect(greeting).toBe('hello from upstream')
    const replies = messages(ws, 50)
    for (let i = 0; i < 50; i++) ws.send(`s${i}`)
    expect(await replies).toEqual(Array.from({ length: 50 }, (_, i) => `s${i}`))
    expect(up.handshakes[0].headers['x-forwarded-proto']).toBe('https')
  })
})

describe('WebSocket to a wss:// upstream', () => {
  async function wssUpstream(): Promise<{ url: string; ca: string; handshakes: http.IncomingMessage[] }> {
    const ca = await createCa()
    const leaf = await ca.issue({ hosts: ['127.0.0.1'] })
    const server = https.createServer({ cert: leaf.cert, key: leaf.key })
    const wss = new WebSocketServer({ server })
    const handshakes: http.IncomingMessage[] = []
    wss.on('connection', (socket, req) => {
      handshakes.push(req)
      socket.on('message', (data) => socket.send(`secure ${data.toString()}`))
    })
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    defer(
      () =>
        new Promise<void>((resolve) => {
          for (const s of wss.clients) s.terminate()
          server.closeAllConnections()
          server.close(() => resolve())
        }),
    )
    return { url: `https://127.0.0.1:${(server.address() as net.AddressInfo).port}`, ca: ca.cert, handshakes }
  }

  it('speaks TLS to the upstream, trusting the route\'s tls.ca', async () => {
    const up = await wssUpstream()
    const gw = await startProxy({ upstreams: up.url, pattern: '/ws/{path:path}', gateway: { tls: { ca: up.ca } } })
    const ws = new WebSocket(`ws://127.0.0.1:${gw.port}/gw/ws/s`)
    defer(() => stop(ws))
    await withTimeout(once(ws, 'open'), 5_000, 'the open')
    const reply = once(ws, 'message')
    ws.send('hi')
    const [data] = (await withTimeout(reply, 5_000, 'the reply')) as [Buffer]
    expect(data.toString()).toBe('secure hi')
    expect(up.handshakes[0].headers.authorization).toBeUndefined()
  })

  it('refuses an upstream certificate it cannot trust: 502 VG_UPSTREAM_TLS, nothing sent in clear', async () => {
    const up = await wssUpstream()
    const gw = await startProxy({ upstreams: up.url, pattern: '/ws/{path:path}' })
    const ws = new WebSocket(`ws://127.0.0.1:${gw.port}/gw/ws/s`, { headers: { authorization: 'Bearer secret' } })
    defer(() => stop(ws))
    const [, res] = (await withTimeout(once(ws, 'unexpected-response'), 5_000, 'the 502')) as [unknown, http.IncomingMessage]
    expect(res.statusCode).toBe(502)
    let body = ''
    for await (const chunk of res) body += chunk
    expect(JSON.parse(body).code).toBe('VG_UPSTREAM_TLS')
    expect(up.handshakes).toHaveLength(0)
  })
})

describe('WebSocket through forwardRequest', () => {
  it('a JS handler forwards the upgrade and the tunnel runs natively', async () => {
    const up = await wsUpstream()
    const loadBalancer = new LoadBalancer({ upstreamServers: [up.url] })
    const gateway = new Gateway({ loadBalancer })
    const app = new Velithon()
    let calls = 0
    app.get('/live/{room}', (request) => {
      calls++
      return gateway.forwardRequest(request, loadBalancer, { additionalHeaders: { 'x-room-checked': 'yes' } })
    })
    const { port } = await listen(app)
    const { ws, greeting } = await connect(`ws://127.0.0.1:${port}/live/lobby`)
    expect(greeting).toBe('hello from upstream')
    const replies = messages(ws, 100)
    for (let i = 0; i < 100; i++) ws.send(`m${i}`)
    expect(await replies).toEqual(Array.from({ length: 100 }, (_, i) => `m${i}`))
    expect(calls).toBe(1)
    expect(up.handshakes[0].headers['x-room-checked']).toBe('yes')
  })
})
