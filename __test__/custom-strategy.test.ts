/**
 * Custom load-balancing strategies written in JS: the spec's premium example through
 * forwardRequest (request.context) and on a pure gateway route (through the callback
 * bridge), async strategies, and strategies that throw, hang or answer nonsense (round
 * robin takes over, counted, reported once).
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import {
  Gateway,
  LoadBalancer,
  LoadBalancingStrategy,
  VelithonError,
  Velithon,
  type RequestContext,
} from 'velithon-gateway'
import { Closers, jsonOf, send, sleep, startUpstream, type Upstream } from './helpers/js-net'

const closers = new Closers()
let base = ''
let A: Upstream
let B: Upstream

/** The spec's example: premium users go to the second server. */
class PremiumStrategy extends LoadBalancingStrategy {
  contexts: RequestContext[] = []
  selectServer(servers: string[], ctx: RequestContext): string {
    this.contexts.push(ctx)
    const tier = ctx.user_type ?? ctx.headers['x-user-type']
    return tier === 'premium' ? servers[1] : servers[0]
  }
}

class AsyncStrategy extends LoadBalancingStrategy {
  calls = 0
  async selectServer(servers: string[], ctx: RequestContext): Promise<string> {
    this.calls++
    await sleep(30)
    return ctx.path.endsWith('/to-b') ? servers[1] : servers[0]
  }
}

class ThrowingStrategy extends LoadBalancingStrategy {
  calls = 0
  selectServer(): string {
    this.calls++
    throw new Error('strategy exploded')
  }
}

class HangingStrategy extends LoadBalancingStrategy {
  calls = 0
  selectServer(): Promise<string> {
    this.calls++
    return new Promise<string>(() => {}) // never answers
  }
}

class StrangerStrategy extends LoadBalancingStrategy {
  calls = 0
  selectServer(): string {
    this.calls++
    return 'http://127.0.0.1:1' // not one of the servers
  }
}

class NothingStrategy extends LoadBalancingStrategy {
  calls = 0
  selectServer(): string {
    this.calls++
    return undefined as unknown as string
  }
}

const premium = new PremiumStrategy()
const asyncStrategy = new AsyncStrategy()
let premiumLb: LoadBalancer
let asyncLb: LoadBalancer

const BAD_KINDS = ['throws', 'hangs', 'stranger', 'nothing'] as const
type BadKind = (typeof BAD_KINDS)[number]
const bad = {} as Record<BadKind, { strategy: { calls: number }; lb: LoadBalancer; onError: ReturnType<typeof vi.fn> }>

beforeAll(async () => {
  const named = (name: string) => async (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => {
    for await (const _ of req) void _
    const payload = JSON.stringify({ server: name, url: req.url })
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) })
    res.end(payload)
  }
  A = await startUpstream(closers, named('A'))
  B = await startUpstream(closers, named('B'))
  const servers = [A.url, B.url]

  premiumLb = new LoadBalancer({ upstreamServers: servers, strategy: premium })
  asyncLb = new LoadBalancer({ upstreamServers: servers, strategy: asyncStrategy })
  const strategies: Record<BadKind, LoadBalancingStrategy & { calls: number }> = {
    throws: new ThrowingStrategy(),
    hangs: new HangingStrategy(),
    stranger: new StrangerStrategy(),
    nothing: new NothingStrategy(),
  }
  for (const kind of BAD_KINDS) {
    const onError = vi.fn()
    bad[kind] = {
      strategy: strategies[kind],
      onError,
      lb: new LoadBalancer({ upstreamServers: servers, strategy: strategies[kind], strategyTimeout: '200ms', onError }),
    }
  }

  const gw = new Gateway({ timeout: '5s', connectTimeout: '2s' })
  gw.route('/pure/premium/{path:path}', { loadBalancer: premiumLb })
  gw.route('/pure/async/{path:path}', { loadBalancer: asyncLb })
  for (const kind of BAD_KINDS) gw.route(`/pure/bad/${kind}/{path:path}`, { loadBalancer: bad[kind].lb })

  const app = new Velithon({ workerThreads: 2, handlerTimeout: '10s' })
  app.get('/premium', (req) => {
    req.context.user_type = req.query.get('t')
    req.context.extra = { n: 1 }
    return gw.forwardRequest(req, premiumLb)
  })
  app.get('/js/async/{path:path}', (req) => gw.forwardRequest(req, asyncLb))
  app.get('/js/bad/{kind}/{path:path}', (req) => gw.forwardRequest(req, bad[req.pathParams.kind as BadKind].lb))
  app.includeRouter(gw.getRouter())

  const address = await app.listen({ port: 0, host: '127.0.0.1' })
  closers.add(() => app.close({ timeout: '2s' }))
  base = address.url
})

afterAll(async () => {
  await closers.closeAll()
})

async function serverOf(path: string, headers: Record<string, string> = {}): Promise<string> {
  const r = await send(`${base}${path}`, { headers, timeoutMs: 10_000 })
  expect(r.status, `${path}: ${r.body.toString()}`).toBe(200)
  return jsonOf<{ server: string }>(r).server
}

describe('the premium strategy (spec example)', () => {
  it('through forwardRequest: requestContext carries request.context (user_type)', async () => {
    premium.contexts.length = 0
    for (let i = 0; i < 3; i++) {
      expect(await serverOf('/premium?t=premium')).toBe('B')
      expect(await serverOf('/premium?t=basic')).toBe('A')
      expect(await serverOf('/premium')).toBe('A')
    }
    expect(premium.contexts.length).toBe(9)
    const ctx = premium.contexts[0]
    expect(ctx.user_type).toBe('premium')
    expect(ctx.extra).toEqual({ n: 1 })
    expect(ctx.method).toBe('GET')
    expect(ctx.path).toBe('/premium')
    expect(typeof ctx.headers).toBe('object')
    expect(ctx.headers.host).toMatch(/^127\.0\.0\.1:\d+$/)
    expect(ctx.client.address).toBe('127.0.0.1')
    expect(ctx.client.port).toBeGreaterThan(0)
    expect(premium.contexts[2].user_type).toBeNull()
    expect(premiumLb.strategyFallbacks).toBe(0)
  })

  it('on a pure gateway route: called through the bridge with {method, path, headers, client}', async () => {
    premium.contexts.length = 0
    for (let i = 0; i < 3; i++) {
      expect(await serverOf('/pure/premium/x', { 'X-User-Type': 'premium' })).toBe('B')
      expect(await serverOf('/pure/premium/y', { 'x-user-type': 'basic' })).toBe('A')
    }
    expect(premium.contexts.length).toBe(6)
    const ctx = premium.contexts[0]
    expect(ctx.method).toBe('GET')
    expect(ctx.path).toBe('/pure/premium/x')
    expect(ctx.headers['x-user-type']).toBe('premium') // names lower-case
    expect(ctx.client.address).toBe('127.0.0.1')
    expect(ctx.client.port).toBeGreaterThan(0)
    expect(ctx.user_type).toBeUndefined()
    expect(premiumLb.strategyFallbacks).toBe(0)
  })

  it('the upstream gets the path as sent', async () => {
    const r = await send(`${base}/pure/premium/deep/path?q=1`, { headers: { 'x-user-type': 'premium' } })
    expect(jsonOf(r)).toEqual({ server: 'B', url: '/pure/premium/deep/path?q=1' })
  })
})

describe('an async strategy', () => {
  it('is awaited from forwardRequest and from a pure route', async () => {
    const before = asyncStrategy.calls
    expect(await serverOf('/js/async/to-b')).toBe('B')
    expect(await serverOf('/js/async/to-a')).toBe('A')
    expect(await serverOf('/pure/async/to-b')).toBe('B')
    expect(await serverOf('/pure/async/to-a')).toBe('A')
    expect(asyncStrategy.calls - before).toBe(4)
    expect(asyncLb.strategyFallbacks).toBe(0)
  })

  it('answers many concurrent requests correctly', async () => {
    const paths = Array.from({ length: 40 }, (_, i) => `/${i % 2 ? 'js' : 'pure'}/async/${i % 4 < 2 ? 'to-a' : 'to-b'}`)
    const got = await Promise.all(paths.map((p) => serverOf(p)))
    got.forEach((server, i) => expect(server, paths[i]).toBe(paths[i].endsWith('to-b') ? 'B' : 'A'))
    expect(asyncLb.strategyFallbacks).toBe(0)
  })
})

describe('a failing strategy falls back to round robin', () => {
  for (const kind of BAD_KINDS) {
    it(`${kind}: requests succeed, strategyFallbacks counts them, onError once`, async () => {
      const { lb, onError, strategy } = bad[kind]
      const got: string[] = []
      for (let i = 0; i < 4; i++) got.push(await serverOf(`/js/bad/${kind}/r${i}`))
      for (let i = 0; i < 4; i++) got.push(await serverOf(`/pure/bad/${kind}/r${i}`))
      expect(strategy.calls).toBe(8)
      expect(new Set(got)).toEqual(new Set(['A', 'B'])) // round robin, not one server
      expect(lb.strategyFallbacks).toBe(8)
      expect(onError).toHaveBeenCalledTimes(1)
      const err = onError.mock.calls[0][0] as Error
      expect(err).toBeInstanceOf(Error)
      if (kind === 'throws') expect(err.message).toBe('strategy exploded')
      if (kind === 'hangs') expect((err as VelithonError).code).toBe('VG_CALLBACK_TIMEOUT')
      if (kind === 'stranger' || kind === 'nothing') expect((err as VelithonError).code).toBe('VG_CALLBACK_FAILED')
    })
  }

  it('hangs: concurrent requests all fall back within the strategyTimeout', async () => {
    const { lb } = bad.hangs
    const before = lb.strategyFallbacks
    const started = Date.now()
    const got = await Promise.all(
      Array.from({ length: 20 }, (_, i) => serverOf(`/${i % 2 ? 'js' : 'pure'}/bad/hangs/c${i}`)),
    )
    expect(got.every((s) => s === 'A' || s === 'B')).toBe(true)
    expect(lb.strategyFallbacks - before).toBe(20)
    expect(Date.now() - started).toBeLessThan(5_000)
    expect(bad.hangs.onError).toHaveBeenCalledTimes(1)
  })
})
