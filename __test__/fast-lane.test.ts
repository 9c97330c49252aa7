/**
 * The listener's HTTP/1.1 fast lane (crates/core/src/server/fast_lane/): on a plain-HTTP
 * listener, a GET on a pure proxy route is served by hand-written code (httparse heads,
 * its own upstream socket pool, bodies passed through as framed); the first request it
 * does not serve hands the connection, with the bytes already read, to hyper.
 *
 * This file: pipelining, pipelining with a half-closed client, and the hand-off to the
 * general path. The other fast-lane suites: fast-lane-framing (upstream response framing,
 * big downloads), fast-lane-pool (the upstream connection pool, the client connection),
 * fast-lane-headers (headers, errors and metrics, the lane answering as the general path).
 *
 * End to end on 127.0.0.1: raw node:net clients where the bytes matter (pipelining,
 * keep-alive, hand-off), raw node:net upstreams where the response bytes must be exact
 * (chunked, close-delimited, 1xx, garbage, stale keep-alive), node:http elsewhere. The
 * raw client and upstreams are in helpers/raw-http.ts.
 */
import http2 from 'node:http2'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { afterEach, describe, expect, test } from 'vitest'
import { closeAll, defer, readAll, sleep, startProxy, withTimeout } from './helpers/net'
import { answerOf, forwardedBy, get, headerOf, namesOf, ok, RawClient, recordingUpstream, sha256, startRawUpstream, valuesOf } from './helpers/raw-http'

afterEach(closeAll)

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
