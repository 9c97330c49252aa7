// workerThreads: 1 runs the data plane on a current-thread runtime of its own thread:
// pure routes, JS handlers and forwarding must all work there, and close() must end it.
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { Gateway, LoadBalancer, Velithon } from 'velithon-gateway'

let upstream: http.Server
let app: Velithon
let base = ''

beforeAll(async () => {
  upstream = http.createServer((req, res) => {
    let n = 0
    req.on('data', (c: Buffer) => (n += c.length))
    req.on('end', () => res.end(`${req.url} ${n}`))
  })
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', () => r()))
  const url = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`
  const gateway = new Gateway({ loadBalancer: new LoadBalancer({ upstreamServers: [url] }) })
  gateway.route('/pure/{path:path}', { methods: ['GET', 'POST'] })
  app = new Velithon({ workerThreads: 1 })
  app.includeRouter(gateway.getRouter())
  app.route('/js/{path:path}', (request) => gateway.forwardRequest(request), { methods: ['GET', 'POST'] })
  base = (await app.listen({ port: 0 })).url
})

afterAll(async () => {
  await app.close()
  await new Promise((r) => upstream.close(r))
})

it('serves pure and JS routes concurrently on one data-plane thread', async () => {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 32 })
  const one = (path: string, body: string) =>
    new Promise<string>((resolve, reject) => {
      const req = http.request(`${base}${path}`, { method: 'POST', agent }, (res) => {
        let text = ''
        res.setEncoding('utf8')
        res.on('data', (c: string) => (text += c))
        res.on('end', () => resolve(`${res.statusCode} ${text}`))
      })
      req.on('error', reject)
      req.end(body)
    })
  const jobs = Array.from({ length: 300 }, (_, i) => {
    const path = `${i % 2 ? '/pure' : '/js'}/r${i}`
    return one(path, 'x'.repeat(i)).then((got) => expect(got).toBe(`200 ${path} ${i}`))
  })
  await Promise.all(jobs)
  agent.destroy()
})
