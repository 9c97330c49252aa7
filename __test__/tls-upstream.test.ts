/**
 * Upstream TLS options (`tls: { ca, cert, key, servername, rejectUnauthorized }` on a
 * Gateway, a LoadBalancer or a route) against real node:https upstreams with certificates
 * made at test time: trust by a private CA, the 502 VG_UPSTREAM_TLS answers and their
 * reasons, SNI and the verified name, mutual TLS, the insecure mode and its warning, and
 * which level's options win.
 */
import https from 'node:https'
import type { AddressInfo } from 'node:net'
import type { TLSSocket } from 'node:tls'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import {
  ConfigError,
  Gateway,
  HealthChecker,
  LoadBalancer,
  Velithon,
  type GatewayRouteOptions,
  type UpstreamTlsOptions,
} from 'velithon-gateway'
import { createCa, type Pem, type TestCa } from './helpers/certs'

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
  const option = (fn: () => unknown): ConfigError => {
    try {
      fn()
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError)
      return err as ConfigError
    }
    throw new Error('expected a ConfigError')
  }

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
