/**
 * Helpers for the load-balancing suites (strategies, membership): upstreams that answer
 * with their own id (and can be slowed down or made to hold requests), a gateway that
 * mounts one LoadBalancer on every path, and clients that send many requests over
 * keep-alive agents with modest concurrency and tally who served them.
 *
 * Everything started here is registered with `defer` from helpers/net.ts; call `closeAll`
 * in `afterEach`.
 */
import http from 'node:http'
import { Gateway, LoadBalancer, Velithon } from 'velithon-gateway'
import { defer, listen, readAll, sleep, startUpstream, type Upstream } from './net'

// ---------------------------------------------------------------------------------------
// Upstreams that say who they are

export interface IdUpstream extends Upstream {
  readonly id: string
  /** Milliseconds every request waits before it is answered (change it at any time). */
  delayMs: number
  /** Requests being answered right now. */
  readonly inFlight: number
  /** The highest `inFlight` seen. */
  readonly peakInFlight: number
  /** Status of `GET /health` (default 200). */
  healthStatus: number
  /** Requests served, not counting `/health` checks. */
  readonly served: number
}

/**
 * An upstream answering `200 <id>` (text/plain) to every request after `delayMs`; a path
 * containing `/slow/<ms>` waits that long instead. `/health` answers `healthStatus`.
 */
export async function idUpstream(id: string, init: { delayMs?: number } = {}): Promise<IdUpstream> {
  let delayMs = init.delayMs ?? 0
  let inFlight = 0
  let peakInFlight = 0
  let served = 0
  let healthStatus = 200
  const upstream = await startUpstream(async (req, res) => {
    await readAll(req)
    if (req.url === '/health') {
      res.writeHead(healthStatus, { 'content-type': 'text/plain', 'content-length': 2 })
      res.end('ok')
      return
    }
    served++
    inFlight++
    peakInFlight = Math.max(peakInFlight, inFlight)
    try {
      const slow = /\/slow\/(\d+)/.exec(req.url ?? '')
      const wait = slow ? Number(slow[1]) : delayMs
      if (wait > 0) await sleep(wait)
    } finally {
      inFlight--
    }
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(id), 'x-upstream-id': id })
    res.end(id)
  })
  // Keep pooled gateway connections open for the whole test (node's default is 5 s).
  upstream.server.keepAliveTimeout = 60_000
  return Object.defineProperties(upstream as unknown as IdUpstream, {
    id: { value: id, enumerable: true },
    delayMs: { get: () => delayMs, set: (v: number) => void (delayMs = v), enumerable: true },
    inFlight: { get: () => inFlight, enumerable: true },
    peakInFlight: { get: () => peakInFlight, enumerable: true },
    healthStatus: { get: () => healthStatus, set: (v: number) => void (healthStatus = v), enumerable: true },
    served: { get: () => served, enumerable: true },
  })
}

/** `n` id upstreams named a, b, c, … */
export async function idUpstreams(n: number): Promise<IdUpstream[]> {
  const out: IdUpstream[] = []
  for (let i = 0; i < n; i++) out.push(await idUpstream(String.fromCharCode(97 + i)))
  return out
}

/** The id of the upstream behind `url`, for reading `loadBalancer.status()`. */
export function idOfUrl(upstreams: readonly IdUpstream[], url: string): string {
  const u = upstreams.find((x) => x.url === url || `${x.url}/` === url)
  return u ? u.id : url
}

// ---------------------------------------------------------------------------------------
// The gateway

/**
 * Mounts `loadBalancer` on every path (`/{p:path}`) of a new Gateway + Velithon app on
 * 127.0.0.1:0; the app is closed (and with it the balancer) after the test.
 */
export async function serveBalancer(loadBalancer: LoadBalancer, workerThreads = 2): Promise<string> {
  const gateway = new Gateway({ timeout: '10s', connectTimeout: '2s' })
  gateway.route('/{p:path}', { loadBalancer })
  const app = new Velithon({ workerThreads })
  app.includeRouter(gateway.getRouter())
  defer(() => loadBalancer.close())
  const { url } = await listen(app)
  return url
}

// ---------------------------------------------------------------------------------------
// Clients

/** A keep-alive agent with at most `sockets` connections, destroyed after the test. */
export function keepAliveAgent(sockets: number): http.Agent {
  const agent = new http.Agent({ keepAlive: true, maxSockets: sockets, maxFreeSockets: sockets })
  defer(() => agent.destroy())
  return agent
}

export interface Hit {
  status: number
  /** The body: the id of the upstream that served it, or the gateway's error JSON. */
  body: string
  headers: http.IncomingHttpHeaders
}

/** One GET through `agent`; never rejects (a transport error is status 0, message in body). */
export function hit(url: string, agent: http.Agent | false, headers: http.OutgoingHttpHeaders = {}, timeoutMs = 15_000): Promise<Hit> {
  return new Promise<Hit>((resolve) => {
    const req = http.request(url, { method: 'GET', agent, headers }, (res) => {
      readAll(res).then(
        (buf) => resolve({ status: res.statusCode ?? 0, body: buf.toString('utf8'), headers: res.headers }),
        (err: unknown) => resolve({ status: 0, body: `response error: ${String(err)}`, headers: {} }),
      )
    })
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)))
    req.on('error', (err) => resolve({ status: 0, body: `request error: ${String(err)}`, headers: {} }))
    req.end()
  })
}

/** Requests served per upstream id, plus everything that was not a 200. */
export class Tally {
  readonly counts = new Map<string, number>()
  readonly failures: Hit[] = []
  /** Ids in the order the answers arrived (sequential runs: the order of the picks). */
  readonly order: string[] = []
  total = 0

  add(h: Hit): void {
    this.total++
    if (h.status !== 200) {
      this.failures.push(h)
      return
    }
    this.counts.set(h.body, (this.counts.get(h.body) ?? 0) + 1)
    this.order.push(h.body)
  }

  count(id: string): number {
    return this.counts.get(id) ?? 0
  }

  /** Fraction of the successful requests `id` served. */
  share(id: string): number {
    const ok = this.total - this.failures.length
    return ok === 0 ? 0 : this.count(id) / ok
  }

  /** `{ a: 2503, b: 2497, … }`, sorted by id, for messages and logs. */
  summary(): Record<string, number> {
    return Object.fromEntries([...this.counts.entries()].sort(([x], [y]) => (x < y ? -1 : 1)))
  }

  /** `{ a: '25.0%', … }` */
  shares(): Record<string, string> {
    return Object.fromEntries(Object.keys(this.summary()).map((id) => [id, `${(100 * this.share(id)).toFixed(1)}%`]))
  }

  /** The first few failures, for assertion messages. */
  describeFailures(): string {
    return JSON.stringify(this.failures.slice(0, 5).map((f) => ({ status: f.status, body: f.body.slice(0, 200) })))
  }
}

export interface DriveOptions {
  /** Requests in flight at once (and keep-alive sockets). Default 8. */
  concurrency?: number
  /** Path of request `i` (default `/r<i>`). */
  path?: (i: number) => string
  /** Headers of request `i`. */
  headers?: (i: number) => http.OutgoingHttpHeaders
  agent?: http.Agent
  tally?: Tally
}

/** Sends `n` GETs to `base` with `concurrency` workers over keep-alive; tallies who served. */
export async function drive(base: string, n: number, options: DriveOptions = {}): Promise<Tally> {
  const concurrency = options.concurrency ?? 8
  const agent = options.agent ?? keepAliveAgent(concurrency)
  const tally = options.tally ?? new Tally()
  const path = options.path ?? ((i: number) => `/r${i}`)
  let next = 0
  const worker = async () => {
    while (next < n) {
      const i = next++
      tally.add(await hit(`${base}${path(i)}`, agent, options.headers?.(i) ?? {}))
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker))
  return tally
}

/** `n` requests one after the other (one keep-alive socket): the exact pick order. */
export function driveSequential(base: string, n: number, options: Omit<DriveOptions, 'concurrency'> = {}): Promise<Tally> {
  return drive(base, n, { ...options, concurrency: 1 })
}

export interface Load {
  /** Everything answered so far. */
  readonly tally: Tally
  /** Tallies per phase: `mark(name)` starts a new phase; answers count in the phase they were sent in. */
  readonly phases: Map<string, Tally>
  mark(phase: string): void
  /** Stops sending and waits for every request in flight. */
  stop(): Promise<Tally>
}

/**
 * Steady load until `stop()`: `clients` workers, each with its own keep-alive socket,
 * sending one request after another.
 */
export function startLoad(base: string, clients: number, options: Omit<DriveOptions, 'concurrency' | 'tally'> = {}): Load {
  const agent = options.agent ?? keepAliveAgent(clients)
  const tally = new Tally()
  const phases = new Map<string, Tally>([['start', new Tally()]])
  let phase = phases.get('start') as Tally
  const path = options.path ?? ((i: number) => `/r${i}`)
  let stopped = false
  let i = 0
  const worker = async () => {
    while (!stopped) {
      const n = i++
      const sentIn = phase
      const h = await hit(`${base}${path(n)}`, agent, options.headers?.(n) ?? {})
      tally.add(h)
      sentIn.add(h)
    }
  }
  const running = Promise.all(Array.from({ length: clients }, worker))
  return {
    tally,
    phases,
    mark(name: string) {
      phase = new Tally()
      phases.set(name, phase)
    },
    async stop() {
      stopped = true
      await running
      return tally
    },
  }
}
