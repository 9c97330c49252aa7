/**
 * Transformations through real HTTP: HeaderTransformer (static and function values, both
 * directions, layers gateway → load balancer → route and back), PathTransformer (the
 * spec's example, regex rewrites, percent-encoding and the query kept, dot segments
 * refused), BodyTransformer (request, response, both; limits; failures), the route
 * options that work alongside them (headersToAdd/-Remove, pathRewrite, maxRetries,
 * stripPath, preserveHost, methods, timeout) and the request id.
 */
import { randomUUID } from 'node:crypto'
import { afterEach, describe, expect, test } from 'vitest'
import {
  BodyTransformer,
  ConfigError,
  Gateway,
  HeaderTransformer,
  LoadBalancer,
  PathTransformer,
  RetryConfig,
  Velithon,
  type GatewayOptions,
  type TransformContext,
} from 'velithon-gateway'
import {
  closeAll,
  defer,
  echoOf,
  errorOf,
  listen,
  rawExchange,
  readAll,
  send,
  sleep,
  startUpstream,
  type Echo,
  type Reply,
} from './helpers/net'

afterEach(closeAll)

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/

// ---------------------------------------------------------------------------------------
// Helpers

/** An echoing upstream (see echoHandler) that also keeps what it received. */
async function recorder(name = 'upstream') {
  const seen: (Echo & { bodyHex: string })[] = []
  const upstream = await startUpstream(async (req, res) => {
    const body = await readAll(req)
    const record = {
      name,
      method: req.method ?? '',
      url: req.url ?? '',
      headers: req.headers,
      rawHeaders: req.rawHeaders,
      body: body.toString('utf8'),
      bodyLength: body.length,
      bodyHex: body.toString('hex'),
    }
    seen.push(record)
    const payload = JSON.stringify(record)
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) })
    res.end(payload)
  })
  return { upstream, url: upstream.url, seen }
}

interface Started {
  gateway: Gateway
  app: Velithon
  url: string
  port: number
}

/** A Gateway with `routes`, mounted at the root (or `prefix`), listening on port 0. */
async function start(routes: (gateway: Gateway) => void, gateway: GatewayOptions = {}, prefix?: string): Promise<Started> {
  const gw = new Gateway({ timeout: '10s', connectTimeout: '2s', ...gateway })
  routes(gw)
  const app = new Velithon({ workerThreads: 2 })
  app.includeRouter(gw.getRouter(), prefix === undefined ? {} : { prefix })
  defer(() => gw.close())
  const address = await listen(app)
  return { gateway: gw, app, url: address.url, port: address.port }
}

/** One raw request (Connection: close added) to the gateway. */
function raw(port: number, head: string, body = ''): ReturnType<typeof rawExchange> {
  return rawExchange(port, `${head}\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n\r\n${body}`)
}

function headerOf(reply: Awaited<ReturnType<typeof rawExchange>>, name: string): string[] {
  return reply.headers.filter(([n]) => n === name).map(([, v]) => v)
}

function expectGatewayError(reply: Reply, status: number, code: string): void {
  expect(reply.status).toBe(status)
  expect(reply.headers['content-type']).toBe('application/json')
  const body = errorOf(reply)
  expect(body.code).toBe(code)
  // A small JSON body: never a stack trace.
  expect(JSON.stringify(body)).not.toMatch(/\n\s+at |\.ts:\d+|\.js:\d+/)
}

/** What building something threw: `'ConfigError <option>'`, another error's name and code, or `'ok'`. */
function outcomeOf(build: () => unknown): string {
  try {
    build()
    return 'ok'
  } catch (err) {
    if (err instanceof ConfigError) return `ConfigError ${err.option}`
    return `${(err as Error).name} ${(err as { code?: string }).code}`
  }
}

function constructionError(build: () => unknown): ConfigError {
  try {
    build()
  } catch (err) {
    expect(err, String(err)).toBeInstanceOf(ConfigError)
    return err as ConfigError
  }
  throw new Error('expected a ConfigError, nothing was thrown')
}

// ---------------------------------------------------------------------------------------
// HeaderTransformer

describe('HeaderTransformer on requests', () => {
  test('static rules: removeHeaders, modifyHeaders (absent stays absent), addHeaders (replaces a client value)', async () => {
    const up = await recorder()
    const headers = new HeaderTransformer({
      addHeaders: { 'X-Gateway': 'velithon', 'X-Replace': 'from-gateway' },
      removeHeaders: ['X-Remove-Me', 'Cookie'],
      modifyHeaders: { 'X-Plan': 'gold', 'X-Absent': 'never-set' },
    })
    const { url } = await start((gw) => gw.route('/api/{path:path}', { upstream: up.url, transformers: [headers] }))
    const reply = await send(`${url}/api/users`, {
      headers: { 'x-remove-me': 'secret', cookie: 'sid=1', 'x-plan': 'free', 'x-replace': 'client', 'x-keep': 'yes' },
    })
    expect(reply.status).toBe(200)
    const seen = echoOf(reply).headers
    expect(seen['x-gateway']).toBe('velithon')
    expect(seen['x-replace']).toBe('from-gateway')
    expect(seen['x-plan']).toBe('gold')
    expect(seen['x-keep']).toBe('yes')
    expect(seen).not.toHaveProperty('x-remove-me')
    expect(seen).not.toHaveProperty('cookie')
    expect(seen).not.toHaveProperty('x-absent')
    // One value per set header, even when the client sent the name twice.
    expect(echoOf(reply).rawHeaders.filter((h) => h.toLowerCase() === 'x-replace')).toHaveLength(1)
  })

  test('a function value in addHeaders runs per request (randomUUID differs each time) and sees the request', async () => {
    const up = await recorder()
    const contexts: TransformContext[] = []
    const headers = new HeaderTransformer({
      addHeaders: {
        'X-Trace-Id': () => randomUUID(),
        'X-Seen': (ctx) => {
          contexts.push(structuredClone(ctx))
          return `${ctx.method} ${ctx.path} ${ctx.headers['x-client'] ?? '-'}`
        },
      },
    })
    const { url } = await start((gw) => gw.route('/api/{path:path}', { upstream: up.url, transformers: [headers] }))
    const a = echoOf(await send(`${url}/api/a?q=1`, { headers: { 'x-client': 'one' } })).headers
    const b = echoOf(await send(`${url}/api/b`, { method: 'DELETE' })).headers
    expect(a['x-trace-id']).toMatch(UUID_V4)
    expect(b['x-trace-id']).toMatch(UUID_V4)
    expect(a['x-trace-id']).not.toBe(b['x-trace-id'])
    expect(a['x-seen']).toBe('GET /api/a one')
    expect(b['x-seen']).toBe('DELETE /api/b -')
    expect(contexts).toHaveLength(2)
    expect(contexts[0].status).toBeUndefined()
  })

  test('modifyHeaders with a function changes a present header; an absent one stays absent and the function is not called', async () => {
    const up = await recorder()
    let calls = 0
    const headers = new HeaderTransformer({
      modifyHeaders: {
        'User-Agent': (ua) => {
          calls++
          return `${ua} via gw`
        },
        'X-Async': async (value) => {
          await sleep(5)
          return value.toUpperCase()
        },
      },
    })
    const { url } = await start((gw) => gw.route('/api/{path:path}', { upstream: up.url, transformers: [headers] }))
    const first = echoOf(await send(`${url}/api/x`, { headers: { 'user-agent': 'curl/8.5', 'x-async': 'quiet' } })).headers
    expect(first['user-agent']).toBe('curl/8.5 via gw')
    expect(first['x-async']).toBe('QUIET')
    expect(calls).toBe(1)

    const second = echoOf(await send(`${url}/api/x`)).headers
    expect(second).not.toHaveProperty('user-agent')
    expect(second).not.toHaveProperty('x-async')
    expect(calls).toBe(1)
  })
})

describe('HeaderTransformer on responses', () => {
  test('responseHeaders: add (static and per response), remove, modify (string and function), absent stays absent', async () => {
    const upstream = await startUpstream((_req, res) => {
      res.setHeader('X-Powered-By', 'express')
      res.setHeader('Server', 'upstream/1.0')
      res.setHeader('Cache-Control', 'no-cache')
      res.setHeader('Content-Type', 'text/plain')
      res.statusCode = 201
      res.end('made')
    })
    const headers = new HeaderTransformer({
      responseHeaders: {
        addHeaders: { 'X-Frame-Options': 'DENY', 'X-Served': (ctx) => `${ctx.status} ${ctx.method} ${ctx.path}` },
        removeHeaders: ['X-Powered-By'],
        modifyHeaders: { Server: 'gateway', 'Cache-Control': (v) => `${v}, private`, 'X-Absent': 'nope', 'X-Absent-Fn': () => 'nope' },
      },
    })
    const { url } = await start((gw) => gw.route('/api/{path:path}', { upstream: upstream.url, transformers: [headers] }))
    const reply = await send(`${url}/api/things`, { method: 'POST', body: '{}' })
    expect(reply.status).toBe(201)
    expect(reply.body.toString()).toBe('made')
    expect(reply.headers['x-frame-options']).toBe('DENY')
    expect(reply.headers['x-served']).toBe('201 POST /api/things')
    expect(reply.headers.server).toBe('gateway')
    expect(reply.headers['cache-control']).toBe('no-cache, private')
    expect(reply.headers).not.toHaveProperty('x-powered-by')
    expect(reply.headers).not.toHaveProperty('x-absent')
    expect(reply.headers).not.toHaveProperty('x-absent-fn')
  })

  test('request rules do not touch the response and response rules do not touch the request', async () => {
    const up = await recorder()
    const headers = new HeaderTransformer({
      addHeaders: { 'X-Only-Up': 'up' },
      responseHeaders: { addHeaders: { 'X-Only-Down': 'down' } },
    })
    const { url } = await start((gw) => gw.route('/api/{path:path}', { upstream: up.url, transformers: [headers] }))
    const reply = await send(`${url}/api/x`)
    expect(echoOf(reply).headers['x-only-up']).toBe('up')
    expect(echoOf(reply).headers).not.toHaveProperty('x-only-down')
    expect(reply.headers['x-only-down']).toBe('down')
    expect(reply.headers).not.toHaveProperty('x-only-up')
  })
})

describe('layers: gateway → load balancer → route on the way up, route → load balancer → gateway on the way back', () => {
  /** A layer that sets the same headers to its own name, both ways. */
  const staticLayer = (name: string) =>
    new HeaderTransformer({ addHeaders: { 'X-Layer': name }, responseHeaders: { addHeaders: { 'X-Layer-Back': name } } })
  /** A layer that appends its name to a header, both ways (functions). */
  const chainLayer = (name: string) =>
    new HeaderTransformer({
      modifyHeaders: { 'X-Chain': (v) => `${v},${name}` },
      responseHeaders: { modifyHeaders: { 'X-Chain-Back': (v) => `${v},${name}` } },
    })

  async function layered(layer: (name: string) => HeaderTransformer) {
    const upstream = await startUpstream(async (req, res) => {
      await readAll(req)
      const payload = JSON.stringify({ headers: req.headers })
      res.setHeader('X-Chain-Back', 'upstream')
      res.setHeader('X-Layer-Back', 'upstream')
      res.setHeader('Content-Type', 'application/json')
      res.end(payload)
    })
    const loadBalancer = new LoadBalancer({ upstreamServers: [upstream.url], transformers: [layer('lb')] })
    return start(
      (gw) => {
        gw.route('/route/{path:path}', { loadBalancer, transformers: [layer('route')] })
        gw.route('/balancer/{path:path}', { loadBalancer })
        gw.route('/plain/{path:path}', { upstream: upstream.url })
      },
      { transformers: [layer('gateway')] },
    )
  }

  test('static values: the route layer wins upstream, the gateway layer wins at the client', async () => {
    const { url } = await layered(staticLayer)
    const reply = await send(`${url}/route/x`, { headers: { 'x-layer': 'client' } })
    expect(JSON.parse(reply.body.toString()).headers['x-layer']).toBe('route')
    expect(reply.headers['x-layer-back']).toBe('gateway')

    // Without a route layer the balancer's is last upstream.
    const lb = await send(`${url}/balancer/x`)
    expect(JSON.parse(lb.body.toString()).headers['x-layer']).toBe('lb')
    expect(lb.headers['x-layer-back']).toBe('gateway')

    // A route with its own upstream has no balancer layer: only the gateway's.
    const plain = await send(`${url}/plain/x`)
    expect(JSON.parse(plain.body.toString()).headers['x-layer']).toBe('gateway')
  })

  test('function values see the previous layer\'s result, in order', async () => {
    const { url } = await layered(chainLayer)
    const reply = await send(`${url}/route/x`, { headers: { 'x-chain': 'client' } })
    expect(JSON.parse(reply.body.toString()).headers['x-chain']).toBe('client,gateway,lb,route')
    expect(reply.headers['x-chain-back']).toBe('upstream,route,lb,gateway')

    const lb = await send(`${url}/balancer/x`, { headers: { 'x-chain': 'client' } })
    expect(JSON.parse(lb.body.toString()).headers['x-chain']).toBe('client,gateway,lb')
    expect(lb.headers['x-chain-back']).toBe('upstream,lb,gateway')
  })

  test("a later layer's removeHeaders removes what an earlier layer added", async () => {
    const up = await recorder()
    const loadBalancer = new LoadBalancer({
      upstreamServers: [up.url],
      transformers: [new HeaderTransformer({ removeHeaders: ['X-From-Gateway'] })],
    })
    const { url } = await start((gw) => gw.route('/api/{path:path}', { loadBalancer }), {
      transformers: [new HeaderTransformer({ addHeaders: { 'X-From-Gateway': '1', 'X-Stays': '1' } })],
    })
    const seen = echoOf(await send(`${url}/api/x`)).headers
    expect(seen).not.toHaveProperty('x-from-gateway')
    expect(seen['x-stays']).toBe('1')
  })
})

describe('header functions that fail', () => {
  test('a throwing request function → 500 VG_CALLBACK_FAILED, no stack, the upstream is not called', async () => {
    const up = await recorder()
    const headers = new HeaderTransformer({
      addHeaders: {
        'X-Boom': () => {
          throw new Error('header function exploded')
        },
      },
    })
    const { url } = await start((gw) => gw.route('/api/{path:path}', { upstream: up.url, transformers: [headers] }))
    const reply = await send(`${url}/api/x`)
    expectGatewayError(reply, 500, 'VG_CALLBACK_FAILED')
    expect(up.upstream.requests).toBe(0)
    // The gateway keeps serving.
    const again = await send(`${url}/api/x`)
    expect(again.status).toBe(500)
  })

  test('a rejecting async function and a function returning a non-string or a CR/LF value → 500, upstream not called', async () => {
    const up = await recorder()
    const { url } = await start((gw) => {
      gw.route('/reject/{path:path}', {
        upstream: up.url,
        transformers: [new HeaderTransformer({ addHeaders: { 'X-A': async () => Promise.reject(new Error('no')) } })],
      })
      gw.route('/number/{path:path}', {
        upstream: up.url,
        transformers: [new HeaderTransformer({ addHeaders: { 'X-A': (() => 42) as unknown as () => string } })],
      })
      gw.route('/crlf/{path:path}', {
        upstream: up.url,
        transformers: [new HeaderTransformer({ modifyHeaders: { 'X-A': () => 'a\r\nX-Injected: 1' } })],
      })
    })
    expectGatewayError(await send(`${url}/reject/x`), 500, 'VG_CALLBACK_FAILED')
    expectGatewayError(await send(`${url}/number/x`), 500, 'VG_CALLBACK_FAILED')
    expectGatewayError(await send(`${url}/crlf/x`, { headers: { 'x-a': 'present' } }), 500, 'VG_CALLBACK_FAILED')
    expect(up.upstream.requests).toBe(0)
  })

  test("the function's error message does not reach the client (as with a throwing handler)", async () => {
    const up = await recorder()
    const headers = new HeaderTransformer({
      addHeaders: {
        'X-Token': () => {
          throw new Error('vault token s3cr3t-abc expired')
        },
      },
    })
    const body = new BodyTransformer({
      transformFunction: () => {
        throw new Error('db password hunter2 rejected')
      },
    })
    const { url } = await start((gw) => {
      gw.route('/h/{path:path}', { upstream: up.url, transformers: [headers] })
      gw.route('/b/{path:path}', { upstream: up.url, transformers: [body] })
    })
    const h = await send(`${url}/h/x`)
    const b = await send(`${url}/b/x`, { method: 'POST', body: 'x' })
    expectGatewayError(h, 500, 'VG_CALLBACK_FAILED')
    expectGatewayError(b, 500, 'VG_CALLBACK_FAILED')
    expect(h.body.toString()).not.toContain('s3cr3t')
    expect(b.body.toString()).not.toContain('hunter2')
  })

  test('concurrent requests each get their own function result (no cross-talk through the bridge)', async () => {
    const up = await recorder()
    const headers = new HeaderTransformer({
      addHeaders: {
        'X-Echo': async (ctx) => {
          await sleep(Math.floor(Math.random() * 10))
          return `for-${ctx.headers['x-client']}`
        },
      },
    })
    const body = new BodyTransformer({
      transformFunction: async (b) => {
        await sleep(Math.floor(Math.random() * 10))
        return `${b.toString()}!`
      },
    })
    const { url } = await start((gw) => gw.route('/api/{path:path}', { upstream: up.url, transformers: [headers, body] }))
    const replies = await Promise.all(
      Array.from({ length: 40 }, (_, i) => send(`${url}/api/${i}`, { method: 'POST', headers: { 'x-client': String(i) }, body: `body-${i}` })),
    )
    replies.forEach((reply, i) => {
      const echo = echoOf(reply)
      expect(echo.url).toBe(`/api/${i}`)
      expect(echo.headers['x-echo']).toBe(`for-${i}`)
      expect(echo.body).toBe(`body-${i}!`)
    })
  })

  test('a throwing response function → 500 VG_CALLBACK_FAILED (the upstream answered once)', async () => {
    const up = await recorder()
    const headers = new HeaderTransformer({
      responseHeaders: {
        addHeaders: {
          'X-Boom': () => {
            throw new TypeError('response side')
          },
        },
      },
    })
    const { url } = await start((gw) => gw.route('/api/{path:path}', { upstream: up.url, transformers: [headers] }))
    expectGatewayError(await send(`${url}/api/x`), 500, 'VG_CALLBACK_FAILED')
    expect(up.upstream.requests).toBe(1)
  })

  test('a function slower than transformTimeout → 504 VG_CALLBACK_TIMEOUT, the upstream is not called', async () => {
    const up = await recorder()
    let release: () => void = () => {}
    const never = new Promise<string>((resolve) => {
      release = () => resolve('late')
    })
    defer(() => release())
    const headers = new HeaderTransformer({ addHeaders: { 'X-Slow': () => never } })
    const { url } = await start((gw) => gw.route('/api/{path:path}', { upstream: up.url, transformers: [headers] }), {
      transformTimeout: '200ms',
    })
    expectGatewayError(await send(`${url}/api/x`), 504, 'VG_CALLBACK_TIMEOUT')
    expect(up.upstream.requests).toBe(0)
  })
})

describe('HeaderTransformer construction', () => {
  const managed = ['Host', 'Content-Length', 'Connection', 'Transfer-Encoding', 'Keep-Alive', 'Upgrade', 'TE', 'Trailer', 'Proxy-Connection']

  test.each(managed)('%s (managed by the gateway) is refused in every list, naming the option', (name) => {
    const cases: [string, () => unknown][] = [
      ['addHeaders', () => new HeaderTransformer({ addHeaders: { [name]: 'x' } })],
      ['addHeaders', () => new HeaderTransformer({ addHeaders: { [name]: () => 'x' } })],
      ['removeHeaders', () => new HeaderTransformer({ removeHeaders: [name] })],
      ['modifyHeaders', () => new HeaderTransformer({ modifyHeaders: { [name]: (v: string) => v } })],
      ['responseHeaders.addHeaders', () => new HeaderTransformer({ responseHeaders: { addHeaders: { [name]: 'x' } } })],
      ['responseHeaders.removeHeaders', () => new HeaderTransformer({ responseHeaders: { removeHeaders: [name.toLowerCase()] } })],
      ['responseHeaders.modifyHeaders', () => new HeaderTransformer({ responseHeaders: { modifyHeaders: { [name]: 'x' } } })],
    ]
    for (const [option, build] of cases) {
      const err = constructionError(build)
      expect(err.option).toBe(option)
      expect(err.code).toBe('VG_INVALID_OPTION')
      expect(err.message.toLowerCase()).toContain(name.toLowerCase())
    }
  })

  test('bad header names and values are refused', () => {
    for (const bad of ['bad name', 'x:y', '', 'é', 'a\nb']) {
      expect(constructionError(() => new HeaderTransformer({ addHeaders: { [bad]: 'v' } })).option).toBe('addHeaders')
      expect(constructionError(() => new HeaderTransformer({ removeHeaders: [bad] })).option).toBe('removeHeaders')
    }
    for (const bad of ['a\r\nX-Evil: 1', 'nul\0', 'caf\u00e9', '\u20ac']) {
      expect(constructionError(() => new HeaderTransformer({ addHeaders: { 'X-A': bad } })).option).toBe('addHeaders')
      expect(constructionError(() => new HeaderTransformer({ modifyHeaders: { 'X-A': bad } })).option).toBe('modifyHeaders')
    }
    expect(constructionError(() => new HeaderTransformer({ addHeaders: { 'X-A': 1 as unknown as string } })).option).toBe('addHeaders')
    expect(constructionError(() => new HeaderTransformer({ removeHeaders: 'X-A' as unknown as string[] })).option).toBe('removeHeaders')
    expect(constructionError(() => new HeaderTransformer({ addHeader: {} } as never)).message).toContain('addHeader')
    expect(
      constructionError(() => new HeaderTransformer({ responseHeaders: { responseHeaders: {} } } as never)).message,
    ).toContain('responseHeaders')
  })

  test('transformers must be transformer instances (gateway, load balancer, route)', () => {
    const fake = { addHeaders: { 'X-A': 'b' } }
    expect(constructionError(() => new Gateway({ transformers: [fake] as never })).option).toBe('transformers')
    expect(
      constructionError(() => new LoadBalancer({ upstreamServers: ['http://127.0.0.1:1'], transformers: [fake] as never })).option,
    ).toBe('transformers')
    expect(
      constructionError(() => new Gateway().route('/a/{p:path}', { upstream: 'http://127.0.0.1:1', transformers: fake as never })).option,
    ).toBe('transformers')
  })
})

// ---------------------------------------------------------------------------------------
// PathTransformer

describe('PathTransformer', () => {
  const specExample = () =>
    new PathTransformer({ stripPrefix: '/api/v1', pathMappings: { '/users': '/accounts' }, addPrefix: '/internal' })

  test("the spec's example: /api/v1/users/7?x=1 reaches the upstream as /internal/accounts/7?x=1", async () => {
    const up = await recorder()
    const { url } = await start((gw) => gw.route('/api/v1/{path:path}', { upstream: up.url, transformers: [specExample()] }))
    expect(echoOf(await send(`${url}/api/v1/users/7?x=1`)).url).toBe('/internal/accounts/7?x=1')
    expect(echoOf(await send(`${url}/api/v1/users`)).url).toBe('/internal/accounts')
    // Not mapped: stripped and prefixed only. A segment boundary is needed to map.
    expect(echoOf(await send(`${url}/api/v1/orders/3`)).url).toBe('/internal/orders/3')
    expect(echoOf(await send(`${url}/api/v1/usersx/3`)).url).toBe('/internal/usersx/3')
  })

  test('the query passes byte for byte and percent-encoding is kept as sent', async () => {
    const up = await recorder()
    const { port } = await start((gw) => gw.route('/api/v1/{path:path}', { upstream: up.url, transformers: [specExample()] }))
    const reply = await raw(port, 'GET /api/v1/users/a%2Fb/%E2%82%AC/%7e?q=%2F&b=%zz&&c=a+b&e=%E2%82%AC HTTP/1.1')
    expect(reply.statusLine).toBe('HTTP/1.1 200 OK')
    expect(echoOf(reply).url).toBe('/internal/accounts/a%2Fb/%E2%82%AC/%7e?q=%2F&b=%zz&&c=a+b&e=%E2%82%AC')
    const empty = await raw(port, 'GET /api/v1/users/7? HTTP/1.1')
    expect(echoOf(empty).url).toBe('/internal/accounts/7?')
  })

  test('rewrite: a regular expression with numbered and named groups', async () => {
    const up = await recorder()
    const rewrite = new PathTransformer({ rewrite: { pattern: '^/u/(\\d+)/(?P<rest>.*)$', replacement: '/users/$1/${rest}' } })
    const jsRegExp = new PathTransformer({ rewrite: { pattern: /^\/r\/(?<id>\d+)$/, replacement: '/records/${id}' } })
    const { url } = await start((gw) => {
      gw.route('/u/{path:path}', { upstream: up.url, transformers: [rewrite] })
      gw.route('/r/{path:path}', { upstream: up.url, transformers: [jsRegExp] })
    })
    expect(echoOf(await send(`${url}/u/42/profile/photo?size=2`)).url).toBe('/users/42/profile/photo?size=2')
    // No match: left alone.
    expect(echoOf(await send(`${url}/u/abc/x`)).url).toBe('/u/abc/x')
    expect(echoOf(await send(`${url}/r/9`)).url).toBe('/records/9')
  })

  test("the route's pathRewrite (string pattern and RegExp), applied after the transformers' path rules", async () => {
    const up = await recorder()
    const { url } = await start((gw) => {
      gw.route('/v1/{path:path}', { upstream: up.url, pathRewrite: { pattern: '^/v1/(.*)$', replacement: '/v2/$1' } })
      gw.route('/old/{path:path}', { upstream: up.url, pathRewrite: { pattern: /^\/old\/(\w+)$/, replacement: '/new/$1' } })
      gw.route('/both/{path:path}', {
        upstream: up.url,
        transformers: [new PathTransformer({ stripPrefix: '/both' })],
        pathRewrite: { pattern: '^/items/(\\d+)$', replacement: '/catalog/item-$1' },
      })
    })
    expect(echoOf(await send(`${url}/v1/users/7?a=1`)).url).toBe('/v2/users/7?a=1')
    expect(echoOf(await send(`${url}/old/thing`)).url).toBe('/new/thing')
    expect(echoOf(await send(`${url}/old/a/b`)).url).toBe('/old/a/b')
    expect(echoOf(await send(`${url}/both/items/5`)).url).toBe('/catalog/item-5')
  })

  test('several path layers apply in order: gateway, load balancer, route', async () => {
    const up = await recorder()
    const loadBalancer = new LoadBalancer({ upstreamServers: [up.url], transformers: [new PathTransformer({ addPrefix: '/lb' })] })
    const { url } = await start((gw) => gw.route('/api/{path:path}', { loadBalancer, transformers: [new PathTransformer({ addPrefix: '/route' })] }), {
      transformers: [new PathTransformer({ stripPrefix: '/api' })],
    })
    expect(echoOf(await send(`${url}/api/x?y=1`)).url).toBe('/route/lb/x?y=1')
  })

  describe('dot segments → 400 VG_BAD_REQUEST, never forwarded', () => {
    const targets = ['/api/v1/users/../admin', '/api/v1/%2e%2e/admin', '/api/v1/users/.%2E/x', '/api/v1/./users', '/api/v1/users/%2E']

    test.each(targets)('%s on a route with a PathTransformer', async (target) => {
      const up = await recorder()
      const { port } = await start((gw) => gw.route('/api/v1/{path:path}', { upstream: up.url, transformers: [specExample()] }))
      const reply = await raw(port, `GET ${target} HTTP/1.1`)
      expect(reply.statusLine).toBe('HTTP/1.1 400 Bad Request')
      expect(JSON.parse(reply.body.toString()).code).toBe('VG_BAD_REQUEST')
      expect(up.upstream.requests).toBe(0)
    })

    test.each(targets)('%s on a plain route without transformers', async (target) => {
      const up = await recorder()
      const { port } = await start((gw) => gw.route('/api/v1/{path:path}', { upstream: up.url }), { requestId: false, stripIncomingHeaders: false })
      const reply = await raw(port, `GET ${target} HTTP/1.1`)
      expect(reply.statusLine).toBe('HTTP/1.1 400 Bad Request')
      expect(JSON.parse(reply.body.toString()).code).toBe('VG_BAD_REQUEST')
      expect(up.upstream.requests).toBe(0)
    })

    test('a rewrite whose result would have a dot segment is refused too', async () => {
      const up = await recorder()
      const { port } = await start((gw) =>
        gw.route('/d/{path:path}', { upstream: up.url, pathRewrite: { pattern: '^/d/([^/-]+)-([^/]+)$', replacement: '/$1/$2' } }),
      )
      const ok = await raw(port, 'GET /d/a-b HTTP/1.1')
      expect(echoOf(ok).url).toBe('/a/b')
      const reply = await raw(port, 'GET /d/..-admin HTTP/1.1')
      expect(reply.statusLine).toBe('HTTP/1.1 400 Bad Request')
      expect(JSON.parse(reply.body.toString()).code).toBe('VG_BAD_REQUEST')
      expect(up.upstream.requests).toBe(1)
    })

    test('dots inside a segment are ordinary characters', async () => {
      const up = await recorder()
      const { port } = await start((gw) => gw.route('/api/v1/{path:path}', { upstream: up.url, transformers: [specExample()] }))
      const reply = await raw(port, 'GET /api/v1/users/a..b/.../v1.2?x=.. HTTP/1.1')
      expect(echoOf(reply).url).toBe('/internal/accounts/a..b/.../v1.2?x=..')
    })
  })

  test('an invalid regular expression is a ConfigError (naming rewrite / pathRewrite) when the transformer or route is built', () => {
    const outcomes: string[] = []
    const expected: string[] = []
    for (const pattern of ['([', '(?=x)a', 'a{2,1}']) {
      outcomes.push(
        outcomeOf(() => {
          const t = new PathTransformer({ rewrite: { pattern, replacement: '/x' } })
          new Gateway().route('/a/{p:path}', { upstream: 'http://127.0.0.1:1', transformers: [t] })
        }),
        outcomeOf(() => new Gateway().route('/a/{p:path}', { upstream: 'http://127.0.0.1:1', pathRewrite: { pattern, replacement: '/x' } })),
      )
      expected.push('ConfigError rewrite', 'ConfigError pathRewrite')
    }
    expect(outcomes).toEqual(expected)
  })

  test('other bad path options are ConfigErrors naming the option', () => {
    expect(constructionError(() => new PathTransformer({ stripPrefix: 'api' })).option).toBe('stripPrefix')
    expect(constructionError(() => new PathTransformer({ addPrefix: '/a?b' })).option).toBe('addPrefix')
    expect(constructionError(() => new PathTransformer({ pathMappings: { users: '/accounts' } })).option).toBe('pathMappings')
    expect(constructionError(() => new PathTransformer({ pathMappings: { '/users': 'accounts' } })).option).toBe('pathMappings')
    expect(constructionError(() => new PathTransformer({ rewrite: { pattern: /x/i, replacement: '/y' } })).option).toBe('rewrite')
    expect(constructionError(() => new PathTransformer({ rewrite: { pattern: '', replacement: '/y' } })).option).toBe('rewrite')
    expect(constructionError(() => new PathTransformer({ rewrite: '^/a$' as never })).option).toBe('rewrite')
    expect(
      constructionError(() => new Gateway().route('/a/{p:path}', { upstream: 'http://127.0.0.1:1', pathRewrite: { pattern: '^/a$' } as never })).option,
    ).toBe('pathRewrite')
  })

  test('a prefix or mapping with a dot segment or a trailing slash is refused at construction', () => {
    const build = (options: ConstructorParameters<typeof PathTransformer>[0]) => () =>
      new Gateway().route('/a/{p:path}', { upstream: 'http://127.0.0.1:1', transformers: [new PathTransformer(options)] })
    expect([
      outcomeOf(build({ addPrefix: '/internal/' })),
      outcomeOf(build({ addPrefix: '/a/../b' })),
      outcomeOf(build({ stripPrefix: '/a/' })),
      outcomeOf(build({ stripPrefix: '/a/%2e%2e' })),
      outcomeOf(build({ pathMappings: { '/users': '/a/../admin' } })),
    ]).toEqual([
      'ConfigError addPrefix',
      'ConfigError addPrefix',
      'ConfigError stripPrefix',
      'ConfigError stripPrefix',
      'ConfigError pathMappings',
    ])
  })
})

// ---------------------------------------------------------------------------------------
// BodyTransformer

describe('BodyTransformer', () => {
  const addBy = new BodyTransformer({
    transformFunction: (body) => JSON.stringify({ ...JSON.parse(body.toString('utf8')), _by: 'gw' }),
    contentTypes: ['application/json'],
  })

  test('request: a JSON body is rewritten and sent with a correct Content-Length', async () => {
    const up = await recorder()
    const { url } = await start((gw) => gw.route('/api/{path:path}', { upstream: up.url, transformers: [addBy] }))
    const reply = await send(`${url}/api/users`, {
      method: 'POST',
      headers: { 'content-type': 'application/json; charset=utf-8' },
      body: JSON.stringify({ name: 'Zoë' }),
    })
    const seen = echoOf(reply)
    expect(JSON.parse(seen.body)).toEqual({ name: 'Zoë', _by: 'gw' })
    expect(seen.headers['content-length']).toBe(String(Buffer.byteLength(seen.body)))
    expect(seen.bodyLength).toBe(Buffer.byteLength(seen.body))
    expect(seen.headers).not.toHaveProperty('transfer-encoding')
  })

  test('request: a chunked JSON body reaches the upstream rewritten, with Content-Length instead of chunked', async () => {
    const up = await recorder()
    const { port } = await start((gw) => gw.route('/api/{path:path}', { upstream: up.url, transformers: [addBy] }))
    const reply = await raw(
      port,
      'POST /api/users HTTP/1.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked',
      '5\r\n{"a":\r\n3\r\n1}\n\r\n0\r\n\r\n',
    )
    expect(reply.statusLine).toBe('HTTP/1.1 200 OK')
    const seen = echoOf(reply)
    expect(JSON.parse(seen.body)).toEqual({ a: 1, _by: 'gw' })
    expect(seen.headers['content-length']).toBe(String(Buffer.byteLength(seen.body)))
    expect(seen.headers).not.toHaveProperty('transfer-encoding')
  })

  test('contentTypes: other media types stream untouched, byte for byte, with their framing', async () => {
    const up = await recorder()
    let calls = 0
    const jsonOnly = new BodyTransformer({
      transformFunction: (b) => {
        calls++
        return b
      },
      contentTypes: ['application/json', 'text/'],
    })
    const { port, url } = await start((gw) => gw.route('/api/{path:path}', { upstream: up.url, transformers: [jsonOnly] }))
    const binary = Buffer.from([0, 1, 2, 0xff, 0xfe, 0x0d, 0x0a, 0x80])
    const reply = await send(`${url}/api/bin`, { method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, body: [binary, binary] })
    const seen = echoOf(reply)
    expect(seen.headers['transfer-encoding']).toBe('chunked')
    expect(seen.headers).not.toHaveProperty('content-length')
    expect((seen as Echo & { bodyHex: string }).bodyHex).toBe(Buffer.concat([binary, binary]).toString('hex'))

    const sized = echoOf(
      await raw(port, 'POST /api/xml HTTP/1.1\r\nContent-Type: application/xml\r\nContent-Length: 7', '<a>b</a'),
    )
    expect(sized.headers['content-length']).toBe('7')
    expect(sized.body).toBe('<a>b</a')
    // A family ('text/') matches any subtype; parameters are ignored.
    echoOf(await send(`${url}/api/t`, { method: 'POST', headers: { 'content-type': 'Text/CSV; charset=utf-8' }, body: 'a,b' }))
    expect(calls).toBe(1)
  })

  test('a request body over maxBodySize → 413 VG_BODY_TOO_LARGE, the upstream is not called (Content-Length and chunked)', async () => {
    const up = await recorder()
    let calls = 0
    const small = new BodyTransformer({
      transformFunction: (b) => {
        calls++
        return b
      },
      maxBodySize: 16,
    })
    const { url } = await start((gw) => gw.route('/api/{path:path}', { upstream: up.url, transformers: [small] }))
    expectGatewayError(await send(`${url}/api/x`, { method: 'POST', body: 'x'.repeat(17) }), 413, 'VG_BODY_TOO_LARGE')
    expectGatewayError(await send(`${url}/api/x`, { method: 'POST', body: ['x'.repeat(10), 'y'.repeat(10)] }), 413, 'VG_BODY_TOO_LARGE')
    expect(up.upstream.requests).toBe(0)
    expect(calls).toBe(0)
    // At the limit: transformed and forwarded.
    expect(echoOf(await send(`${url}/api/x`, { method: 'POST', body: 'x'.repeat(16) })).bodyLength).toBe(16)
    expect(calls).toBe(1)
  })

  test('a throwing transformFunction → 500 VG_CALLBACK_FAILED, the upstream is not called', async () => {
    const up = await recorder()
    const { url } = await start((gw) => gw.route('/api/{path:path}', { upstream: up.url, transformers: [addBy] }))
    const reply = await send(`${url}/api/x`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{not json' })
    expectGatewayError(reply, 500, 'VG_CALLBACK_FAILED')
    expect(up.upstream.requests).toBe(0)
  })

  test('a transformFunction returning something other than a string or bytes → 500', async () => {
    const up = await recorder()
    const bad = new BodyTransformer({ transformFunction: (() => ({ not: 'a body' })) as never })
    const { url } = await start((gw) => gw.route('/api/{path:path}', { upstream: up.url, transformers: [bad] }))
    expectGatewayError(await send(`${url}/api/x`, { method: 'POST', body: 'x' }), 500, 'VG_CALLBACK_FAILED')
    expect(up.upstream.requests).toBe(0)
  })

  test('a slow transformFunction → 504 VG_CALLBACK_TIMEOUT after transformTimeout', async () => {
    const up = await recorder()
    let release: () => void = () => {}
    const slow = new BodyTransformer({
      transformFunction: () =>
        new Promise<string>((resolve) => {
          release = () => resolve('late')
        }),
    })
    defer(() => release())
    const { url } = await start((gw) => gw.route('/api/{path:path}', { upstream: up.url, transformers: [slow] }), { transformTimeout: '200ms' })
    expectGatewayError(await send(`${url}/api/x`, { method: 'POST', body: 'x' }), 504, 'VG_CALLBACK_TIMEOUT')
    expect(up.upstream.requests).toBe(0)
  })

  test('a request without a body (GET, DELETE) is not passed to a request body function and gets no Content-Length', async () => {
    const up = await recorder()
    let calls = 0
    const all = new BodyTransformer({
      transformFunction: (b) => {
        calls++
        return b
      },
    })
    const { url } = await start((gw) => gw.route('/api/{path:path}', { upstream: up.url, transformers: [all] }))
    const outcomes = []
    for (const method of ['GET', 'DELETE']) {
      const reply = await send(`${url}/api/x`, { method })
      outcomes.push({ method, status: reply.status, contentLength: echoOf(reply).headers['content-length'] })
    }
    expect({ outcomes, calls }).toEqual({
      outcomes: [
        { method: 'GET', status: 200, contentLength: undefined },
        { method: 'DELETE', status: 200, contentLength: undefined },
      ],
      calls: 0,
    })
  })

  test("the spec's JSON function with the default contentTypes does not fail a GET", async () => {
    const up = await recorder()
    const json = new BodyTransformer({ transformFunction: (body) => JSON.stringify({ ...JSON.parse(body.toString()), _by: 'gw' }) })
    const { url } = await start((gw) => gw.route('/api/{path:path}', { upstream: up.url, transformers: [json] }))
    expect((await send(`${url}/api/x`)).status).toBe(200)
    const post = echoOf(await send(`${url}/api/x`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"a":1}' }))
    expect(JSON.parse(post.body)).toEqual({ a: 1, _by: 'gw' })
  })

  describe('response direction', () => {
    async function jsonUpstream(chunked: boolean, payload = JSON.stringify({ id: 7, secret: 'hunter2' })) {
      return startUpstream(async (req, res) => {
        await readAll(req)
        res.setHeader('content-type', 'application/json')
        if (!chunked) res.setHeader('content-length', Buffer.byteLength(payload))
        if (chunked) {
          res.write(payload.slice(0, 5))
          await sleep(5)
          res.end(payload.slice(5))
        } else res.end(payload)
      })
    }
    const redact = new BodyTransformer({
      direction: 'response',
      contentTypes: ['application/json'],
      transformFunction: (body) => {
        const data = JSON.parse(body.toString())
        delete data.secret
        return JSON.stringify({ ...data, redacted: true })
      },
    })

    test.each([false, true])('the upstream body is rewritten and the client gets a correct Content-Length (upstream chunked: %s)', async (chunked) => {
      const upstream = await jsonUpstream(chunked)
      const { port } = await start((gw) => gw.route('/api/{path:path}', { upstream: upstream.url, transformers: [redact] }))
      const reply = await raw(port, 'GET /api/x HTTP/1.1')
      expect(reply.statusLine).toBe('HTTP/1.1 200 OK')
      expect(JSON.parse(reply.body.toString())).toEqual({ id: 7, redacted: true })
      expect(headerOf(reply, 'content-length')).toEqual([String(reply.body.length)])
      expect(headerOf(reply, 'transfer-encoding')).toEqual([])
    })

    test('a request body is not touched by a response-only transformer', async () => {
      const up = await recorder()
      const { url } = await start((gw) => gw.route('/api/{path:path}', { upstream: up.url, transformers: [redact] }))
      const reply = await send(`${url}/api/x`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"secret":"s"}' })
      const echoed = JSON.parse(reply.body.toString())
      // The echo is the response: redacted; the body it reports was the client's.
      expect(echoed.redacted).toBe(true)
      expect(echoed.body).toBe('{"secret":"s"}')
    })

    test('a response over maxBodySize → 502 (no partial body)', async () => {
      const big = JSON.stringify({ data: 'x'.repeat(200) })
      for (const chunked of [false, true]) {
        const upstream = await jsonUpstream(chunked, big)
        const limited = new BodyTransformer({ direction: 'response', maxBodySize: 100, transformFunction: (b) => b })
        const { url } = await start((gw) => gw.route('/api/{path:path}', { upstream: upstream.url, transformers: [limited] }))
        const reply = await send(`${url}/api/x`)
        expect(reply.status).toBe(502)
        expect(errorOf(reply).code).toBe('VG_UPSTREAM_PROTOCOL')
      }
    })

    test('HEAD, 204 and 304 responses are not passed to the function', async () => {
      let calls = 0
      const upstream = await startUpstream((req, res) => {
        if (req.url?.endsWith('/204')) {
          res.statusCode = 204
          return res.end()
        }
        if (req.url?.endsWith('/304')) {
          res.statusCode = 304
          return res.end()
        }
        res.setHeader('content-type', 'text/plain')
        res.setHeader('content-length', '5')
        res.end(req.method === 'HEAD' ? undefined : 'hello')
      })
      const counting = new BodyTransformer({
        direction: 'response',
        transformFunction: (b) => {
          calls++
          return b.toString().toUpperCase()
        },
      })
      const { url } = await start((gw) => gw.route('/api/{path:path}', { upstream: upstream.url, transformers: [counting] }))
      const head = await send(`${url}/api/x`, { method: 'HEAD' })
      expect(head.status).toBe(200)
      expect(head.headers['content-length']).toBe('5')
      expect((await send(`${url}/api/204`)).status).toBe(204)
      expect((await send(`${url}/api/304`)).status).toBe(304)
      expect(calls).toBe(0)
      const get = await send(`${url}/api/x`)
      expect(get.body.toString()).toBe('HELLO')
      expect(calls).toBe(1)
    })

    test('a throwing response function → 500 VG_CALLBACK_FAILED', async () => {
      const upstream = await jsonUpstream(false)
      const failing = new BodyTransformer({
        direction: 'response',
        transformFunction: () => {
          throw new Error('nope')
        },
      })
      const { url } = await start((gw) => gw.route('/api/{path:path}', { upstream: upstream.url, transformers: [failing] }))
      expectGatewayError(await send(`${url}/api/x`), 500, 'VG_CALLBACK_FAILED')
    })
  })

  test("direction 'both': one function sees the request body, then the response body", async () => {
    const upstream = await startUpstream(async (req, res) => {
      const body = (await readAll(req)).toString()
      res.setHeader('content-type', 'text/plain')
      res.end(`upstream got [${body}]`)
    })
    const seen: string[] = []
    const both = new BodyTransformer({
      direction: 'both',
      contentTypes: ['text/plain'],
      transformFunction: async (body, contentType) => {
        seen.push(`${contentType}: ${body.toString()}`)
        await sleep(1)
        return Buffer.from(`<${body.toString()}>`)
      },
    })
    const { url } = await start((gw) => gw.route('/api/{path:path}', { upstream: upstream.url, transformers: [both] }))
    const reply = await send(`${url}/api/x`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'hi' })
    expect(reply.body.toString()).toBe('<upstream got [<hi>]>')
    expect(reply.headers['content-length']).toBe(String(reply.body.length))
    expect(seen).toEqual(['text/plain: hi', 'text/plain: upstream got [<hi>]'])
  })

  test('body layers: gateway → load balancer → route on requests, route → load balancer → gateway on responses', async () => {
    const upstream = await startUpstream(async (req, res) => {
      const body = (await readAll(req)).toString()
      res.setHeader('content-type', 'text/plain')
      res.end(`up(${body})`)
    })
    const wrap = (name: string) => new BodyTransformer({ direction: 'both', transformFunction: (b) => `${name}(${b.toString()})` })
    const loadBalancer = new LoadBalancer({ upstreamServers: [upstream.url], transformers: [wrap('lb')] })
    const { url } = await start((gw) => gw.route('/api/{path:path}', { loadBalancer, transformers: [wrap('route')] }), {
      transformers: [wrap('gw')],
    })
    const reply = await send(`${url}/api/x`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'c' })
    // The request is wrapped gateway first (innermost), the response route first.
    expect(reply.body.toString()).toBe('gw(lb(route(up(route(lb(gw(c)))))))')
  })

  test('a function may return a string (sent as UTF-8), a Buffer, a Uint8Array, sync or async; several apply in order', async () => {
    const up = await recorder()
    const asString = new BodyTransformer({ transformFunction: (b) => `${b.toString()}€` })
    const asBuffer = new BodyTransformer({ transformFunction: async (b) => Buffer.concat([b, Buffer.from([0x21])]) })
    const asView = new BodyTransformer({ transformFunction: (b) => new Uint8Array(Buffer.concat([Buffer.from('['), b, Buffer.from(']')])) })
    const { url } = await start((gw) => {
      gw.route('/string/{path:path}', { upstream: up.url, transformers: [asString] })
      gw.route('/chain/{path:path}', { upstream: up.url, transformers: [asString, asBuffer, asView] })
    })
    const a = echoOf(await send(`${url}/string/x`, { method: 'POST', body: 'price: 5' }))
    expect(a.body).toBe('price: 5€')
    expect(a.headers['content-length']).toBe(String(Buffer.byteLength('price: 5€')))
    const b = echoOf(await send(`${url}/chain/x`, { method: 'POST', body: 'x' }))
    expect(b.body).toBe('[x€!]')
    expect(b.bodyLength).toBe(Buffer.byteLength('[x€!]'))
  })

  test('construction: bad options are ConfigErrors naming the option', () => {
    expect(constructionError(() => new BodyTransformer({ transformFunction: 'x' as never })).option).toBe('transformFunction')
    expect(constructionError(() => new BodyTransformer({ transformFunction: (b) => b, contentTypes: ['json'] })).option).toBe('contentTypes')
    expect(constructionError(() => new BodyTransformer({ transformFunction: (b) => b, maxBodySize: -1 })).option).toBe('maxBodySize')
    expect(constructionError(() => new BodyTransformer({ transformFunction: (b) => b, maxBodySize: 1.5 })).option).toBe('maxBodySize')
    expect(constructionError(() => new BodyTransformer({ transformFunction: (b) => b, direction: 'up' as never })).option).toBe('direction')
  })
})

// ---------------------------------------------------------------------------------------
// Route options alongside transformers

describe('route options', () => {
  test('headersToAdd / headersToRemove apply after the transformers (static values)', async () => {
    const up = await recorder()
    const headers = new HeaderTransformer({ addHeaders: { 'X-Who': 'transformer', 'X-Drop': 'transformer' } })
    const { url } = await start((gw) =>
      gw.route('/api/{path:path}', {
        upstream: up.url,
        transformers: [headers],
        headersToAdd: { 'X-Who': 'route', 'X-Api-Version': '2' },
        headersToRemove: ['X-Drop', 'X-Debug'],
      }),
    )
    const seen = echoOf(await send(`${url}/api/x`, { headers: { 'x-debug': '1' } })).headers
    expect(seen['x-who']).toBe('route')
    expect(seen['x-api-version']).toBe('2')
    expect(seen).not.toHaveProperty('x-drop')
    expect(seen).not.toHaveProperty('x-debug')
  })

  test('headersToAdd / headersToRemove refuse function values, bad values and managed headers, naming their own option', () => {
    const route = (options: object) => () => new Gateway().route('/a/{p:path}', { upstream: 'http://127.0.0.1:1', ...options })
    expect([
      outcomeOf(route({ headersToAdd: { 'X-Id': () => randomUUID() } })),
      outcomeOf(route({ headersToAdd: { 'X-A': 'a\nb' } })),
      outcomeOf(route({ headersToAdd: { Host: 'example.com' } })),
      outcomeOf(route({ headersToAdd: { 'bad name': 'v' } })),
      outcomeOf(route({ headersToRemove: ['Content-Length'] })),
      outcomeOf(route({ headersToRemove: 'X-A' })),
    ]).toEqual([
      'ConfigError headersToAdd',
      'ConfigError headersToAdd',
      'ConfigError headersToAdd',
      'ConfigError headersToAdd',
      'ConfigError headersToRemove',
      'ConfigError headersToRemove',
    ])
  })

  describe('maxRetries', () => {
    /** An upstream answering 503 to its first `failures` requests, then 200. */
    async function flaky(failures: number) {
      let n = 0
      return startUpstream((_req, res) => {
        n++
        res.statusCode = n <= failures ? 503 : 200
        res.end(`attempt ${n}`)
      })
    }

    test('maxRetries: 1 → exactly 2 attempts; the header function runs once per request, not per attempt', async () => {
      const upstream = await flaky(1)
      let calls = 0
      const headers = new HeaderTransformer({
        addHeaders: {
          'X-Id': () => {
            calls++
            return String(calls)
          },
        },
      })
      const { url } = await start((gw) => gw.route('/api/{path:path}', { upstream: upstream.url, maxRetries: 1, transformers: [headers] }))
      const reply = await send(`${url}/api/x`)
      expect(reply.status).toBe(200)
      expect(reply.body.toString()).toBe('attempt 2')
      expect(upstream.requests).toBe(2)
      expect(calls).toBe(1)
    })

    test('maxRetries: 1 across two servers that both fail → 2 attempts, then the 503', async () => {
      const a = await flaky(99)
      const b = await flaky(99)
      const loadBalancer = new LoadBalancer({ upstreamServers: [a.url, b.url] })
      const { url } = await start((gw) => gw.route('/api/{path:path}', { loadBalancer, maxRetries: 1 }))
      const reply = await send(`${url}/api/x`)
      expect(reply.status).toBe(503)
      expect(a.requests + b.requests).toBe(2)
      // A retry prefers another server.
      expect([a.requests, b.requests]).toEqual([1, 1])
    })

    test('maxRetries: 0 → one attempt, even when the gateway has retries', async () => {
      const upstream = await flaky(1)
      const { url } = await start((gw) => gw.route('/api/{path:path}', { upstream: upstream.url, maxRetries: 0 }), {
        retryConfig: new RetryConfig({ maxAttempts: 3, baseDelay: '10ms' }),
      })
      const reply = await send(`${url}/api/x`)
      expect(reply.status).toBe(503)
      expect(upstream.requests).toBe(1)
    })

    test('maxRetries with a request body transformer: the rewritten body is what each attempt sends', async () => {
      let n = 0
      const bodies: string[] = []
      const upstream = await startUpstream(async (req, res) => {
        bodies.push((await readAll(req)).toString())
        n++
        res.statusCode = n === 1 ? 503 : 200
        res.end('ok')
      })
      const upper = new BodyTransformer({ transformFunction: (b) => b.toString().toUpperCase() })
      const { url } = await start((gw) => gw.route('/api/{path:path}', { upstream: upstream.url, maxRetries: 2, transformers: [upper] }), {})
      const reply = await send(`${url}/api/x`, { method: 'PUT', body: 'abc' })
      expect(reply.status).toBe(200)
      expect(bodies).toEqual(['ABC', 'ABC'])
    })

    test('maxRetries with retryConfig, or out of range → ConfigError', () => {
      const route = (options: object) => () => new Gateway().route('/a/{p:path}', { upstream: 'http://127.0.0.1:1', ...options })
      expect(constructionError(route({ maxRetries: 1, retryConfig: new RetryConfig({ maxAttempts: 2 }) })).option).toBe('maxRetries')
      expect(constructionError(route({ maxRetries: -1 })).option).toBe('maxRetries')
      expect(constructionError(route({ maxRetries: 1.5 })).option).toBe('maxRetries')
      expect(constructionError(route({ maxRetries: '2' })).option).toBe('maxRetries')
    })
  })

  test('stripPath, preserveHost and methods still work with header transformers', async () => {
    const up = await recorder()
    const headers = new HeaderTransformer({ addHeaders: { 'X-Via': 'gw' } })
    const { url } = await start(
      (gw) => gw.route('/svc/{path:path}', { upstream: up.url, stripPath: true, preserveHost: true, methods: ['GET'], transformers: [headers] }),
      {},
      '/gw',
    )
    const seen = echoOf(await send(`${url}/gw/svc/users/7?x=1`, { headers: { host: 'public.example' } }))
    expect(seen.url).toBe('/users/7?x=1')
    expect(seen.headers.host).toBe('public.example')
    expect(seen.headers['x-via']).toBe('gw')
    const post = await send(`${url}/gw/svc/users/7`, { method: 'POST', body: 'x' })
    expect(post.status).toBe(405)
    expect(up.upstream.requests).toBe(1)
  })

  test('stripPath with a PathTransformer: the path rules apply to the forwarded (stripped) path', async () => {
    const up = await recorder()
    const { url } = await start(
      (gw) => gw.route('/svc/{path:path}', { upstream: up.url, stripPath: true, transformers: [new PathTransformer({ addPrefix: '/internal' })] }),
      {},
      '/gw',
    )
    expect(echoOf(await send(`${url}/gw/svc/users/7?x=1`)).url).toBe('/internal/users/7?x=1')
  })

  test('path rules see the whole request path, the includeRouter prefix included', async () => {
    const up = await recorder()
    const { url } = await start(
      (gw) => gw.route('/api/v1/{path:path}', { upstream: up.url, transformers: [new PathTransformer({ stripPrefix: '/gw/api/v1', addPrefix: '/internal' })] }),
      {},
      '/gw',
    )
    expect(echoOf(await send(`${url}/gw/api/v1/users/7`)).url).toBe('/internal/users/7')
  })

  test('the route timeout still answers 504 when the route has transformers', async () => {
    const upstream = await startUpstream(async (_req, res) => {
      await sleep(3_000)
      res.end('late')
    })
    const headers = new HeaderTransformer({ addHeaders: { 'X-Fn': () => 'v' } })
    const { url } = await start((gw) => gw.route('/api/{path:path}', { upstream: upstream.url, timeout: '300ms', transformers: [headers] }))
    expectGatewayError(await send(`${url}/api/x`), 504, 'VG_UPSTREAM_TIMEOUT')
  })
})

// ---------------------------------------------------------------------------------------
// Request id

describe('request id', () => {
  test('by default an X-Request-ID (UUID v4) is generated, sent upstream and returned; it differs per request', async () => {
    const up = await recorder()
    const { url } = await start((gw) => gw.route('/api/{path:path}', { upstream: up.url }))
    const a = await send(`${url}/api/x`)
    const b = await send(`${url}/api/x`)
    for (const reply of [a, b]) {
      const id = reply.headers['x-request-id']
      expect(id).toMatch(UUID_V4)
      expect(echoOf(reply).headers['x-request-id']).toBe(id)
    }
    expect(a.headers['x-request-id']).not.toBe(b.headers['x-request-id'])
    // Many requests, no repeats.
    const ids = new Set<string>()
    for (let i = 0; i < 20; i++) ids.add(String((await send(`${url}/api/x`)).headers['x-request-id']))
    expect(ids.size).toBe(20)
  })

  test("a client's id is kept, sent upstream and echoed", async () => {
    const up = await recorder()
    const { url } = await start((gw) => gw.route('/api/{path:path}', { upstream: up.url }))
    const reply = await send(`${url}/api/x`, { headers: { 'X-Request-ID': 'client-abc-123' } })
    expect(echoOf(reply).headers['x-request-id']).toBe('client-abc-123')
    expect(reply.headers['x-request-id']).toBe('client-abc-123')
  })

  test('the id replaces one the upstream sets on its response', async () => {
    const upstream = await startUpstream((_req, res) => {
      res.setHeader('X-Request-ID', 'upstream-made')
      res.end('ok')
    })
    const { url } = await start((gw) => gw.route('/api/{path:path}', { upstream: upstream.url }))
    const reply = await send(`${url}/api/x`, { headers: { 'x-request-id': 'mine' } })
    expect(reply.headers['x-request-id']).toBe('mine')
  })

  test("the id is also on the gateway's own error responses (502, 413, 500)", async () => {
    const up = await recorder()
    const { url } = await start((gw) => {
      gw.route('/refused/{path:path}', { upstream: 'http://127.0.0.1:1' })
      gw.route('/small/{path:path}', { upstream: up.url, transformers: [new BodyTransformer({ maxBodySize: 1, transformFunction: (b) => b })] })
      gw.route('/fails/{path:path}', {
        upstream: up.url,
        transformers: [
          new HeaderTransformer({
            addHeaders: {
              'X-A': () => {
                throw new Error('x')
              },
            },
          }),
        ],
      })
    })
    const outcomes = []
    for (const [path, method, body] of [
      ['/refused/x', 'GET', undefined],
      ['/small/x', 'POST', 'abc'],
      ['/fails/x', 'GET', undefined],
    ] as const) {
      const reply = await send(`${url}${path}`, { method, body, headers: { 'x-request-id': `id-${path}` } })
      outcomes.push({ status: reply.status, id: reply.headers['x-request-id'] })
    }
    expect(outcomes).toEqual([
      { status: 502, id: 'id-/refused/x' },
      { status: 413, id: 'id-/small/x' },
      { status: 500, id: 'id-/fails/x' },
    ])
  })

  test('requestId: false → none generated or returned', async () => {
    const up = await recorder()
    const { url } = await start((gw) => gw.route('/api/{path:path}', { upstream: up.url }), { requestId: false })
    const reply = await send(`${url}/api/x`)
    expect(echoOf(reply).headers).not.toHaveProperty('x-request-id')
    expect(reply.headers).not.toHaveProperty('x-request-id')
  })

  test("requestId: { header: 'X-Correlation-ID' } renames it", async () => {
    const up = await recorder()
    const { url } = await start((gw) => gw.route('/api/{path:path}', { upstream: up.url }), { requestId: { header: 'X-Correlation-ID' } })
    const reply = await send(`${url}/api/x`)
    const id = reply.headers['x-correlation-id']
    expect(id).toMatch(UUID_V4)
    expect(echoOf(reply).headers['x-correlation-id']).toBe(id)
    expect(echoOf(reply).headers).not.toHaveProperty('x-request-id')
    expect(reply.headers).not.toHaveProperty('x-request-id')

    const kept = await send(`${url}/api/x`, { headers: { 'x-correlation-id': 'corr-1' } })
    expect(kept.headers['x-correlation-id']).toBe('corr-1')
    expect(echoOf(kept).headers['x-correlation-id']).toBe('corr-1')
  })

  test('header functions see the request id', async () => {
    const up = await recorder()
    const headers = new HeaderTransformer({ addHeaders: { 'X-Seen-Id': (ctx) => ctx.headers['x-request-id'] ?? 'none' } })
    const { url } = await start((gw) => gw.route('/api/{path:path}', { upstream: up.url, transformers: [headers] }))
    const reply = await send(`${url}/api/x`)
    expect(echoOf(reply).headers['x-seen-id']).toBe(reply.headers['x-request-id'])
  })

  test('bad requestId options are ConfigErrors', () => {
    for (const bad of [{ header: 'bad name' }, { header: '' }, 'X-Id', { name: 'X-Id' }, null]) {
      expect(constructionError(() => new Gateway({ requestId: bad as never })).option).toBe('requestId')
    }
  })
})
