/**
 * Service discovery: static lists, Consul (health API + blocking queries), DNS, and
 * followDiscovery keeping a LoadBalancer in step.
 *
 * No Consul binary is packaged on this machine, so `helpers/fake-consul.ts` stands in for
 * Consul: a real HTTP server speaking Consul's documented health API, blocking queries
 * included. DNS is tested against 'localhost' and IP literals (the operating system's
 * resolver) and against a small UDP DNS server defined below (records with TTLs, NXDOMAIN).
 */
import dgram from 'node:dgram'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, test } from 'vitest'
import {
  ConfigError,
  ConsulServiceDiscovery,
  DnsServiceDiscovery,
  Gateway,
  LoadBalancer,
  ServiceDiscoveryError,
  StaticServiceDiscovery,
  Velithon,
  followDiscovery,
  type ServiceDiscovery,
} from 'velithon-gateway'
import { startFakeConsul, type FakeConsul } from './helpers/fake-consul'
import { closeAll, defer, echoHandler, echoOf, listen, send, sleep, startUpstream, waitFor, withTimeout } from './helpers/net'

afterEach(closeAll)

/** Lets a test pass a value the types forbid, as a JavaScript user could. */
const untyped = (value: unknown): never => value as never

/** Runs `fn`, expects a ConfigError, and returns it. */
function configError(fn: () => unknown): ConfigError {
  let caught: unknown
  try {
    fn()
  } catch (err) {
    caught = err
  }
  expect(caught, 'expected a ConfigError to be thrown').toBeInstanceOf(ConfigError)
  return caught as ConfigError
}

async function rejection(promise: Promise<unknown>): Promise<Error> {
  const outcome = await withTimeout(
    promise.then(
      () => undefined,
      (err: unknown) => err,
    ),
    5000,
    'a rejection',
  )
  expect(outcome, 'expected a rejection').toBeInstanceOf(Error)
  return outcome as Error
}

/** Records what a watch delivers; stopped after the test. */
interface Watched {
  lists: string[][]
  errors: Error[]
  stop: () => void
}

function watching(discovery: ServiceDiscovery, service: string): Watched {
  const lists: string[][] = []
  const errors: Error[] = []
  const stop = discovery.watch(
    service,
    (list) => lists.push(list),
    (error) => errors.push(error),
  )
  defer(stop)
  return { lists, errors, stop }
}

// ---------------------------------------------------------------------------------------
// StaticServiceDiscovery

describe('StaticServiceDiscovery', () => {
  test('lists the configured servers; an unknown service is an error naming it', async () => {
    const discovery = new StaticServiceDiscovery({
      users: ['http://user-1:8080', 'http://user-2:8080'],
      payments: ['https://payments:8443'],
    })
    expect(await discovery.getServers('users')).toEqual(['http://user-1:8080', 'http://user-2:8080'])
    expect(discovery.servers('payments')).toEqual(['https://payments:8443'])
    expect(discovery.has('users')).toBe(true)
    expect(discovery.serviceNames).toEqual(['users', 'payments'])

    const err = await rejection(discovery.getServers('orders'))
    expect(err).toBeInstanceOf(ServiceDiscoveryError)
    expect((err as ServiceDiscoveryError).code).toBe('VG_NO_ROUTE')
    expect((err as ServiceDiscoveryError).service).toBe('orders')
    expect(err.message).toContain('"orders"')
    expect(err.message).toContain('"users"')
    expect(() => discovery.servers('orders')).toThrow(ServiceDiscoveryError)
  })

  test('a returned list is a copy', () => {
    const discovery = new StaticServiceDiscovery({ users: ['http://user-1:8080'] })
    discovery.servers('users').push('http://intruder:1')
    expect(discovery.servers('users')).toEqual(['http://user-1:8080'])
  })

  test('watch: first list asynchronously, then only real changes, nothing after stop', async () => {
    const discovery = new StaticServiceDiscovery({ users: ['http://a:1', 'http://b:1'] })
    const w = watching(discovery, 'users')
    expect(w.lists).toEqual([]) // not synchronously
    await waitFor(() => w.lists.length === 1, 2000, 'the first list')
    expect(w.lists[0]).toEqual(['http://a:1', 'http://b:1'])

    discovery.setServers('users', ['http://b:1', 'http://a:1']) // same set, other order
    expect(w.lists).toHaveLength(1)
    discovery.setServers('users', ['http://c:1'])
    expect(w.lists).toEqual([['http://a:1', 'http://b:1'], ['http://c:1']]) // told before setServers returns
    discovery.setServers('users', []) // an empty list is news too
    expect(w.lists.at(-1)).toEqual([])

    w.stop()
    w.stop() // idempotent
    discovery.setServers('users', ['http://d:1'])
    expect(w.lists).toHaveLength(3)
    expect(w.errors).toEqual([])
  })

  test('stop before the first answer: no callback at all', async () => {
    const discovery = new StaticServiceDiscovery({ users: ['http://a:1'] })
    const w = watching(discovery, 'users')
    w.stop()
    await sleep(20)
    expect(w.lists).toEqual([])
  })

  test('watching an unknown service reports it, and picks it up once it is added', async () => {
    const discovery = new StaticServiceDiscovery({})
    const w = watching(discovery, 'orders')
    await waitFor(() => w.errors.length === 1, 2000, 'the error')
    expect(w.errors[0]).toBeInstanceOf(ServiceDiscoveryError)
    expect(w.errors[0].message).toContain('"orders"')
    discovery.setServers('orders', ['http://order-1:8080'])
    expect(w.lists).toEqual([['http://order-1:8080']])
  })

  test('bad lists are ConfigErrors naming the option', () => {
    expect(configError(() => new StaticServiceDiscovery(untyped(['http://a:1']))).option).toBe('services')
    const badUrl = configError(() => new StaticServiceDiscovery({ users: ['user-1:8080'] }))
    expect(badUrl.option).toBe('services["users"][0]')
    expect(badUrl.message).toContain('"user-1:8080"')
    expect(configError(() => new StaticServiceDiscovery({ users: untyped('http://a:1') })).option).toBe('services["users"]')
    expect(configError(() => new StaticServiceDiscovery({ users: ['http://a:1', 'http://a:1'] })).message).toContain('twice')
    expect(configError(() => new StaticServiceDiscovery({ 'has space': [] })).option).toBe('services')
    const discovery = new StaticServiceDiscovery({ users: ['http://a:1'] })
    expect(configError(() => discovery.setServers('users', ['ftp://a:1'])).option).toBe('servers[0]')
    expect(configError(() => discovery.watch('users', untyped(undefined), () => {})).option).toBe('onChange')
    expect(discovery.servers('users')).toEqual(['http://a:1']) // a refused setServers changed nothing
  })
})

// ---------------------------------------------------------------------------------------
// ConsulServiceDiscovery

function consulFor(fake: FakeConsul, options: ConstructorParameters<typeof ConsulServiceDiscovery>[0] = {}): ConsulServiceDiscovery {
  return new ConsulServiceDiscovery({ consulHost: '127.0.0.1', consulPort: fake.port, ...options })
}

const healthRequests = (fake: FakeConsul, service = 'web') => fake.requests.filter((r) => r.service === service)

describe('ConsulServiceDiscovery', () => {
  test('maps health entries to URLs: Service.Address, else Node.Address; IPv6 in brackets; https from Meta; passing only', async () => {
    const fake = await startFakeConsul()
    fake.setService('web', [
      { nodeAddress: '10.0.0.1', address: '10.1.0.1', port: 8080 },
      { nodeAddress: '10.0.0.2', port: 8081 }, // no Service.Address
      { nodeAddress: '10.0.0.3', address: 'fd00::3', port: 8082 },
      { nodeAddress: '10.0.0.4', address: '10.1.0.4', port: 8443, meta: { scheme: 'https' } },
      { nodeAddress: '10.0.0.5', address: '10.1.0.5', port: 8084, status: 'critical' },
      { nodeAddress: '10.0.0.6', address: '10.1.0.6', port: 8085, status: 'warning' },
    ])
    const consul = consulFor(fake)
    expect(await consul.getHealthyServers('web')).toEqual([
      'http://10.1.0.1:8080',
      'http://10.0.0.2:8081',
      'http://[fd00::3]:8082',
      'https://10.1.0.4:8443',
    ])
    expect(await consul.getServers('web')).toHaveLength(4)
    const [first] = healthRequests(fake)
    expect(first.path).toBe('/v1/health/service/web')
    expect(first.query).toEqual({ passing: 'true' }) // a plain read: no index, no wait
    expect(first.token).toBeUndefined()
    expect(await consul.getHealthyServers('unknown')).toEqual([]) // Consul knows no instance: empty
    expect(consul.consulUrl).toBe(`http://127.0.0.1:${fake.port}`)
  })

  test('passes tag and datacenter; sends the token as X-Consul-Token', async () => {
    const fake = await startFakeConsul()
    fake.requireToken('b7f0c1a2-secret')
    fake.setService('web', [
      { nodeAddress: '10.0.0.1', port: 80, tags: ['v2'], datacenter: 'eu1' },
      { nodeAddress: '10.0.0.2', port: 80, tags: ['v1'], datacenter: 'eu1' },
      { nodeAddress: '10.0.0.3', port: 80, tags: ['v2'], datacenter: 'us1' },
    ])
    const consul = consulFor(fake, { token: 'b7f0c1a2-secret', tag: 'v2', datacenter: 'eu1' })
    expect(await consul.getHealthyServers('web')).toEqual(['http://10.0.0.1:80'])
    const [req] = healthRequests(fake)
    expect(req.token).toBe('b7f0c1a2-secret')
    expect(req.query).toEqual({ passing: 'true', tag: 'v2', dc: 'eu1' })

    // Without the token, Consul's ACLs refuse: a clear error that does not echo any token.
    const err = await rejection(consulFor(fake).getHealthyServers('web'))
    expect(err).toBeInstanceOf(ServiceDiscoveryError)
    expect((err as ServiceDiscoveryError).code).toBe('VG_UPSTREAM_PROTOCOL')
    expect(err.message).toContain('403')
    expect(err.message).toContain('token')
    expect(err.message).not.toContain('b7f0c1a2')
  })

  test('unreachable, failing, slow or garbled Consul: typed errors that say what happened', async () => {
    const fake = await startFakeConsul()
    fake.failWith(500)
    const failing = await rejection(consulFor(fake).getHealthyServers('web'))
    expect((failing as ServiceDiscoveryError).code).toBe('VG_UPSTREAM_PROTOCOL')
    expect(failing.message).toContain('500')
    expect(failing.message).toContain('No cluster leader')
    expect(failing.message).toContain(`http://127.0.0.1:${fake.port}/v1/health/service/web`)

    fake.stall()
    const slow = await rejection(consulFor(fake, { timeout: '200ms' }).getHealthyServers('web'))
    expect((slow as ServiceDiscoveryError).code).toBe('VG_UPSTREAM_TIMEOUT')
    expect(slow.message).toContain('200 ms')

    fake.recover()
    await fake.goAway()
    const down = await rejection(consulFor(fake).getHealthyServers('web'))
    expect((down as ServiceDiscoveryError).code).toBe('VG_UPSTREAM_CONNECT')
    expect(down.message).toContain('ECONNREFUSED')
    expect(down.message).toContain(`127.0.0.1:${fake.port}`)
  })

  test('blocking queries: the next request carries index and wait, is held, and a change arrives at once', async () => {
    const fake = await startFakeConsul()
    fake.setService('web', [{ nodeAddress: '10.0.0.1', port: 80 }])
    const consul = consulFor(fake, { wait: '20s' })
    const w = watching(consul, 'web')
    await waitFor(() => w.lists.length === 1, 3000, 'the first list')
    expect(w.lists[0]).toEqual(['http://10.0.0.1:80'])
    await waitFor(() => fake.held === 1, 3000, 'a held blocking query')
    const requests = healthRequests(fake)
    expect(requests).toHaveLength(2)
    expect(requests[0].query.index).toBeUndefined()
    expect(requests[1].query).toEqual({ passing: 'true', index: String(fake.index), wait: '20s' })

    await sleep(300)
    expect(healthRequests(fake)).toHaveLength(2) // held, not polling
    const changedAt = Date.now()
    fake.setService('web', [
      { nodeAddress: '10.0.0.1', port: 80 },
      { nodeAddress: '10.0.0.2', port: 80 },
    ])
    await waitFor(() => w.lists.length === 2, 3000, 'the change')
    expect(Date.now() - changedAt).toBeLessThan(1000) // far under the 20 s wait
    expect(w.lists[1]).toEqual(['http://10.0.0.1:80', 'http://10.0.0.2:80'])
    await waitFor(() => healthRequests(fake).length === 3 && fake.held === 1, 3000, 'the next held query')
    expect(healthRequests(fake)[2].query.index).toBe(String(fake.index))
    expect(w.errors).toEqual([])
  })

  test('a blocking query that times out unchanged is not news: same index again, no onChange', async () => {
    const fake = await startFakeConsul()
    fake.setService('web', [{ nodeAddress: '10.0.0.1', port: 80 }])
    const w = watching(consulFor(fake, { wait: '1s' }), 'web')
    await waitFor(() => healthRequests(fake).length >= 3, 4000, 'a held query to end by its wait')
    const [, second, third] = healthRequests(fake)
    expect(second.query.wait).toBe('1s')
    expect(third.at - second.at).toBeGreaterThanOrEqual(900)
    expect(third.query.index).toBe(second.query.index)
    expect(w.lists).toHaveLength(1)
  })

  test('an index that goes backwards resets the loop: a plain read, then blocking on the new index', async () => {
    const fake = await startFakeConsul()
    fake.setService('web', [{ nodeAddress: '10.0.0.1', port: 80 }])
    fake.setIndex(100)
    const w = watching(consulFor(fake, { wait: '20s' }), 'web')
    await waitFor(() => fake.held === 1, 3000, 'a held query')
    expect(healthRequests(fake)[1].query.index).toBe('100')

    // E.g. a snapshot restore: the held query is answered with index 5.
    fake.setService('web', [{ nodeAddress: '10.0.0.9', port: 80 }], { index: 5 })
    await waitFor(() => fake.held === 1 && healthRequests(fake).length >= 4, 3000, 'the restarted loop')
    const [, , third, fourth] = healthRequests(fake)
    expect(third.query.index).toBeUndefined() // reset: a plain read
    expect(third.query.wait).toBeUndefined()
    expect(fourth.query.index).toBe('5')
    expect(w.lists.at(-1)).toEqual(['http://10.0.0.9:80'])
  })

  test('without a usable X-Consul-Index it polls every refreshInterval instead of looping', async () => {
    const fake = await startFakeConsul()
    fake.setService('web', [{ nodeAddress: '10.0.0.1', port: 80 }])
    fake.indexHeader = 'not-a-number'
    const w = watching(consulFor(fake, { refreshInterval: '300ms' }), 'web')
    await sleep(1000)
    const requests = healthRequests(fake)
    expect(requests.length).toBeGreaterThanOrEqual(2)
    expect(requests.length).toBeLessThanOrEqual(4) // ~every 300–330 ms, never a tight loop
    expect(requests.every((r) => r.query.index === undefined)).toBe(true)
    expect(w.lists).toHaveLength(1)
  })

  test('Consul down: one onError per failure streak, the last good list stays; recovery delivers again', async () => {
    const fake = await startFakeConsul()
    fake.setService('web', [{ nodeAddress: '10.0.0.1', port: 80 }])
    const consul = consulFor(fake, { refreshInterval: '100ms', wait: '20s' })
    const w = watching(consul, 'web')
    const applied: string[][] = []
    const reports: Error[] = []
    const follower = followDiscovery(consul, 'web', (list) => applied.push(list), (error) => reports.push(error))
    defer(() => follower.stop())
    await withTimeout(follower.ready, 3000, 'the follower')
    await waitFor(() => fake.held === 2, 3000, 'both watches to block')
    expect(follower.status()).toMatchObject({ source: 'ok', servers: ['http://10.0.0.1:80'] })

    await fake.goAway()
    await sleep(600) // several retries, each refused
    expect(w.errors).toHaveLength(1)
    expect(w.errors[0]).toBeInstanceOf(ServiceDiscoveryError)
    expect(w.errors[0].message).toMatch(/cannot reach Consul|closed before the answer/)
    expect(reports).toHaveLength(1)
    expect(follower.status()).toMatchObject({ source: 'stale', servers: ['http://10.0.0.1:80'] })
    expect(follower.status().lastError).toBe(reports[0].message)
    expect(applied).toEqual([['http://10.0.0.1:80']])

    await fake.comeBack()
    fake.failWith(500) // back, but failing: still the same streak
    await sleep(400)
    expect(w.errors).toHaveLength(1)

    fake.recover()
    await waitFor(() => w.lists.length === 2, 3000, 'the list after recovery')
    expect(w.lists[1]).toEqual(['http://10.0.0.1:80']) // unchanged, delivered as the sign of recovery
    await waitFor(() => follower.status().source === 'ok', 3000, 'the follower to recover')
    expect(applied).toHaveLength(1) // unchanged: not applied again

    fake.setService('web', [{ nodeAddress: '10.0.0.2', port: 80 }])
    await waitFor(() => applied.length === 2, 3000, 'the new list applied')
    expect(applied[1]).toEqual(['http://10.0.0.2:80'])
    fake.failWith(500)
    fake.setService('web', [{ nodeAddress: '10.0.0.3', port: 80 }]) // answers the held queries with 500
    await waitFor(() => w.errors.length === 2, 3000, 'a new failure streak')
    expect(w.errors[1].message).toContain('500')
  })

  test('stop() aborts the held query (Consul sees the connection close) and nothing fires afterwards', async () => {
    const fake = await startFakeConsul()
    fake.setService('web', [{ nodeAddress: '10.0.0.1', port: 80 }])
    const w = watching(consulFor(fake, { wait: '20s' }), 'web')
    await waitFor(() => fake.held === 1, 3000, 'a held query')
    expect(fake.openConnections).toBe(1) // one kept-alive connection for the whole watch
    w.stop()
    await waitFor(() => fake.openConnections === 0, 2000, 'the connection to close')
    expect(fake.held).toBe(0)
    expect(fake.abandoned).toBe(1)
    const seen = fake.requests.length
    fake.setService('web', [{ nodeAddress: '10.0.0.2', port: 80 }])
    await fake.goAway()
    await sleep(300)
    expect(fake.requests.length).toBe(seen)
    expect(w.lists).toHaveLength(1)
    expect(w.errors).toEqual([])
  })

  test('stop() while waiting to retry: no request, no callback afterwards', async () => {
    const fake = await startFakeConsul()
    fake.failWith(500)
    const w = watching(consulFor(fake, { refreshInterval: '200ms' }), 'web')
    await waitFor(() => w.errors.length === 1, 3000, 'the first failure')
    w.stop()
    const seen = fake.requests.length
    fake.recover()
    fake.setService('web', [{ nodeAddress: '10.0.0.1', port: 80 }])
    await sleep(500)
    expect(fake.requests.length).toBe(seen)
    expect(w.lists).toEqual([])
  })

  test('a watch does not keep the process alive', async () => {
    const fake = await startFakeConsul()
    fake.setService('web', [{ nodeAddress: '10.0.0.1', port: 80 }])
    const entry = fileURLToPath(new URL('../dist/cjs/discovery/index.js', import.meta.url))
    // The child watches, keeps itself alive 1 s with a timer of its own, then should exit
    // even though a 60 s blocking query is held.
    const script = `
      const { ConsulServiceDiscovery } = require(${JSON.stringify(entry)})
      const d = new ConsulServiceDiscovery({ consulPort: ${fake.port}, wait: '60s' })
      d.watch('web', (list) => console.log(JSON.stringify(list)), (e) => console.log('error', e.message))
      setTimeout(() => {}, 1000)
    `
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] })
    defer(() => child.kill())
    let output = ''
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()))
    await waitFor(() => fake.held === 1, 5000, 'the child to hold a blocking query')
    const [code] = (await withTimeout(once(child, 'exit'), 5000, 'the child to exit')) as [number | null]
    expect(code).toBe(0)
    expect(output).toContain('["http://10.0.0.1:80"]')
    await waitFor(() => fake.openConnections === 0, 2000, 'the child connection to close')
  })

  test('options are validated at construction; each error names its option', () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ consulHost: 'http://consul:8500' }, 'consulHost'],
      [{ consulHost: '' }, 'consulHost'],
      [{ consulHost: 'consul:8500' }, 'consulHost'],
      [{ consulPort: 0 }, 'consulPort'],
      [{ consulPort: '8500' }, 'consulPort'],
      [{ scheme: 'ftp' }, 'scheme'],
      [{ token: '' }, 'token'],
      [{ refreshInterval: 'soon' }, 'refreshInterval'],
      [{ refreshInterval: 0 }, 'refreshInterval'],
      [{ wait: '11m' }, 'wait'],
      [{ wait: '500ms' }, 'wait'],
      [{ timeout: -1 }, 'timeout'],
      [{ datacenter: 'eu 1' }, 'datacenter'],
      [{ tag: '' }, 'tag'],
      [{ host: 'consul' }, 'host'],
    ]
    for (const [options, option] of cases) {
      const err = configError(() => new ConsulServiceDiscovery(untyped(options)))
      expect(err.option, JSON.stringify(options)).toBe(option)
      expect(err.message).toContain(`"${option}"`)
      expect(err.message).toContain('ConsulServiceDiscovery')
    }
    const secret = configError(() => new ConsulServiceDiscovery({ token: 'has a space-secret' }))
    expect(secret.message).not.toContain('secret') // a token is never echoed
    expect(configError(() => new ConsulServiceDiscovery(untyped('consul'))).option).toBe('options')
    // Accepted: IPv6 hosts, https, durations as numbers.
    const v6 = new ConsulServiceDiscovery({ consulHost: '[::1]', consulPort: 8501, scheme: 'https', wait: 60_000 })
    expect(v6.consulUrl).toBe('https://[::1]:8501')
    expect(configError(() => v6.watch('has space', () => {}, () => {})).option).toBe('service')
  })
})

// ---------------------------------------------------------------------------------------
// DnsServiceDiscovery

interface FakeDnsRecords {
  a?: string[]
  aaaa?: string[]
  ttl: number
}

interface FakeDns {
  /** `127.0.0.1:<port>`, for the `servers` option. */
  address: string
  /** Host name → records; a name not here is NXDOMAIN. */
  records: Map<string, FakeDnsRecords>
  /** Questions received, as `name TYPE`. */
  questions: string[]
}

/** A tiny authoritative DNS server on UDP 127.0.0.1 (A and AAAA questions only). */
async function startFakeDns(): Promise<FakeDns> {
  const socket = dgram.createSocket('udp4')
  const fake: FakeDns = { address: '', records: new Map(), questions: [] }
  socket.on('message', (query, peer) => {
    // Header (12 bytes), then one question: labels, QTYPE, QCLASS.
    const labels: string[] = []
    let at = 12
    while (query[at] !== 0) {
      labels.push(query.toString('latin1', at + 1, at + 1 + query[at]))
      at += query[at] + 1
    }
    const questionEnd = at + 5
    const type = query.readUInt16BE(at + 1)
    const name = labels.join('.').toLowerCase()
    fake.questions.push(`${name} ${type === 1 ? 'A' : type === 28 ? 'AAAA' : type}`)
    const entry = fake.records.get(name)
    const addresses = entry === undefined ? [] : type === 1 ? (entry.a ?? []) : type === 28 ? (entry.aaaa ?? []) : []
    const answers = addresses.map((address) => {
      const data = type === 1 ? Buffer.from(address.split('.').map(Number)) : ipv6Bytes(address)
      const rr = Buffer.alloc(12 + data.length)
      rr.writeUInt16BE(0xc00c, 0) // the name: a pointer to the question's
      rr.writeUInt16BE(type, 2)
      rr.writeUInt16BE(1, 4) // IN
      rr.writeUInt32BE(entry?.ttl ?? 0, 6)
      rr.writeUInt16BE(data.length, 10)
      data.copy(rr, 12)
      return rr
    })
    const header = Buffer.alloc(12)
    header.writeUInt16BE(query.readUInt16BE(0), 0) // ID
    header.writeUInt16BE(0x8180 | (entry === undefined ? 3 : 0), 2) // response, RD, RA; NXDOMAIN or NOERROR
    header.writeUInt16BE(1, 4)
    header.writeUInt16BE(answers.length, 6)
    socket.send(Buffer.concat([header, query.subarray(12, questionEnd), ...answers]), peer.port, peer.address)
  })
  socket.bind(0, '127.0.0.1')
  await once(socket, 'listening')
  fake.address = `127.0.0.1:${socket.address().port}`
  defer(() => new Promise<void>((resolve) => socket.close(() => resolve())))
  return fake
}

function ipv6Bytes(address: string): Buffer {
  const [head, tail = ''] = address.split('::')
  const groups = (part: string) => (part === '' ? [] : part.split(':').map((g) => parseInt(g, 16)))
  const h = groups(head)
  const t = address.includes('::') ? groups(tail) : []
  const all = [...h, ...new Array<number>(8 - h.length - t.length).fill(0), ...t]
  const out = Buffer.alloc(16)
  all.forEach((g, i) => out.writeUInt16BE(g, i * 2))
  return out
}

describe('DnsServiceDiscovery', () => {
  test("'localhost' is resolved by the operating system (never sent to DNS)", async () => {
    const v4 = new DnsServiceDiscovery({ port: 8080, family: 4 })
    expect(await v4.getServers('localhost')).toEqual(['http://127.0.0.1:8080'])
    const any = await new DnsServiceDiscovery({ port: 8080 }).getServers('localhost')
    expect(any).toContain('http://127.0.0.1:8080')
    for (const url of any) expect(['http://127.0.0.1:8080', 'http://[::1]:8080']).toContain(url)

    const dns = await startFakeDns() // with explicit DNS servers too: localhost stays local
    const viaFake = new DnsServiceDiscovery({ servers: [dns.address], family: 4, scheme: 'https' })
    expect(await viaFake.getServers('localhost')).toEqual(['https://127.0.0.1:443'])
    expect(dns.questions).toEqual([])

    const w = watching(v4, 'localhost')
    await waitFor(() => w.lists.length === 1, 3000, 'the localhost list')
    expect(w.lists[0]).toEqual(['http://127.0.0.1:8080'])
    w.stop()
  })

  test('an IP address is used as it is', async () => {
    const discovery = new DnsServiceDiscovery({ port: 9000 })
    expect(await discovery.getServers('10.1.2.3')).toEqual(['http://10.1.2.3:9000'])
    expect(await discovery.getServers('fd00::7')).toEqual(['http://[fd00::7]:9000'])
  })

  test('A and AAAA records from the configured DNS server, re-resolved when the (clamped) TTL ends', async () => {
    const dns = await startFakeDns()
    dns.records.set('api.internal', { a: ['10.0.0.1', '10.0.0.2'], aaaa: ['fd00::1'], ttl: 3600 })
    const discovery = new DnsServiceDiscovery({ servers: [dns.address], port: 8080, minTtl: '100ms', maxTtl: '300ms' })
    expect((await discovery.getServers('api.internal')).sort()).toEqual([
      'http://10.0.0.1:8080',
      'http://10.0.0.2:8080',
      'http://[fd00::1]:8080',
    ])
    const v6only = new DnsServiceDiscovery({ servers: [dns.address], family: 6 })
    expect(await v6only.getServers('api.internal')).toEqual(['http://[fd00::1]:80'])

    const w = watching(new DnsServiceDiscovery({ servers: [dns.address], port: 8080, family: 4, minTtl: '100ms', maxTtl: '300ms' }), 'api.internal')
    await waitFor(() => w.lists.length === 1, 3000, 'the first list')
    dns.records.set('api.internal', { a: ['10.0.0.3'], ttl: 3600 })
    const changedAt = Date.now()
    await waitFor(() => w.lists.length === 2, 3000, 'the change') // a 1 h TTL, clamped to maxTtl
    expect(Date.now() - changedAt).toBeLessThan(1000)
    expect(w.lists[1]).toEqual(['http://10.0.0.3:8080'])

    // An unknown name: onError once (no fallback to the OS resolver with explicit servers), list kept upstream.
    dns.records.delete('api.internal')
    await waitFor(() => w.errors.length === 1, 3000, 'the NXDOMAIN error')
    expect(w.errors[0]).toBeInstanceOf(ServiceDiscoveryError)
    expect((w.errors[0] as ServiceDiscoveryError).code).toBe('VG_NO_ROUTE')
    expect(w.errors[0].message).toContain('"api.internal"')
    await sleep(400)
    expect(w.errors).toHaveLength(1) // one per streak, though it keeps retrying

    dns.records.set('api.internal', { a: ['10.0.0.3'], ttl: 0 }) // TTL 0: clamped up to minTtl
    await waitFor(() => w.lists.length === 3, 3000, 'the list after recovery')
    w.stop()
    const asked = dns.questions.length
    await sleep(400)
    expect(dns.questions.length).toBe(asked) // stopped: no more queries
  })

  test('malformed options and service names are ConfigErrors naming them', async () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ port: 70000 }, 'port'],
      [{ scheme: 'tcp' }, 'scheme'],
      [{ family: 5 }, 'family'],
      [{ minTtl: '10ms' }, 'minTtl'],
      [{ minTtl: 'soon' }, 'minTtl'],
      [{ minTtl: '10s', maxTtl: '5s' }, 'maxTtl'],
      [{ servers: [] }, 'servers'],
      [{ servers: ['not an address'] }, 'servers'],
      [{ timeout: 'x' }, 'timeout'],
      [{ ttl: 5 }, 'ttl'],
    ]
    for (const [options, option] of cases) {
      const err = configError(() => new DnsServiceDiscovery(untyped(options)))
      expect(err.option, JSON.stringify(options)).toBe(option)
      expect(err.message).toContain(`"${option}"`)
      expect(err.message).toContain('DnsServiceDiscovery')
    }
    const discovery = new DnsServiceDiscovery()
    for (const bad of ['', 'bad name', 'http://api.internal', 'under_score!']) {
      const err = await rejection(discovery.getServers(bad))
      expect(err).toBeInstanceOf(ConfigError)
      expect((err as ConfigError).option).toBe('service')
    }
  })
})

// ---------------------------------------------------------------------------------------
// followDiscovery

describe('followDiscovery', () => {
  test('applies changed non-empty lists; keeps the last good one on an empty list or a refused one', async () => {
    const discovery = new StaticServiceDiscovery({ api: ['http://a:1'] })
    const applied: string[][] = []
    const reports: Error[] = []
    let refuse = false
    const follower = followDiscovery(
      discovery,
      'api',
      (list) => {
        if (refuse) throw new Error('no thanks')
        applied.push(list)
      },
      (error) => reports.push(error),
    )
    defer(() => follower.stop())
    expect(follower.status()).toEqual({ source: 'pending', servers: [] })
    await withTimeout(follower.ready, 2000, 'ready')
    expect(applied).toEqual([['http://a:1']])
    const first = follower.status()
    expect(first).toMatchObject({ source: 'ok', servers: ['http://a:1'] })
    expect(first.lastUpdate).toBeGreaterThan(0)

    discovery.setServers('api', [])
    expect(follower.status()).toMatchObject({ source: 'stale', servers: ['http://a:1'] })
    expect(reports[0].message).toContain('no servers')
    expect((reports[0] as ServiceDiscoveryError).code).toBe('VG_NO_HEALTHY_UPSTREAM')

    discovery.setServers('api', ['http://b:1', 'http://c:1'])
    expect(applied.at(-1)).toEqual(['http://b:1', 'http://c:1'])
    expect(follower.status()).toMatchObject({ source: 'ok', servers: ['http://b:1', 'http://c:1'] })
    expect(follower.status().lastError).toContain('no servers') // kept as history

    refuse = true
    discovery.setServers('api', ['http://d:1'])
    expect(follower.status()).toMatchObject({ source: 'stale', servers: ['http://b:1', 'http://c:1'] })
    expect(reports.at(-1)?.message).toContain('no thanks')

    follower.stop()
    follower.stop()
    refuse = false
    discovery.setServers('api', ['http://e:1'])
    expect(applied).toHaveLength(2)
  })

  test('an unknown service: pending, with the error; ready still resolves', async () => {
    const follower = followDiscovery(new StaticServiceDiscovery(), 'nope', () => {}, () => {})
    defer(() => follower.stop())
    await withTimeout(follower.ready, 2000, 'ready')
    expect(follower.status()).toMatchObject({ source: 'pending', servers: [] })
    expect(follower.status().lastError).toContain('"nope"')
  })

  test('stop before anything arrived resolves ready', async () => {
    const fake = await startFakeConsul()
    fake.stall()
    const follower = followDiscovery(consulFor(fake), 'web', () => {}, () => {})
    follower.stop()
    await withTimeout(follower.ready, 2000, 'ready after stop')
  })

  test('drives a LoadBalancer: traffic moves when the membership changes', async () => {
    const a = await startUpstream(echoHandler('a'))
    const b = await startUpstream(echoHandler('b'))
    const discovery = new StaticServiceDiscovery({ api: [a.url] })
    const loadBalancer = new LoadBalancer({ upstreamServers: await discovery.getServers('api') })
    const follower = followDiscovery(discovery, 'api', (list) => loadBalancer.setServers(list), () => {})
    defer(() => follower.stop())
    const gateway = new Gateway({ loadBalancer, timeout: '5s', connectTimeout: '2s' })
    gateway.route('/api/{path:path}')
    const app = new Velithon({ workerThreads: 1 })
    app.includeRouter(gateway.getRouter(), { prefix: '/gw' })
    const { url } = await listen(app)
    await withTimeout(follower.ready, 2000, 'ready')

    expect(echoOf(await send(`${url}/gw/api/x`)).name).toBe('a')
    discovery.setServers('api', [b.url])
    expect(loadBalancer.upstreamServers).toEqual([b.url])
    for (let i = 0; i < 4; i++) expect(echoOf(await send(`${url}/gw/api/x`)).name).toBe('b')
    discovery.setServers('api', []) // an empty answer must not empty the balancer
    expect(loadBalancer.upstreamServers).toEqual([b.url])
    expect(follower.status().source).toBe('stale')
    expect(echoOf(await send(`${url}/gw/api/x`)).name).toBe('b')
  })

  test('rejects what is not a discovery or a callback', () => {
    expect(configError(() => followDiscovery(untyped({}), 'x', () => {}, () => {})).option).toBe('discovery')
    expect(configError(() => followDiscovery(new StaticServiceDiscovery(), 'x', untyped(1), () => {})).option).toBe('apply')
  })
})
