/**
 * README.md's "Quick start", run as written, with local upstreams in place of
 * 127.0.0.1:9001/9002/9003 and port 0 in place of 8080. If this test needs changing,
 * the README needs the same change.
 */
import { afterEach, expect, test } from 'vitest'
import { Velithon, Gateway, LoadBalancer, RoundRobinStrategy, ConfigError } from 'velithon-gateway'
import { closeAll, defer, echoHandler, echoOf, send, startUpstream } from './helpers/net'

afterEach(closeAll)

test('README quick start: round robin under /gateway/api with stripPath, and a single-upstream GET route', async () => {
  const [up9001, up9002, up9003] = await Promise.all([
    startUpstream(echoHandler('9001')),
    startUpstream(echoHandler('9002')),
    startUpstream(echoHandler('9003')),
  ])

  // ---- README "Quick start" ------------------------------------------------------------
  const loadBalancer = new LoadBalancer({
    upstreamServers: [up9001.url, up9002.url],
    strategy: new RoundRobinStrategy(),
  })
  const gateway = new Gateway({ loadBalancer, timeout: '30s' })
  gateway.route('/api/{path:path}', { stripPath: true }) // → /{path} on an upstream
  gateway.route('/legacy/{path:path}', { upstream: up9003.url, methods: ['GET'] })

  const app = new Velithon()
  app.includeRouter(gateway.getRouter(), { prefix: '/gateway' })
  const { url } = await app.listen({ port: 0, host: '127.0.0.1' })
  defer(() => app.close())
  // GET {url}/gateway/api/users?page=2 → GET http://127.0.0.1:9001/users?page=2
  const first = echoOf(await send(`${url}/gateway/api/users?page=2`))
  expect(first.name).toBe('9001')
  expect(first.method).toBe('GET')
  expect(first.url).toBe('/users?page=2')
  // ---------------------------------------------------------------------------------------

  // Round robin: the next one goes to the second server.
  const second = echoOf(await send(`${url}/gateway/api/users?page=3`))
  expect(second.name).toBe('9002')
  expect(second.url).toBe('/users?page=3')

  // The legacy route forwards the full path (no stripPath) and only GET (and HEAD).
  const legacy = echoOf(await send(`${url}/gateway/legacy/report`))
  expect(legacy.name).toBe('9003')
  expect(legacy.url).toBe('/gateway/legacy/report')
  const post = await send(`${url}/gateway/legacy/report`, { method: 'POST', body: '{}' })
  expect(post.status).toBe(405)
  const allow = (post.headers.allow ?? '').split(',').map((m) => m.trim())
  expect(allow).toContain('GET')
  expect(allow).not.toContain('POST')

  await app.close() // stop accepting, drain in-flight requests, stop
  expect(app.address).toBeUndefined()
})

test('the example of the project brief: trusted proxies, methods, timeouts, a ConfigError', async () => {
  const upstream = await startUpstream(echoHandler('9001'))

  const lb = new LoadBalancer({ upstreamServers: [upstream.url], strategy: new RoundRobinStrategy() })
  const gw = new Gateway({ loadBalancer: lb, timeout: '2s', connectTimeout: '1s' })
  gw.route('/api/{path:path}', { stripPath: true, preserveHost: false, methods: ['GET', 'POST'] })
  const app = new Velithon({ workerThreads: 2, trustedProxies: ['127.0.0.1'] })
  app.includeRouter(gw.getRouter(), { prefix: '/gateway' })
  const { url } = await app.listen({ port: 0, host: '127.0.0.1' })
  defer(() => app.close())

  const get = echoOf(await send(`${url}/gateway/api/items/7?full=1`, { headers: { 'x-forwarded-for': '198.51.100.4' } }))
  expect(get.url).toBe('/items/7?full=1')
  expect(get.headers.host).toBe(`127.0.0.1:${upstream.port}`)
  expect(get.headers['x-forwarded-for']).toBe('198.51.100.4, 127.0.0.1')
  const post = echoOf(await send(`${url}/gateway/api/items`, { method: 'POST', body: 'new item' }))
  expect(post.method).toBe('POST')
  expect(post.body).toBe('new item')
  expect((await send(`${url}/gateway/api/items/7`, { method: 'DELETE' })).status).toBe(405)

  expect(() => new Gateway({ loadBalancer: lb, timeout: 'soon' as never })).toThrow(ConfigError)
  await app.close()
})
