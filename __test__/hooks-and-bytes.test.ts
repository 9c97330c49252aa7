// Reporting hooks that fail (throw or reject) never take the process down, and header
// values cross between JS and Rust byte for byte (latin1, as Node's http).
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { ConfigError, Gateway, LoadBalancer, LoadBalancingStrategy, Response, Velithon } from 'velithon-gateway'

const closers: (() => Promise<unknown>)[] = []
afterEach(async () => {
  await Promise.all(closers.splice(0).map((c) => c()))
})

async function start(app: Velithon): Promise<string> {
  const { url } = await app.listen({ port: 0 })
  closers.push(() => app.close())
  return url
}

function upstream(handler: http.RequestListener): Promise<string> {
  const server = http.createServer(handler)
  closers.push(() => new Promise((r) => server.close(r)))
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)),
  )
}

function rawGet(url: string): Promise<{ status: number; rawHeaders: string[] }> {
  return new Promise((resolve, reject) => {
    http.get(url, (res) => {
      res.resume()
      res.on('end', () => resolve({ status: res.statusCode ?? 0, rawHeaders: res.rawHeaders }))
    }).on('error', reject)
  })
}

describe('failing hooks', () => {
  it('an async onError that rejects causes no unhandled rejection', async () => {
    const unhandled: unknown[] = []
    const onUnhandled = (e: unknown) => unhandled.push(e)
    process.on('unhandledRejection', onUnhandled)
    try {
      let called = 0
      const app = new Velithon({
        onError: async () => {
          called++
          throw new Error('the logger is down')
        },
      })
      app.get('/boom', () => {
        throw new Error('boom')
      })
      const url = await start(app)
      const res = await fetch(`${url}/boom`)
      expect(res.status).toBe(500)
      await new Promise((r) => setTimeout(r, 50))
      expect(called).toBe(1)
      expect(unhandled).toEqual([])
    } finally {
      process.off('unhandledRejection', onUnhandled)
    }
  })

  it("a balancer's rejecting onError is harmless too", async () => {
    const unhandled: unknown[] = []
    const onUnhandled = (e: unknown) => unhandled.push(e)
    process.on('unhandledRejection', onUnhandled)
    try {
      const up = await upstream((_req, res) => res.end('ok'))
      class Broken extends LoadBalancingStrategy {
        selectServer(): string {
          throw new Error('no idea')
        }
      }
      const lb = new LoadBalancer({ upstreamServers: [up], strategy: new Broken(), onError: () => Promise.reject(new Error('x')) })
      const gw = new Gateway({ loadBalancer: lb })
      gw.route('/{path:path}')
      const app = new Velithon()
      app.includeRouter(gw.getRouter())
      const url = await start(app)
      expect(await (await fetch(`${url}/a`)).text()).toBe('ok')
      await new Promise((r) => setTimeout(r, 50))
      expect(lb.strategyFallbacks).toBe(1)
      expect(unhandled).toEqual([])
    } finally {
      process.off('unhandledRejection', onUnhandled)
    }
  })
})

describe('header bytes', () => {
  it('a Response header with latin1 characters leaves as those bytes', async () => {
    const app = new Velithon()
    app.get('/h', () => new Response('x', { headers: { 'x-name': 'café' } }))
    const url = await start(app)
    const { rawHeaders } = await rawGet(`${url}/h`)
    // Node decodes header bytes as latin1: one byte 0xE9 reads back as 'é'.
    expect(rawHeaders[rawHeaders.indexOf('x-name') + 1]).toBe('café')
  })

  it('request header bytes reach the handler and the upstream unchanged', async () => {
    let seen = ''
    const up = await upstream((req, res) => {
      seen = req.headers['x-raw'] as string
      res.end()
    })
    const gw = new Gateway({ loadBalancer: new LoadBalancer({ upstreamServers: [up] }) })
    const app = new Velithon()
    let inHandler = ''
    app.get('/f', (request) => {
      inHandler = request.rawHeaders.find(([k]) => k === 'x-raw')?.[1] ?? ''
      return gw.forwardRequest(request)
    })
    const url = await start(app)
    await new Promise<void>((resolve, reject) => {
      http.get(`${url}/f`, { headers: { 'x-raw': 'na\u00efve' } }, (res) => {
        res.resume()
        res.on('end', () => resolve())
      }).on('error', reject)
    })
    expect(inHandler).toBe('na\u00efve')
    expect(seen).toBe('na\u00efve')
  })

  it('additionalHeaders outside visible ASCII are refused by name', async () => {
    const up = await upstream((_req, res) => res.end())
    const gw = new Gateway({ loadBalancer: new LoadBalancer({ upstreamServers: [up] }) })
    const app = new Velithon({ onError: () => {} })
    let error: unknown
    app.get('/f', async (request) => {
      try {
        return await gw.forwardRequest(request, undefined, { additionalHeaders: { 'x-name': 'café' } })
      } catch (e) {
        error = e
        return 'refused'
      }
    })
    const url = await start(app)
    expect(await (await fetch(`${url}/f`)).text()).toBe('refused')
    expect(error).toBeInstanceOf(ConfigError)
    expect((error as ConfigError).option).toBe('additionalHeaders')
  })
})
