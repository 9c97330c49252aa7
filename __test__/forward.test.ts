/**
 * forwardRequest / forwardTo from JS handlers: the upstream response reaches the client
 * unchanged (streamed), request bodies stream upstream intact whether or not JS read them,
 * additionalHeaders and X-Forwarded-For, typed upstream errors caught or uncaught, and
 * the ConfigErrors of misuse.
 */
import http from 'node:http'
import { randomBytes } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import {
  CircuitBreakerOpenError,
  ConfigError,
  ErrorCodes,
  ForwardedResponse,
  Gateway,
  JSONResponse,
  LoadBalancer,
  UpstreamError,
  Velithon,
  VelithonError,
  forwardTo,
  type Request,
} from 'velithon-gateway'
import {
  Closers,
  chunksOf,
  jsonOf,
  readAll,
  refusedPort,
  send,
  sha256,
  sleep,
  startUpstream,
  withTimeout,
  type Upstream,
} from './helpers/js-net'

const MiB = 1024 * 1024
const BIG = randomBytes(5 * MiB)
const BIG_SHA = sha256(BIG)

const closers = new Closers()
const onError = vi.fn()
let base = ''
let upstream: Upstream
let deadUrl = ''

interface Seen {
  method: string
  url: string
  headers: http.IncomingHttpHeaders
  length: number
  sha: string
}
function gate(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void
  const promise = new Promise<void>((r) => (resolve = r))
  return { promise, resolve }
}
const gates = { clientGotFirst: gate(), upstreamGotFirst: gate() }

/** What the upstream's /echo saw, newest last. */
const seen: Seen[] = []

beforeAll(async () => {
  upstream = await startUpstream(closers, async (req, res) => {
    const path = (req.url ?? '').split('?')[0]
    if (path.endsWith('/big')) {
      // 5 MiB, chunked, written in pieces with back-pressure
      await readAll(req)
      res.writeHead(201, {
        'content-type': 'application/x-test',
        'x-up': 'yes',
        'set-cookie': ['u1=1; Path=/', 'u2=2; Secure'],
        'cache-control': 'no-store',
      })
      for (const chunk of chunksOf(BIG, 64 * 1024)) {
        if (!res.write(chunk)) await new Promise((r) => res.once('drain', r))
      }
      res.end()
      return
    }
    if (path.endsWith('/slow')) {
      await readAll(req)
      await sleep(2_000)
      if (!res.destroyed) res.end('too late')
      return
    }
    if (path.endsWith('/gate-res')) {
      // first bytes, then wait until the client has them: only a streaming gateway passes
      await readAll(req)
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.write('first|')
      const got = await Promise.race([gates.clientGotFirst.promise.then(() => 'rest'), sleep(5_000).then(() => 'buffered!')])
      res.end(got)
      return
    }
    if (path.endsWith('/gate-req')) {
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => {
        chunks.push(c)
        gates.upstreamGotFirst.resolve()
      })
      await new Promise((r) => req.on('end', r))
      res.end(Buffer.concat(chunks))
      return
    }
    if (path.endsWith('/status')) {
      await readAll(req)
      res.writeHead(409, { 'content-type': 'text/plain', 'x-conflict': 'exact' })
      res.end('conflict body')
      return
    }
    const body = await readAll(req)
    const s: Seen = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, length: body.length, sha: sha256(body) }
    seen.push(s)
    const payload = JSON.stringify(s)
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) })
    res.end(payload)
  })
  deadUrl = `http://127.0.0.1:${await refusedPort()}`

  const lb = new LoadBalancer({ upstreamServers: [upstream.url] })
  const gw = new Gateway({ loadBalancer: lb, timeout: '10s', connectTimeout: '2s' })
  const gwNoLb = new Gateway()
  const gwDead = new Gateway({ loadBalancer: new LoadBalancer({ upstreamServers: [deadUrl] }), connectTimeout: '2s' })

  const app = new Velithon({ workerThreads: 2, handlerTimeout: '10s', maxBodySize: 8 * MiB, onError })
  const all = { methods: ['GET', 'POST', 'PUT'] }
  app.route('/fwd/{path:path}', (req) => gw.forwardRequest(req, undefined, { additionalHeaders: { 'X-User-ID': '42' } }), all)
  app.route('/fwd-lb/{path:path}', (req) => gw.forwardRequest(req, lb), all)
  app.route('/to/{path:path}', (req) => forwardTo(upstream.url, req), all)
  app.route(
    '/read/{path:path}',
    async (req) => {
      const body = await req.body()
      req.context.readLength = body.length
      return gw.forwardRequest(req)
    },
    all,
  )
  app.route(
    '/inspect/{path:path}',
    async (req) => {
      const fr = await gw.forwardRequest(req)
      return new JSONResponse({
        isForwarded: fr instanceof ForwardedResponse,
        status: fr.status,
        xUp: fr.headers.get('x-up'),
        cookies: fr.headers.getSetCookie(),
      })
    },
    all,
  )
  app.get('/down-caught', async (req) => {
    try {
      return await forwardTo(deadUrl, req)
    } catch (e) {
      const err = e as UpstreamError
      return new JSONResponse(
        {
          caught: err.code,
          isUpstreamError: e instanceof UpstreamError,
          isVelithonError: e instanceof VelithonError,
          name: err.name,
        },
        503,
      )
    }
  })
  app.get('/down-caught-gw', async (req) => {
    try {
      return await gwDead.forwardRequest(req)
    } catch (e) {
      return new JSONResponse({ caught: (e as UpstreamError).code, isUpstreamError: e instanceof UpstreamError }, 503)
    }
  })
  app.get('/down', (req) => forwardTo(deadUrl, req))
  app.get('/down-gw', (req) => gwDead.forwardRequest(req))
  app.get('/slow/{path:path}', (req) => gw.forwardRequest(req, undefined, { timeout: '300ms' }))
  app.get('/slow-caught/{path:path}', async (req) => {
    try {
      return await gw.forwardRequest(req, undefined, { timeout: '300ms' })
    } catch (e) {
      return new JSONResponse({ caught: (e as UpstreamError).code, isUpstreamError: e instanceof UpstreamError }, 599)
    }
  })

  // a ForwardedResponse of one request returned by another
  let stashed: ForwardedResponse | undefined
  app.get('/stash/{path:path}', async (req) => {
    stashed = await gw.forwardRequest(req)
    return stashed
  })
  app.get('/other', () => stashed)

  app.get('/nolb', async (req) => {
    try {
      await gwNoLb.forwardRequest(req)
      return { thrown: false }
    } catch (e) {
      return { thrown: true, isConfigError: e instanceof ConfigError, option: (e as ConfigError).option, message: (e as Error).message }
    }
  })
  app.get('/badhdr/{kind}', async (req: Request) => {
    const bad: Record<string, unknown> = {
      name: { 'bad name': 'x' },
      value: { 'x-ok': 'line\r\nbreak' },
      type: { 'x-num': 5 },
      shape: 'x-a: b',
    }
    try {
      await gw.forwardRequest(req, undefined, { additionalHeaders: bad[req.pathParams.kind] as Record<string, string> })
      return { thrown: false }
    } catch (e) {
      return { thrown: true, isConfigError: e instanceof ConfigError, option: (e as ConfigError).option, message: (e as Error).message }
    }
  })
  app.get('/nolb-uncaught', (req) => gwNoLb.forwardRequest(req))

  const address = await app.listen({ port: 0, host: '127.0.0.1' })
  closers.add(() => app.close({ timeout: '2s' }))
  base = address.url
})

afterAll(async () => {
  await closers.closeAll()
})

function lastSeen(): Seen {
  const s = seen.at(-1)
  if (!s) throw new Error('the upstream saw no request')
  return s
}

describe('the upstream response reaches the client unchanged', () => {
  for (const route of ['fwd', 'to']) {
    it(`${route}: status, headers and a streamed 5 MiB body`, async () => {
      const r = await send(`${base}/${route}/big`, { timeoutMs: 30_000 })
      expect(r.status).toBe(201)
      expect(r.headers['content-type']).toBe('application/x-test')
      expect(r.headers['x-up']).toBe('yes')
      expect(r.headers['cache-control']).toBe('no-store')
      expect(r.headers['set-cookie']).toEqual(['u1=1; Path=/', 'u2=2; Secure'])
      expect(r.body.length).toBe(BIG.length)
      expect(sha256(r.body)).toBe(BIG_SHA)
    })
  }

  it('the response body streams: the client gets the first bytes before the upstream ends', async () => {
    gates.clientGotFirst = gate()
    const body = await new Promise<string>((resolve, reject) => {
      const req = http.get(`${base}/fwd/gate-res`, { agent: false }, (res) => {
        let text = ''
        res.on('data', (c: Buffer) => {
          text += c.toString()
          if (text.includes('first|')) gates.clientGotFirst.resolve()
        })
        res.on('end', () => resolve(text))
        res.on('error', reject)
      })
      req.setTimeout(10_000, () => req.destroy(new Error('no answer')))
      req.on('error', reject)
    })
    expect(body).toBe('first|rest')
  })

  it('the request body streams: the upstream gets the first chunk before the client sends the rest', async () => {
    gates.upstreamGotFirst = gate()
    const reply = new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = http.request(`${base}/fwd/gate-req`, { method: 'POST', agent: false }, (res) => {
        readAll(res).then((b) => resolve({ status: res.statusCode ?? 0, body: b.toString() }), reject)
      })
      req.setTimeout(10_000, () => req.destroy(new Error('no answer')))
      req.on('error', reject)
      req.write('first|')
      withTimeout(gates.upstreamGotFirst.promise, 5_000, 'the upstream to get the first chunk')
        .then(() => req.end('rest'))
        .catch((err: unknown) => req.destroy(err as Error))
    })
    const r = await reply
    expect(r.status).toBe(200)
    expect(r.body).toBe('first|rest')
  })

  it('a non-2xx upstream status and body pass as sent', async () => {
    const r = await send(`${base}/fwd/status`)
    expect(r.status).toBe(409)
    expect(r.headers['x-conflict']).toBe('exact')
    expect(r.body.toString()).toBe('conflict body')
  })

  it('the handler sees the upstream head as a ForwardedResponse (status, headers, set-cookie)', async () => {
    const r = await send(`${base}/inspect/big`, { timeoutMs: 30_000 })
    expect(r.status).toBe(200)
    expect(jsonOf(r)).toEqual({ isForwarded: true, status: 201, xUp: 'yes', cookies: ['u1=1; Path=/', 'u2=2; Secure'] })
  })

  it('the path and raw query are forwarded as sent', async () => {
    const r = await send(`${base}/fwd/echo/a%20b?x=1&y=%2F&x=2`)
    expect(r.status).toBe(200)
    expect(lastSeen().url).toBe('/fwd/echo/a%20b?x=1&y=%2F&x=2')
  })
})

describe('request bodies reach the upstream intact', () => {
  for (const route of ['fwd', 'to', 'fwd-lb']) {
    it(`${route}: a 5 MiB chunked body JS did not read streams upstream`, async () => {
      const r = await send(`${base}/${route}/echo`, { method: 'POST', body: chunksOf(BIG, 64 * 1024), timeoutMs: 30_000 })
      expect(r.status).toBe(200)
      const s = jsonOf<Seen>(r)
      expect(s.method).toBe('POST')
      expect(s.length).toBe(BIG.length)
      expect(s.sha).toBe(BIG_SHA)
    })
  }

  it('a 5 MiB body JS read once (await req.body()) is still forwarded intact', async () => {
    const r = await send(`${base}/read/echo`, { method: 'POST', body: chunksOf(BIG, 64 * 1024), timeoutMs: 30_000 })
    expect(r.status).toBe(200)
    const s = jsonOf<Seen>(r)
    expect(s.length).toBe(BIG.length)
    expect(s.sha).toBe(BIG_SHA)
  })

  it('a small Content-Length body JS read is forwarded with a right length', async () => {
    const r = await send(`${base}/read/echo`, { method: 'PUT', body: 'hello upstream' })
    expect(r.status).toBe(200)
    const s = jsonOf<Seen>(r)
    expect(s.method).toBe('PUT')
    expect(s.length).toBe(14)
    expect(s.sha).toBe(sha256(Buffer.from('hello upstream')))
  })
})

describe('headers sent upstream', () => {
  it('additionalHeaders reach the upstream; X-Forwarded-For is set', async () => {
    const r = await send(`${base}/fwd/echo`, { headers: { 'x-user-id': 'spoofed', 'x-client': 'c1' } })
    expect(r.status).toBe(200)
    const h = jsonOf<Seen>(r).headers
    expect(h['x-user-id']).toBe('42') // replaced, not appended
    expect(h['x-client']).toBe('c1')
    expect(h['x-forwarded-for']).toBe('127.0.0.1')
    expect(h['x-forwarded-proto']).toBe('http')
  })

  it('forwardTo sets X-Forwarded-For too', async () => {
    const r = await send(`${base}/to/echo`)
    expect(jsonOf<Seen>(r).headers['x-forwarded-for']).toBe('127.0.0.1')
  })
})

describe('upstream failures', () => {
  it('refused connection: the handler catches an UpstreamError VG_UPSTREAM_CONNECT (forwardTo)', async () => {
    const r = await send(`${base}/down-caught`)
    expect(r.status).toBe(503)
    expect(jsonOf(r)).toEqual({ caught: 'VG_UPSTREAM_CONNECT', isUpstreamError: true, isVelithonError: true, name: 'UpstreamError' })
  })

  it('refused connection: the handler catches an UpstreamError VG_UPSTREAM_CONNECT (forwardRequest)', async () => {
    const r = await send(`${base}/down-caught-gw`)
    expect(r.status).toBe(503)
    expect(jsonOf(r)).toEqual({ caught: 'VG_UPSTREAM_CONNECT', isUpstreamError: true })
  })

  it('refused connection, uncaught: the client gets 502 JSON (onError not called)', async () => {
    onError.mockClear()
    for (const path of ['/down', '/down-gw']) {
      const r = await send(`${base}${path}`)
      expect(r.status, path).toBe(502)
      expect(r.headers['content-type']).toMatch(/^application\/json/)
      const body = jsonOf<{ code: string; message: string }>(r)
      expect(body.code).toBe('VG_UPSTREAM_CONNECT')
      expect(r.body.toString()).not.toMatch(/\bat .*:\d+:\d+/)
    }
    expect(onError).not.toHaveBeenCalled()
  })

  it('slow upstream, uncaught: 504 VG_UPSTREAM_TIMEOUT', async () => {
    const started = Date.now()
    const r = await send(`${base}/slow/slow`, { timeoutMs: 10_000 })
    expect(r.status).toBe(504)
    expect(jsonOf<{ code: string }>(r).code).toBe('VG_UPSTREAM_TIMEOUT')
    expect(Date.now() - started).toBeLessThan(1_900)
  })

  it('slow upstream, caught: UpstreamError VG_UPSTREAM_TIMEOUT', async () => {
    const r = await send(`${base}/slow-caught/slow`, { timeoutMs: 10_000 })
    expect(r.status).toBe(599)
    expect(jsonOf(r)).toEqual({ caught: 'VG_UPSTREAM_TIMEOUT', isUpstreamError: true })
  })
})

describe('misuse', () => {
  it('returning the ForwardedResponse of another request answers 500', async () => {
    const first = await send(`${base}/stash/echo`)
    expect(first.status).toBe(200)
    onError.mockClear()
    const r = await send(`${base}/other`)
    expect(r.status).toBe(500)
    expect(r.headers['content-type']).toMatch(/^application\/json/)
    expect(onError).toHaveBeenCalledTimes(1)
  })

  it('forwardRequest with no loadBalancer anywhere rejects with ConfigError', async () => {
    const r = await send(`${base}/nolb`)
    const body = jsonOf<{ thrown: boolean; isConfigError: boolean; option: string; message: string }>(r)
    expect(body.thrown).toBe(true)
    expect(body.isConfigError).toBe(true)
    expect(body.option).toBe('loadBalancer')
    expect(body.message).toMatch(/loadBalancer/)
  })

  it('uncaught ConfigError from forwardRequest answers 500 and reaches onError', async () => {
    onError.mockClear()
    const r = await send(`${base}/nolb-uncaught`)
    expect(r.status).toBe(500)
    expect(onError).toHaveBeenCalledTimes(1)
    expect(onError.mock.calls[0][0]).toBeInstanceOf(ConfigError)
  })

  for (const kind of ['name', 'value', 'type', 'shape']) {
    it(`bad additionalHeaders (${kind}) reject with a ConfigError naming additionalHeaders`, async () => {
      const before = seen.length
      const r = await send(`${base}/badhdr/${kind}`)
      const body = jsonOf<{ thrown: boolean; isConfigError: boolean; option: string; message: string }>(r)
      expect(body.thrown).toBe(true)
      expect(body.isConfigError).toBe(true)
      expect(body.option).toBe('additionalHeaders')
      expect(body.message).toContain('additionalHeaders')
      expect(seen.length).toBe(before) // nothing was sent
    })
  }
})

describe('error classes', () => {
  it('CircuitBreakerOpenError is a real class: code VG_CIRCUIT_OPEN, a VelithonError', () => {
    expect(typeof CircuitBreakerOpenError).toBe('function')
    const e = new CircuitBreakerOpenError()
    expect(e).toBeInstanceOf(CircuitBreakerOpenError)
    expect(e).toBeInstanceOf(VelithonError)
    expect(e).toBeInstanceOf(Error)
    expect(e.code).toBe('VG_CIRCUIT_OPEN')
    expect(e.code).toBe(ErrorCodes.CIRCUIT_OPEN)
    expect(e.name).toBe('CircuitBreakerOpenError')
    expect(typeof e.message).toBe('string')
    expect(e.message.length).toBeGreaterThan(0)
    const withMsg = new CircuitBreakerOpenError('all open', { cause: 'x' })
    expect(withMsg.message).toBe('all open')
    expect(withMsg.cause).toBe('x')
    expect(e).not.toBeInstanceOf(UpstreamError)
  })

  it('UpstreamError and ConfigError are VelithonErrors', () => {
    const u = new UpstreamError('VG_UPSTREAM_CONNECT', 'x')
    expect(u).toBeInstanceOf(VelithonError)
    expect(u.code).toBe('VG_UPSTREAM_CONNECT')
    const c = new ConfigError('opt', 'bad')
    expect(c).toBeInstanceOf(VelithonError)
    expect(c.option).toBe('opt')
  })
})
