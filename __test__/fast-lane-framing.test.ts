/**
 * The listener's HTTP/1.1 fast lane (crates/core/src/server/fast_lane/): on a plain-HTTP
 * listener, a GET on a pure proxy route is served by hand-written code (httparse heads,
 * its own upstream socket pool, bodies passed through as framed); the first request it
 * does not serve hands the connection, with the bytes already read, to hyper.
 *
 * This file: how the lane frames upstream responses (chunked, close-delimited, 1xx,
 * garbage, …) and big downloads. See fast-lane.test.ts for the other fast-lane suites.
 *
 * End to end on 127.0.0.1: raw node:net clients where the bytes matter (pipelining,
 * keep-alive, hand-off), raw node:net upstreams where the response bytes must be exact
 * (chunked, close-delimited, 1xx, garbage, stale keep-alive), node:http elsewhere. The
 * raw client and upstreams are in helpers/raw-http.ts.
 */
import http from 'node:http'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { afterEach, describe, expect, test } from 'vitest'
import { closeAll, send, sleep, startProxy, startUpstream } from './helpers/net'
import { forwardedBy, get, headerOf, namesOf, ok, RawClient, sha256, startRawUpstream, UUID } from './helpers/raw-http'

afterEach(closeAll)

const MiB = 1024 * 1024

// ---------------------------------------------------------------------------------------

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
