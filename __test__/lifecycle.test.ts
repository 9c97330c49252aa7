/**
 * The app's life: listen on port 0, close() draining in-flight requests within a bound,
 * refusing new connections after, and the rules about when routes can be added.
 */
import http from 'node:http'
import net from 'node:net'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, test } from 'vitest'
import { ConfigError, Gateway, ListenError, Velithon, VelithonError } from 'velithon-gateway'
import {
  closeAll,
  defer,
  echoHandler,
  listen,
  send,
  sleep,
  startProxy,
  startUpstream,
  tryConnect,
  waitFor,
  withTimeout,
  type Reply,
} from './helpers/net'

afterEach(closeAll)

const ROOT = fileURLToPath(new URL('..', import.meta.url))

describe('listen', () => {
  test('port 0 resolves to a real port and a url that serves', async () => {
    const upstream = await startUpstream(echoHandler())
    const gateway = new Gateway({})
    gateway.route('/x/{path:path}', { upstream: upstream.url })
    const app = new Velithon({ workerThreads: 1 })
    app.includeRouter(gateway.getRouter())
    expect(app.address).toBeUndefined()
    const address = await listen(app)
    expect(address.host).toBe('127.0.0.1')
    expect(Number.isInteger(address.port)).toBe(true)
    expect(address.port).toBeGreaterThan(0)
    expect(address.port).toBeLessThan(65536)
    expect(address.url).toBe(`http://127.0.0.1:${address.port}`)
    expect(app.address).toEqual(address)
    expect(await tryConnect(address.port)).toBe('connected')
    expect((await send(`${address.url}/x/y`)).status).toBe(200)
  })

  test("host 'localhost' binds 127.0.0.1", async () => {
    const app = new Velithon({ workerThreads: 1 })
    defer(() => app.close())
    const address = await app.listen({ port: 0, host: 'localhost' })
    expect(address.host).toBe('127.0.0.1')
    expect(address.url).toBe(`http://127.0.0.1:${address.port}`)
  })

  test('an app with no routes answers 404 JSON', async () => {
    const app = new Velithon({ workerThreads: 1 })
    const { url } = await listen(app)
    const reply = await send(`${url}/anything`)
    expect(reply.status).toBe(404)
    expect(JSON.parse(reply.body.toString()).code).toBe('VG_NO_ROUTE')
  })

  test('a port in use rejects with ListenError (VG_BIND)', async () => {
    const blocker = net.createServer()
    blocker.listen(0, '127.0.0.1')
    await once(blocker, 'listening')
    defer(() => new Promise<void>((r) => blocker.close(() => r())))
    const port = (blocker.address() as net.AddressInfo).port
    const app = new Velithon({ workerThreads: 1 })
    defer(() => app.close())
    const err = await app.listen({ port, host: '127.0.0.1' }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ListenError)
    expect(err).toBeInstanceOf(VelithonError)
    expect((err as ListenError).code).toBe('VG_BIND')
    expect((err as Error).message).toContain(String(port))
  })

  test('listen twice rejects with ConfigError', async () => {
    const app = new Velithon({ workerThreads: 1 })
    await listen(app)
    const err = await app.listen({ port: 0 }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ConfigError)
    expect((err as ConfigError).message).toMatch(/already been started/)
  })

  test('includeRouter after listen throws ConfigError', async () => {
    const gateway = new Gateway({})
    gateway.route('/a/{path:path}', { upstream: 'http://127.0.0.1:9' })
    const app = new Velithon({ workerThreads: 1 })
    await listen(app)
    expect(() => app.includeRouter(gateway.getRouter())).toThrow(ConfigError)
  })
})

describe('close', () => {
  test('drains an in-flight slow request (it completes 200), then refuses new connections', async () => {
    let received = 0
    const upstream = await startUpstream(async (_req, res) => {
      received++
      await sleep(1_000)
      res.end('finished after close() began')
    })
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const inFlight = send(`${proxy.url}/gw/api/slow`)
    await waitFor(() => received === 1, 5_000, 'the slow request to reach the upstream')

    const closing = proxy.app.close()
    let closed = false
    void closing.then(() => (closed = true))
    // Stops accepting at once, while the slow request is still being served.
    await sleep(100)
    expect(await tryConnect(proxy.port)).toBe('ECONNREFUSED')
    expect(closed).toBe(false)

    const reply: Reply = await inFlight
    expect(reply.status).toBe(200)
    expect(reply.body.toString()).toBe('finished after close() began')
    await withTimeout(closing, 5_000, 'close() to resolve after the drain')
    expect(proxy.app.address).toBeUndefined()
    expect(await tryConnect(proxy.port)).toBe('ECONNREFUSED')
  })

  test('is bounded: a request longer than the grace period is cut off and close() resolves on time', async () => {
    const upstream = await startUpstream(async (_req, res) => {
      await sleep(10_000)
      if (!res.destroyed) res.end('too late')
    })
    const proxy = await startProxy({ upstreams: [upstream.url], gateway: { timeout: '30s' } })
    const inFlight = send(`${proxy.url}/gw/api/very-slow`).then(
      (r) => `status ${r.status}`,
      (e: NodeJS.ErrnoException) => `error ${e.code ?? e.message}`,
    )
    await waitFor(() => upstream.requests === 1, 5_000, 'the request to reach the upstream')
    const started = Date.now()
    await withTimeout(proxy.app.close({ timeout: '300ms' }), 5_000, 'close() with a 300 ms grace')
    expect(Date.now() - started).toBeLessThan(3_000)
    expect(await withTimeout(inFlight, 5_000, 'the cut-off request to settle')).toMatch(/^error /)
  })

  test("the app's shutdownTimeout is close()'s default bound", async () => {
    const upstream = await startUpstream(async (_req, res) => {
      await sleep(10_000)
      if (!res.destroyed) res.end('too late')
    })
    const proxy = await startProxy({ upstreams: [upstream.url], app: { shutdownTimeout: '300ms' } })
    const inFlight = send(`${proxy.url}/gw/api/very-slow`).then(
      () => 'answered',
      () => 'cut off',
    )
    await waitFor(() => upstream.requests === 1, 5_000, 'the request to reach the upstream')
    const started = Date.now()
    await withTimeout(proxy.app.close(), 5_000, 'close() with shutdownTimeout 300ms')
    expect(Date.now() - started).toBeLessThan(3_000)
    expect(await withTimeout(inFlight, 5_000, 'the request to settle')).toBe('cut off')
  })

  test('an idle keep-alive client connection does not hold close() up', async () => {
    const upstream = await startUpstream(echoHandler())
    const proxy = await startProxy({ upstreams: [upstream.url] })
    const agent = new http.Agent({ keepAlive: true })
    defer(() => agent.destroy())
    expect((await send(`${proxy.url}/gw/api/x`, { agent })).status).toBe(200)
    const started = Date.now()
    await withTimeout(proxy.app.close({ timeout: '10s' }), 5_000, 'close() with an idle keep-alive connection')
    expect(Date.now() - started).toBeLessThan(2_000)
  })

  test('is safe to call twice, and before listen', async () => {
    const idle = new Velithon()
    await idle.close()
    const app = new Velithon({ workerThreads: 1 })
    const { port } = await app.listen({ port: 0 })
    await Promise.all([app.close(), app.close()])
    await app.close()
    expect(await tryConnect(port)).toBe('ECONNREFUSED')
  })

  test('a script that listens and then closes exits by itself; one that only listens stays up', async () => {
    const script = (closeIt: boolean): string => `
      import { Velithon } from 'velithon-gateway'
      const app = new Velithon({ workerThreads: 1 })
      app.listen({ port: 0 }).then(({ port }) => {
        process.stdout.write('listening ' + port + '\\n')
        ${closeIt ? "setTimeout(() => app.close().then(() => process.stdout.write('closed\\n')), 100)" : ''}
      })
    `
    const run = (closeIt: boolean) => {
      const child = spawn(process.execPath, ['--input-type=module', '-e', script(closeIt)], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
      defer(() => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
      })
      let out = ''
      child.stdout.on('data', (c: Buffer) => (out += c.toString()))
      child.stderr.on('data', (c: Buffer) => (out += c.toString()))
      return { child, output: () => out }
    }

    const closing = run(true)
    const [code] = (await withTimeout(once(closing.child, 'exit'), 10_000, 'the closing script to exit')) as [number | null]
    expect(closing.output()).toMatch(/listening \d+\nclosed\n/)
    expect(code).toBe(0)

    const staying = run(false)
    await waitFor(() => /listening \d+/.test(staying.output()), 10_000, `the listening script to start: ${staying.output()}`)
    const port = Number(/listening (\d+)/.exec(staying.output())?.[1])
    await sleep(500)
    expect(staying.child.exitCode).toBeNull()
    expect(await tryConnect(port)).toBe('connected')
    staying.child.kill('SIGKILL')
  })
})
