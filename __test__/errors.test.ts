/**
 * Failures answer with a status and a small JSON body (`{ error, code, message }`),
 * never a stack trace: connect error 502, upstream timeout 504, no route 404, wrong
 * method 405 with Allow.
 */
import { request } from 'node:http'
import net from 'node:net'
import { once } from 'node:events'
import { afterEach, describe, expect, test } from 'vitest'
import { Gateway, Velithon } from 'velithon-gateway'
import { closeAll, defer, errorOf, listen, refusedPort, send, startProxy, startUpstream, withTimeout, type Reply } from './helpers/net'

afterEach(closeAll)

function expectJsonError(reply: Reply, status: number, code: string): void {
  expect(reply.status).toBe(status)
  expect(reply.headers['content-type']).toBe('application/json')
  const body = errorOf(reply)
  expect(body.code).toBe(code)
  expect(typeof body.error).toBe('string')
  expect(typeof body.message).toBe('string')
  // Small and free of internals.
  expect(reply.body.length).toBeLessThan(512)
  expect(reply.body.toString()).not.toMatch(/\bat .+:\d+:\d+|panicked|src\/|\.rs\b/)
}

describe('upstream failures', () => {
  test('upstream refuses the connection → 502 VG_UPSTREAM_CONNECT', async () => {
    const port = await refusedPort()
    const proxy = await startProxy({ upstreams: [`http://127.0.0.1:${port}`] })
    const started = Date.now()
    const reply = await send(`${proxy.url}/gw/api/anything`)
    expectJsonError(reply, 502, 'VG_UPSTREAM_CONNECT')
    expect(errorOf(reply).error).toBe('Bad Gateway')
    expect(Date.now() - started).toBeLessThan(5_000)
  })

  test('upstream slower than `timeout` → 504 VG_UPSTREAM_TIMEOUT, on time', async () => {
    const upstream = await startUpstream(async (_req, res) => {
      await new Promise((r) => setTimeout(r, 5_000))
      if (!res.destroyed) res.end('too late')
    })
    const proxy = await startProxy({ upstreams: [upstream.url], gateway: { timeout: '500ms' } })
    const started = Date.now()
    const reply = await send(`${proxy.url}/gw/api/slow`)
    const elapsed = Date.now() - started
    expectJsonError(reply, 504, 'VG_UPSTREAM_TIMEOUT')
    expect(errorOf(reply).error).toBe('Gateway Timeout')
    expect(elapsed).toBeGreaterThanOrEqual(450)
    expect(elapsed).toBeLessThan(3_000)
  })

  test("a route's own timeout overrides the gateway's", async () => {
    const upstream = await startUpstream(async (_req, res) => {
      await new Promise((r) => setTimeout(r, 1_000))
      if (!res.destroyed) res.end('done')
    })
    const proxy = await startProxy({ upstreams: [upstream.url], gateway: { timeout: '30s' }, route: { timeout: 300 } })
    const reply = await send(`${proxy.url}/gw/api/slow`)
    expectJsonError(reply, 504, 'VG_UPSTREAM_TIMEOUT')
  })

  test('upstream drops the connection before answering → 502 VG_UPSTREAM_PROTOCOL', async () => {
    const upstream = await startUpstream((req) => {
      req.socket.destroy()
    })
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const reply = await send(`${proxy.url}/gw/api/reset`)
    expectJsonError(reply, 502, 'VG_UPSTREAM_PROTOCOL')
  })

  test.each([
    ['Content-Length', { 'content-length': '100000' }],
    ['chunked', {}],
  ])('upstream dies mid-body (%s) → the client sees an aborted response, not a clean short one', async (_kind, headers) => {
    const upstream = await startUpstream(async (_req, res) => {
      res.writeHead(200, headers)
      res.write('x'.repeat(5_000))
      await new Promise((r) => setTimeout(r, 100))
      res.socket?.destroy()
    })
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const outcome = await new Promise<{ status: number; bytes: number; clean: boolean }>((resolve, reject) => {
      const req = request(`${proxy.url}/gw/api/truncated`, { agent: false }, (res) => {
        let bytes = 0
        res.on('data', (c: Buffer) => (bytes += c.length))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes, clean: res.complete }))
        res.on('aborted', () => resolve({ status: res.statusCode ?? 0, bytes, clean: false }))
        res.on('error', () => resolve({ status: res.statusCode ?? 0, bytes, clean: false }))
      })
      req.setTimeout(10_000, () => req.destroy(new Error('no end within 10 s')))
      req.on('error', reject)
      req.end()
    })
    expect(outcome.status).toBe(200)
    expect(outcome.bytes).toBe(5_000)
    expect(outcome.clean).toBe(false)
  })

  test('an upstream that answers within the timeout is not cut off', async () => {
    const upstream = await startUpstream(async (_req, res) => {
      await new Promise((r) => setTimeout(r, 200))
      res.end('in time')
    })
    const proxy = await startProxy({ upstreams: [upstream.url], gateway: { timeout: '2s' } })
    const reply = await send(`${proxy.url}/gw/api/slow`)
    expect(reply.status).toBe(200)
    expect(reply.body.toString()).toBe('in time')
  })
})

describe('routing failures', () => {
  test('no route → 404 VG_NO_ROUTE', async () => {
    const upstream = await startUpstream((_req, res) => res.end('should not be reached'))
    const proxy = await startProxy({ upstreams: [upstream.url] })
    for (const path of ['/', '/nothing-here', '/gw', '/gw/other/x', '/api/x']) {
      const reply = await send(`${proxy.url}${path}`)
      expectJsonError(reply, 404, 'VG_NO_ROUTE')
      expect(errorOf(reply).error).toBe('Not Found')
    }
    expect(upstream.requests).toBe(0)
  })

  test('wrong method → 405 VG_METHOD_NOT_ALLOWED with Allow', async () => {
    const upstream = await startUpstream((_req, res) => res.end('should not be reached'))
    const proxy = await startProxy({ upstreams: [upstream.url], route: { methods: ['GET', 'POST'] } })
    const reply = await send(`${proxy.url}/gw/api/x`, { method: 'DELETE' })
    expectJsonError(reply, 405, 'VG_METHOD_NOT_ALLOWED')
    expect(reply.headers.allow).toBeDefined()
    const allowed = (reply.headers.allow ?? '').split(',').map((m) => m.trim())
    expect(allowed).toEqual(expect.arrayContaining(['GET', 'POST']))
    expect(allowed).not.toContain('DELETE')
    expect(upstream.requests).toBe(0)
  })

  test('methods are matched case-insensitively in the options, and a GET route answers HEAD', async () => {
    const upstream = await startUpstream((req, res) => {
      res.setHeader('content-length', '5')
      res.end(req.method === 'HEAD' ? undefined : 'hello')
    })
    const gateway = new Gateway({})
    gateway.route('/only-get/{path:path}', { upstream: upstream.url, methods: ['get'] })
    const app = new Velithon({ workerThreads: 1 })
    app.includeRouter(gateway.getRouter())
    const { url } = await listen(app)
    expect((await send(`${url}/only-get/x`)).status).toBe(200)
    const head = await send(`${url}/only-get/x`, { method: 'HEAD' })
    expect(head.status).toBe(200)
    expect(head.headers['content-length']).toBe('5')
    expect((await send(`${url}/only-get/x`, { method: 'POST', body: 'x' })).status).toBe(405)
  })
})

describe('slow clients', () => {
  test('a client that never finishes its request head is cut off after requestHeaderTimeout', async () => {
    const upstream = await startUpstream((_req, res) => res.end('should not be reached'))
    const proxy = await startProxy({ upstreams: [upstream.url], app: { requestHeaderTimeout: '500ms' } })
    const socket = net.connect(proxy.port, '127.0.0.1')
    defer(() => socket.destroy())
    socket.on('error', () => {})
    await once(socket, 'connect')
    const started = Date.now()
    let received = ''
    socket.on('data', (c: Buffer) => (received += c.toString('latin1')))
    socket.write('GET /gw/api/x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ')
    await withTimeout(once(socket, 'close'), 5_000, 'the gateway to close the slow connection')
    const elapsed = Date.now() - started
    expect(elapsed).toBeGreaterThanOrEqual(400)
    expect(elapsed).toBeLessThan(3_000)
    // Either a bare close or a 408; never a forwarded request.
    expect(received === '' || received.startsWith('HTTP/1.1 408')).toBe(true)
    expect(upstream.requests).toBe(0)
  })
})
