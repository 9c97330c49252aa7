/**
 * JS route handlers: every kind of return value, async handlers, errors and timeouts,
 * method matching, and what a handler sees of the request. One app for the file, real
 * node:http clients on 127.0.0.1.
 */
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest'
import { JSONResponse, Request, Response, Velithon, type AddressInfo } from 'velithon-gateway'
import { Closers, jsonOf, send, sleep, withTimeout } from './helpers/js-net'

const closers = new Closers()
const onError = vi.fn()
let base = ''

const SECRET = 'secret-detail-5f2c'

beforeAll(async () => {
  const app = new Velithon({ workerThreads: 2, handlerTimeout: '300ms', maxBodySize: 1024, onError })

  // return kinds
  app.get('/kind/object', () => ({ hello: 'world', n: 1 }))
  app.get('/kind/array', () => [1, 'two', { three: 3 }])
  app.get('/kind/string', () => 'plain text')
  app.get('/kind/buffer', () => Buffer.from([0, 1, 2, 255]))
  app.get('/kind/uint8array', () => new Uint8Array([9, 8, 7]))
  app.get('/kind/response', () =>
    new Response('created', {
      status: 201,
      headers: { 'x-a': ['1', '2'], 'set-cookie': ['a=1; Path=/', 'b=2; HttpOnly'], 'x-single': 'yes' },
    }),
  )
  app.get('/kind/jsonresponse', () => new JSONResponse({ ok: false }, 418))
  app.get('/kind/null', () => null)
  app.get('/kind/undefined', () => undefined)
  app.get('/kind/async', async () => {
    await sleep(50)
    return { late: true }
  })
  app.get('/kind/function', () => () => 'not sendable')

  // failures
  app.get('/fail/throw', () => {
    throw new Error(SECRET)
  })
  app.get('/fail/reject', async () => {
    await sleep(5)
    throw new TypeError(SECRET)
  })
  app.get('/fail/slow', async () => {
    await sleep(1_000)
    return { tooLate: true }
  })

  // methods
  app.get('/m/get', (req) => ({ method: req.method }))
  app.post('/m/post', (req) => ({ method: req.method }))
  app.put('/m/put', (req) => ({ method: req.method }))
  app.patch('/m/patch', (req) => ({ method: req.method }))
  app.delete('/m/delete', (req) => ({ method: req.method }))
  app.options('/m/options', (req) => new Response(null, { status: 204, headers: { allow: 'GET, OPTIONS', 'x-method': req.method } }))
  app.head('/m/head', (req) => new Response(null, { headers: { 'x-method': req.method } }))
  app.route('/m/multi', (req) => ({ method: req.method }), { methods: ['PUT', 'PATCH'] })
  app.route('/m/default', (req) => ({ method: req.method }))
  // two handlers on one path, by method
  app.get('/m/shared', () => 'from get')
  app.post('/m/shared', () => 'from post')

  // request fields
  app.route(
    '/req/{id:int}/{rest:path}',
    (req) => ({
      method: req.method,
      url: req.url,
      path: req.path,
      queryString: req.queryString,
      queryX: req.query.getAll('x'),
      queryY: req.query.get('y'),
      pathParams: req.pathParams,
      custom: req.headers.get('X-CUSTOM-Header'),
      customLower: req.headers.get('x-custom-header'),
      rawHeaderNames: req.rawHeaders.map(([k]) => k),
      client: req.client,
      isRequest: req instanceof Request,
    }),
    { methods: ['GET', 'DELETE'] },
  )
  app.get('/param/{name}', (req) => req.pathParams)
  app.post('/body/all', async (req) => {
    const body = await req.body()
    const text = await req.text()
    const json = await req.json<{ a: number; s: string }>()
    return { length: body.length, isBuffer: Buffer.isBuffer(body), text, json }
  })
  app.post('/body/json', async (req) => ({ parsed: await req.json() }))
  app.post('/body/len', async (req) => ({ length: (await req.body()).length }))

  const address: AddressInfo = await app.listen({ port: 0, host: '127.0.0.1' })
  closers.add(() => app.close({ timeout: '2s' }))
  base = address.url
})

afterAll(async () => {
  await closers.closeAll()
})

beforeEach(() => {
  onError.mockClear()
})

describe('return kinds', () => {
  it('a plain object is sent as JSON', async () => {
    const r = await send(`${base}/kind/object`)
    expect(r.status).toBe(200)
    expect(r.headers['content-type']).toMatch(/^application\/json/)
    expect(jsonOf(r)).toEqual({ hello: 'world', n: 1 })
  })

  it('an array is sent as JSON', async () => {
    const r = await send(`${base}/kind/array`)
    expect(r.status).toBe(200)
    expect(r.headers['content-type']).toMatch(/^application\/json/)
    expect(jsonOf(r)).toEqual([1, 'two', { three: 3 }])
  })

  it('a string is sent as text/plain', async () => {
    const r = await send(`${base}/kind/string`)
    expect(r.status).toBe(200)
    expect(r.headers['content-type']).toMatch(/^text\/plain/)
    expect(r.body.toString()).toBe('plain text')
  })

  it('a Buffer is sent as application/octet-stream, bytes intact', async () => {
    const r = await send(`${base}/kind/buffer`)
    expect(r.status).toBe(200)
    expect(r.headers['content-type']).toBe('application/octet-stream')
    expect([...r.body]).toEqual([0, 1, 2, 255])
  })

  it('a Uint8Array is sent as application/octet-stream, bytes intact', async () => {
    const r = await send(`${base}/kind/uint8array`)
    expect(r.status).toBe(200)
    expect(r.headers['content-type']).toBe('application/octet-stream')
    expect([...r.body]).toEqual([9, 8, 7])
  })

  it('a Response keeps its status, repeated headers and two Set-Cookie headers', async () => {
    const r = await send(`${base}/kind/response`)
    expect(r.status).toBe(201)
    expect(r.body.toString()).toBe('created')
    expect(r.headers['content-type']).toMatch(/^text\/plain/)
    expect(r.headers['x-single']).toBe('yes')
    expect(r.headers['set-cookie']).toEqual(['a=1; Path=/', 'b=2; HttpOnly'])
    // x-a sent as two values (two lines, or one joined line: both are the same header)
    const xa: string[] = []
    for (let i = 0; i < r.rawHeaders.length; i += 2) if (r.rawHeaders[i].toLowerCase() === 'x-a') xa.push(r.rawHeaders[i + 1])
    expect(xa.join(', ')).toBe('1, 2')
  })

  it('a JSONResponse keeps its status', async () => {
    const r = await send(`${base}/kind/jsonresponse`)
    expect(r.status).toBe(418)
    expect(r.headers['content-type']).toMatch(/^application\/json/)
    expect(jsonOf(r)).toEqual({ ok: false })
  })

  it('null and undefined answer 204 with no body', async () => {
    for (const path of ['/kind/null', '/kind/undefined']) {
      const r = await send(`${base}${path}`)
      expect(r.status, path).toBe(204)
      expect(r.body.length, path).toBe(0)
    }
  })

  it('an async handler that awaits a timer', async () => {
    const r = await send(`${base}/kind/async`)
    expect(r.status).toBe(200)
    expect(jsonOf(r)).toEqual({ late: true })
  })

  it('a value that cannot be sent (a function) answers 500 JSON', async () => {
    const r = await send(`${base}/kind/function`)
    expect(r.status).toBe(500)
    expect(r.headers['content-type']).toMatch(/^application\/json/)
    const body = jsonOf<{ code: string }>(r)
    expect(typeof body.code).toBe('string')
    expect(body.code).toMatch(/^VG_/)
  })
})

describe('failures', () => {
  it('a throwing handler answers 500 VG_HANDLER_ERROR, no stack or message; onError called once', async () => {
    const r = await send(`${base}/fail/throw`)
    expect(r.status).toBe(500)
    expect(r.headers['content-type']).toMatch(/^application\/json/)
    const text = r.body.toString()
    expect(jsonOf<{ code: string }>(r).code).toBe('VG_HANDLER_ERROR')
    expect(text).not.toContain(SECRET)
    expect(text).not.toMatch(/\bat .*\(.*:\d+:\d+\)/) // no stack frames
    expect(text).not.toContain('handlers.test')
    expect(onError).toHaveBeenCalledTimes(1)
    const [err, req] = onError.mock.calls[0]
    expect(err).toBeInstanceOf(Error)
    expect((err as Error).message).toBe(SECRET)
    expect(req).toBeInstanceOf(Request)
    expect((req as Request).method).toBe('GET')
    expect((req as Request).path).toBe('/fail/throw')
  })

  it('a rejecting async handler answers 500 VG_HANDLER_ERROR; onError called once', async () => {
    const r = await send(`${base}/fail/reject`)
    expect(r.status).toBe(500)
    expect(jsonOf<{ code: string }>(r).code).toBe('VG_HANDLER_ERROR')
    expect(r.body.toString()).not.toContain(SECRET)
    expect(onError).toHaveBeenCalledTimes(1)
    expect(onError.mock.calls[0][0]).toBeInstanceOf(TypeError)
    expect((onError.mock.calls[0][1] as Request).path).toBe('/fail/reject')
  })

  it('a handler slower than handlerTimeout (300ms) answers 504 VG_CALLBACK_TIMEOUT', async () => {
    const started = Date.now()
    const r = await send(`${base}/fail/slow`, { timeoutMs: 5_000 })
    expect(r.status).toBe(504)
    expect(r.headers['content-type']).toMatch(/^application\/json/)
    expect(jsonOf<{ code: string }>(r).code).toBe('VG_CALLBACK_TIMEOUT')
    expect(Date.now() - started).toBeLessThan(1_000) // answered before the handler finished
    // the app keeps serving afterwards
    expect((await send(`${base}/kind/object`)).status).toBe(200)
  })
})

describe('methods', () => {
  it('get/post/put/patch/delete each answer their method', async () => {
    for (const m of ['get', 'post', 'put', 'patch', 'delete']) {
      const r = await send(`${base}/m/${m}`, { method: m.toUpperCase() })
      expect(r.status, m).toBe(200)
      expect(jsonOf(r), m).toEqual({ method: m.toUpperCase() })
    }
  })

  it('options() answers OPTIONS', async () => {
    const r = await send(`${base}/m/options`, { method: 'OPTIONS' })
    expect(r.status).toBe(204)
    expect(r.headers['x-method']).toBe('OPTIONS')
    expect(r.headers.allow).toBe('GET, OPTIONS')
  })

  it('head() answers HEAD with headers and no body', async () => {
    const r = await send(`${base}/m/head`, { method: 'HEAD' })
    expect(r.status).toBe(200)
    expect(r.headers['x-method']).toBe('HEAD')
    expect(r.body.length).toBe(0)
  })

  it('a GET route also answers HEAD (no body)', async () => {
    const r = await send(`${base}/m/get`, { method: 'HEAD' })
    expect(r.status).toBe(200)
    expect(r.body.length).toBe(0)
  })

  it('a wrong method answers 405 with Allow', async () => {
    const r = await send(`${base}/m/post`, { method: 'GET' })
    expect(r.status).toBe(405)
    expect(String(r.headers.allow)).toContain('POST')
    const r2 = await send(`${base}/m/get`, { method: 'DELETE' })
    expect(r2.status).toBe(405)
    expect(String(r2.headers.allow)).toContain('GET')
  })

  it('route(…, { methods }) matches only those methods', async () => {
    for (const m of ['PUT', 'PATCH']) {
      const r = await send(`${base}/m/multi`, { method: m })
      expect(r.status, m).toBe(200)
      expect(jsonOf(r)).toEqual({ method: m })
    }
    for (const m of ['GET', 'POST', 'DELETE']) {
      const r = await send(`${base}/m/multi`, { method: m })
      expect(r.status, m).toBe(405)
      const allow = String(r.headers.allow)
      expect(allow).toContain('PUT')
      expect(allow).toContain('PATCH')
    }
  })

  it('route() without methods answers GET only', async () => {
    expect((await send(`${base}/m/default`)).status).toBe(200)
    expect((await send(`${base}/m/default`, { method: 'POST' })).status).toBe(405)
  })

  it('two handlers on one path are chosen by method', async () => {
    expect((await send(`${base}/m/shared`)).body.toString()).toBe('from get')
    expect((await send(`${base}/m/shared`, { method: 'POST' })).body.toString()).toBe('from post')
    expect((await send(`${base}/m/shared`, { method: 'PUT' })).status).toBe(405)
  })

  it('an unknown path answers 404', async () => {
    expect((await send(`${base}/nowhere`)).status).toBe(404)
  })
})

describe('the request a handler sees', () => {
  it('method, url with raw query, path, query, percent-decoded params, headers, client', async () => {
    const r = await send(`${base}/req/42/a%20b/c%2Fd/e?x=1&y=%20z&x=2`, {
      method: 'DELETE',
      headers: { 'X-Custom-Header': 'Value-1' },
    })
    expect(r.status).toBe(200)
    const body = jsonOf<Record<string, unknown>>(r)
    expect(body.method).toBe('DELETE')
    expect(body.url).toBe('/req/42/a%20b/c%2Fd/e?x=1&y=%20z&x=2')
    expect(body.path).toBe('/req/42/a%20b/c%2Fd/e')
    expect(body.queryString).toBe('x=1&y=%20z&x=2')
    expect(body.queryX).toEqual(['1', '2'])
    expect(body.queryY).toBe(' z')
    expect(body.pathParams).toEqual({ id: '42', rest: 'a b/c/d/e' })
    expect(body.custom).toBe('Value-1')
    expect(body.customLower).toBe('Value-1')
    expect(body.rawHeaderNames).toContain('x-custom-header')
    const client = body.client as { address: string; port: number }
    expect(client.address).toBe('127.0.0.1')
    expect(Number.isInteger(client.port) && client.port > 0).toBe(true)
    expect(body.isRequest).toBe(true)
  })

  it('{id:int} does not match letters', async () => {
    const r = await send(`${base}/req/abc/x`)
    expect(r.status).toBe(404)
  })

  it('a plain {name} parameter is percent-decoded', async () => {
    const r = await send(`${base}/param/caf%C3%A9%20ol%C3%A9`)
    expect(r.status).toBe(200)
    expect(jsonOf(r)).toEqual({ name: 'café olé' })
  })

  it('body(), text() and json() of a POST (all three on one request)', async () => {
    const payload = JSON.stringify({ a: 1, s: 'ünï' })
    const r = await send(`${base}/body/all`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: payload,
    })
    expect(r.status).toBe(200)
    expect(jsonOf(r)).toEqual({ length: Buffer.byteLength(payload), isBuffer: true, text: payload, json: { a: 1, s: 'ünï' } })
  })

  it('a chunked POST body is read whole', async () => {
    const r = await send(`${base}/body/len`, { method: 'POST', body: ['abc', 'defg', Buffer.alloc(100, 1)] })
    expect(r.status).toBe(200)
    expect(jsonOf(r)).toEqual({ length: 107 })
  })

  it('an empty POST body reads as zero bytes', async () => {
    const r = await send(`${base}/body/len`, { method: 'POST', body: '' })
    expect(r.status).toBe(200)
    expect(jsonOf(r)).toEqual({ length: 0 })
  })

  it('json() of invalid JSON answers 400 VG_BAD_REQUEST (onError not called)', async () => {
    const r = await send(`${base}/body/json`, { method: 'POST', body: '{not json' })
    expect(r.status).toBe(400)
    expect(jsonOf<{ code: string }>(r).code).toBe('VG_BAD_REQUEST')
    expect(onError).not.toHaveBeenCalled()
  })

  it('a body larger than maxBodySize (1024) answers 413 VG_BODY_TOO_LARGE', async () => {
    const r = await send(`${base}/body/len`, { method: 'POST', body: Buffer.alloc(4096, 0x61) })
    expect(r.status).toBe(413)
    expect(jsonOf<{ code: string }>(r).code).toBe('VG_BODY_TOO_LARGE')
    // chunked (no Content-Length up front) too
    const r2 = await send(`${base}/body/len`, { method: 'POST', body: [Buffer.alloc(800, 1), Buffer.alloc(800, 2)] })
    expect(r2.status).toBe(413)
    expect(jsonOf<{ code: string }>(r2).code).toBe('VG_BODY_TOO_LARGE')
    // exactly the limit is fine
    const r3 = await send(`${base}/body/len`, { method: 'POST', body: Buffer.alloc(1024, 0x62) })
    expect(r3.status).toBe(200)
    expect(jsonOf(r3)).toEqual({ length: 1024 })
  })
})

describe('CommonJS', () => {
  it('require("velithon-gateway") serves a JS handler route', async () => {
    const root = fileURLToPath(new URL('..', import.meta.url))
    const script = `
      const { Velithon, JSONResponse } = require('velithon-gateway')
      ;(async () => {
        const app = new Velithon({ workerThreads: 1 })
        app.get('/cjs/{n:int}', (req) => new JSONResponse({ cjs: true, n: req.pathParams.n }, 202))
        const { url } = await app.listen({ port: 0, host: '127.0.0.1' })
        try {
          const res = await fetch(url + '/cjs/7')
          console.log(JSON.stringify({ status: res.status, body: await res.json() }))
        } finally {
          await app.close({ timeout: '1s' })
        }
      })().catch((err) => { console.error(err); process.exit(1) })
    `
    const child = spawn(process.execPath, ['-e', script], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()))
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()))
    const code = await withTimeout(
      new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c))),
      20_000,
      'the CommonJS child to exit by itself',
    ).catch((err: unknown) => {
      child.kill('SIGKILL')
      throw err
    })
    expect(stderr, 'stderr of the child').toBe('')
    expect(code).toBe(0)
    expect(JSON.parse(stdout.trim())).toEqual({ status: 202, body: { cjs: true, n: '7' } })
  })
})
