// gRPC through the gateway, with real @grpc/grpc-js clients and servers (no stubs): unary
// calls with trailing metadata, server streaming, error statuses carried in trailers,
// over cleartext HTTP/2 (prior knowledge) and over TLS with ALPN h2 on the listener.
import * as grpc from '@grpc/grpc-js'
import { afterEach, describe, expect, it } from 'vitest'
import { Gateway, Velithon } from 'velithon-gateway'
import { createCa } from './helpers/certs'
import { closeAll, defer, withTimeout } from './helpers/net'

afterEach(closeAll)

const raw = (b: Buffer): Buffer => b
const method = (path: string, responseStream = false) => ({
  path,
  requestStream: false,
  responseStream,
  requestSerialize: raw,
  requestDeserialize: raw,
  responseSerialize: raw,
  responseDeserialize: raw,
})

/** A service without .proto files: messages are raw bytes. */
const ECHO = {
  say: method('/test.Echo/Say'),
  count: method('/test.Echo/Count', true),
  fail: method('/test.Echo/Fail'),
} satisfies grpc.ServiceDefinition

type EchoClient = grpc.Client & {
  say(req: Buffer, md: grpc.Metadata, cb: (err: grpc.ServiceError | null, res?: Buffer) => void): grpc.ClientUnaryCall
  count(req: Buffer): grpc.ClientReadableStream<Buffer>
  fail(req: Buffer, cb: (err: grpc.ServiceError | null, res?: Buffer) => void): grpc.ClientUnaryCall
}
const EchoClient = grpc.makeGenericClientConstructor(ECHO, 'Echo') as unknown as new (
  address: string,
  credentials: grpc.ChannelCredentials,
) => EchoClient

/** A grpc-js server on 127.0.0.1 (h2c) implementing ECHO; returns its port. */
async function startGrpcServer(): Promise<{ port: number; seen: grpc.Metadata[] }> {
  const server = new grpc.Server()
  const seen: grpc.Metadata[] = []
  server.addService(ECHO, {
    say: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      seen.push(call.metadata)
      const trailer = new grpc.Metadata()
      trailer.set('x-served-by', 'grpc-upstream')
      cb(null, Buffer.concat([Buffer.from('echo: '), call.request]), trailer)
    },
    count: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      const n = Number(call.request.toString())
      for (let i = 0; i < n; i++) call.write(Buffer.from(`item ${i}`))
      call.end()
    },
    fail: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      cb({ code: grpc.status.NOT_FOUND, details: 'no such thing' })
    },
  })
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  )
  defer(() => new Promise<void>((resolve) => server.tryShutdown(() => resolve())))
  return { port, seen }
}

async function gatewayFor(upstreamPort: number, tls?: { cert: string; key: string }): Promise<number> {
  const gateway = new Gateway()
  // Every gRPC method is a POST to /package.Service/Method: one route forwards them all.
  gateway.route('/test.Echo/{method}', { upstream: `http://127.0.0.1:${upstreamPort}`, http2: true, methods: ['POST'] })
  const app = new Velithon()
  app.includeRouter(gateway.getRouter())
  const { port } = await app.listen({ port: 0, host: '127.0.0.1', tls })
  defer(() => app.close())
  return port
}

function say(client: EchoClient, text: string): Promise<{ reply: string; trailers: grpc.Metadata }> {
  return withTimeout(
    new Promise((resolve, reject) => {
      let reply = ''
      const md = new grpc.Metadata()
      md.set('x-caller', 'vitest')
      const call = client.say(Buffer.from(text), md, (err, res) => {
        if (err) reject(err)
        else reply = res!.toString()
      })
      call.on('status', (status: grpc.StatusObject) => resolve({ reply, trailers: status.metadata }))
    }),
    10_000,
    'a unary gRPC call',
  )
}

async function exercise(client: EchoClient, seen: grpc.Metadata[]): Promise<void> {
  const { reply, trailers } = await say(client, 'hello')
  expect(reply).toBe('echo: hello')
  expect(trailers.get('x-served-by')).toEqual(['grpc-upstream'])
  expect(seen.at(-1)?.get('x-caller')).toEqual(['vitest'])

  const items: string[] = []
  await withTimeout(
    new Promise<void>((resolve, reject) => {
      const stream = client.count(Buffer.from('50'))
      stream.on('data', (b: Buffer) => items.push(b.toString()))
      stream.on('error', reject)
      stream.on('end', () => resolve())
    }),
    10_000,
    'a server-streaming call',
  )
  expect(items).toEqual(Array.from({ length: 50 }, (_, i) => `item ${i}`))

  const err = await withTimeout(
    new Promise<grpc.ServiceError>((resolve) => client.fail(Buffer.from('x'), (e) => resolve(e!))),
    10_000,
    'a failing call',
  )
  // The status travels in the trailers: a gateway that dropped them would give UNKNOWN/INTERNAL.
  expect(err.code).toBe(grpc.status.NOT_FOUND)
  expect(err.details).toBe('no such thing')

  // Many calls at once on the client's one HTTP/2 connection.
  const many = await Promise.all(Array.from({ length: 100 }, (_, i) => say(client, `n${i}`)))
  expect(many.map((m) => m.reply)).toEqual(Array.from({ length: 100 }, (_, i) => `echo: n${i}`))
}

describe('gRPC through a pure route', () => {
  it('h2c client → gateway → h2c upstream: unary, streaming, error statuses, trailers', async () => {
    const up = await startGrpcServer()
    const port = await gatewayFor(up.port)
    const client = new EchoClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure())
    defer(() => client.close())
    await exercise(client, up.seen)
  })

  it('TLS client (ALPN h2) → gateway → h2c upstream', async () => {
    const ca = await createCa()
    const leaf = await ca.issue({ hosts: ['localhost', '127.0.0.1'] })
    const up = await startGrpcServer()
    const port = await gatewayFor(up.port, leaf)
    const client = new EchoClient(`localhost:${port}`, grpc.credentials.createSsl(Buffer.from(ca.cert)))
    defer(() => client.close())
    await exercise(client, up.seen)
  })
})
