/**
 * Fault injection for the resilience suites (resilience, retry, health-check): upstreams
 * whose behaviour a test switches at run time (answer, fail with a status, stall, hang,
 * reset, wait on a gate), a gateway mounted as a user would, a steady-load client and
 * small status readers. Built on helpers/net.ts; everything registers with `defer`, so
 * `closeAll()` in `afterEach` cleans up.
 */
import http from 'node:http'
import { createHash } from 'node:crypto'
import {
  ConfigError,
  Gateway,
  Velithon,
  type CircuitBreakerStatus,
  type GatewayOptions,
  type GatewayRouteOptions,
  type LoadBalancer,
  type UpstreamStatus,
  type VelithonOptions,
} from 'velithon-gateway'
import { defer, listen, readAll, send, sleep, startUpstream, type Reply, type SendOptions, type Upstream } from './net'

// ---------------------------------------------------------------------------------------
// Small utilities

export function sha256(data: Buffer | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex')
}

/** A promise a test opens by hand (to hold upstream answers, e.g. a slow half-open probe). */
export interface Gate {
  readonly promise: Promise<void>
  readonly opened: boolean
  open(): void
}

export function gate(): Gate {
  let resolve!: () => void
  let opened = false
  const promise = new Promise<void>((r) => (resolve = r))
  return {
    promise,
    get opened() {
      return opened
    },
    open() {
      opened = true
      resolve()
    },
  }
}

// ---------------------------------------------------------------------------------------
// Fault upstreams

/** How a fault upstream answers one request. */
export type Mode =
  /** 200 JSON `{ name, method, path, bodyLength }` */
  | { kind: 'ok' }
  /** This status (a small text body unless given). */
  | { kind: 'status'; status: number; headers?: Record<string, string>; body?: string }
  /** Waits `ms`, then answers as `then` (default ok), unless the client went away. */
  | { kind: 'delay'; ms: number; then?: Mode }
  /** Never answers (until the upstream is closed). */
  | { kind: 'hang' }
  /** Destroys the connection without a response. */
  | { kind: 'reset' }
  /** Waits for `gate`, then answers as `then` (default ok). */
  | { kind: 'gate'; gate: Gate; then?: Mode }

export const OK: Mode = { kind: 'ok' }
export const fail = (status: number, headers?: Record<string, string>): Mode => ({ kind: 'status', status, headers })

/** One request a fault upstream received (health checks are counted apart). */
export interface Hit {
  method: string
  path: string
  /** The request target as received, query included. */
  url: string
  headers: http.IncomingHttpHeaders
  body: Buffer
  at: number
}

/** A mode, or a function choosing one per request (e.g. "the first request of a group fails"). */
export type ModeChoice = Mode | ((hit: Hit, upstream: FaultUpstream) => Mode)

export interface FaultUpstream extends Upstream {
  readonly name: string
  /** How requests other than health checks are answered; switch at any time. */
  mode: ModeChoice
  /** How health-check requests (`healthPath`) are answered. Default ok. */
  healthMode: ModeChoice
  /** Requests other than health checks, in arrival order. */
  readonly hits: Hit[]
  /** `hits.length` */
  readonly count: number
  /** Health-check requests received. */
  readonly healthHits: Hit[]
}

export interface FaultUpstreamOptions {
  mode?: ModeChoice
  healthMode?: ModeChoice
  /** Path of health checks; default '/health'. */
  healthPath?: string
}

/** A node:http upstream on 127.0.0.1:0 whose behaviour the test controls; closed after the test. */
export async function startFaultUpstream(name: string, options: FaultUpstreamOptions = {}): Promise<FaultUpstream> {
  const healthPath = options.healthPath ?? '/health'
  const hits: Hit[] = []
  const healthHits: Hit[] = []
  const state = { mode: options.mode ?? OK, healthMode: options.healthMode ?? OK }
  let self: FaultUpstream | undefined
  const up = await startUpstream(async (req, res) => {
    const body = await readAll(req)
    const path = (req.url ?? '').split('?')[0]
    const hit: Hit = { method: req.method ?? '', path, url: req.url ?? '', headers: req.headers, body, at: Date.now() }
    const isHealth = path === healthPath
    ;(isHealth ? healthHits : hits).push(hit)
    const choice = isHealth ? state.healthMode : state.mode
    const mode = typeof choice === 'function' ? choice(hit, self as FaultUpstream) : choice
    await answer(mode, name, hit, req, res)
  })
  self = Object.create(up, {
    name: { value: name },
    mode: {
      get: () => state.mode,
      set: (m: ModeChoice) => (state.mode = m),
    },
    healthMode: {
      get: () => state.healthMode,
      set: (m: ModeChoice) => (state.healthMode = m),
    },
    hits: { value: hits },
    count: { get: () => hits.length },
    healthHits: { value: healthHits },
  }) as FaultUpstream
  return self
}

async function answer(mode: Mode, name: string, hit: Hit, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  switch (mode.kind) {
    case 'ok': {
      const payload = JSON.stringify({ name, method: hit.method, path: hit.path, bodyLength: hit.body.length })
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) })
      res.end(payload)
      return
    }
    case 'status': {
      const text = mode.body ?? `${name} says ${mode.status}`
      res.writeHead(mode.status, { 'content-type': 'text/plain', 'x-upstream': name, ...mode.headers })
      res.end(text)
      return
    }
    case 'delay': {
      await sleep(mode.ms)
      if (res.destroyed || req.socket.destroyed) return
      return answer(mode.then ?? OK, name, hit, req, res)
    }
    case 'hang':
      return // the socket stays open; closeAll destroys it
    case 'reset':
      req.socket.destroy()
      return
    case 'gate': {
      await mode.gate.promise
      if (res.destroyed || req.socket.destroyed) return
      return answer(mode.then ?? OK, name, hit, req, res)
    }
  }
}

/**
 * A choice shared by several upstreams: the first request any of them receives is
 * answered `first`, every later one `rest` (so a retry's second server is the other one,
 * whichever the balancer tried first).
 */
export function firstThen(first: Mode, rest: Mode = OK): ModeChoice {
  let used = false
  return () => {
    if (used) return rest
    used = true
    return first
  }
}

// ---------------------------------------------------------------------------------------
// The gateway

export interface GatewaySetup {
  loadBalancer?: LoadBalancer
  gateway?: GatewayOptions
  /** Options of the default pure route `/api/{p:path}`; `false` adds no default route. */
  route?: GatewayRouteOptions | false
  /** More gateway routes. */
  routes?: (gateway: Gateway) => void
  /** JS handler routes on the app. */
  handlers?: (app: Velithon, gateway: Gateway) => void
  app?: VelithonOptions
}

export interface RunningGateway {
  app: Velithon
  gateway: Gateway
  /** `http://127.0.0.1:<port>` */
  url: string
}

/**
 * `new Gateway`, a pure route `/api/{p:path}` (unless `route: false`), the app with the
 * gateway's router included at the root, listening on port 0. The load balancer and the
 * app are closed after the test.
 */
export async function startGateway(setup: GatewaySetup): Promise<RunningGateway> {
  const lb = setup.loadBalancer
  if (lb) defer(() => lb.close())
  const gateway = new Gateway({ timeout: '10s', connectTimeout: '2s', ...setup.gateway, ...(lb ? { loadBalancer: lb } : {}) })
  defer(() => gateway.close())
  if (setup.route !== false) gateway.route('/api/{p:path}', setup.route ?? {})
  setup.routes?.(gateway)
  const app = new Velithon({ workerThreads: 2, ...setup.app })
  app.includeRouter(gateway.getRouter())
  setup.handlers?.(app, gateway)
  const address = await listen(app)
  return { app, gateway, url: address.url }
}

/** One server's status from the gateway (throws if the gateway does not know it). */
export function upstreamOf(gateway: Gateway, url: string): UpstreamStatus {
  const status = gateway.getUpstreamStatus()[url]
  if (!status) throw new Error(`the gateway reports no upstream ${url}; it knows ${Object.keys(gateway.getUpstreamStatus()).join(', ')}`)
  return status
}

/** One server's breaker from `getCircuitBreakerStatus()` (throws if it has none). */
export function breakerOf(gateway: Gateway, url: string): CircuitBreakerStatus {
  const status = gateway.getCircuitBreakerStatus()[url]
  if (!status) throw new Error(`no circuit breaker reported for ${url}`)
  return status
}

/** The `requests` (attempts sent) the gateway counted for one server. */
export function attemptsTo(gateway: Gateway, url: string): number {
  return upstreamOf(gateway, url).requests
}

// ---------------------------------------------------------------------------------------
// Clients

/** `n` requests, at most `concurrency` at a time; resolves with every reply in order. */
export async function sendMany(url: string, n: number, concurrency: number, options: SendOptions = {}): Promise<Reply[]> {
  const replies: Reply[] = new Array(n)
  let next = 0
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency })
  try {
    await Promise.all(
      Array.from({ length: Math.min(concurrency, n) }, async () => {
        while (next < n) {
          const i = next++
          replies[i] = await send(url, { agent, ...options })
        }
      }),
    )
  } finally {
    agent.destroy()
  }
  return replies
}

export interface LoadResult {
  requests: number
  /** Replies that were not 200, and transport errors. */
  errors: number
  statuses: Record<string, number>
  /** The first few failures, for the assertion message. */
  samples: string[]
}

export interface LoadOptions {
  /** Base URL; request i goes to `url + path(i)`. */
  url: string
  path?: (i: number) => string
  concurrency: number
  /** Run until this has passed… */
  durationMs: number
  /** …and call this after every reply (e.g. to take measurements while the load runs). */
  onReply?: (reply: Reply | Error, i: number) => void
}

/** Steady load: `concurrency` keep-alive clients sending GETs back to back for `durationMs`. */
export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  const { url, concurrency, durationMs } = options
  const path = options.path ?? ((i: number) => `/api/load/${i}`)
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency })
  const result: LoadResult = { requests: 0, errors: 0, statuses: {}, samples: [] }
  const until = Date.now() + durationMs
  let next = 0
  try {
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (Date.now() < until) {
          const i = next++
          let outcome: Reply | Error
          try {
            outcome = await send(url + path(i), { agent, timeoutMs: 10_000 })
          } catch (err) {
            outcome = err instanceof Error ? err : new Error(String(err))
          }
          result.requests++
          const key = outcome instanceof Error ? 'error' : String(outcome.status)
          result.statuses[key] = (result.statuses[key] ?? 0) + 1
          if (outcome instanceof Error || outcome.status !== 200) {
            result.errors++
            if (result.samples.length < 5) {
              result.samples.push(
                outcome instanceof Error ? `#${i}: ${outcome.message}` : `#${i}: ${outcome.status} ${outcome.body.toString('utf8').slice(0, 200)}`,
              )
            }
          }
          options.onReply?.(outcome, i)
        }
      }),
    )
  } finally {
    agent.destroy()
  }
  return result
}

/** The parsed JSON body of an upstream's ok answer. */
export interface OkBody {
  name: string
  method: string
  path: string
  bodyLength: number
}

export function okOf(reply: Reply): OkBody {
  return JSON.parse(reply.body.toString('utf8')) as OkBody
}

// ---------------------------------------------------------------------------------------
// Option validation

/** Runs `make` and returns the ConfigError it threw (fails the test if it threw nothing or something else). */
export function configErrorOf(make: () => unknown): ConfigError {
  let caught: unknown
  try {
    make()
  } catch (err) {
    caught = err
  }
  if (!(caught instanceof ConfigError)) {
    throw new Error(`expected a ConfigError, got ${caught === undefined ? 'no error' : String(caught)}`)
  }
  return caught
}
