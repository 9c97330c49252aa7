/**
 * Upstream TLS options (`tls: { ca, cert, key, servername, rejectUnauthorized }` on a
 * Gateway, a LoadBalancer or a route) against real node:https upstreams with certificates
 * made at test time: trust by a private CA, the 502 VG_UPSTREAM_TLS answers and their
 * reasons, SNI and the verified name, mutual TLS, the insecure mode and its warning, and
 * which level's options win.
 */
import https from 'node:https'
import net, { type AddressInfo } from 'node:net'
import type { TLSSocket } from 'node:tls'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import {
  Gateway,
  HealthChecker,
  LoadBalancer,
  Velithon,
  type GatewayRouteOptions,
  type UpstreamTlsOptions,
} from 'velithon-gateway'
import { createCa, type Pem, type TestCa } from './helpers/certs'
import { configErrorOf as option } from './helpers/fault'

const opened: Array<() => unknown> = []
afterEach(async () => {
  while (opened.length) await opened.pop()!()
})

let ca: TestCa
let otherCa: TestCa
let clientCa: TestCa
let good: Pem
beforeAll(async () => {
  ;[ca, otherCa, clientCa] = await Promise.all([createCa('upstream CA'), createCa('some other CA'), createCa('client CA')])
  good = await ca.issue({ hosts: ['127.0.0.1', 'localhost'] })
})

interface Seen {
  servername: string | false | undefined
  clientCert: string | undefined
}

/** An https upstream on 127.0.0.1 answering JSON about the TLS connection it got. */
async function upstream(options: https.ServerOptions): Promise<string> {
  const server = https.createServer(options, (req, res) => {
    const socket = req.socket as TLSSocket
    const peer = socket.getPeerCertificate()
    const seen: Seen = {
      servername: socket.servername,
      clientCert: peer && 'subject' in peer && peer.subject ? peer.subject.CN : undefined,
    }
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify(seen))
  })
  server.on('tlsClientError', () => {}) // failed handshakes are what several tests expect
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  opened.push(() => new Promise((r) => server.close(() => r(undefined))))
  opened.push(() => server.closeAllConnections())
  return `https://127.0.0.1:${(server.address() as AddressInfo).port}`
}

/** Serves `gateway`'s routes; returns the app's base URL. */
async function serve(gateway: Gateway, app = new Velithon()): Promise<string> {
  app.includeRouter(gateway.getRouter())
  const { url } = await app.listen({ port: 0, host: '127.0.0.1' })
  opened.push(() => app.close())
  return url
}

/** A gateway with one route `/t/{path:path}` to `url`. */
async function through(url: string, gatewayTls?: UpstreamTlsOptions, route: GatewayRouteOptions = {}): Promise<string> {
  const gateway = new Gateway({ tls: gatewayTls })
  gateway.route('/t/{path:path}', { upstream: url, ...route })
  return (await serve(gateway)) + '/t/x'
}

async function get(url: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(url)
  return { status: res.status, body: (await res.json()) as Record<string, unknown> }
}

async function expectTlsFailure(url: string, ...words: string[]): Promise<string> {
  const { status, body } = await get(url)
  expect(status).toBe(502)
  expect(body.code).toBe('VG_UPSTREAM_TLS')
  const message = String(body.message)
  for (const w of words) expect(message).toContain(w)
  return message
}

describe('upstream TLS: trust', () => {
  it('trusts a private CA given in tls.ca', async () => {
    const url = await upstream(good)
    const { status, body } = await get(await through(url, { ca: ca.cert }))
    expect(status).toBe(200)
    expect(body.clientCert).toBeUndefined()
  })

  it('takes ca as a Buffer or an array', async () => {
    const url = await upstream(good)
    expect((await get(await through(url, { ca: Buffer.from(ca.cert) }))).status).toBe(200)
    expect((await get(await through(url, { ca: [otherCa.cert, Buffer.from(ca.cert)] }))).status).toBe(200)
  })

  it('without tls.ca a private CA is not trusted: 502 VG_UPSTREAM_TLS, unknown issuer', async () => {
    const url = await upstream(good)
    await expectTlsFailure(await through(url), 'issuer')
  })

  it('tls.ca replaces the trusted roots: another CA does not vouch for this one', async () => {
    const url = await upstream(good)
    await expectTlsFailure(await through(url, { ca: otherCa.cert }), 'unknown issuer')
  })

  it('an expired certificate: 502, "expired"', async () => {
    const expired = await ca.issue({ hosts: ['127.0.0.1'], notBeforeDays: -30, notAfterDays: -1 })
    const url = await upstream(expired)
    await expectTlsFailure(await through(url, { ca: ca.cert }), 'expired')
  })

  it('a certificate for another host: 502 naming the name checked and the names it has', async () => {
    const elsewhere = await ca.issue({ hosts: ['other.example'] })
    const url = await upstream(elsewhere)
    await expectTlsFailure(await through(url, { ca: ca.cert }), '127.0.0.1', 'other.example')
  })

  it('servername is sent as SNI and is the name verified', async () => {
    const internal = await ca.issue({ hosts: ['api.internal'] })
    const url = await upstream(internal)
    const { status, body } = await get(await through(url, { ca: ca.cert, servername: 'api.internal' }))
    expect(status).toBe(200)
    expect(body.servername).toBe('api.internal')
    // Without it the same certificate is not valid for 127.0.0.1.
    await expectTlsFailure(await through(url, { ca: ca.cert }), 'api.internal')
  })
})

describe('upstream TLS: client certificates (mutual TLS)', () => {
  let url = ''
  let client: Pem
  beforeAll(async () => {
    client = await clientCa.issue({ hosts: ['gateway.internal'], commonName: 'gateway', usage: 'client' })
  })

  it('presents tls.cert/tls.key to an upstream that requires one', async () => {
    url = await upstream({ ...good, ca: clientCa.cert, requestCert: true, rejectUnauthorized: true })
    const { status, body } = await get(await through(url, { ca: ca.cert, cert: client.cert, key: Buffer.from(client.key) }))
    expect(status).toBe(200)
    expect(body.clientCert).toBe('gateway')
  })

  it('without a client certificate: 502 saying the upstream required one', async () => {
    url = await upstream({ ...good, ca: clientCa.cert, requestCert: true, rejectUnauthorized: true })
    await expectTlsFailure(await through(url, { ca: ca.cert }), 'client certificate')
  })

  it('a client certificate the upstream does not trust: 502', async () => {
    url = await upstream({ ...good, ca: clientCa.cert, requestCert: true, rejectUnauthorized: true })
    const stranger = await otherCa.issue({ hosts: ['gateway.internal'], usage: 'client' })
    const { status, body } = await get(await through(url, { ca: ca.cert, cert: stranger.cert, key: stranger.key }))
    expect(status).toBe(502)
    // With TLS 1.3 the upstream refuses the certificate after the gateway's handshake is
    // done; when it closes with the request unread, the reset can overtake its alert.
    if (body.code === 'VG_UPSTREAM_TLS') expect(body.message).toContain('client certificate')
    else expect(body.code).toBe('VG_UPSTREAM_PROTOCOL')
  })
})

describe('upstream TLS: rejectUnauthorized: false', () => {
  it('accepts an untrusted certificate and warns once per options object', async () => {
    const untrusted = await otherCa.issue({ hosts: ['somewhere.else'] })
    const url = await upstream(untrusted)
    const warnings: Error[] = []
    const onWarning = (w: Error) => {
      if ((w as Error & { code?: string }).code === 'VG_TLS_INSECURE') warnings.push(w)
    }
    process.on('warning', onWarning)
    opened.push(() => process.off('warning', onWarning))
    const insecure = { rejectUnauthorized: false }
    const base = await through(url, insecure)
    expect((await get(base)).status).toBe(200)
    new Gateway({ tls: insecure }) // the same configuration again: no second warning
    await new Promise((r) => setImmediate(r)) // warnings are emitted on the next tick
    expect(warnings).toHaveLength(1)
    expect(warnings[0].name).toBe('SecurityWarning')
    expect(warnings[0].message).toContain('NOT verified')
    // A different configuration warns again.
    new Gateway({ tls: { rejectUnauthorized: false, servername: 'x.example' } })
    await new Promise((r) => setImmediate(r))
    expect(warnings).toHaveLength(2)
    // So does a secure options object made insecure later: it is new options.
    const mutated: UpstreamTlsOptions = { ca: ca.cert }
    new Gateway({ tls: mutated })
    mutated.rejectUnauthorized = false
    new Gateway({ tls: mutated })
    await new Promise((r) => setImmediate(r))
    expect(warnings).toHaveLength(3)
  })
})

describe('upstream TLS: which options win', () => {
  it("a route's tls replaces the gateway's; other routes keep the gateway's", async () => {
    const url = await upstream(good)
    const gateway = new Gateway({ tls: { ca: otherCa.cert } })
    gateway.route('/own/{path:path}', { upstream: url, tls: { ca: ca.cert } })
    gateway.route('/inherit/{path:path}', { upstream: url })
    const base = await serve(gateway)
    expect((await get(`${base}/own/x`)).status).toBe(200)
    await expectTlsFailure(`${base}/inherit/x`, 'unknown issuer')
  })

  it("a load balancer's tls is used by its routes and by forwardRequest; a route's wins over it", async () => {
    const url = await upstream(good)
    const trusting = new LoadBalancer({ upstreamServers: [url], tls: { ca: ca.cert } })
    const gateway = new Gateway({ loadBalancer: trusting })
    gateway.route('/lb/{path:path}')
    gateway.route('/route/{path:path}', { tls: { ca: otherCa.cert } })
    const app = new Velithon()
    app.get('/handler/{path:path}', (request) => gateway.forwardRequest(request, trusting))
    app.get('/plain/{path:path}', (request) => new Gateway().forwardRequest(request, trusting))
    const base = await serve(gateway, app)
    expect((await get(`${base}/lb/x`)).status).toBe(200)
    expect((await get(`${base}/handler/x`)).status).toBe(200)
    expect((await get(`${base}/plain/x`)).status).toBe(200)
    await expectTlsFailure(`${base}/route/x`, 'unknown issuer')
  })

  it('forwardRequest to a load balancer without tls uses the gateway\'s', async () => {
    const url = await upstream(good)
    const lb = new LoadBalancer({ upstreamServers: [url] })
    const trusting = new Gateway({ tls: { ca: ca.cert } })
    const plain = new Gateway()
    const app = new Velithon()
    app.get('/trusting', (request) => trusting.forwardRequest(request, lb))
    app.get('/plain', (request) => plain.forwardRequest(request, lb))
    const { url: base } = await app.listen({ port: 0, host: '127.0.0.1' })
    opened.push(() => app.close())
    expect((await get(`${base}/trusting`)).status).toBe(200)
    await expectTlsFailure(`${base}/plain`, 'issuer')
  })
})

describe('upstream TLS: health checks', () => {
  it("a load balancer's health checks use its tls options", async () => {
    const url = await upstream(good)
    const checker = () => new HealthChecker({ checkInterval: '50ms', checkPath: '/health', consecutiveFailures: 1 })
    const trusting = new LoadBalancer({ upstreamServers: [url], tls: { ca: ca.cert }, healthChecker: checker() })
    const plain = new LoadBalancer({ upstreamServers: [url], healthChecker: checker() })
    opened.push(() => trusting.close(), () => plain.close())
    const checked = (lb: LoadBalancer) => lb.status()[0].health.checks >= 2
    for (let i = 0; i < 200 && !(checked(trusting) && checked(plain)); i++) await new Promise((r) => setTimeout(r, 10))
    expect(trusting.status()[0].health).toMatchObject({ healthy: true, lastError: null })
    expect(plain.status()[0].health.healthy).toBe(false)
    expect(plain.status()[0].health.lastError).toContain('issuer')
  })
})

describe('upstream TLS: validation', () => {
  it('names the option and the owner', () => {
    let err = option(() => new Gateway({ tls: { ca: 'not a certificate' } }))
    expect(err.option).toBe('tls.ca')
    expect(err.message).toMatch(/^Gateway: option "tls\.ca"/)
    err = option(() => new LoadBalancer({ upstreamServers: ['https://127.0.0.1:1'], tls: { key: good.key } }))
    expect(err.option).toBe('tls.cert')
    expect(err.message).toMatch(/^LoadBalancer: /)
    err = option(() => new Gateway().route('/r', { upstream: 'https://127.0.0.1:1', tls: { cert: good.cert, key: 42 } as never }))
    expect(err.option).toBe('tls.key')
    expect(err.message).toContain('Gateway.route("/r")')
    err = option(() => new Gateway({ tls: { rejectUnauthorized: 'no' } as never }))
    expect(err.option).toBe('tls.rejectUnauthorized')
    err = option(() => new Gateway({ tls: { servername: 'has space' } }))
    expect(err.option).toBe('tls.servername')
    err = option(() => new Gateway({ tls: { cafile: 'x' } as never }))
    expect(err.option).toBe('tls.cafile')
    err = option(() => new Gateway({ http2: 'yes' as never }))
    expect(err.option).toBe('http2')
  })

  it('PEM the data plane cannot parse is a ConfigError naming the option', async () => {
    const broken = '-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n'
    let err = option(() => new Gateway({ tls: { ca: broken } }))
    expect(err.option).toBe('tls.ca')
    // A key that is not the certificate's.
    const other = await ca.issue({ hosts: ['127.0.0.1'] })
    err = option(() => new Gateway().route('/r', { upstream: 'https://127.0.0.1:1', tls: { cert: good.cert, key: other.key } }))
    expect(err.option).toMatch(/^tls\.(cert|key)$/)
  })
})

describe('upstream TLS: options are read when given, by content', () => {
  it('an options object changed after use is read again: later gateways and routes get the new options', async () => {
    const url = await upstream(good)
    const tls: UpstreamTlsOptions = { ca: otherCa.cert }
    await expectTlsFailure(await through(url, tls), 'unknown issuer')
    tls.ca = ca.cert
    expect((await get(await through(url, tls))).status).toBe(200)
    // And never back to an insecure setting once made secure.
    const untrusted = await upstream(await otherCa.issue({ hosts: ['somewhere.else'] }))
    const insecure: UpstreamTlsOptions = { rejectUnauthorized: false }
    expect((await get(await through(untrusted, insecure))).status).toBe(200)
    insecure.rejectUnauthorized = true
    await expectTlsFailure(await through(untrusted, insecure), 'issuer')
  })

  it("the PEM bytes are copied when given: a caller's Buffer changed later does not change the options", async () => {
    const url = await upstream(good)
    const pem = Buffer.from(ca.cert)
    const lb = new LoadBalancer({ upstreamServers: [url], tls: { ca: pem } })
    pem.fill(0x20) // reused by the caller; the load balancer's transport is built later
    const gateway = new Gateway({ loadBalancer: lb })
    gateway.route('/t/{path:path}')
    expect((await get((await serve(gateway)) + '/t/x')).status).toBe(200)
  })

  it('equal options given as different objects share one pool (one TLS connection)', async () => {
    let connections = 0
    const server = https.createServer(good, (_req, res) => res.end('{}'))
    server.on('secureConnection', () => connections++)
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
    opened.push(() => new Promise((r) => server.close(() => r(undefined))), () => server.closeAllConnections())
    const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`
    const gateway = new Gateway()
    gateway.route('/a', { upstream: url, tls: { ca: ca.cert } })
    gateway.route('/b', { upstream: url, tls: { ca: Buffer.from(ca.cert) } })
    const base = await serve(gateway)
    expect((await get(`${base}/a`)).status).toBe(200)
    await new Promise((r) => setTimeout(r, 50)) // the connection back in the pool
    expect((await get(`${base}/b`)).status).toBe(200)
    expect(connections).toBe(1)
  })
})

describe('upstream TLS: connectTimeout bounds the handshake', () => {
  /** Accepts TCP connections and never says a word (never answers a ClientHello). */
  async function silent(): Promise<string> {
    const sockets = new Set<net.Socket>()
    const server = net.createServer((socket) => {
      sockets.add(socket)
      socket.on('error', () => {})
      socket.on('close', () => sockets.delete(socket))
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
    opened.push(() => new Promise((r) => server.close(() => r(undefined))), () => sockets.forEach((s) => s.destroy()))
    return `https://127.0.0.1:${(server.address() as AddressInfo).port}`
  }

  for (const [name, tls] of [
    ['the default client', undefined],
    ['a transport (tls options)', { rejectUnauthorized: true, servername: 'localhost' }],
  ] as const) {
    it(`an upstream that accepts TCP and never answers the ClientHello: 504 after connectTimeout (${name})`, async () => {
      const url = await silent()
      const gateway = new Gateway({ connectTimeout: '300ms', timeout: '5s', tls })
      gateway.route('/t/{path:path}', { upstream: url })
      const base = await serve(gateway)
      const started = performance.now()
      const { status, body } = await get(`${base}/t/x`)
      const elapsed = performance.now() - started
      expect(status).toBe(504)
      expect(body.code).toBe('VG_UPSTREAM_TIMEOUT')
      expect(body.message).toContain('connecting to the upstream timed out')
      // A correctness bound (the route's 5 s timeout must not be what ends it).
      expect(elapsed).toBeLessThan(3000)
    })
  }
})

describe('upstream TLS: errors after the handshake', () => {
  /**
   * A TCP relay in front of a TLS 1.3 upstream that, once the gateway's request is on
   * its way (its second encrypted record: the first is its Finished), answers with a
   * record that does not decrypt instead of the upstream's response.
   */
  async function corrupting(target: string): Promise<string> {
    const { port } = new URL(target)
    const sockets = new Set<net.Socket>()
    const relay = net.createServer((client) => {
      const upstreamSocket = net.connect(Number(port), '127.0.0.1')
      sockets.add(client).add(upstreamSocket)
      client.on('error', () => {})
      upstreamSocket.on('error', () => {})
      let pending = Buffer.alloc(0)
      let encrypted = 0
      let corrupted = false
      upstreamSocket.on('data', (chunk) => {
        if (!corrupted) client.write(chunk)
      })
      client.on('data', (chunk) => {
        if (corrupted) return
        pending = Buffer.concat([pending, chunk])
        while (pending.length >= 5 && pending.length >= 5 + pending.readUInt16BE(3)) {
          const record = pending.subarray(0, 5 + pending.readUInt16BE(3))
          pending = pending.subarray(record.length)
          if (record[0] === 23 && ++encrypted === 2) {
            corrupted = true
            const garbage = Buffer.concat([Buffer.from([23, 3, 3, 0, 64]), Buffer.alloc(64, 0x5a)])
            client.write(garbage)
            return
          }
          upstreamSocket.write(record)
        }
      })
      client.on('close', () => upstreamSocket.destroy())
      upstreamSocket.on('close', () => client.destroy())
    })
    await new Promise<void>((r) => relay.listen(0, '127.0.0.1', () => r()))
    opened.push(() => new Promise((r) => relay.close(() => r(undefined))), () => sockets.forEach((s) => s.destroy()))
    return `https://127.0.0.1:${(relay.address() as AddressInfo).port}`
  }

  it('a TLS failure on a connection already made is not called a handshake failure', async () => {
    const url = await corrupting(await upstream({ ...good, minVersion: 'TLSv1.3' }))
    const message = await expectTlsFailure(await through(url, { ca: ca.cert }), 'a TLS error on the upstream connection')
    expect(message).not.toContain('handshake')
  })
})

describe('upstream TLS: a LoadBalancer checks its tls when built', () => {
  it('PEM that does not parse, or a key that is not the certificate\'s: a ConfigError from the constructor', async () => {
    const broken = '-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n'
    let err = option(() => new LoadBalancer({ upstreamServers: ['https://127.0.0.1:1'], tls: { ca: broken } }))
    expect(err.option).toBe('tls.ca')
    expect(err.message).toMatch(/^LoadBalancer: option "tls\.ca"/)
    const other = await ca.issue({ hosts: ['127.0.0.1'] })
    err = option(() => new LoadBalancer({ upstreamServers: ['https://127.0.0.1:1'], tls: { cert: good.cert, key: other.key } }))
    expect(err.option).toMatch(/^tls\.(cert|key)$/)
    expect(err.message).toMatch(/^LoadBalancer: option "tls\.(cert|key)"/)
    err = option(() => new LoadBalancer({ upstreamServers: ['https://127.0.0.1:1'], tls: { cert: broken, key: good.key } }))
    expect(err.option).toBe('tls.cert')
  })
})

describe("upstream TLS: a load balancer's health checks and a gateway's tls", () => {
  const checker = () => new HealthChecker({ checkInterval: '50ms', checkPath: '/health', consecutiveFailures: 1 })
  const settled = async (lb: LoadBalancer) => {
    for (let i = 0; i < 200 && lb.status()[0].health.checks < 3; i++) await new Promise((r) => setTimeout(r, 10))
    return lb.status()[0].health
  }

  it("checks of a balancer without tls of its own go with the gateway's tls", async () => {
    const url = await upstream(good)
    const lb = new LoadBalancer({ upstreamServers: [url], healthChecker: checker() })
    opened.push(() => lb.close())
    const gateway = new Gateway({ loadBalancer: lb, tls: { ca: ca.cert } })
    opened.push(() => gateway.close())
    expect(await settled(lb)).toMatchObject({ healthy: true, lastError: null })
  })

  it('a balancer used by two gateways with different tls: the first wins, and a warning says so', async () => {
    const url = await upstream(good)
    const warnings: Error[] = []
    const onWarning = (w: Error) => {
      if ((w as Error & { code?: string }).code === 'VG_LB_TRANSPORT_CONFLICT') warnings.push(w)
    }
    process.on('warning', onWarning)
    opened.push(() => process.off('warning', onWarning))
    const lb = new LoadBalancer({ upstreamServers: [url], healthChecker: checker() })
    opened.push(() => lb.close())
    const first = new Gateway({ tls: { ca: ca.cert } })
    first.route('/a/{path:path}', { loadBalancer: lb })
    const second = new Gateway({ tls: { ca: otherCa.cert } })
    second.route('/b/{path:path}', { loadBalancer: lb })
    new Gateway({ tls: { ca: Buffer.from(ca.cert) } }).route('/c', { loadBalancer: lb }) // the same as the first: no warning
    await new Promise((r) => setImmediate(r))
    expect(warnings).toHaveLength(1)
    expect(warnings[0].message).toContain('health checks keep those of the first gateway')
    expect(await settled(lb)).toMatchObject({ healthy: true, lastError: null })
  })
})
