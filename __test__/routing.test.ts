/**
 * Routes, load balancing and the upstream connection pool: stripPath, includeRouter
 * prefixes, single-URL routes, round robin, and keep-alive reuse to the upstream.
 */
import http from 'node:http'
import { afterEach, describe, expect, test } from 'vitest'
import { Gateway, LoadBalancer, RoundRobinStrategy, Velithon } from 'velithon-gateway'
import { closeAll, defer, echoHandler, echoOf, listen, send, sleep, startProxy, startUpstream } from './helpers/net'

afterEach(closeAll)

describe('paths', () => {
  test('without stripPath the full incoming path is forwarded', async () => {
    const upstream = await startUpstream(echoHandler())
    const proxy = await startProxy({ upstreams: [upstream.url], route: { stripPath: false } })
    expect(echoOf(await send(`${proxy.url}/gw/api/users/42?x=1`)).url).toBe('/gw/api/users/42?x=1')
  })

  test('stripPath removes the prefix and the part before {path:path}', async () => {
    const upstream = await startUpstream(echoHandler())
    const proxy = await startProxy({ upstreams: [upstream.url], route: { stripPath: true } })
    expect(echoOf(await send(`${proxy.url}/gw/api/users/42?x=1`)).url).toBe('/users/42?x=1')
    expect(echoOf(await send(`${proxy.url}/gw/api/`)).url).toBe('/')
    expect(echoOf(await send(`${proxy.url}/gw/api`)).url).toBe('/')
    expect(echoOf(await send(`${proxy.url}/gw/api/a/b/c/`)).url).toBe('/a/b/c/')
  })

  test("an upstream URL with a path puts it before every forwarded path", async () => {
    const upstream = await startUpstream(echoHandler())
    const proxy = await startProxy({ upstreams: [`${upstream.url}/base/v1`], route: { stripPath: true } })
    expect(echoOf(await send(`${proxy.url}/gw/api/users?id=7`)).url).toBe('/base/v1/users?id=7')
  })

  test('the includeRouter prefix is part of the route, and routes without a prefix work too', async () => {
    const upstreamA = await startUpstream(echoHandler('a'))
    const upstreamB = await startUpstream(echoHandler('b'))
    const gatewayA = new Gateway({})
    gatewayA.route('/svc/{path:path}', { upstream: upstreamA.url, stripPath: true })
    const gatewayB = new Gateway({})
    gatewayB.route('/svc/{path:path}', { upstream: upstreamB.url })
    const app = new Velithon({ workerThreads: 1 })
    app.includeRouter(gatewayA.getRouter(), { prefix: '/v1' })
    app.includeRouter(gatewayB.getRouter())
    const { url } = await listen(app)

    const viaPrefix = echoOf(await send(`${url}/v1/svc/items`))
    expect(viaPrefix.name).toBe('a')
    expect(viaPrefix.url).toBe('/items')
    const noPrefix = echoOf(await send(`${url}/svc/items`))
    expect(noPrefix.name).toBe('b')
    expect(noPrefix.url).toBe('/svc/items')
    expect((await send(`${url}/v2/svc/items`)).status).toBe(404)
  })

  test('routes added to a gateway after includeRouter (but before listen) are served', async () => {
    const upstream = await startUpstream(echoHandler('late'))
    const gateway = new Gateway({})
    const app = new Velithon({ workerThreads: 1 })
    app.includeRouter(gateway.getRouter(), { prefix: '/p' })
    gateway.route('/late/{path:path}', { upstream: upstream.url })
    const { url } = await listen(app)
    expect(echoOf(await send(`${url}/p/late/x`)).name).toBe('late')
  })

  test('the first matching route wins; typed parameters only match their kind', async () => {
    const ints = await startUpstream(echoHandler('int'))
    const rest = await startUpstream(echoHandler('rest'))
    const gateway = new Gateway({})
    gateway.route('/items/{id:int}', { upstream: ints.url })
    gateway.route('/items/{path:path}', { upstream: rest.url })
    const app = new Velithon({ workerThreads: 1 })
    app.includeRouter(gateway.getRouter())
    const { url } = await listen(app)
    expect(echoOf(await send(`${url}/items/42`)).name).toBe('int')
    expect(echoOf(await send(`${url}/items/-7`)).name).toBe('int')
    expect(echoOf(await send(`${url}/items/abc`)).name).toBe('rest')
    expect(echoOf(await send(`${url}/items/42/more`)).name).toBe('rest')
  })
})

describe('upstreams', () => {
  test('`upstream:` single-URL route forwards to that server', async () => {
    const upstream = await startUpstream(echoHandler('single'))
    const proxy = await startProxy({ upstreams: upstream.url })
    const echo = echoOf(await send(`${proxy.url}/gw/api/one`, { method: 'POST', body: 'payload' }))
    expect(echo.name).toBe('single')
    expect(echo.method).toBe('POST')
    expect(echo.body).toBe('payload')
  })

  test('a route can use its own LoadBalancer instead of the gateway default', async () => {
    const fallback = await startUpstream(echoHandler('default'))
    const special = await startUpstream(echoHandler('special'))
    const gateway = new Gateway({ loadBalancer: new LoadBalancer({ upstreamServers: [fallback.url] }) })
    gateway.route('/default/{path:path}')
    gateway.route('/special/{path:path}', { loadBalancer: new LoadBalancer({ upstreamServers: [special.url] }) })
    const app = new Velithon({ workerThreads: 1 })
    app.includeRouter(gateway.getRouter())
    const { url } = await listen(app)
    expect(echoOf(await send(`${url}/default/x`)).name).toBe('default')
    expect(echoOf(await send(`${url}/special/x`)).name).toBe('special')
  })

  test('round robin alternates between two upstreams', async () => {
    const a = await startUpstream(echoHandler('a'))
    const b = await startUpstream(echoHandler('b'))
    const lb = new LoadBalancer({ upstreamServers: [a.url, b.url], strategy: new RoundRobinStrategy() })
    expect(lb.upstreamServers).toEqual([a.url, b.url])
    const gateway = new Gateway({ loadBalancer: lb })
    gateway.route('/rr/{path:path}')
    const app = new Velithon({ workerThreads: 2 })
    app.includeRouter(gateway.getRouter())
    const { url } = await listen(app)
    const names: string[] = []
    for (let i = 0; i < 10; i++) names.push(echoOf(await send(`${url}/rr/x`)).name)
    for (let i = 1; i < names.length; i++) expect(names[i]).not.toBe(names[i - 1])
    expect(names.filter((n) => n === 'a')).toHaveLength(5)
    expect(names.filter((n) => n === 'b')).toHaveLength(5)
  })

  test('setServers swaps the upstreams of a running gateway', async () => {
    const a = await startUpstream(echoHandler('a'))
    const b = await startUpstream(echoHandler('b'))
    const lb = new LoadBalancer({ upstreamServers: [a.url] })
    const gateway = new Gateway({ loadBalancer: lb })
    gateway.route('/s/{path:path}')
    const app = new Velithon({ workerThreads: 1 })
    app.includeRouter(gateway.getRouter())
    const { url } = await listen(app)
    expect(echoOf(await send(`${url}/s/x`)).name).toBe('a')
    lb.setServers([b.url])
    expect(lb.upstreamServers).toEqual([b.url])
    for (let i = 0; i < 4; i++) expect(echoOf(await send(`${url}/s/x`)).name).toBe('b')
  })
})

describe('concurrency', () => {
  test('200 concurrent requests over two upstreams all succeed with the right bodies', async () => {
    const a = await startUpstream(echoHandler('a'))
    const b = await startUpstream(echoHandler('b'))
    const proxy = await startProxy({ upstreams: [a.url, b.url] })
    const agent = new http.Agent({ keepAlive: true, maxSockets: 50 })
    defer(() => agent.destroy())
    const replies = await Promise.all(
      Array.from({ length: 200 }, (_, i) => send(`${proxy.url}/gw/api/item/${i}`, { agent, method: 'POST', body: `body ${i}` })),
    )
    replies.forEach((reply, i) => {
      expect(reply.status).toBe(200)
      const echo = echoOf(reply)
      expect(echo.url).toBe(`/gw/api/item/${i}`)
      expect(echo.body).toBe(`body ${i}`)
    })
    expect(a.requests + b.requests).toBe(200)
    expect(a.requests).toBe(100)
  })
})

describe('connection reuse', () => {
  test('1,000 sequential requests from a keep-alive client use a handful of upstream connections', async () => {
    const upstream = await startUpstream((_req, res) => {
      res.setHeader('content-length', '2')
      res.end('ok')
    })
    // Keep Node's upstream from closing idle connections during the run.
    upstream.server.keepAliveTimeout = 60_000
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
    defer(() => agent.destroy())
    const clientSockets = new Set<unknown>()
    const started = Date.now()
    for (let i = 0; i < 1_000; i++) {
      const reply = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = http.request(`${proxy.url}/gw/api/ping/${i}`, { agent }, (res) => {
          let body = ''
          res.setEncoding('utf8')
          res.on('data', (c: string) => (body += c))
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
          res.on('error', reject)
        })
        req.on('socket', (socket) => clientSockets.add(socket))
        req.setTimeout(10_000, () => req.destroy(new Error(`request ${i} timed out`)))
        req.on('error', reject)
        req.end()
      })
      if (reply.status !== 200 || reply.body !== 'ok') throw new Error(`request ${i}: ${reply.status} ${reply.body}`)
    }
    expect(upstream.requests).toBe(1_000)
    expect(upstream.connections).toBeGreaterThanOrEqual(1)
    expect(upstream.connections).toBeLessThanOrEqual(5)
    // The client side reused its connection too (the gateway keeps client connections alive).
    expect(clientSockets.size).toBeLessThanOrEqual(5)
    expect(Date.now() - started).toBeLessThan(50_000)
  })

  test('an upstream that closes its idle keep-alive connections does not cause errors', async () => {
    const upstream = await startUpstream((_req, res) => res.end('ok'))
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const failures: string[] = []
    for (let i = 0; i < 50; i++) {
      const reply = await send(`${proxy.url}/gw/api/x/${i}`)
      if (reply.status !== 200) failures.push(`request ${i}: ${reply.status} ${reply.body.toString()}`)
      // The upstream closes the pooled connection; the next request follows at once or soon.
      upstream.server.closeIdleConnections()
      await sleep(i % 3)
    }
    expect(failures).toEqual([])
    expect(upstream.requests).toBe(50)
    expect(upstream.connections).toBeGreaterThan(1)
  })
})
