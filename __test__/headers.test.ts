/**
 * Header rules of the proxy (RFC 9110 §7.6): hop-by-hop headers dropped both ways,
 * X-Forwarded-* set (and trusted only from trusted proxies), Host rewritten unless
 * preserveHost, the query string passed byte for byte, repeated headers kept.
 */
import http2 from 'node:http2'
import { afterEach, describe, expect, test } from 'vitest'
import { closeAll, defer, echoHandler, echoOf, rawExchange, send, startProxy, startUpstream, withTimeout, type Echo } from './helpers/net'

afterEach(closeAll)

describe('hop-by-hop headers', () => {
  test('are removed from the request, including a custom header named in Connection', async () => {
    const upstream = await startUpstream(echoHandler())
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const reply = await rawExchange(
      proxy.port,
      'GET /gw/api/hop HTTP/1.1\r\n' +
        `Host: 127.0.0.1:${proxy.port}\r\n` +
        'Connection: close, X-Secret\r\n' +
        'X-Secret: do-not-forward\r\n' +
        'Keep-Alive: timeout=5\r\n' +
        'Proxy-Connection: keep-alive\r\n' +
        'Proxy-Authorization: Basic Zm9vOmJhcg==\r\n' +
        'TE: gzip\r\n' +
        'Trailer: X-Checksum\r\n' +
        'Upgrade: websocket\r\n' +
        'X-Keep: yes\r\n' +
        '\r\n',
    )
    expect(reply.statusLine).toBe('HTTP/1.1 200 OK')
    const seen = echoOf(reply).headers
    expect(seen['x-keep']).toBe('yes')
    // Trailer is end-to-end (RFC 9110 §6.6.2): it names the trailers that follow the body.
    expect(seen.trailer).toBe('X-Checksum')
    for (const name of ['x-secret', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'te', 'upgrade']) {
      expect(seen, `upstream got ${name}`).not.toHaveProperty(name)
    }
    // The client's Connection header is about the client's hop, never forwarded.
    expect(seen.connection ?? 'keep-alive').toMatch(/^keep-alive$/i)
  })

  test('are removed from the response, including a custom header named in Connection', async () => {
    const upstream = await startUpstream((_req, res) => {
      res.setHeader('Connection', 'keep-alive, X-Up-Secret')
      res.setHeader('X-Up-Secret', 'do-not-forward')
      res.setHeader('Keep-Alive', 'timeout=5')
      res.setHeader('Proxy-Authenticate', 'Basic realm="upstream"')
      res.setHeader('Upgrade', 'h2c')
      res.setHeader('X-Up-Keep', 'yes')
      res.setHeader('Content-Length', '2')
      res.end('ok')
    })
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const reply = await rawExchange(
      proxy.port,
      `GET /gw/api/hop HTTP/1.1\r\nHost: 127.0.0.1:${proxy.port}\r\nConnection: close\r\n\r\n`,
    )
    expect(reply.statusLine).toBe('HTTP/1.1 200 OK')
    const names = reply.headers.map(([name]) => name)
    expect(names).toContain('x-up-keep')
    for (const name of ['x-up-secret', 'keep-alive', 'proxy-authenticate', 'upgrade']) {
      expect(names, `client got ${name}`).not.toContain(name)
    }
    // Only the gateway's own Connection header for this hop (the client asked to close).
    for (const [name, value] of reply.headers) {
      if (name === 'connection') expect(value.toLowerCase()).toBe('close')
    }
    expect(reply.body.toString()).toBe('ok')
  })
})

test('TE: trailers is kept on requests (gRPC needs it end to end)', async () => {
  const upstream = await startUpstream(echoHandler())
  const proxy = await startProxy({ upstreams: [upstream.url] })
  const seen = echoOf(await send(`${proxy.url}/gw/api/x`, { headers: { te: 'trailers' } })).headers
  expect(seen.te).toBe('trailers')
})

describe('X-Forwarded-*', () => {
  const forged = {
    host: 'public.example:8443',
    'x-forwarded-for': '203.0.113.9',
    'x-forwarded-proto': 'https',
    'x-forwarded-host': 'evil.example',
  }

  test('from an untrusted peer are replaced: For is the peer, Proto http, Host the client Host', async () => {
    const upstream = await startUpstream(echoHandler())
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const seen = echoOf(await send(`${proxy.url}/gw/api/x`, { headers: forged })).headers
    expect(seen['x-forwarded-for']).toBe('127.0.0.1')
    expect(seen['x-forwarded-proto']).toBe('http')
    expect(seen['x-forwarded-host']).toBe('public.example:8443')
  })

  test('are set when the client sent none', async () => {
    const upstream = await startUpstream(echoHandler())
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const seen = echoOf(await send(`${proxy.url}/gw/api/x`)).headers
    expect(seen['x-forwarded-for']).toBe('127.0.0.1')
    expect(seen['x-forwarded-proto']).toBe('http')
    expect(seen['x-forwarded-host']).toBe(`127.0.0.1:${proxy.port}`)
  })

  test('from a trusted proxy (app option trustedProxies) are kept and the peer is appended to For', async () => {
    const upstream = await startUpstream(echoHandler())
    const proxy = await startProxy({ upstreams: [upstream.url], app: { trustedProxies: ['127.0.0.1'] } })
    const seen = echoOf(await send(`${proxy.url}/gw/api/x`, { headers: forged })).headers
    expect(seen['x-forwarded-for']).toBe('203.0.113.9, 127.0.0.1')
    expect(seen['x-forwarded-proto']).toBe('https')
    expect(seen['x-forwarded-host']).toBe('evil.example')

    const plain = echoOf(await send(`${proxy.url}/gw/api/x`)).headers
    expect(plain['x-forwarded-for']).toBe('127.0.0.1')
    expect(plain['x-forwarded-proto']).toBe('http')
    expect(plain['x-forwarded-host']).toBe(`127.0.0.1:${proxy.port}`)
  })

  test('Forwarded (RFC 7239) passes untouched', async () => {
    const upstream = await startUpstream(echoHandler())
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const forwarded = 'for=192.0.2.60;proto=http;by=203.0.113.43'
    const seen = echoOf(await send(`${proxy.url}/gw/api/x`, { headers: { forwarded } })).headers
    expect(seen.forwarded).toBe(forwarded)
  })

  test('a trusted CIDR block that does not contain the peer is not trusted', async () => {
    const upstream = await startUpstream(echoHandler())
    const proxy = await startProxy({ upstreams: [upstream.url], app: { trustedProxies: ['10.0.0.0/8'] } })
    const seen = echoOf(await send(`${proxy.url}/gw/api/x`, { headers: forged })).headers
    expect(seen['x-forwarded-for']).toBe('127.0.0.1')
    expect(seen['x-forwarded-proto']).toBe('http')
  })
})

describe('Host', () => {
  test("is rewritten to the upstream's authority by default", async () => {
    const upstream = await startUpstream(echoHandler())
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const seen = echoOf(await send(`${proxy.url}/gw/api/x`, { headers: { host: 'public.example' } })).headers
    expect(seen.host).toBe(`127.0.0.1:${upstream.port}`)
  })

  test("is the client's with preserveHost", async () => {
    const upstream = await startUpstream(echoHandler())
    const proxy = await startProxy({ upstreams: [upstream.url], route: { preserveHost: true } })
    const seen = echoOf(await send(`${proxy.url}/gw/api/x`, { headers: { host: 'public.example' } })).headers
    expect(seen.host).toBe('public.example')
  })
})

describe('request target', () => {
  test.each([
    ['/gw/api/q?a=%2F&b=%zz&&c', '/gw/api/q?a=%2F&b=%zz&&c'],
    ['/gw/api/q?x=1;y=2&z=a+b&e=%E2%82%AC&s=/p?q&empty=&=v&', '/gw/api/q?x=1;y=2&z=a+b&e=%E2%82%AC&s=/p?q&empty=&=v&'],
    ['/gw/api/q?', '/gw/api/q?'],
    ['/gw/api/a%2Fb/%7Euser/%zz?k=v', '/gw/api/a%2Fb/%7Euser/%zz?k=v'],
    ['/gw/api/a/b..c//d?x=..', '/gw/api/a/b..c//d?x=..'],
    ['/gw/api/q?q=a|b&c=^`', '/gw/api/q?q=a|b&c=^`'],
  ])('%s reaches the upstream byte for byte', async (target, expected) => {
    const upstream = await startUpstream(echoHandler())
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const reply = await rawExchange(
      proxy.port,
      `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1:${proxy.port}\r\nConnection: close\r\n\r\n`,
    )
    expect(reply.statusLine).toBe('HTTP/1.1 200 OK')
    expect(echoOf(reply).url).toBe(expected)
  })

  test.each(['/gw/api/a/./b', '/gw/api/../admin', '/gw/api/%2e%2E/admin', '/gw/api/.%2e'])(
    '%s (a dot segment, which an upstream would resolve outside the route) → 400',
    async (target) => {
      let hits = 0
      const upstream = await startUpstream((req, res) => {
        hits++
        res.end('reached')
      })
      const proxy = await startProxy({ upstreams: [upstream.url] })
      const reply = await rawExchange(
        proxy.port,
        `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1:${proxy.port}\r\nConnection: close\r\n\r\n`,
      )
      expect(reply.statusLine).toBe('HTTP/1.1 400 Bad Request')
      expect(JSON.parse(reply.body.toString()).code).toBe('VG_BAD_REQUEST')
      expect(hits).toBe(0)
    },
  )

  test('the query string passes unchanged with stripPath too', async () => {
    const upstream = await startUpstream(echoHandler())
    const proxy = await startProxy({ upstreams: [upstream.url], route: { stripPath: true } })
    const reply = await rawExchange(
      proxy.port,
      `GET /gw/api/q?a=%2F&b=%zz&&c HTTP/1.1\r\nHost: 127.0.0.1:${proxy.port}\r\nConnection: close\r\n\r\n`,
    )
    expect(echoOf(reply).url).toBe('/q?a=%2F&b=%zz&&c')
  })
})

describe('repeated headers', () => {
  test('two Set-Cookie headers from the upstream both reach the client', async () => {
    const upstream = await startUpstream((_req, res) => {
      res.setHeader('Set-Cookie', ['a=1; Path=/', 'b=2; HttpOnly'])
      res.end('cookies')
    })
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const reply = await send(`${proxy.url}/gw/api/cookies`)
    expect(reply.status).toBe(200)
    expect(reply.headers['set-cookie']).toEqual(['a=1; Path=/', 'b=2; HttpOnly'])
  })

  test('a request header sent twice reaches the upstream twice, in order', async () => {
    const upstream = await startUpstream(echoHandler())
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const reply = await rawExchange(
      proxy.port,
      `GET /gw/api/x HTTP/1.1\r\nHost: 127.0.0.1:${proxy.port}\r\nX-Multi: one\r\nX-Multi: two\r\nConnection: close\r\n\r\n`,
    )
    const raw = echoOf(reply).rawHeaders
    const values: string[] = []
    for (let i = 0; i < raw.length; i += 2) if (raw[i].toLowerCase() === 'x-multi') values.push(raw[i + 1])
    expect(values).toEqual(['one', 'two'])
  })
})

describe('header bytes', () => {
  test('a request header value with obs-text bytes (0x80-0xFF) reaches the upstream byte for byte', async () => {
    const upstream = await startUpstream(echoHandler())
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const value = Buffer.from([0x63, 0x61, 0x66, 0xe9, 0x20, 0xff, 0x21])
    const reply = await rawExchange(
      proxy.port,
      Buffer.concat([
        Buffer.from(`GET /gw/api/x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bytes: `),
        value,
        Buffer.from('\r\nConnection: close\r\n\r\n'),
      ]),
    )
    expect(reply.statusLine).toBe('HTTP/1.1 200 OK')
    // node:http decodes header values as latin1: one char per byte.
    const seen = echoOf(reply).headers['x-bytes'] as string
    expect(Buffer.from(seen, 'latin1')).toEqual(value)
  })
})

describe('HTTP/2 clients (h2c, prior knowledge)', () => {
  test('are forwarded as HTTP/1.1 with Host rewritten and X-Forwarded-Host from :authority', async () => {
    const upstream = await startUpstream(echoHandler())
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const session = http2.connect(proxy.url)
    defer(() => new Promise<void>((resolve) => session.close(() => resolve())))
    session.on('error', () => {})
    const { status, body } = await withTimeout(
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const stream = session.request({ ':method': 'POST', ':path': '/gw/api/h2?a=%2F&b', ':authority': 'public.example', 'x-h2': 'yes' })
        let status = 0
        let body = ''
        stream.on('response', (headers) => (status = Number(headers[':status'])))
        stream.setEncoding('utf8')
        stream.on('data', (c: string) => (body += c))
        stream.on('end', () => resolve({ status, body }))
        stream.on('error', reject)
        stream.end('h2 body')
      }),
      10_000,
      'an h2c request',
    )
    expect(status).toBe(200)
    const echo = JSON.parse(body) as Echo
    expect(echo.url).toBe('/gw/api/h2?a=%2F&b')
    expect(echo.method).toBe('POST')
    expect(echo.body).toBe('h2 body')
    expect(echo.headers.host).toBe(`127.0.0.1:${upstream.port}`)
    expect(echo.headers['x-forwarded-host']).toBe('public.example')
    expect(echo.headers['x-h2']).toBe('yes')
  })
})
