// The README's "WebSockets and other upgrades" example, run against two local ws echo
// upstreams (their ports replace 9001/9002, port 0 replaces 8080). Keep the two in step.
import http from 'node:http'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import WebSocket, { WebSocketServer } from 'ws'
import { Velithon, Gateway, LoadBalancer, LeastConnectionsStrategy, JSONResponse } from 'velithon-gateway'
import { closeAll, defer, withTimeout } from './helpers/net'

afterEach(closeAll)

async function wsEcho(name: string): Promise<string> {
  const server = http.createServer()
  const wss = new WebSocketServer({ server })
  wss.on('connection', (socket) => socket.on('message', (data) => socket.send(`${name}: ${data.toString()}`)))
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  defer(
    () =>
      new Promise<void>((resolve) => {
        for (const s of wss.clients) s.terminate()
        server.close(() => resolve())
      }),
  )
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

async function roundTrip(url: string, headers: Record<string, string> = {}): Promise<string> {
  const ws = new WebSocket(url, { headers })
  defer(() => {
    ws.on('error', () => {})
    ws.terminate()
  })
  const outcome = new Promise<string>((resolve, reject) => {
    ws.on('open', () => ws.send('hi'))
    ws.on('message', (data) => resolve(data.toString()))
    ws.on('unexpected-response', (_req, res) => resolve(`refused ${res.statusCode}`))
    ws.on('error', reject)
  })
  return withTimeout(outcome, 5_000, `a round trip through ${url}`)
}

describe('README: WebSockets', () => {
  it('proxies WebSockets through a pure route and a deciding handler', async () => {
    const [u1, u2] = await Promise.all([wsEcho('u1'), wsEcho('u2')])

    // --- as in the README ---
    const loadBalancer = new LoadBalancer({
      upstreamServers: [u1, u2],
      strategy: new LeastConnectionsStrategy(), // an open WebSocket counts as a connection
    })
    const gateway = new Gateway({ loadBalancer, upgradeIdleTimeout: '5m' })
    gateway.route('/chat/{path:path}') // WebSockets pass through a pure route…

    const app = new Velithon()
    app.includeRouter(gateway.getRouter())
    // …or through a handler that decides first; the tunnel still runs in Rust.
    app.get('/live/{room}', (request) =>
      request.headers.get('x-ticket') === 'valid'
        ? gateway.forwardRequest(request)
        : new JSONResponse({ error: 'no ticket' }, 401),
    )
    const { port } = await app.listen({ port: 0, host: '127.0.0.1' })
    // --- end ---
    defer(() => app.close())

    const first = await roundTrip(`ws://127.0.0.1:${port}/chat/room1`)
    const second = await roundTrip(`ws://127.0.0.1:${port}/chat/room2`)
    // Both tunnels are still open: least connections sent them to different servers.
    expect([first, second].sort()).toEqual(['u1: hi', 'u2: hi'])
    expect(await roundTrip(`ws://127.0.0.1:${port}/live/lobby`, { 'x-ticket': 'valid' })).toMatch(/^u[12]: hi$/)
    expect(await roundTrip(`ws://127.0.0.1:${port}/live/lobby`)).toBe('refused 401')
  })
})
