// TLS on the gateway's listener and HTTP/2 clients: HTTPS (HTTP/1.1 and h2 by ALPN),
// cleartext h2 with prior knowledge, certificate reload, bad certificates, and clients
// that speak the wrong protocol or nothing at all. Certificates are made at test time.
import http from 'node:http'
import http2 from 'node:http2'
import https from 'node:https'
import net from 'node:net'
import tls from 'node:tls'
import { X509Certificate } from 'node:crypto'
import { execFile, execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { ConfigError, Gateway, Velithon, type AddressInfo, type Duration, type ListenTlsOptions } from 'velithon-gateway'
import { createCa, type Pem, type TestCa } from './helpers/certs'
import { closeAll, defer, echoHandler, readAll, startUpstream, withTimeout, type Echo, type Upstream } from './helpers/net'

const run = promisify(execFile)

let ca: TestCa
let leaf: Pem
let dir: string
let caFile: string
/** curl with HTTP/2 support (checked now: `skipIf` is decided when the file loads). */
const hasCurl = (() => {
  try {
    return /\bHTTP2\b/.test(execFileSync('curl', ['--version'], { encoding: 'utf8' }))
  } catch {
    return false
  }
})()

beforeAll(async () => {
  ca = await createCa()
  leaf = await ca.issue({ hosts: ['127.0.0.1', 'localhost'] })
  dir = mkdtempSync(join(tmpdir(), 'velithon-tls-'))
  caFile = join(dir, 'ca.pem')
  writeFileSync(caFile, ca.cert)
})
afterAll(() => rmSync(dir, { recursive: true, force: true }))
afterEach(closeAll)

interface Started {
  app: Velithon
  upstream: Upstream
  address: AddressInfo
}

/** An echo upstream behind `/gw/api/{path:path}`, and `/hello` answered in JS. */
async function start(listenTls?: ListenTlsOptions, requestHeaderTimeout?: Duration): Promise<Started> {
  const upstream = await startUpstream(echoHandler())
  const gateway = new Gateway({ timeout: '10s', connectTimeout: '2s' })
  gateway.route('/api/{path:path}', { upstream: upstream.url })
  const app = new Velithon({ workerThreads: 2, requestHeaderTimeout })
  app.includeRouter(gateway.getRouter(), { prefix: '/gw' })
  app.get('/hello', () => 'hi')
  defer(() => app.close({ timeout: '2s' }))
  const address = await app.listen({ port: 0, host: '127.0.0.1', tls: listenTls })
  return { app, upstream, address }
}

interface HttpsReply {
  status: number
  headers: http.IncomingHttpHeaders
  body: Buffer
  socket: tls.TLSSocket
  /** The serial number of the certificate the gateway presented. */
  serial: string
  reused: boolean
}

/** node:https passes `ALPNProtocols` on to tls.connect; its types do not say so. */
type HttpsOptions = https.RequestOptions & Pick<tls.ConnectionOptions, 'ALPNProtocols'>

function httpsGet(url: string, options: HttpsOptions = {}): Promise<HttpsReply> {
  return new Promise((resolve, reject) => {
    const req = https.request(url, { ca: ca.cert, agent: false, ...options }, (res) => {
      // Read now: a keep-alive socket leaves the response once the body is read.
      const socket = res.socket as tls.TLSSocket
      const serial = socket.getPeerCertificate().serialNumber
      readAll(res).then(
        (body) => resolve({ status: res.statusCode ?? 0, headers: res.headers, body, socket, serial, reused: req.reusedSocket }),
        reject,
      )
    })
    req.setTimeout(10_000, () => req.destroy(new Error(`GET ${url}: no answer`)))
    req.on('error', reject)
    req.end(options.method === 'POST' ? 'posted body' : undefined)
  })
}

/** One HTTP/2 request on `session`; resolves with status and body. */
function h2Get(session: http2.ClientHttp2Session, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ':path': path })
    let status = 0
    stream.on('response', (headers) => {
      status = Number(headers[':status'])
    })
    readAll(stream).then((body) => resolve({ status, body: body.toString('utf8') }), reject)
    stream.on('error', reject)
  })
}

/** Resolves with how long `socket` stayed open (ms) and what it received. */
function untilClosed(socket: net.Socket, ms: number): Promise<{ after: number; received: Buffer }> {
  const started = Date.now()
  const chunks: Buffer[] = []
  socket.on('data', (c: Buffer) => chunks.push(c))
  socket.on('error', () => {})
  return withTimeout(
    new Promise((resolve) => socket.on('close', () => resolve({ after: Date.now() - started, received: Buffer.concat(chunks) }))),
    ms,
    'the gateway closing the connection',
  )
}

const serialOf = (pem: Pem) => new X509Certificate(pem.cert).serialNumber.toUpperCase()

describe('HTTPS listener', () => {
  it('proxies HTTPS to a plain upstream, which sees X-Forwarded-Proto: https', async () => {
    const { address, upstream } = await start(leaf)
    expect(address.url).toBe(`https://127.0.0.1:${address.port}`)

    const res = await httpsGet(`${address.url}/gw/api/items/7?q=a%20b`, { method: 'POST' })
    expect(res.status).toBe(200)
    const echo = JSON.parse(res.body.toString('utf8')) as Echo
    expect(echo.url).toBe('/gw/api/items/7?q=a%20b')
    expect(echo.method).toBe('POST')
    expect(echo.body).toBe('posted body')
    expect(echo.headers['x-forwarded-proto']).toBe('https')
    expect(upstream.requests).toBe(1)
    expect(res.socket.alpnProtocol).toBe(false) // node:https offers no ALPN: HTTP/1.1

    const hello = await httpsGet(`${address.url}/hello`, { ALPNProtocols: ['http/1.1'] })
    expect(hello.status).toBe(200)
    expect(hello.body.toString()).toBe('hi')
    expect(hello.socket.alpnProtocol).toBe('http/1.1')
  })

  it('takes the certificate and key as Buffers too', async () => {
    const { address } = await start({ cert: Buffer.from(leaf.cert), key: Buffer.from(leaf.key) })
    expect((await httpsGet(`${address.url}/hello`)).body.toString()).toBe('hi')
  })

  it('multiplexes 100 concurrent HTTP/2 streams (ALPN h2) on one TLS connection', async () => {
    const { address, upstream } = await start(leaf)
    let connects = 0
    const session = http2.connect(address.url, {
      createConnection: () => {
        connects++
        return tls.connect({ host: '127.0.0.1', port: address.port, ca: ca.cert, ALPNProtocols: ['h2'] })
      },
    })
    defer(() => session.destroy())
    await new Promise<void>((resolve, reject) => {
      session.once('connect', () => resolve())
      session.once('error', reject)
    })
    expect(session.alpnProtocol).toBe('h2')
    const socket = session.socket

    const replies = await Promise.all(Array.from({ length: 100 }, (_, i) => h2Get(session, `/gw/api/stream/${i}`)))
    replies.forEach((reply, i) => {
      expect(reply.status).toBe(200)
      const echo = JSON.parse(reply.body) as Echo
      expect(echo.url).toBe(`/gw/api/stream/${i}`)
      expect(echo.headers['x-forwarded-proto']).toBe('https')
    })
    expect(connects).toBe(1)
    expect(session.socket).toBe(socket)
    expect(upstream.requests).toBe(100)
    session.close()
  })

  it.skipIf(!hasCurl)('curl --http2 negotiates HTTP/2', async () => {
    const { address } = await start(leaf)
    const { stdout } = await run('curl', ['-sS', '--http2', '--cacert', caFile, '-w', '\n%{http_version}', `${address.url}/gw/api/curl`])
    const [body, version] = stdout.split('\n')
    expect(version).toBe('2')
    expect((JSON.parse(body) as Echo).headers['x-forwarded-proto']).toBe('https')
  })
})

describe('cleartext HTTP/2 (prior knowledge)', () => {
  it('serves h2c clients on a plain listener', async () => {
    const { address, upstream } = await start()
    expect(address.url).toBe(`http://127.0.0.1:${address.port}`)
    const session = http2.connect(address.url)
    defer(() => session.destroy())
    const replies = await Promise.all(Array.from({ length: 20 }, (_, i) => h2Get(session, `/gw/api/h2c/${i}`)))
    replies.forEach((reply, i) => {
      expect(reply.status).toBe(200)
      const echo = JSON.parse(reply.body) as Echo
      expect(echo.url).toBe(`/gw/api/h2c/${i}`)
      expect(echo.headers['x-forwarded-proto']).toBe('http')
    })
    expect((await h2Get(session, '/hello')).body).toBe('hi')
    expect(upstream.requests).toBe(20)
    session.close()
  })

  it.skipIf(!hasCurl)('curl --http2-prior-knowledge gets HTTP/2', async () => {
    const { address } = await start()
    const { stdout } = await run('curl', ['-sS', '--http2-prior-knowledge', '-w', '\n%{http_version}', `${address.url}/hello`])
    expect(stdout).toBe('hi\n2')
  })
})

describe('certificate reload', () => {
  it('gives new connections the new certificate; open ones keep working', async () => {
    const { app, address } = await start(leaf)
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca: ca.cert })
    defer(() => agent.destroy())
    const before = await httpsGet(`${address.url}/hello`, { agent })
    expect(before.serial).toBe(serialOf(leaf))

    const next = await ca.issue({ hosts: ['127.0.0.1'] })
    app.reloadTls({ cert: next.cert, key: Buffer.from(next.key) })

    const fresh = await httpsGet(`${address.url}/hello`)
    expect(fresh.status).toBe(200)
    expect(fresh.serial).toBe(serialOf(next))

    const kept = await httpsGet(`${address.url}/gw/api/kept`, { agent })
    expect(kept.status).toBe(200)
    expect(kept.reused).toBe(true)
    expect(kept.socket).toBe(before.socket)
    expect(kept.serial).toBe(serialOf(leaf))

    // A bad pair is refused, and the current certificate stays.
    const other = await ca.issue({ hosts: ['127.0.0.1'] })
    expect(() => app.reloadTls({ cert: other.cert, key: next.key })).toThrow(
      expect.objectContaining({ option: 'tls.key', message: expect.stringMatching(/reloadTls.*"tls\.key" does not match/) }),
    )
    expect(() => app.reloadTls({ cert: 'nope', key: next.key })).toThrow(expect.objectContaining({ option: 'tls.cert' }))
    const still = await httpsGet(`${address.url}/hello`)
    expect(still.serial).toBe(serialOf(next))
  })

  it('reloadTls on a plain listener, or before listen, throws', async () => {
    const plain = new Velithon()
    expect(() => plain.reloadTls(leaf)).toThrow(ConfigError)
    const { app } = await start()
    expect(() => app.reloadTls(leaf)).toThrow(/not listening with TLS/)
  })
})

describe('bad certificates and keys', () => {
  const listenWith = async (tlsOption: unknown) => {
    const app = new Velithon()
    app.get('/hello', () => 'hi')
    defer(() => app.close())
    return app.listen({ port: 0, tls: tlsOption as ListenTlsOptions })
  }
  const rejectsNaming = async (tlsOption: unknown, option: string, message: RegExp) => {
    const err = await listenWith(tlsOption).then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(err).toBeInstanceOf(ConfigError)
    expect((err as ConfigError).option).toBe(option)
    expect((err as ConfigError).message).toMatch(message)
  }

  it('invalid PEM names tls.cert or tls.key', async () => {
    await rejectsNaming({ cert: 'not a certificate', key: leaf.key }, 'tls.cert', /Velithon\.listen: option "tls\.cert" has no certificate/)
    await rejectsNaming({ cert: leaf.cert.slice(0, 100), key: leaf.key }, 'tls.cert', /"tls\.cert" is not valid PEM/)
    await rejectsNaming({ cert: leaf.cert, key: leaf.cert }, 'tls.key', /"tls\.key" has no private key/)
  })

  it('a key that does not match the certificate names tls.key', async () => {
    const other = await ca.issue({ hosts: ['127.0.0.1'] })
    await rejectsNaming({ cert: leaf.cert, key: other.key }, 'tls.key', /"tls\.key" does not match the certificate/)
  })

  it('a malformed tls option names what is wrong', async () => {
    await rejectsNaming('cert.pem', 'tls', /option "tls" must be an object/)
    await rejectsNaming({ cert: leaf.cert }, 'tls.key', /option "tls\.key" must be a non-empty PEM string or Buffer, got undefined/)
    await rejectsNaming({ cert: Buffer.alloc(0), key: leaf.key }, 'tls.cert', /got an empty Buffer/)
    await rejectsNaming({ cert: '', key: leaf.key }, 'tls.cert', /non-empty/)
    await rejectsNaming({ cert: leaf.cert, key: leaf.key, ca: ca.cert }, 'tls.ca', /unknown option "tls\.ca"/)
  })

  it('after a refused certificate the app can listen again', async () => {
    const app = new Velithon()
    app.get('/hello', () => 'hi')
    defer(() => app.close())
    await expect(app.listen({ port: 0, tls: { cert: leaf.cert, key: 'junk' } })).rejects.toBeInstanceOf(ConfigError)
    const { url } = await app.listen({ port: 0, host: '127.0.0.1', tls: leaf })
    expect((await httpsGet(`${url}/hello`)).body.toString()).toBe('hi')
  })
})

describe('clients that do not speak TLS', () => {
  it('a plain-HTTP request to the TLS port gets its connection closed; the listener keeps serving', async () => {
    const { address } = await start(leaf)
    const socket = net.connect(address.port, '127.0.0.1')
    socket.write('GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
    const { received } = await untilClosed(socket, 5_000)
    expect(received.toString('latin1')).not.toContain('HTTP/1.1')
    expect((await httpsGet(`${address.url}/hello`)).body.toString()).toBe('hi')
  })

  it('a client that never sends a ClientHello is dropped after requestHeaderTimeout', async () => {
    const { address } = await start(leaf, '300ms')
    const { after } = await untilClosed(net.connect(address.port, '127.0.0.1'), 5_000)
    expect(after).toBeGreaterThanOrEqual(250)
    expect((await httpsGet(`${address.url}/hello`)).body.toString()).toBe('hi')
  })

  it('a client that completes the handshake and then says nothing is dropped too', async () => {
    const { address } = await start(leaf, '300ms')
    for (const alpn of [['h2'], ['http/1.1'], undefined]) {
      const socket = tls.connect({ host: '127.0.0.1', port: address.port, ca: ca.cert, ALPNProtocols: alpn })
      await new Promise<void>((resolve, reject) => {
        socket.once('secureConnect', () => resolve())
        socket.once('error', reject)
      })
      const { after } = await untilClosed(socket, 5_000)
      expect(after).toBeGreaterThanOrEqual(150)
    }
  })
})
