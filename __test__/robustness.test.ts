// Edge cases of the listener's life and of strategies, found in review.
import http from 'node:http'
import net from 'node:net'
import type { AddressInfo } from 'node:net'
import { afterEach, expect, it } from 'vitest'
import { Gateway, ListenError, LoadBalancer, RoundRobinStrategy, Velithon } from 'velithon-gateway'

const closers: (() => Promise<unknown>)[] = []
afterEach(async () => {
  await Promise.all(closers.splice(0).map((c) => c()))
})

function upstream(name: string): Promise<string> {
  const server = http.createServer((_req, res) => res.end(name))
  closers.push(() => new Promise((r) => server.close(r)))
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)),
  )
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port })
    s.once('connect', () => {
      s.destroy()
      resolve(true)
    })
    s.once('error', () => resolve(false))
  })
}

it('drops a client that connects and never sends a byte, after requestHeaderTimeout', async () => {
  const app = new Velithon({ requestHeaderTimeout: '300ms' })
  app.get('/x', () => 'x')
  const { port } = await app.listen({ port: 0 })
  closers.push(() => app.close())
  const started = Date.now()
  const closedAfter = await new Promise<number>((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port })
    s.on('error', reject)
    s.on('close', () => resolve(Date.now() - started))
    setTimeout(() => reject(new Error('the silent connection was never closed')), 5000).unref()
  })
  expect(closedAfter).toBeGreaterThanOrEqual(250)
})

it('close() called while listen() is pending stops the listener once it is up', async () => {
  const app = new Velithon()
  app.get('/x', () => 'x')
  const listening = app.listen({ port: 0 })
  const closed = app.close()
  const { port } = await listening
  await closed
  expect(await canConnect(port)).toBe(false)
  expect(app.address).toBeUndefined()
})

it('a failed listen (port in use) can be retried on another port', async () => {
  const blocker = net.createServer()
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', () => r()))
  closers.push(() => new Promise((r) => blocker.close(r)))
  const taken = (blocker.address() as AddressInfo).port
  const app = new Velithon()
  app.get('/x', () => 'x')
  await expect(app.listen({ port: taken })).rejects.toBeInstanceOf(ListenError)
  const { url } = await app.listen({ port: 0 })
  closers.push(() => app.close())
  expect(await (await fetch(`${url}/x`)).text()).toBe('x')
})

it('a RoundRobinStrategy subclass with its own selectServer is called', async () => {
  const a = await upstream('a')
  const b = await upstream('b')
  let calls = 0
  class AlwaysLast extends RoundRobinStrategy {
    override selectServer(servers: string[]): string {
      calls++
      return servers[servers.length - 1]
    }
  }
  const gateway = new Gateway({ loadBalancer: new LoadBalancer({ upstreamServers: [a, b], strategy: new AlwaysLast() }) })
  gateway.route('/{path:path}')
  const app = new Velithon()
  app.includeRouter(gateway.getRouter())
  const { url } = await app.listen({ port: 0 })
  closers.push(() => app.close())
  const bodies = []
  for (let i = 0; i < 4; i++) bodies.push(await (await fetch(`${url}/p${i}`)).text())
  expect(bodies).toEqual(['b', 'b', 'b', 'b'])
  expect(calls).toBe(4)
})
