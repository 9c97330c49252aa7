/**
 * Status codes and bodies pass through unchanged, and bodies keep their framing:
 * chunked stays chunked, Content-Length stays Content-Length, in both directions.
 */
import { createHash } from 'node:crypto'
import { request } from 'node:http'
import { afterEach, beforeEach, describe, expect, test } from 'vitest'
import {
  closeAll,
  echoHandler,
  echoOf,
  rawExchange,
  readAll,
  send,
  startProxy,
  startUpstream,
  type RunningProxy,
  type Upstream,
} from './helpers/net'

afterEach(closeAll)

describe('status and body', () => {
  let upstream: Upstream
  let proxy: RunningProxy

  beforeEach(async () => {
    upstream = await startUpstream((req, res) => {
      const status = Number(/\/status\/(\d+)/.exec(req.url ?? '')?.[1] ?? 200)
      const body = `status ${status} from upstream`
      if (status === 204) {
        res.writeHead(204, { 'x-status': '204' })
        res.end()
      } else if (status === 304) {
        res.writeHead(304, { etag: '"v1"', 'x-status': '304' })
        res.end()
      } else {
        res.writeHead(status, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body), 'x-status': String(status) })
        res.end(req.method === 'HEAD' ? undefined : body)
      }
    })
    proxy = await startProxy({ upstreams: [upstream.url] })
  })

  test.each([200, 201, 404, 500])('%i from the upstream reaches the client with its body', async (status) => {
    const reply = await send(`${proxy.url}/gw/api/status/${status}`)
    expect(reply.status).toBe(status)
    expect(reply.headers['x-status']).toBe(String(status))
    expect(reply.headers['content-type']).toBe('text/plain')
    expect(reply.body.toString()).toBe(`status ${status} from upstream`)
    expect(reply.headers['content-length']).toBe(String(`status ${status} from upstream`.length))
  })

  test('204 reaches the client with no body', async () => {
    const reply = await rawExchange(
      proxy.port,
      `GET /gw/api/status/204 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`,
    )
    expect(reply.statusLine).toBe('HTTP/1.1 204 No Content')
    expect(reply.headers).toContainEqual(['x-status', '204'])
    expect(reply.headers.map(([n]) => n)).not.toContain('transfer-encoding')
    expect(reply.body.length).toBe(0)
  })

  test('304 reaches the client with its ETag and no body', async () => {
    const reply = await rawExchange(
      proxy.port,
      `GET /gw/api/status/304 HTTP/1.1\r\nHost: 127.0.0.1\r\nIf-None-Match: "v1"\r\nConnection: close\r\n\r\n`,
    )
    expect(reply.statusLine).toBe('HTTP/1.1 304 Not Modified')
    expect(reply.headers).toContainEqual(['etag', '"v1"'])
    expect(reply.body.length).toBe(0)
  })

  test('HEAD keeps Content-Length and sends no body', async () => {
    const reply = await rawExchange(
      proxy.port,
      `HEAD /gw/api/status/200 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`,
    )
    expect(reply.statusLine).toBe('HTTP/1.1 200 OK')
    expect(reply.headers).toContainEqual(['content-length', String('status 200 from upstream'.length)])
    expect(reply.body.length).toBe(0)
  })

  test('HEAD on a keep-alive connection leaves the connection usable for the next request', async () => {
    // If the gateway sent a body after a HEAD response, the next response would be garbled.
    const reply = await rawExchange(
      proxy.port,
      `HEAD /gw/api/status/200 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n` +
        `GET /gw/api/status/201 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`,
    )
    const text = reply.raw.toString('latin1')
    const second = text.indexOf('HTTP/1.1 201 Created\r\n')
    expect(text.startsWith('HTTP/1.1 200 OK\r\n')).toBe(true)
    expect(second).toBeGreaterThan(0)
    expect(text.slice(text.indexOf('\r\n\r\n') + 4, second)).toBe('')
    expect(text.endsWith('status 201 from upstream')).toBe(true)
  })
})

describe('body framing', () => {
  test('a chunked request body reaches the upstream intact, still chunked', async () => {
    const upstream = await startUpstream(echoHandler())
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const chunks = ['first chunk,', 'second chunk,', 'x'.repeat(70_000), 'last']
    const reply = await send(`${proxy.url}/gw/api/upload`, { method: 'POST', body: chunks })
    expect(reply.status).toBe(200)
    const echo = echoOf(reply)
    expect(echo.method).toBe('POST')
    expect(echo.body).toBe(chunks.join(''))
    expect(echo.headers['transfer-encoding']).toBe('chunked')
    expect(echo.headers['content-length']).toBeUndefined()
  })

  test('a Content-Length request body reaches the upstream intact with its Content-Length', async () => {
    const upstream = await startUpstream(echoHandler())
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const body = Buffer.alloc(300_000, 'abcdefghij')
    const reply = await send(`${proxy.url}/gw/api/upload`, { method: 'PUT', body })
    expect(reply.status).toBe(200)
    const echo = echoOf(reply)
    expect(echo.method).toBe('PUT')
    expect(echo.bodyLength).toBe(body.length)
    expect(echo.body).toBe(body.toString())
    expect(echo.headers['content-length']).toBe(String(body.length))
    expect(echo.headers['transfer-encoding']).toBeUndefined()
  })

  test('a raw chunked request with odd chunk sizes is decoded and forwarded exactly', async () => {
    const upstream = await startUpstream(echoHandler())
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const reply = await rawExchange(
      proxy.port,
      'POST /gw/api/raw HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n' +
        '1\r\na\r\n' +
        'A\r\n0123456789\r\n' +
        '3;ext=1\r\nxyz\r\n' +
        '0\r\n\r\n',
    )
    expect(reply.statusLine).toBe('HTTP/1.1 200 OK')
    expect(echoOf(reply).body).toBe('a0123456789xyz')
  })

  test('a chunked response body reaches the client intact, chunked', async () => {
    const parts = ['alpha-', 'beta-', 'y'.repeat(100_000), '-omega']
    const upstream = await startUpstream(async (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream' })
      for (const part of parts) {
        res.write(part)
        await new Promise((r) => setTimeout(r, 5))
      }
      res.end()
    })
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const reply = await send(`${proxy.url}/gw/api/download`)
    expect(reply.status).toBe(200)
    expect(reply.headers['transfer-encoding']).toBe('chunked')
    expect(reply.headers['content-length']).toBeUndefined()
    expect(reply.body.toString()).toBe(parts.join(''))
  })

  test('a Content-Length response body reaches the client intact with its Content-Length', async () => {
    const body = Buffer.alloc(1_000_003)
    for (let i = 0; i < body.length; i++) body[i] = (i * 31 + 7) & 0xff
    const digest = createHash('sha256').update(body).digest('hex')
    const upstream = await startUpstream((_req, res) => {
      res.writeHead(200, { 'content-length': body.length })
      res.end(body)
    })
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const reply = await send(`${proxy.url}/gw/api/download`)
    expect(reply.status).toBe(200)
    expect(reply.headers['content-length']).toBe(String(body.length))
    expect(reply.headers['transfer-encoding']).toBeUndefined()
    expect(createHash('sha256').update(reply.body).digest('hex')).toBe(digest)
  })

  test('an HTTP/1.0 client gets a chunked upstream body close-delimited, never chunked', async () => {
    const upstream = await startUpstream((req, res) => {
      res.write('part1-')
      res.end(`part2 (upstream saw HTTP/${req.httpVersion})`)
    })
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const reply = await rawExchange(proxy.port, 'GET /gw/api/old HTTP/1.0\r\nHost: old.example\r\n\r\n')
    expect(reply.statusLine).toMatch(/^HTTP\/1\.[01] 200 OK$/)
    expect(reply.headers.map(([n]) => n)).not.toContain('transfer-encoding')
    expect(reply.body.toString()).toBe('part1-part2 (upstream saw HTTP/1.1)')
  })

  test('undici fetch: POST a JSON body and read the JSON answer', async () => {
    const upstream = await startUpstream(echoHandler())
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const res = await fetch(`${proxy.url}/gw/api/json?x=1`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ hello: 'world' }),
      signal: AbortSignal.timeout(10_000),
    })
    expect(res.status).toBe(200)
    const echo = (await res.json()) as { url: string; body: string; headers: Record<string, string> }
    expect(echo.url).toBe('/gw/api/json?x=1')
    expect(JSON.parse(echo.body)).toEqual({ hello: 'world' })
    expect(echo.headers['content-type']).toBe('application/json')
  })

  test('a response streamed slowly reaches the client piece by piece (not buffered whole)', async () => {
    let release!: () => void
    const released = new Promise<void>((r) => (release = r))
    const upstream = await startUpstream(async (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.write('first;')
      await released
      res.end('second')
    })
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const pieces = await new Promise<string[]>((resolve, reject) => {
      const req = request(`${proxy.url}/gw/api/slow`, { agent: false }, (res) => {
        res.once('data', (first: Buffer) => {
          // The first piece arrived while the upstream still holds back the second.
          release()
          readAll(res).then((rest) => resolve([first.toString(), rest.toString()]), reject)
        })
      })
      req.setTimeout(10_000, () => req.destroy(new Error('timed out')))
      req.on('error', reject)
      req.end()
    })
    expect(pieces).toEqual(['first;', 'second'])
  })
})
