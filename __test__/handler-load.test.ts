/**
 * JS handlers under load: a slow handler does not hold up pure routes, and 1,000
 * concurrent requests through a handler doing forwardRequest all succeed with no
 * unhandled rejections.
 */
import http from 'node:http'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Gateway, LoadBalancer, Velithon } from 'velithon-gateway'
import { Closers, jsonOf, readAll, send, sleep, startUpstream, withTimeout, type Upstream } from './helpers/js-net'

const closers = new Closers()
let base = ''
let upstream: Upstream
let unhandled: unknown[] = []
const onUnhandled = (reason: unknown) => {
  unhandled.push(reason)
}

beforeAll(async () => {
  process.on('unhandledRejection', onUnhandled)
  closers.add(() => process.off('unhandledRejection', onUnhandled))

  upstream = await startUpstream(closers, async (req, res) => {
    const body = await readAll(req)
    const payload = JSON.stringify({ url: req.url, len: body.length, xff: req.headers['x-forwarded-for'] ?? null })
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) })
    res.end(payload)
  })
  upstream.server.maxConnections = 0 // unlimited
  const lb = new LoadBalancer({ upstreamServers: [upstream.url] })
  const gw = new Gateway({ loadBalancer: lb, timeout: '20s' })
  gw.route('/pure/{path:path}')

  const app = new Velithon({ workerThreads: 2, handlerTimeout: '20s' })
  app.get('/slow', async () => {
    await sleep(2_000)
    return { slow: true }
  })
  app.route('/js/{path:path}', (req) => gw.forwardRequest(req, undefined, { additionalHeaders: { 'x-via': 'js' } }), {
    methods: ['GET', 'POST'],
  })
  app.includeRouter(gw.getRouter())
  const address = await app.listen({ port: 0, host: '127.0.0.1' })
  closers.add(() => app.close({ timeout: '3s' }))
  base = address.url
})

afterAll(async () => {
  await closers.closeAll()
})

describe('a slow JS handler beside a pure route', () => {
  it('50 pure-route requests complete while the slow handler is still pending', async () => {
    let slowDone = false
    const slow = send(`${base}/slow`, { timeoutMs: 10_000 }).then((r) => {
      slowDone = true
      return r
    })
    await sleep(100) // the slow handler is now running
    const agent = new http.Agent({ keepAlive: true, maxSockets: 50 })
    closers.add(() => agent.destroy())
    const replies = await withTimeout(
      Promise.all(Array.from({ length: 50 }, (_, i) => send(`${base}/pure/p${i}`, { agent, timeoutMs: 10_000 }))),
      10_000,
      '50 pure-route requests',
    )
    expect(slowDone).toBe(false)
    replies.forEach((r, i) => {
      expect(r.status).toBe(200)
      expect(jsonOf(r).url).toBe(`/pure/p${i}`)
    })
    const slowReply = await slow
    expect(slowReply.status).toBe(200)
    expect(jsonOf(slowReply)).toEqual({ slow: true })
  })

  it('JS-handler requests also complete while another handler is pending', async () => {
    let slowDone = false
    const slow = send(`${base}/slow`, { timeoutMs: 10_000 }).then((r) => {
      slowDone = true
      return r
    })
    await sleep(100)
    const replies = await Promise.all(Array.from({ length: 20 }, (_, i) => send(`${base}/js/q${i}`, { timeoutMs: 10_000 })))
    expect(slowDone).toBe(false)
    replies.forEach((r, i) => expect(jsonOf(r).url).toBe(`/js/q${i}`))
    expect((await slow).status).toBe(200)
  })
})

describe('1,000 concurrent requests through a JS handler doing forwardRequest', () => {
  it('all answer 200 with the right body, no unhandled rejections', async () => {
    unhandled = []
    const agent = new http.Agent({ keepAlive: true, maxSockets: 100 })
    closers.add(() => agent.destroy())
    const N = 1_000
    const replies = await withTimeout(
      Promise.all(
        Array.from({ length: N }, (_, i) =>
          i % 4 === 0
            ? send(`${base}/js/item/${i}?n=${i}`, { method: 'POST', body: `body-${i}`, agent, timeoutMs: 30_000 })
            : send(`${base}/js/item/${i}?n=${i}`, { agent, timeoutMs: 30_000 }),
        ),
      ),
      45_000,
      '1,000 requests',
    )
    let ok = 0
    replies.forEach((r, i) => {
      expect(r.status, `request ${i}`).toBe(200)
      const body = jsonOf<{ url: string; len: number; xff: string }>(r)
      expect(body.url).toBe(`/js/item/${i}?n=${i}`)
      expect(body.len).toBe(i % 4 === 0 ? `body-${i}`.length : 0)
      expect(body.xff).toBe('127.0.0.1')
      ok++
    })
    expect(ok).toBe(N)
    await sleep(50) // let any late rejection surface
    expect(unhandled).toEqual([])
  }, 60_000)
})
