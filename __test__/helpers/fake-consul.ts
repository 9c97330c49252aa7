/**
 * A stand-in for a Consul agent's health API (no Consul binary is packaged here): a real
 * node:http server on 127.0.0.1, port 0, serving `GET /v1/health/service/<name>` in
 * Consul's documented shape (an array of `{ Node, Service, Checks }`, header
 * `X-Consul-Index`). It honours `passing`, `tag`, `dc`, and blocking queries (`index` +
 * `wait`: a query whose index is not below the current one is held until the data changes
 * or `wait` elapses). It records every request, and can be told to fail (status), to stall,
 * to demand a token, or to go away and come back on the same port.
 */
import http from 'node:http'
import net from 'node:net'
import { once } from 'node:events'
import { defer } from './net'

export interface FakeInstance {
  /** The node's address (`Node.Address`). */
  nodeAddress: string
  /** `Service.Address`; empty or absent means "use the node's address". */
  address?: string
  port: number
  id?: string
  node?: string
  datacenter?: string
  tags?: string[]
  meta?: Record<string, string>
  /** The service check's status; default 'passing'. */
  status?: 'passing' | 'warning' | 'critical'
}

export interface RecordedRequest {
  method: string
  path: string
  /** The service name from the path. */
  service: string
  query: Record<string, string>
  /** The X-Consul-Token header, if sent. */
  token: string | undefined
  at: number
}

/** A blocking query being held. */
interface HeldQuery {
  answer(): void
  timer: NodeJS.Timeout
}

export interface FakeConsul {
  readonly port: number
  /** `http://127.0.0.1:<port>` */
  readonly url: string
  /** Every request, in arrival order. */
  readonly requests: RecordedRequest[]
  /** The current X-Consul-Index. */
  readonly index: number
  /** Blocking queries being held now. */
  readonly held: number
  /** TCP connections open now. */
  readonly openConnections: number
  /** Held queries whose client went away before an answer. */
  readonly abandoned: number
  /** What `X-Consul-Index` carries; `null` leaves it out, a string is sent as is. Default: the index. */
  indexHeader: string | null | undefined
  /**
   * Replaces a service's instances; the index moves on (or becomes `at.index`, e.g. lower,
   * as after a snapshot restore) and held queries are answered.
   */
  setService(service: string, instances: FakeInstance[], at?: { index: number }): void
  /** Sets the index (e.g. lower, as after a snapshot restore) and answers held queries. */
  setIndex(index: number): void
  /** Answers every request (and every held query) with this status until `recover()`. */
  failWith(status: number): void
  /** Accepts requests but never answers them until `recover()`. */
  stall(): void
  /** Answers 403 unless X-Consul-Token is this token (undefined: no ACLs). */
  requireToken(token: string | undefined): void
  recover(): void
  /** Stops listening and drops every connection (clients then get ECONNREFUSED). */
  goAway(): Promise<void>
  /** Listens again on the same port. */
  comeBack(): Promise<void>
  close(): Promise<void>
}

const DURATION = /^(\d+)(ms|s|m|h)$/
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }

/** Consul's `wait` (`'10s'`, `'5m'`, `'250ms'`); absent means Consul's default of 5 minutes. */
function waitMs(wait: string | undefined): number {
  if (wait === undefined) return 300_000
  const m = DURATION.exec(wait)
  if (!m) return 300_000
  return Math.min(Number(m[1]) * UNIT_MS[m[2]], 600_000)
}

function entry(service: string, inst: FakeInstance, i: number): unknown {
  const node = inst.node ?? `node-${i + 1}`
  const id = inst.id ?? `${service}-${i + 1}`
  const status = inst.status ?? 'passing'
  return {
    Node: {
      ID: `00000000-0000-0000-0000-00000000000${i % 10}`,
      Node: node,
      Address: inst.nodeAddress,
      Datacenter: inst.datacenter ?? 'dc1',
      TaggedAddresses: { lan: inst.nodeAddress, wan: inst.nodeAddress },
      Meta: {},
    },
    Service: {
      ID: id,
      Service: service,
      Tags: inst.tags ?? [],
      Address: inst.address ?? '',
      Meta: inst.meta ?? {},
      Port: inst.port,
      Weights: { Passing: 1, Warning: 1 },
      EnableTagOverride: false,
    },
    Checks: [
      { Node: node, CheckID: 'serfHealth', Name: 'Serf Health Status', Status: 'passing', ServiceID: '', ServiceName: '' },
      { Node: node, CheckID: `service:${id}`, Name: `Service '${service}' check`, Status: status, ServiceID: id, ServiceName: service },
    ],
  }
}

export async function startFakeConsul(): Promise<FakeConsul> {
  const services = new Map<string, FakeInstance[]>()
  const requests: RecordedRequest[] = []
  const held = new Set<HeldQuery>()
  const sockets = new Set<net.Socket>()
  let index = 10
  let abandoned = 0
  let failure: number | 'stall' | undefined
  let token: string | undefined
  let port = 0

  const answerHeld = () => {
    for (const h of [...held]) h.answer()
  }

  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://fake-consul')
    const m = /^\/v1\/health\/service\/([^/]+)$/.exec(url.pathname)
    const query = Object.fromEntries(url.searchParams)
    const tokenHeader = req.headers['x-consul-token']
    const service = m ? decodeURIComponent(m[1]) : ''
    requests.push({
      method: req.method ?? '',
      path: url.pathname,
      service,
      query,
      token: Array.isArray(tokenHeader) ? tokenHeader[0] : tokenHeader,
      at: Date.now(),
    })
    if (failure === 'stall') return // never answered; the client's timeout or the test's close ends it
    if (typeof failure === 'number') {
      res.writeHead(failure, { 'content-type': 'text/plain' })
      res.end('rpc error making call: No cluster leader')
      return
    }
    if (req.method !== 'GET' || !m) {
      res.writeHead(404, { 'content-type': 'text/plain' })
      res.end('Invalid URL path')
      return
    }
    if (token !== undefined && query.token !== token && tokenHeader !== token) {
      res.writeHead(403, { 'content-type': 'text/plain' })
      res.end('ACL not found')
      return
    }
    const respond = () => {
      if (res.writableEnded || res.destroyed) return
      if (typeof failure === 'number') {
        res.writeHead(failure, { 'content-type': 'text/plain' })
        res.end('rpc error making call: No cluster leader')
        return
      }
      const passingOnly = 'passing' in query && query.passing !== 'false'
      const list = (services.get(service) ?? [])
        .map((inst, i) => ({ inst, body: entry(service, inst, i) }))
        .filter(({ inst }) => !passingOnly || (inst.status ?? 'passing') === 'passing')
        .filter(({ inst }) => query.tag === undefined || (inst.tags ?? []).includes(query.tag))
        .filter(({ inst }) => query.dc === undefined || (inst.datacenter ?? 'dc1') === query.dc)
        .map(({ body }) => body)
      const headers: http.OutgoingHttpHeaders = {
        'content-type': 'application/json',
        'x-consul-knownleader': 'true',
        'x-consul-lastcontact': '0',
      }
      if (fake.indexHeader === undefined) headers['x-consul-index'] = String(index)
      else if (fake.indexHeader !== null) headers['x-consul-index'] = fake.indexHeader
      res.writeHead(200, headers)
      res.end(JSON.stringify(list))
    }
    const since = query.index === undefined ? 0 : Number(query.index)
    if (!(since > 0) || since < index) {
      respond()
      return
    }
    // A blocking query: held until the index moves or `wait` elapses.
    const hold: HeldQuery = {
      answer: () => {
        clearTimeout(hold.timer)
        held.delete(hold)
        respond()
      },
      timer: setTimeout(() => hold.answer(), waitMs(query.wait)),
    }
    held.add(hold)
    res.on('close', () => {
      if (!held.has(hold)) return
      clearTimeout(hold.timer)
      held.delete(hold)
      abandoned++
    })
  })
  server.keepAliveTimeout = 30_000
  server.on('connection', (socket: net.Socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
  })

  const listen = async (onPort: number) => {
    server.listen(onPort, '127.0.0.1')
    await once(server, 'listening')
    port = (server.address() as net.AddressInfo).port
  }
  const stopListening = () =>
    new Promise<void>((resolve) => {
      for (const h of [...held]) {
        clearTimeout(h.timer)
        held.delete(h)
      }
      if (!server.listening) return resolve()
      server.close(() => resolve())
      server.closeAllConnections()
      for (const s of sockets) s.destroy()
    })

  await listen(0)
  const fake: FakeConsul = {
    get port() {
      return port
    },
    get url() {
      return `http://127.0.0.1:${port}`
    },
    requests,
    get index() {
      return index
    },
    get held() {
      return held.size
    },
    get openConnections() {
      return sockets.size
    },
    get abandoned() {
      return abandoned
    },
    indexHeader: undefined,
    setService(service, instances, at) {
      services.set(service, instances.map((i) => ({ ...i })))
      index = at === undefined ? index + 1 : at.index
      answerHeld()
    },
    setIndex(value) {
      index = value
      answerHeld()
    },
    failWith(status) {
      failure = status
      answerHeld()
    },
    stall() {
      failure = 'stall'
    },
    requireToken(value) {
      token = value
    },
    recover() {
      failure = undefined
    },
    goAway: stopListening,
    comeBack: () => listen(port),
    close: stopListening,
  }
  defer(() => fake.close())
  return fake
}
