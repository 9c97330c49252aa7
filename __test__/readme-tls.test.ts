// The README's "HTTPS and HTTP/2 clients" example, run for real: a CA made here issues the
// certificates, written where the example reads them (a temporary folder replaces
// /etc/gateway/tls), a local upstream replaces 9001, 127.0.0.1 and port 0 replace
// 0.0.0.0:8443, and `process.emit('SIGHUP')` plays certbot's deploy hook. Keep the two in step.
import https from 'node:https'
import http2 from 'node:http2'
import { X509Certificate } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type tls from 'node:tls'
import { afterEach, expect, it } from 'vitest'
import { Velithon, Gateway } from 'velithon-gateway'
import { createCa, type Pem } from './helpers/certs'
import { closeAll, defer, echoHandler, readAll, startUpstream, type Echo } from './helpers/net'

afterEach(closeAll)

function get(url: string, ca: string): Promise<{ body: string; serial: string }> {
  return new Promise((resolve, reject) => {
    const req = https.get(url, { ca, agent: false }, (res) => {
      const serial = (res.socket as tls.TLSSocket).getPeerCertificate().serialNumber
      readAll(res).then((body) => resolve({ body: body.toString('utf8'), serial }), reject)
    })
    req.on('error', reject)
  })
}

it('README: listen with tls, HTTP/2 clients, reloadTls on SIGHUP', async () => {
  const ca = await createCa()
  const dir = mkdtempSync(join(tmpdir(), 'velithon-readme-tls-'))
  defer(() => rmSync(dir, { recursive: true, force: true }))
  const install = (pem: Pem) => {
    writeFileSync(join(dir, 'fullchain.pem'), pem.cert)
    writeFileSync(join(dir, 'privkey.pem'), pem.key)
  }
  const first = await ca.issue({ hosts: ['127.0.0.1'] })
  install(first)
  const upstream = await startUpstream(echoHandler('9001'))

  // --- as in the README ---
  const gateway = new Gateway()
  gateway.route('/api/{path:path}', { upstream: upstream.url })

  const app = new Velithon()
  app.includeRouter(gateway.getRouter())
  const pem = () => ({
    cert: readFileSync(join(dir, 'fullchain.pem')), // leaf first, then intermediates
    key: readFileSync(join(dir, 'privkey.pem')),
  })
  defer(() => app.close())
  const { url } = await app.listen({ port: 0, host: '127.0.0.1', tls: pem() })
  expect(url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/)

  const onHup = () => {
    try {
      app.reloadTls(pem())
    } catch (err) {
      console.error('certificate not reloaded:', err)
    }
  }
  process.on('SIGHUP', onHup)
  defer(() => process.off('SIGHUP', onHup))
  // --- end of the README's code ---

  const serialOf = (p: Pem) => new X509Certificate(p.cert).serialNumber.toUpperCase()
  const one = await get(`${url}/api/hello`, ca.cert)
  expect(one.serial).toBe(serialOf(first))
  const echo = JSON.parse(one.body) as Echo
  expect(echo.url).toBe('/api/hello')
  expect(echo.headers['x-forwarded-proto']).toBe('https')

  // HTTP/2 by ALPN.
  const session = http2.connect(url, { ca: ca.cert })
  defer(() => session.destroy())
  const h2 = await new Promise<string>((resolve, reject) => {
    const stream = session.request({ ':path': '/api/h2' })
    readAll(stream).then((b) => resolve(b.toString('utf8')), reject)
  })
  expect(session.alpnProtocol).toBe('h2')
  expect((JSON.parse(h2) as Echo).url).toBe('/api/h2')
  session.close()

  // Renewed: the files change, SIGHUP, and new connections get the new certificate.
  const renewed = await ca.issue({ hosts: ['127.0.0.1'] })
  install(renewed)
  process.emit('SIGHUP')
  expect((await get(`${url}/api/again`, ca.cert)).serial).toBe(serialOf(renewed))
})
