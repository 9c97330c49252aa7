// The README's "Upstream TLS and HTTP/2" example, run for real: a CA made here issues the
// upstreams' certificates (for orders.internal) and the gateway's client certificate,
// written where the example reads them (a temporary folder replaces /etc/gateway); two
// local https servers that require a client certificate replace 10.0.0.5/6:8443, a local
// h2c gRPC-style server replaces 127.0.0.1:50051, and port 0 replaces 8080. Keep the two
// in step.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import http2 from 'node:http2'
import https from 'node:https'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { TLSSocket } from 'node:tls'
import { afterEach, expect, it } from 'vitest'
import { Velithon, Gateway, LoadBalancer } from 'velithon-gateway'
import { createCa } from './helpers/certs'

const opened: Array<() => unknown> = []
afterEach(async () => {
  while (opened.length) await opened.pop()!()
})

it('README: a private CA, mutual TLS and servername; gRPC over h2c with trailers', async () => {
  const [serverCa, clientCa] = await Promise.all([createCa('internal CA'), createCa('client CA')])
  const dir = mkdtempSync(join(tmpdir(), 'velithon-readme-upstream-tls-'))
  opened.push(() => rmSync(dir, { recursive: true, force: true }))
  const client = await clientCa.issue({ hosts: ['gateway.internal'], commonName: 'gateway', usage: 'client' })
  writeFileSync(join(dir, 'internal-ca.pem'), serverCa.cert)
  writeFileSync(join(dir, 'client.pem'), client.cert)
  writeFileSync(join(dir, 'client-key.pem'), client.key)
  const path = (p: string) => join(dir, p.slice('/etc/gateway/'.length))

  // The orders servers: certificates for orders.internal, served on 127.0.0.1.
  const serverCert = await serverCa.issue({ hosts: ['orders.internal'] })
  const orderServer = async (name: string): Promise<string> => {
    const server = https.createServer({ ...serverCert, ca: clientCa.cert, requestCert: true, rejectUnauthorized: true }, (req, res) => {
      const socket = req.socket as TLSSocket
      res.setHeader('content-type', 'application/json')
      res.end(JSON.stringify({ name, path: req.url, sni: socket.servername, client: socket.getPeerCertificate().subject.CN }))
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
    opened.push(() => new Promise((r) => server.close(r)), () => server.closeAllConnections())
    return `https://127.0.0.1:${(server.address() as AddressInfo).port}`
  }
  const [s1, s2] = await Promise.all([orderServer('s1'), orderServer('s2')])

  // The gRPC-style service: h2c, answers a message and grpc-status trailers.
  let sawTe: string | undefined
  let sawPath: string | undefined
  const grpc = http2.createServer()
  grpc.on('stream', (stream, headers) => {
    sawTe = headers.te as string | undefined
    sawPath = headers[':path']
    stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true })
    stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0', 'grpc-message': 'OK' }))
    stream.end(Buffer.from([0, 0, 0, 0, 0]))
  })
  const sessions = new Set<http2.ServerHttp2Session>()
  grpc.on('session', (s) => sessions.add(s))
  await new Promise<void>((r) => grpc.listen(0, '127.0.0.1', () => r()))
  opened.push(() => new Promise((r) => grpc.close(r)), () => sessions.forEach((s) => s.destroy()))
  const grpcUrl = `http://127.0.0.1:${(grpc.address() as AddressInfo).port}`

  // --- as in the README ---
  // Internal services behind a private CA, with mutual TLS.
  const orders = new LoadBalancer({
    upstreamServers: [s1, s2],
    tls: {
      ca: readFileSync(path('/etc/gateway/internal-ca.pem')), // trust this CA (only it) for these servers
      cert: readFileSync(path('/etc/gateway/client.pem')), // the gateway's client certificate
      key: readFileSync(path('/etc/gateway/client-key.pem')),
      servername: 'orders.internal', // sent as SNI and checked in their certificates
    },
  })
  const gateway = new Gateway({ loadBalancer: orders })
  gateway.route('/orders/{path:path}') // HTTPS; HTTP/2 or HTTP/1.1 as ALPN decides
  // gRPC to a plaintext HTTP/2 (h2c) service: gRPC clients call /package.Service/Method;
  // te: trailers goes up, the grpc-status trailers come back.
  gateway.route('/orders.Orders/{method}', { upstream: grpcUrl, http2: true })

  const app = new Velithon()
  app.includeRouter(gateway.getRouter())
  const { url } = await app.listen({ port: 0, host: '127.0.0.1' })
  // --- end ---
  opened.push(() => app.close())

  const names = new Set<string>()
  for (let i = 0; i < 4; i++) {
    const res = await fetch(`${url}/orders/42?x=1`)
    expect(res.status).toBe(200)
    const body = (await res.json()) as Record<string, string>
    expect(body).toMatchObject({ path: '/orders/42?x=1', sni: 'orders.internal', client: 'gateway' })
    names.add(body.name)
  }
  expect(names).toEqual(new Set(['s1', 's2']))

  const h2 = http2.connect(url)
  opened.push(() => h2.close())
  const req = h2.request({ ':method': 'POST', ':path': '/orders.Orders/Get', 'content-type': 'application/grpc', te: 'trailers' })
  req.end(Buffer.from([0, 0, 0, 0, 0]))
  const trailers = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
    let got: http2.IncomingHttpHeaders = {}
    req.on('trailers', (t) => (got = t))
    req.on('data', () => {})
    req.on('end', () => resolve(got))
    req.on('error', reject)
  })
  expect(trailers['grpc-status']).toBe('0')
  expect(sawTe).toBe('trailers')
  expect(sawPath).toBe('/orders.Orders/Get')
})
