// The README's "JavaScript handlers" example, run against local upstreams (their ports
// replace 9001-9003). Keep the two in step.
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  Velithon,
  Gateway,
  LoadBalancer,
  LoadBalancingStrategy,
  JSONResponse,
  Response,
  UpstreamError,
  forwardTo,
  type RequestContext,
} from 'velithon-gateway'

function upstream(name: string): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify({ name, url: req.url, user: req.headers['x-user-id'] ?? null }))
  })
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)))
}

const urlOf = (s: http.Server) => `http://127.0.0.1:${(s.address() as AddressInfo).port}`

describe('README: JavaScript handlers', () => {
  let servers: http.Server[] = []
  let app: Velithon
  let base = ''
  const errors: unknown[] = []

  beforeAll(async () => {
    servers = await Promise.all([upstream('u1'), upstream('u2'), upstream('u3')])
    const [u1, u2, u3] = servers.map(urlOf)

    class PremiumStrategy extends LoadBalancingStrategy {
      selectServer(servers: string[], requestContext: RequestContext): string {
        return requestContext.user_type === 'premium' ? servers[0] : servers[servers.length - 1]
      }
    }

    const loadBalancer = new LoadBalancer({
      upstreamServers: [u1, u2],
      strategy: new PremiumStrategy(),
    })
    const gateway = new Gateway({ loadBalancer, timeout: '5s' })
    app = new Velithon({ onError: (err) => errors.push(err) })

    app.get('/api/{path:path}', async (request) => {
      request.context.user_type = request.headers.get('x-plan') ?? 'basic'
      try {
        return await gateway.forwardRequest(request, loadBalancer, {
          additionalHeaders: { 'X-User-ID': '42' },
        })
      } catch (e) {
        if (e instanceof UpstreamError) return new JSONResponse({ error: 'try again later', code: e.code }, 503)
        throw e
      }
    })
    app.get('/one/{path:path}', (request) => forwardTo(u3, request))
    app.post('/echo', async (request) => ({ youSent: await request.json() }))
    app.get('/users/{id:int}', (request) => new Response(`user ${request.pathParams.id}`))

    base = (await app.listen({ port: 0 })).url
  })

  afterAll(async () => {
    await app?.close()
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))))
  })

  it('routes premium callers to the first server, others to the last, with X-User-ID', async () => {
    const premium = await fetch(`${base}/api/orders?x=1`, { headers: { 'x-plan': 'premium' } })
    expect(await premium.json()).toEqual({ name: 'u1', url: '/api/orders?x=1', user: '42' })
    const basic = await fetch(`${base}/api/orders`)
    expect(await basic.json()).toEqual({ name: 'u2', url: '/api/orders', user: '42' })
  })

  it('forwardTo sends to its one URL', async () => {
    const res = await fetch(`${base}/one/a/b`)
    expect((await res.json()).name).toBe('u3')
  })

  it('answers from JS: JSON echo and a text Response with a path parameter', async () => {
    const echo = await fetch(`${base}/echo`, { method: 'POST', body: JSON.stringify({ a: [1, 2] }) })
    expect(await echo.json()).toEqual({ youSent: { a: [1, 2] } })
    const user = await fetch(`${base}/users/7`)
    expect(user.headers.get('content-type')).toBe('text/plain; charset=utf-8')
    expect(await user.text()).toBe('user 7')
    expect((await fetch(`${base}/users/x`)).status).toBe(404)
  })

  it('turns an unreachable upstream into the handler’s 503', async () => {
    await new Promise<void>((r) => servers[1].close(() => r()))
    const res = await fetch(`${base}/api/orders`)
    expect(res.status).toBe(503)
    expect(await res.json()).toEqual({ error: 'try again later', code: 'VG_UPSTREAM_CONNECT' })
    expect(errors).toEqual([])
  })
})
