/**
 * Authentication in a JS handler, identity forwarded upstream with
 * `forwardRequest(request, lb, { additionalHeaders })`: the upstream sees exactly the
 * handler's values, never identity headers a client forged (stripIncomingHeaders,
 * DEFAULT_STRIPPED_HEADERS), on pure routes, through forwardRequest and forwardTo.
 */
import { afterEach, describe, expect, test } from 'vitest'
import {
  ConfigError,
  DEFAULT_STRIPPED_HEADERS,
  Gateway,
  HeaderTransformer,
  JSONResponse,
  LoadBalancer,
  Velithon,
  forwardTo,
  type GatewayOptions,
  type Request,
} from 'velithon-gateway'
import { closeAll, defer, echoHandler, echoOf, listen, send, startUpstream, type Echo } from './helpers/net'

afterEach(closeAll)

const FORGED = { 'X-User-ID': '1', 'X-User-Roles': 'superuser' }

/** The values of `name` the upstream received, as sent (one entry per header line). */
function valuesOf(echo: Echo, name: string): string[] {
  const out: string[] = []
  for (let i = 0; i < echo.rawHeaders.length; i += 2) {
    if (echo.rawHeaders[i].toLowerCase() === name) out.push(echo.rawHeaders[i + 1])
  }
  return out
}

/** What a real service does: look the token up. */
function authenticate(request: Request): { id: string; roles: string } | undefined {
  const auth = request.headers.get('authorization')
  if (auth === 'Bearer good') return { id: '42', roles: 'admin' }
  if (auth === 'Bearer reader') return { id: '7', roles: 'reader' }
  return undefined
}

/**
 * An app with an authenticating handler on /secure (forwardRequest with the user's
 * identity), an unauthenticated passthrough handler on /open (forwardRequest without
 * options), forwardTo on /to, and a pure route on /pure.
 */
async function start(gatewayOptions: GatewayOptions = {}, lbTransformers: HeaderTransformer[] = []) {
  const upstream = await startUpstream(echoHandler())
  const loadBalancer = new LoadBalancer({ upstreamServers: [upstream.url], transformers: lbTransformers })
  const gateway = new Gateway({ timeout: '10s', ...gatewayOptions })
  gateway.route('/pure/{path:path}', { loadBalancer })
  const app = new Velithon({ workerThreads: 2, onError: () => {} })
  app.includeRouter(gateway.getRouter())
  app.route('/secure/{path:path}', async (request) => {
    const user = authenticate(request)
    if (!user) return new JSONResponse({ error: 'unauthorized' }, 401)
    return gateway.forwardRequest(request, loadBalancer, {
      additionalHeaders: { 'X-User-ID': user.id, 'X-User-Roles': user.roles },
    })
  })
  app.route('/open/{path:path}', (request) => gateway.forwardRequest(request, loadBalancer))
  app.route('/to/{path:path}', (request) => forwardTo(upstream.url, request))
  defer(() => gateway.close())
  const { url } = await listen(app)
  return { url, upstream, gateway, loadBalancer }
}

describe('identity set by the handler', () => {
  test('an authenticated request reaches the upstream with exactly the handler\'s X-User-ID and X-User-Roles', async () => {
    const { url } = await start()
    const reply = await send(`${url}/secure/orders?page=2`, { headers: { authorization: 'Bearer good' } })
    expect(reply.status).toBe(200)
    const echo = echoOf(reply)
    expect(echo.url).toBe('/secure/orders?page=2')
    expect(valuesOf(echo, 'x-user-id')).toEqual(['42'])
    expect(valuesOf(echo, 'x-user-roles')).toEqual(['admin'])
    // The credential itself is forwarded unless the handler removes it.
    expect(echo.headers.authorization).toBe('Bearer good')

    const other = echoOf(await send(`${url}/secure/orders`, { headers: { authorization: 'Bearer reader' } }))
    expect(valuesOf(other, 'x-user-id')).toEqual(['7'])
    expect(valuesOf(other, 'x-user-roles')).toEqual(['reader'])
  })

  test('an unauthenticated request is answered by the handler; the upstream is never called', async () => {
    const { url, upstream } = await start()
    const none = await send(`${url}/secure/orders`)
    const bad = await send(`${url}/secure/orders`, { headers: { authorization: 'Bearer bad', ...FORGED } })
    expect(none.status).toBe(401)
    expect(bad.status).toBe(401)
    expect(upstream.requests).toBe(0)
  })

  test("a client's forged X-User-ID / X-User-Roles never win over the handler's values", async () => {
    const { url } = await start()
    const echo = echoOf(await send(`${url}/secure/x`, { headers: { authorization: 'Bearer good', ...FORGED } }))
    expect(valuesOf(echo, 'x-user-id')).toEqual(['42'])
    expect(valuesOf(echo, 'x-user-roles')).toEqual(['admin'])
  })

  test("the handler's value also wins over a transformer that sets the same header", async () => {
    const { url } = await start({ transformers: [new HeaderTransformer({ addHeaders: { 'X-User-ID': 'from-transformer', 'X-Gw': 'gw' } })] }, [
      new HeaderTransformer({ addHeaders: { 'X-Lb': 'lb' } }),
    ])
    const echo = echoOf(await send(`${url}/secure/x`, { headers: { authorization: 'Bearer good' } }))
    expect(valuesOf(echo, 'x-user-id')).toEqual(['42'])
    // forwardRequest applies the gateway's and the load balancer's transformers.
    expect(echo.headers['x-gw']).toBe('gw')
    expect(echo.headers['x-lb']).toBe('lb')
  })
})

describe('forged identity headers are stripped (DEFAULT_STRIPPED_HEADERS)', () => {
  const allForged = Object.fromEntries(DEFAULT_STRIPPED_HEADERS.map((name) => [name, 'forged']))

  test.each(['/pure/x', '/open/x', '/to/x'])('%s: the upstream never sees a forged identity header', async (path) => {
    const { url } = await start()
    const echo = echoOf(await send(`${url}${path}`, { headers: { ...allForged, 'X-USER-ID': '1', 'x-custom': 'kept' } }))
    for (const name of DEFAULT_STRIPPED_HEADERS) {
      expect(valuesOf(echo, name), `upstream got ${name}`).toEqual([])
    }
    expect(echo.headers['x-custom']).toBe('kept')
  })

  test('a header sent twice is stripped entirely', async () => {
    const { url } = await start()
    const echo = echoOf(await send(`${url}/pure/x`, { headers: { 'x-user-id': ['1', '2'] } }))
    expect(valuesOf(echo, 'x-user-id')).toEqual([])
  })

  test('DEFAULT_STRIPPED_HEADERS is exported, frozen, lower-case and has x-user-id and x-user-roles', () => {
    expect(DEFAULT_STRIPPED_HEADERS).toContain('x-user-id')
    expect(DEFAULT_STRIPPED_HEADERS).toContain('x-user-roles')
    expect(Object.isFrozen(DEFAULT_STRIPPED_HEADERS)).toBe(true)
    for (const name of DEFAULT_STRIPPED_HEADERS) expect(name).toBe(name.toLowerCase())
  })
})

describe('stripIncomingHeaders', () => {
  test("['x-tenant'] strips that header and no longer the defaults", async () => {
    const { url } = await start({ stripIncomingHeaders: ['X-Tenant'] })
    for (const path of ['/pure/x', '/open/x']) {
      const echo = echoOf(await send(`${url}${path}`, { headers: { 'x-tenant': 'acme', ...FORGED } }))
      expect(valuesOf(echo, 'x-tenant'), path).toEqual([])
      expect(valuesOf(echo, 'x-user-id'), path).toEqual(['1'])
      expect(valuesOf(echo, 'x-user-roles'), path).toEqual(['superuser'])
    }
    // With additionalHeaders the handler's value still wins.
    const secure = echoOf(await send(`${url}/secure/x`, { headers: { authorization: 'Bearer good', ...FORGED } }))
    expect(valuesOf(secure, 'x-user-id')).toEqual(['42'])
  })

  test('[...DEFAULT_STRIPPED_HEADERS, extra] keeps the defaults and adds one', async () => {
    const { url } = await start({ stripIncomingHeaders: [...DEFAULT_STRIPPED_HEADERS, 'x-tenant'] })
    const echo = echoOf(await send(`${url}/pure/x`, { headers: { 'x-tenant': 'acme', ...FORGED } }))
    expect(valuesOf(echo, 'x-tenant')).toEqual([])
    expect(valuesOf(echo, 'x-user-id')).toEqual([])
  })

  test('false keeps every header the client sent', async () => {
    const { url } = await start({ stripIncomingHeaders: false })
    for (const path of ['/pure/x', '/open/x']) {
      const echo = echoOf(await send(`${url}${path}`, { headers: FORGED }))
      expect(valuesOf(echo, 'x-user-id'), path).toEqual(['1'])
      expect(valuesOf(echo, 'x-user-roles'), path).toEqual(['superuser'])
    }
  })

  test('bad values are ConfigErrors', () => {
    for (const bad of ['x-user-id', true, ['bad name'], [1], null]) {
      const build = () => new Gateway({ stripIncomingHeaders: bad as never })
      expect(build).toThrow(ConfigError)
      try {
        build()
      } catch (err) {
        expect((err as ConfigError).option).toBe('stripIncomingHeaders')
      }
    }
  })
})

describe('forwardRequest and the request id', () => {
  test('the request id is generated (or kept), sent upstream and returned through forwardRequest', async () => {
    const { url } = await start()
    const reply = await send(`${url}/secure/x`, { headers: { authorization: 'Bearer good' } })
    const id = reply.headers['x-request-id']
    expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
    expect(echoOf(reply).headers['x-request-id']).toBe(id)

    const kept = await send(`${url}/secure/x`, { headers: { authorization: 'Bearer good', 'x-request-id': 'trace-me' } })
    expect(kept.headers['x-request-id']).toBe('trace-me')
    expect(echoOf(kept).headers['x-request-id']).toBe('trace-me')
  })

  test('additionalHeaders with a bad name or value is a ConfigError in the handler', async () => {
    const upstream = await startUpstream(echoHandler())
    const loadBalancer = new LoadBalancer({ upstreamServers: [upstream.url] })
    const gateway = new Gateway()
    const errors: unknown[] = []
    const app = new Velithon({ workerThreads: 1, onError: () => {} })
    app.route('/x/{n}', async (request) => {
      const bad = [{ 'bad name': 'v' }, { 'X-User-ID': 'a\r\nX-Evil: 1' }, { 'X-User-ID': 42 }][Number(request.pathParams.n)]
      try {
        return await gateway.forwardRequest(request, loadBalancer, { additionalHeaders: bad as never })
      } catch (err) {
        errors.push(err)
        return new JSONResponse({ option: (err as ConfigError).option }, 400)
      }
    })
    const { url } = await listen(app)
    for (const n of [0, 1, 2]) {
      const reply = await send(`${url}/x/${n}`)
      expect(reply.status).toBe(400)
      expect(JSON.parse(reply.body.toString())).toEqual({ option: 'additionalHeaders' })
    }
    expect(errors.every((e) => e instanceof ConfigError)).toBe(true)
    expect(upstream.requests).toBe(0)
  })

  test('additionalHeaders may not set framing or hop-by-hop headers (as transformers may not): ConfigError, upstream not called', async () => {
    const upstream = await startUpstream(echoHandler())
    const loadBalancer = new LoadBalancer({ upstreamServers: [upstream.url] })
    const gateway = new Gateway()
    const managed: Record<string, string>[] = [{ 'Content-Length': '2' }, { 'Transfer-Encoding': 'chunked' }, { Connection: 'close, x-a' }, { Upgrade: 'websocket' }]
    const app = new Velithon({ workerThreads: 1, onError: () => {} })
    app.route('/x/{n}', async (request) => {
      try {
        return await gateway.forwardRequest(request, loadBalancer, { additionalHeaders: managed[Number(request.pathParams.n)] })
      } catch (err) {
        return new JSONResponse({ error: (err as Error).name, option: (err as ConfigError).option }, 400)
      }
    }, { methods: ['POST'] })
    const { url } = await listen(app)
    const outcomes: unknown[] = []
    for (const n of managed.keys()) {
      const reply = await send(`${url}/x/${n}`, { method: 'POST', body: 'hello world' })
      outcomes.push(reply.status === 400 ? JSON.parse(reply.body.toString()) : { status: reply.status, upstreamGot: echoOf(reply).body })
    }
    expect(outcomes).toEqual(managed.map(() => ({ error: 'ConfigError', option: 'additionalHeaders' })))
    expect(upstream.requests).toBe(0)
  })
})
