// Idle HTTP/2 client connections are closed (GOAWAY) after `requestHeaderTimeout`, as an
// idle HTTP/1 keep-alive connection is; a connection with an open stream is kept.
import http2 from 'node:http2'
import { once } from 'node:events'
import { afterEach, expect, it } from 'vitest'
import { Gateway, Velithon } from 'velithon-gateway'
import { createCa } from './helpers/certs'
import { closeAll, defer, startUpstream, withTimeout } from './helpers/net'

afterEach(closeAll)

it('an idle HTTP/2 connection over TLS gets a GOAWAY after requestHeaderTimeout', async () => {
  const ca = await createCa()
  const leaf = await ca.issue({ hosts: ['127.0.0.1'] })
  const up = await startUpstream((_req, res) => res.end('ok'))
  const gateway = new Gateway()
  gateway.route('/{path:path}', { upstream: up.url })
  const app = new Velithon({ requestHeaderTimeout: '300ms' })
  app.includeRouter(gateway.getRouter())
  const { port } = await app.listen({ port: 0, host: '127.0.0.1', tls: leaf })
  defer(() => app.close())

  const session = http2.connect(`https://127.0.0.1:${port}`, { ca: ca.cert })
  defer(() => session.destroy())
  const body = await withTimeout(
    new Promise<string>((resolve, reject) => {
      const req = session.request({ ':path': '/x' })
      let text = ''
      req.setEncoding('utf8')
      req.on('data', (c: string) => (text += c))
      req.on('end', () => resolve(text))
      req.on('error', reject)
      req.end()
    }),
    5_000,
    'the request',
  )
  expect(body).toBe('ok')
  const idleSince = Date.now()
  await withTimeout(once(session, 'goaway'), 5_000, 'the GOAWAY')
  expect(Date.now() - idleSince).toBeGreaterThanOrEqual(200)
})
