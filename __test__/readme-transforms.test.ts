// The README's "Transformations, route options and identity headers" examples, run against
// local upstreams: u1, u2, u3 stand for 'http://127.0.0.1:9001' … '9003'. Keep the two in
// step: the last test checks that every line of the README's examples is here.
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { randomUUID } from 'node:crypto'
import { afterEach, describe, expect, it } from 'vitest'
import {
  Velithon,
  Gateway,
  LoadBalancer,
  HeaderTransformer,
  PathTransformer,
  BodyTransformer,
  JSONResponse,
  DEFAULT_STRIPPED_HEADERS,
} from 'velithon-gateway'
import { closeAll, defer, rawExchange, readAll, send, startUpstream, type Echo } from './helpers/net'

afterEach(closeAll)

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/

/** An upstream that echoes what it got (as helpers' echoHandler), with an X-Powered-By to remove. */
async function upstream(name: string, failing?: (url: string) => boolean): Promise<string> {
  const up = await startUpstream(async (req, res) => {
    const body = await readAll(req)
    if (failing?.(req.url ?? '')) {
      res.statusCode = 503
      return res.end('busy')
    }
    const payload = JSON.stringify({ name, method: req.method, url: req.url, headers: req.headers, rawHeaders: req.rawHeaders, body: body.toString() })
    res.writeHead(200, { 'content-type': 'application/json', 'x-powered-by': 'upstream' })
    res.end(payload)
  })
  return up.url
}

async function serve(app: Velithon): Promise<string> {
  const { url } = await app.listen({ port: 0, host: '127.0.0.1' })
  defer(() => app.close())
  return url
}

const echo = (body: Buffer) => JSON.parse(body.toString()) as Echo

describe('README: transformations', () => {
  it('header, path and body transformers, route options and the request id', async () => {
    const u1 = await upstream('u1', (url) => url.includes('/retry'))
    const u2 = await upstream('u2')
    const u3 = await upstream('u3')

    // ---- as in the README ----
    const stamp = new HeaderTransformer({
      addHeaders: { 'X-Gateway': 'velithon', 'X-Trace-Id': () => randomUUID() }, // string: Rust; function: JS, per request
      removeHeaders: ['X-Debug'],
      modifyHeaders: { 'User-Agent': (ua) => `${ua} via velithon` }, // only when the client sent one
      responseHeaders: { removeHeaders: ['X-Powered-By'], addHeaders: { 'X-Frame-Options': 'DENY' } },
    })
    const accounts = new LoadBalancer({
      upstreamServers: [u1, u2],
      transformers: [new HeaderTransformer({ addHeaders: { 'X-Pool': 'accounts' } })],
    })
    const gateway = new Gateway({ loadBalancer: accounts, transformers: [stamp], requestId: { header: 'X-Correlation-ID' } })

    // GET /api/v1/users/7?x=1 → GET http://127.0.0.1:9001/internal/accounts/7?x=1
    gateway.route('/api/v1/{path:path}', {
      transformers: [
        new PathTransformer({ stripPrefix: '/api/v1', pathMappings: { '/users': '/accounts' }, addPrefix: '/internal' }),
        new BodyTransformer({
          contentTypes: ['application/json'], // other bodies stream untouched
          maxBodySize: 64 * 1024,
          transformFunction: (body) => JSON.stringify({ ...JSON.parse(body.toString('utf8')), source: 'gateway' }),
        }),
      ],
      headersToAdd: { 'X-Api-Version': '1' },
      headersToRemove: ['Cookie'],
      maxRetries: 2, // up to 3 attempts
    })
    // GET /v1/orders/9 → GET http://127.0.0.1:9003/v2/orders/9
    gateway.route('/v1/{path:path}', { upstream: u3, pathRewrite: { pattern: /^\/v1\/(.*)$/, replacement: '/v2/$1' } })

    const app = new Velithon()
    app.includeRouter(gateway.getRouter())
    // ---- end ----
    const base = await serve(app)

    const reply = await send(`${base}/api/v1/users/7?x=1`, {
      headers: { 'user-agent': 'curl/8', 'x-debug': '1', cookie: 'sid=1', 'x-user-id': '1' },
    })
    expect(reply.status).toBe(200)
    const seen = echo(reply.body)
    expect(['u1', 'u2']).toContain(seen.name)
    expect(seen.url).toBe('/internal/accounts/7?x=1')
    expect(seen.headers['x-gateway']).toBe('velithon')
    expect(seen.headers['x-trace-id']).toMatch(UUID_V4)
    expect(seen.headers['user-agent']).toBe('curl/8 via velithon')
    expect(seen.headers['x-pool']).toBe('accounts')
    expect(seen.headers['x-api-version']).toBe('1')
    for (const gone of ['x-debug', 'cookie', 'x-user-id']) expect(seen.headers).not.toHaveProperty(gone)
    // The request id, renamed, goes both ways.
    expect(seen.headers['x-correlation-id']).toMatch(UUID_V4)
    expect(reply.headers['x-correlation-id']).toBe(seen.headers['x-correlation-id'])
    expect(reply.headers['x-frame-options']).toBe('DENY')
    expect(reply.headers).not.toHaveProperty('x-powered-by')

    // Without a User-Agent the modify rule does nothing; each request gets its own trace id.
    const again = echo((await send(`${base}/api/v1/users/7`)).body)
    expect(again.headers).not.toHaveProperty('user-agent')
    expect(again.headers['x-trace-id']).not.toBe(seen.headers['x-trace-id'])

    // JSON bodies are rewritten (with a new Content-Length); others stream untouched.
    const posted = echo(
      (await send(`${base}/api/v1/users`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"name":"ada"}' })).body,
    )
    expect(posted.url).toBe('/internal/accounts')
    expect(JSON.parse(posted.body)).toEqual({ name: 'ada', source: 'gateway' })
    expect(posted.headers['content-length']).toBe(String(Buffer.byteLength(posted.body)))
    const text = echo((await send(`${base}/api/v1/notes`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'as is' })).body)
    expect(text.url).toBe('/internal/notes')
    expect(text.body).toBe('as is')

    // u1 answers 503 under /retry: maxRetries sends the request to u2.
    for (let i = 0; i < 4; i++) {
      const retried = await send(`${base}/api/v1/retry/${i}`)
      expect(retried.status).toBe(200)
      expect(echo(retried.body).name).toBe('u2')
    }

    const rewritten = echo((await send(`${base}/v1/orders/9`)).body)
    expect(rewritten.name).toBe('u3')
    expect(rewritten.url).toBe('/v2/orders/9')

    // Dot segments are refused before any rule runs (raw: a URL parser would resolve them).
    const port = new URL(base).port
    const dots = await rawExchange(
      Number(port),
      `GET /api/v1/users/%2e%2e/admin HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n\r\n`,
    )
    expect(dots.statusLine).toBe('HTTP/1.1 400 Bad Request')
  })
})

describe('README: identity headers', () => {
  it('the handler authenticates and forwards the identity; forged identity headers never reach the upstream', async () => {
    const u1 = await upstream('u1')

    // ---- as in the README ----
    const users = new LoadBalancer({ upstreamServers: [u1] })
    const gateway = new Gateway({ stripIncomingHeaders: [...DEFAULT_STRIPPED_HEADERS, 'x-tenant'] })
    const sessions = new Map([['good', { id: '42', roles: 'admin' }]]) // your token store

    const app = new Velithon()
    app.get('/me/{path:path}', async (request) => {
      const token = request.headers.get('authorization')?.replace(/^Bearer /, '')
      const user = token === undefined ? undefined : sessions.get(token)
      if (!user) return new JSONResponse({ error: 'unauthorized' }, 401)
      return gateway.forwardRequest(request, users, {
        additionalHeaders: { 'X-User-ID': user.id, 'X-User-Roles': user.roles },
      })
    })
    // ---- end ----
    const base = await serve(app)

    const forged = { 'x-user-id': '1', 'x-user-roles': 'superuser', 'x-tenant': 'other', 'x-remote-user': 'root' }
    const ok = await send(`${base}/me/profile`, { headers: { authorization: 'Bearer good', ...forged } })
    expect(ok.status).toBe(200)
    const seen = echo(ok.body)
    expect(seen.url).toBe('/me/profile')
    expect(seen.rawHeaders.filter((_, i, all) => i % 2 === 1 && /^x-user-id$/i.test(all[i - 1]))).toEqual(['42'])
    expect(seen.headers['x-user-roles']).toBe('admin')
    for (const gone of ['x-tenant', 'x-remote-user']) expect(seen.headers).not.toHaveProperty(gone)

    const denied = await send(`${base}/me/profile`, { headers: { authorization: 'Bearer bad', ...forged } })
    expect(denied.status).toBe(401)
    expect((await send(`${base}/me/profile`, { headers: forged })).status).toBe(401)
  })
})

describe('README: in step with this file', () => {
  it("every line of the section's examples appears here (ports as u1–u3)", () => {
    const readme = readFileSync(fileURLToPath(new URL('../README.md', import.meta.url)), 'utf8')
    const start = readme.indexOf('## Transformations, route options and identity headers')
    // The section ends at the next top-level heading.
    const end = readme.indexOf('\n## ', start + 1)
    expect(start).toBeGreaterThan(0)
    expect(end).toBeGreaterThan(start)
    const section = readme.slice(start, end)
    const blocks = [...section.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1])
    expect(blocks).toHaveLength(2)
    const here = readFileSync(fileURLToPath(import.meta.url), 'utf8')
    const missing = blocks
      .flatMap((block) => block.split('\n'))
      .map((line) =>
        line
          .trim()
          .replace(/\['http:\/\/127\.0\.0\.1:9001', 'http:\/\/127\.0\.0\.1:9002'\]/, '[u1, u2]')
          .replace(/\['http:\/\/127\.0\.0\.1:9001'\]/, '[u1]')
          .replace(/upstream: 'http:\/\/127\.0\.0\.1:9003'/, 'upstream: u3'),
      )
      .filter((line) => line !== '' && !line.startsWith('import ') && !line.includes('app.listen('))
      .filter((line) => !here.includes(line))
    expect(missing).toEqual([])
  })
})
