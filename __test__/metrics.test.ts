/**
 * Metrics end to end, against real upstreams on loopback: exact counts after a known load
 * (totals, statuses, routes, upstream servers), latency percentiles against a known share
 * of slow answers, retries and rejections, upstream health and breaker state, the
 * Prometheus endpoint (checked against the text format's grammar), where an app records
 * (`metrics: false`, an explicit GatewayMetrics), the JS collector (complete, isolated
 * from errors, never delaying a response, bounded), the access log and W3C traceparent.
 */
import http from 'node:http'
import { afterEach, describe, expect, it } from 'vitest'
import {
  CircuitBreaker,
  Gateway,
  GatewayMetrics,
  HealthChecker,
  JSONResponse,
  LoadBalancer,
  MetricsMiddleware,
  RateLimitMiddleware,
  RetryConfig,
  RoundRobinStrategy,
  Velithon,
  type RequestSummary,
  type ResponseSummary,
} from 'velithon-gateway'
import {
  closeAll,
  defer,
  echoHandler,
  echoOf,
  errorOf,
  listen,
  send,
  sleep,
  startUpstream,
  waitFor,
  withTimeout,
  type Handler,
  type Reply,
} from './helpers/net'

afterEach(async () => {
  await closeAll()
})

// ---------------------------------------------------------------------------------------
// Small helpers

/** A keep-alive agent for load, destroyed after the test. */
function keepAliveAgent(maxSockets = 10): http.Agent {
  const agent = new http.Agent({ keepAlive: true, maxSockets })
  defer(() => agent.destroy())
  return agent
}

/** Runs `fn(0..n-1)` with at most `concurrency` in flight; results in index order. */
async function pool<T>(n: number, concurrency: number, fn: (i: number) => Promise<T>): Promise<T[]> {
  const out = new Array<T>(n)
  let next = 0
  const worker = async () => {
    while (next < n) {
      const i = next++
      out[i] = await fn(i)
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker))
  return out
}

/** An upstream that answers `text` with `status` (and 200 on /health unless told otherwise). */
function fixed(status: number, text: string, healthStatus = 200): Handler {
  return (req, res) => {
    const healthCheck = req.url === '/health'
    res.writeHead(healthCheck ? healthStatus : status, { 'content-type': 'text/plain' })
    res.end(healthCheck ? 'health' : text)
  }
}

/** Requests an upstream got other than its health checks (`/health`). */
function traffic(calls: Map<string, number>, name: string, handler: Handler): Handler {
  return (req, res) => {
    if (req.url !== '/health') calls.set(name, (calls.get(name) ?? 0) + 1)
    return handler(req, res)
  }
}

/** Builds an app over `gateway` (mounted at `/gw`) and listens; returns its base URL. */
async function serve(gateway: Gateway, options: ConstructorParameters<typeof Velithon>[0] = {}, extra?: (app: Velithon) => void) {
  const app = new Velithon({ workerThreads: 2, ...options })
  app.includeRouter(gateway.getRouter(), { prefix: '/gw' })
  extra?.(app)
  const address = await listen(app)
  return { app, url: address.url }
}

type Snapshot = {
  totalRequests: number
  requestsByStatus: Record<string, number>
  requestsByClass: Record<string, number>
  latency: { count: number; meanMs: number; p50Ms: number; p90Ms: number; p99Ms: number; sumMs: number }
  routes: Array<{ route: string; requests: number; byClass: Record<string, number>; latency: { count: number; p50Ms: number; p90Ms: number; p99Ms: number } }>
  upstreams: Array<{ server: string; requests: number; errors: number; byClass: Record<string, number>; latency: { count: number; p99Ms: number } }>
  retries: number
  rejections: { rateLimited: number; circuitOpen: number; noHealthyUpstream: number; bodyTooLarge: number }
}

function snap(metrics: GatewayMetrics): Snapshot {
  return metrics.snapshot() as unknown as Snapshot
}

function routeOf(s: Snapshot, route: string) {
  const r = s.routes.find((x) => x.route === route)
  if (!r) throw new Error(`no route ${route} in ${JSON.stringify(s.routes.map((x) => x.route))}`)
  return r
}

function upstreamIn(s: Snapshot, server: string) {
  const u = s.upstreams.find((x) => x.server === server)
  if (!u) throw new Error(`no upstream ${server} in ${JSON.stringify(s.upstreams.map((x) => x.server))}`)
  return u
}

// ---------------------------------------------------------------------------------------
// The Prometheus text format (0.0.4), checked line by line

interface Sample {
  name: string
  labels: Record<string, string>
  value: number
}

interface Family {
  name: string
  type: string
  help: string | undefined
  samples: Sample[]
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/
const FLOAT = /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$/
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped'])

function parseValue(text: string, where: string): number {
  if (text === '+Inf' || text === 'Inf') return Number.POSITIVE_INFINITY
  if (text === '-Inf') return Number.NEGATIVE_INFINITY
  if (text === 'NaN') return Number.NaN
  if (!FLOAT.test(text)) throw new Error(`${where}: ${JSON.stringify(text)} is not a sample value`)
  return Number(text)
}

/** One sample line: `name{l="v",…} value [timestamp]`, label values with \\ \" \n escapes. */
function parseSampleLine(line: string, where: string): Sample {
  let i = 0
  while (i < line.length && /[a-zA-Z0-9_:]/.test(line[i])) i++
  const name = line.slice(0, i)
  if (!METRIC_NAME.test(name)) throw new Error(`${where}: bad metric name in ${JSON.stringify(line)}`)
  const labels: Record<string, string> = {}
  if (line[i] === '{') {
    i++
    for (;;) {
      if (line[i] === '}') {
        i++
        break
      }
      let j = i
      while (j < line.length && /[a-zA-Z0-9_]/.test(line[j])) j++
      const label = line.slice(i, j)
      if (!LABEL_NAME.test(label)) throw new Error(`${where}: bad label name ${JSON.stringify(label)}`)
      if (label.startsWith('__')) throw new Error(`${where}: reserved label name ${label}`)
      if (label in labels) throw new Error(`${where}: label ${label} twice`)
      if (line[j] !== '=' || line[j + 1] !== '"') throw new Error(`${where}: expected ="…" after ${label}`)
      j += 2
      let value = ''
      for (;;) {
        const c = line[j]
        if (c === undefined) throw new Error(`${where}: unterminated label value`)
        if (c === '"') break
        if (c === '\\') {
          const e = line[j + 1]
          if (e === '\\') value += '\\'
          else if (e === '"') value += '"'
          else if (e === 'n') value += '\n'
          else throw new Error(`${where}: bad escape \\${e}`)
          j += 2
        } else {
          value += c
          j++
        }
      }
      labels[label] = value
      i = j + 1
      if (line[i] === ',') i++
      else if (line[i] !== '}') throw new Error(`${where}: expected , or } in ${JSON.stringify(line)}`)
    }
  }
  if (line[i] !== ' ') throw new Error(`${where}: expected a space before the value in ${JSON.stringify(line)}`)
  const rest = line.slice(i + 1).split(' ')
  if (rest.length < 1 || rest.length > 2 || rest[0] === '') throw new Error(`${where}: expected "value [timestamp]" in ${JSON.stringify(line)}`)
  const value = parseValue(rest[0], where)
  if (rest.length === 2 && !/^-?\d+$/.test(rest[1])) throw new Error(`${where}: bad timestamp ${rest[1]}`)
  return { name, labels, value }
}

/** The family a sample belongs to: histograms own `_bucket`, `_sum`, `_count`. */
function familyOfSample(name: string, types: Map<string, string>): string {
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (name.endsWith(suffix)) {
      const base = name.slice(0, -suffix.length)
      const t = types.get(base)
      if (t === 'histogram' || (t === 'summary' && suffix !== '_bucket')) return base
    }
  }
  return name
}

const seriesKey = (name: string, labels: Record<string, string>, without: string[] = []) =>
  `${name}{${Object.keys(labels)
    .filter((k) => !without.includes(k))
    .sort()
    .map((k) => `${k}=${JSON.stringify(labels[k])}`)
    .join(',')}}`

/**
 * Parses the text exposition format and checks its rules: HELP/TYPE syntax, TYPE at most
 * once and before the family's first sample, every sample under a TYPE, a family's
 * samples together, no duplicate series, counters ≥ 0, and for every histogram series:
 * `le` buckets in increasing order, cumulative, ending with `+Inf` equal to `_count`,
 * and `_sum` present. Throws with the line number on the first violation.
 */
function parsePrometheus(text: string): Map<string, Family> {
  if (!text.endsWith('\n')) throw new Error('the exposition must end with a line feed')
  const families = new Map<string, Family>()
  const types = new Map<string, string>()
  const finished = new Set<string>()
  const seen = new Set<string>()
  let current: string | undefined
  const lines = text.slice(0, -1).split('\n')
  lines.forEach((line, index) => {
    const where = `line ${index + 1}`
    if (line.trim() === '') return
    if (line.startsWith('#')) {
      const m = /^#\s+(HELP|TYPE)\s+(\S+)(?:\s(.*))?$/.exec(line)
      if (!m) return // a plain comment
      const [, kind, name, rest = ''] = m
      if (!METRIC_NAME.test(name)) throw new Error(`${where}: bad metric name ${name}`)
      if (finished.has(name)) throw new Error(`${where}: ${kind} for ${name} after its samples ended`)
      const family = families.get(name) ?? { name, type: 'untyped', help: undefined, samples: [] }
      families.set(name, family)
      if (kind === 'TYPE') {
        if (types.has(name)) throw new Error(`${where}: second TYPE for ${name}`)
        if (family.samples.length > 0) throw new Error(`${where}: TYPE for ${name} after its samples`)
        if (!TYPES.has(rest)) throw new Error(`${where}: unknown type ${JSON.stringify(rest)}`)
        types.set(name, rest)
        family.type = rest
      } else {
        if (family.help !== undefined) throw new Error(`${where}: second HELP for ${name}`)
        if (/\\[^\\n]/.test(rest.replace(/\\\\/g, ''))) throw new Error(`${where}: bad escape in HELP`)
        family.help = rest
      }
      if (current !== undefined && current !== name) finished.add(current)
      current = name
      return
    }
    const sample = parseSampleLine(line, where)
    const familyName = familyOfSample(sample.name, types)
    const family = families.get(familyName)
    if (!family || !types.has(familyName)) throw new Error(`${where}: sample ${sample.name} has no TYPE line before it`)
    if (current !== familyName) {
      if (current !== undefined) finished.add(current)
      if (finished.has(familyName)) throw new Error(`${where}: samples of ${familyName} are not together`)
      current = familyName
    }
    const key = seriesKey(sample.name, sample.labels)
    if (seen.has(key)) throw new Error(`${where}: duplicate series ${key}`)
    seen.add(key)
    if (family.type === 'counter' && !(sample.value >= 0)) throw new Error(`${where}: counter ${key} is ${sample.value}`)
    if (family.type === 'histogram') {
      if (sample.name.endsWith('_bucket') && sample.labels.le === undefined) throw new Error(`${where}: bucket without le`)
      if (!sample.name.endsWith('_bucket') && sample.labels.le !== undefined) throw new Error(`${where}: le outside a bucket`)
    }
    family.samples.push(sample)
  })

  for (const family of families.values()) {
    if (family.type !== 'histogram') continue
    const series = new Map<string, { buckets: Array<[number, number]>; sum?: number; count?: number }>()
    for (const s of family.samples) {
      const key = seriesKey(family.name, s.labels, ['le'])
      const entry = series.get(key) ?? { buckets: [] }
      series.set(key, entry)
      if (s.name.endsWith('_bucket')) entry.buckets.push([parseValue(s.labels.le, `${key} le`), s.value])
      else if (s.name.endsWith('_sum')) entry.sum = s.value
      else if (s.name.endsWith('_count')) entry.count = s.value
      else throw new Error(`${key}: a histogram sample named ${s.name}`)
    }
    for (const [key, h] of series) {
      if (h.buckets.length === 0) throw new Error(`${key}: no buckets`)
      if (h.count === undefined || h.sum === undefined) throw new Error(`${key}: _sum or _count missing`)
      for (let i = 1; i < h.buckets.length; i++) {
        if (!(h.buckets[i][0] > h.buckets[i - 1][0])) throw new Error(`${key}: le not increasing at ${h.buckets[i][0]}`)
        if (h.buckets[i][1] < h.buckets[i - 1][1]) throw new Error(`${key}: buckets not cumulative at le=${h.buckets[i][0]}`)
      }
      const last = h.buckets[h.buckets.length - 1]
      if (last[0] !== Number.POSITIVE_INFINITY) throw new Error(`${key}: the last bucket is not +Inf`)
      if (last[1] !== h.count) throw new Error(`${key}: +Inf bucket ${last[1]} != _count ${h.count}`)
      if (h.sum < 0) throw new Error(`${key}: negative _sum`)
    }
  }
  return families
}

/** The value of one series (labels must match exactly), or undefined. */
function valueOf(families: Map<string, Family>, family: string, sampleName: string, labels: Record<string, string> = {}): number | undefined {
  const key = seriesKey(sampleName, labels)
  return families.get(family)?.samples.find((s) => seriesKey(s.name, s.labels) === key)?.value
}

describe('the Prometheus grammar check itself', () => {
  it('accepts a well-formed exposition and rejects broken ones', () => {
    const good = [
      '# HELP a_total Things.',
      '# TYPE a_total counter',
      'a_total{x="1\\"q\\\\"} 3',
      '# TYPE h histogram',
      'h_bucket{le="0.1"} 1',
      'h_bucket{le="+Inf"} 2',
      'h_sum 0.5',
      'h_count 2',
      '',
    ].join('\n')
    const fams = parsePrometheus(good)
    expect(valueOf(fams, 'a_total', 'a_total', { x: '1"q\\' })).toBe(3)
    const bad: Array<[string, RegExp]> = [
      ['a 1\n', /no TYPE/],
      ['# TYPE a counter\na 1', /line feed/],
      ['# TYPE a counter\na{x="1} 1\n', /unterminated/],
      ['# TYPE a counter\na 1\n# TYPE a counter\n', /after its samples ended|second TYPE/],
      ['# TYPE a counter\na 1\na 2\n', /duplicate/],
      ['# TYPE a counter\na -1\n', /counter/],
      ['# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n', /cumulative/],
      ['# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 3\n', /_count/],
      ['# TYPE h histogram\nh_bucket{le="1"} 1\nh_sum 1\nh_count 1\n', /\+Inf/],
      ['# TYPE a counter\n# TYPE b counter\nb 1\na 1\n', /not together/],
      ['# TYPE a counter\na one\n', /not a sample value/],
    ]
    for (const [text, message] of bad) expect(() => parsePrometheus(text), text).toThrow(message)
  })
})

// ---------------------------------------------------------------------------------------

describe('GatewayMetrics after a known load', () => {
  it('counts 200 requests exactly by status, route and upstream server; p99 sees the slow share', async () => {
    const SLOW_MS = 120
    const [u1, u2] = await Promise.all([startUpstream(fixed(200, 'u1')), startUpstream(fixed(200, 'u2'))])
    const u3 = await startUpstream(async (req, res) => {
      // No stripPath: u3 sees the whole path, /gw/svc/….
      if (req.url?.includes('/svc/missing/')) {
        res.writeHead(404, { 'content-type': 'text/plain' })
        return res.end('no such thing')
      }
      if (req.url?.includes('/svc/slow/')) await sleep(SLOW_MS)
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.end('u3')
    })
    const loadBalancer = new LoadBalancer({ upstreamServers: [u1.url, u2.url], strategy: new RoundRobinStrategy() })
    const gateway = new Gateway({ loadBalancer, timeout: '10s' })
    gateway.route('/api/{path:path}')
    gateway.route('/svc/{path:path}', { upstream: u3.url })
    const { app, url } = await serve(gateway)

    // 150 → 200 (100 over the balancer, 35 fast + 15 slow on u3), 30 → 404 from u3,
    // 20 → 404 from the gateway (no route). Interleaved, 10 at a time.
    const plan: Array<{ path: string; status: number }> = []
    for (let i = 0; i < 100; i++) plan.push({ path: `/gw/api/item/${i}`, status: 200 })
    for (let i = 0; i < 35; i++) plan.push({ path: `/gw/svc/fast/${i}`, status: 200 })
    for (let i = 0; i < 15; i++) plan.push({ path: `/gw/svc/slow/${i}`, status: 200 })
    for (let i = 0; i < 30; i++) plan.push({ path: `/gw/svc/missing/${i}`, status: 404 })
    for (let i = 0; i < 20; i++) plan.push({ path: `/elsewhere/${i}`, status: 404 })
    // A fixed interleaving (every 7th of the list, wrapping): deterministic, mixed.
    const order = Array.from({ length: plan.length }, (_, i) => (i * 7) % plan.length)
    expect(new Set(order).size).toBe(200)
    const agent = keepAliveAgent(10)
    const replies = await pool(order.length, 10, (i) => send(url + plan[order[i]].path, { agent }))
    replies.forEach((r, i) => expect(r.status, plan[order[i]].path).toBe(plan[order[i]].status))
    const gatewayMisses = replies.filter((r) => r.status === 404 && String(r.headers['content-type']).startsWith('application/json'))
    expect(gatewayMisses.map((r) => errorOf(r).code)).toEqual(new Array(20).fill('VG_NO_ROUTE'))

    const metrics = gateway.metrics!
    expect(app.metrics).toBe(metrics)
    expect(metrics.getTotalRequests()).toBe(200)
    expect(metrics.getRequestsByStatus()).toEqual({ 200: 150, 404: 50 })

    const s = snap(metrics)
    expect(s.requestsByClass).toMatchObject({ '2xx': 150, '4xx': 50, '5xx': 0, other: 0 })
    expect(s.latency.count).toBe(200)
    // Routes: the 20 misses count in the totals only.
    expect(s.routes.map((r) => r.route).sort()).toEqual(['/gw/api/{path:path}', '/gw/svc/{path:path}'])
    const api = routeOf(s, '/gw/api/{path:path}')
    expect(api.requests).toBe(100)
    expect(api.byClass).toMatchObject({ '2xx': 100, '4xx': 0 })
    const svc = routeOf(s, '/gw/svc/{path:path}')
    expect(svc.requests).toBe(80)
    expect(svc.byClass).toMatchObject({ '2xx': 50, '4xx': 30 })
    expect(api.latency.count + svc.latency.count).toBe(180)
    // Upstream servers: round robin splits the balancer's 100 evenly; u3 got its 80.
    expect(s.upstreams.map((u) => u.server).sort()).toEqual([u1.url, u2.url, u3.url].sort())
    expect(upstreamIn(s, u1.url)).toMatchObject({ requests: 50, errors: 0 })
    expect(upstreamIn(s, u2.url)).toMatchObject({ requests: 50, errors: 0 })
    const s3 = upstreamIn(s, u3.url)
    expect(s3).toMatchObject({ requests: 80, errors: 0 })
    expect(s3.byClass).toMatchObject({ '2xx': 50, '4xx': 30 })
    expect([u1.requests, u2.requests, u3.requests]).toEqual([50, 50, 80])

    // Latency: 15 of 200 answers (7.5%) took ≥ SLOW_MS; the rest are quick.
    const latency = metrics.getLatency()
    expect(latency.count).toBe(200)
    expect(metrics.getAverageResponseTime()).toBeGreaterThan(0)
    expect(metrics.getAverageResponseTime()).toBe(latency.meanMs)
    // The slow ones alone bring the mean to at least 15 × 120 / 200 ms.
    expect(latency.meanMs).toBeGreaterThanOrEqual((15 * SLOW_MS) / 200)
    expect(latency.p50Ms).toBeGreaterThan(0)
    expect(latency.p50Ms).toBeLessThanOrEqual(latency.p90Ms)
    expect(latency.p90Ms).toBeLessThanOrEqual(latency.p99Ms)
    expect(latency.p99Ms).toBeGreaterThanOrEqual(100)
    expect(latency.p50Ms).toBeLessThan(100)
    // On u3's route 15 of 80 (19%) were slow: its p90 is already a slow one.
    expect(svc.latency.p90Ms).toBeGreaterThanOrEqual(100)
    expect(s3.latency.p99Ms).toBeGreaterThanOrEqual(100)
    console.log(
      `[metrics] 200 requests: mean ${latency.meanMs.toFixed(2)} ms, p50 ${latency.p50Ms} ms, p90 ${latency.p90Ms} ms, p99 ${latency.p99Ms} ms`,
    )
  })

  it('counts retries and rejections: circuit open, no healthy upstream, rate limited', async () => {
    const bad = await startUpstream(fixed(503, 'bad'))
    const good = await startUpstream(fixed(200, 'good'))
    const broken = await startUpstream(fixed(500, 'broken'))
    const sick = await startUpstream(fixed(200, 'sick', 503))

    const retrying = new LoadBalancer({ upstreamServers: [bad.url, good.url] })
    const breaking = new LoadBalancer({
      upstreamServers: [broken.url],
      circuitBreaker: new CircuitBreaker({ failureThreshold: 3, timeoutDuration: '60s' }),
    })
    const checked = new LoadBalancer({
      upstreamServers: [sick.url],
      healthChecker: new HealthChecker({ checkInterval: '50ms', timeout: '1s', checkPath: '/health', consecutiveFailures: 1 }),
    })
    const gateway = new Gateway({ timeout: '10s' })
    gateway.route('/retry/{path:path}', {
      loadBalancer: retrying,
      retryConfig: new RetryConfig({ maxAttempts: 2, baseDelay: '1ms', maxDelay: '2ms', retryableStatusCodes: [503], retryBudget: false }),
    })
    gateway.route('/breaker/{path:path}', { loadBalancer: breaking, retryConfig: false })
    gateway.route('/checked/{path:path}', { loadBalancer: checked, retryConfig: false })
    const { url } = await serve(gateway)
    const metrics = gateway.metrics!

    // Retries: every request that went to `bad` first was retried once, on `good`.
    for (let i = 0; i < 20; i++) {
      const r = await send(`${url}/gw/retry/${i}`)
      expect(r.status).toBe(200)
      expect(r.body.toString()).toBe('good')
    }
    expect(bad.requests).toBeGreaterThan(0)
    expect(good.requests).toBe(20)
    let s = snap(metrics)
    expect(s.retries).toBe(bad.requests)
    expect(upstreamIn(s, bad.url)).toMatchObject({ requests: bad.requests, errors: bad.requests })
    expect(upstreamIn(s, bad.url).byClass['5xx']).toBe(bad.requests)
    expect(upstreamIn(s, good.url)).toMatchObject({ requests: 20, errors: 0 })
    // A retried request is one client request.
    expect(routeOf(s, '/gw/retry/{path:path}').requests).toBe(20)

    // Circuit open: 3 failures open the breaker, the next 4 never reach the server.
    const breakerReplies: Reply[] = []
    for (let i = 0; i < 7; i++) breakerReplies.push(await send(`${url}/gw/breaker/${i}`))
    expect(breakerReplies.map((r) => r.status)).toEqual([500, 500, 500, 503, 503, 503, 503])
    for (const r of breakerReplies.slice(3)) expect(errorOf(r).code).toBe('VG_CIRCUIT_OPEN')
    expect(broken.requests).toBe(3)
    s = snap(metrics)
    expect(s.rejections.circuitOpen).toBe(4)
    expect(upstreamIn(s, broken.url)).toMatchObject({ requests: 3, errors: 3 })

    // No healthy upstream: the only server fails its health checks.
    await waitFor(() => metrics.getUpstreamHealthStatus()[sick.url]?.healthy === false, 10_000, 'the sick server to be marked down')
    for (let i = 0; i < 5; i++) {
      const r = await send(`${url}/gw/checked/${i}`)
      expect(r.status).toBe(503)
      expect(errorOf(r).code).toBe('VG_NO_HEALTHY_UPSTREAM')
    }
    s = snap(metrics)
    expect(s.rejections.noHealthyUpstream).toBe(5)
    expect(s.rejections.rateLimited).toBe(0)
    expect(metrics.getRequestsByStatus()).toEqual({ 200: 20, 500: 3, 503: 9 })
    expect(metrics.getTotalRequests()).toBe(32)

    // Rate limited, in an app of its own: 60/min with no burst lets one through.
    const u = await startUpstream(fixed(200, 'ok'))
    const limited = new Gateway()
    limited.route('/x/{path:path}', { upstream: u.url })
    const rl = await serve(limited, { middleware: [new RateLimitMiddleware({ requestsPerMinute: 60 })] })
    const statuses: number[] = []
    for (let i = 0; i < 4; i++) statuses.push((await send(`${rl.url}/gw/x/${i}`)).status)
    expect(statuses).toEqual([200, 429, 429, 429])
    const ls = snap(limited.metrics!)
    expect(ls.rejections.rateLimited).toBe(3)
    expect(limited.metrics!.getRequestsByStatus()).toEqual({ 200: 1, 429: 3 })
    // The refused requests never reached a route.
    expect(routeOf(ls, '/gw/x/{path:path}').requests).toBe(1)
    expect(u.requests).toBe(1)

    // The same numbers in the Prometheus text.
    const fams = parsePrometheus(metrics.toPrometheus())
    expect(valueOf(fams, 'velithon_retries_total', 'velithon_retries_total')).toBe(bad.requests)
    expect(valueOf(fams, 'velithon_rejections_total', 'velithon_rejections_total', { reason: 'circuit_open' })).toBe(4)
    expect(valueOf(fams, 'velithon_rejections_total', 'velithon_rejections_total', { reason: 'no_healthy_upstream' })).toBe(5)
    const lfams = parsePrometheus(limited.metrics!.toPrometheus())
    expect(valueOf(lfams, 'velithon_rejections_total', 'velithon_rejections_total', { reason: 'rate_limited' })).toBe(3)
  })

  it('counts the upstream attempts and retries of forwardRequest in a JS handler too', async () => {
    // GatewayMetrics documents per-upstream counts and retries; a handler's
    // gateway.forwardRequest goes through the same balancer, retries and breakers.
    const bad = await startUpstream(fixed(503, 'bad'))
    const good = await startUpstream(fixed(200, 'good'))
    const loadBalancer = new LoadBalancer({ upstreamServers: [bad.url, good.url] })
    const gateway = new Gateway({
      loadBalancer,
      timeout: '10s',
      retryConfig: new RetryConfig({ maxAttempts: 2, baseDelay: '1ms', maxDelay: '2ms', retryableStatusCodes: [503], retryBudget: false }),
    })
    gateway.route('/api/{path:path}')
    const { url } = await serve(gateway, {}, (app) => app.get('/checkout/{path:path}', (request) => gateway.forwardRequest(request)))
    for (let i = 0; i < 10; i++) {
      const r = await send(`${url}/checkout/${i}`)
      expect(r.status).toBe(200)
      expect(r.body.toString()).toBe('good')
    }
    expect(bad.requests).toBeGreaterThan(0)
    const s = snap(gateway.metrics!)
    expect(routeOf(s, '/checkout/{path:path}').requests).toBe(10)
    expect(s.upstreams.map((u) => [u.server, u.requests]).sort()).toEqual(
      [
        [bad.url, bad.requests],
        [good.url, 10],
      ].sort(),
    )
    expect(s.retries).toBe(bad.requests)
  })

  it('reports upstream health and circuit breakers of a watched load balancer', async () => {
    const calls = new Map<string, number>()
    const good = await startUpstream(traffic(calls, 'good', fixed(200, 'good')))
    const sick = await startUpstream(traffic(calls, 'sick', fixed(200, 'sick', 503)))
    const broken = await startUpstream(traffic(calls, 'broken', fixed(500, 'broken')))
    const loadBalancer = new LoadBalancer({
      upstreamServers: [good.url, sick.url, broken.url],
      healthChecker: new HealthChecker({ checkInterval: '50ms', timeout: '1s', checkPath: '/health', consecutiveFailures: 1 }),
      circuitBreaker: new CircuitBreaker({ failureThreshold: 2, timeoutDuration: '60s' }),
    })
    const gateway = new Gateway({ loadBalancer, timeout: '10s' })
    gateway.route('/api/{path:path}', { retryConfig: false })
    const { url } = await serve(gateway)
    const metrics = gateway.metrics!

    await waitFor(() => metrics.getUpstreamHealthStatus()[sick.url]?.healthy === false, 10_000, 'the sick server to be marked down')
    let breakers = metrics.getCircuitBreakerStatus()
    expect(Object.keys(breakers).sort()).toEqual([good.url, sick.url, broken.url].sort())
    for (const b of Object.values(breakers)) expect(b.state).toBe('closed')

    // Traffic alternates between good and broken until broken's breaker opens.
    for (let i = 0; i < 20 && metrics.getCircuitBreakerStatus()[broken.url].state !== 'open'; i++) {
      await send(`${url}/gw/api/${i}`)
    }
    expect(calls.get('broken')).toBe(2)
    expect(calls.get('sick') ?? 0).toBe(0) // it only ever saw health checks
    for (let i = 0; i < 5; i++) expect((await send(`${url}/gw/api/after/${i}`)).body.toString()).toBe('good')

    const health = metrics.getUpstreamHealthStatus()
    expect(health[good.url]).toMatchObject({ available: true, healthy: true, inFlight: 0 })
    expect(health[sick.url]).toMatchObject({ available: false, healthy: false, inFlight: 0 })
    expect(health[broken.url]).toMatchObject({ available: false, healthy: true, inFlight: 0 })
    breakers = metrics.getCircuitBreakerStatus()
    expect(breakers[broken.url]).toMatchObject({ state: 'open', timesOpened: 1 })
    expect(breakers[broken.url].retryInMs).toBeGreaterThan(0)
    expect(breakers[good.url]).toMatchObject({ state: 'closed', timesOpened: 0 })
    // The same through the gateway.
    expect(gateway.getCircuitBreakerStatus()[broken.url].state).toBe('open')

    // And as gauges in the Prometheus text.
    const fams = parsePrometheus(metrics.toPrometheus())
    expect(fams.get('velithon_upstream_up')?.type).toBe('gauge')
    expect(valueOf(fams, 'velithon_upstream_up', 'velithon_upstream_up', { server: good.url })).toBe(1)
    expect(valueOf(fams, 'velithon_upstream_up', 'velithon_upstream_up', { server: sick.url })).toBe(0)
    expect(valueOf(fams, 'velithon_upstream_up', 'velithon_upstream_up', { server: broken.url })).toBe(0)
    const state = (server: string, st: string) =>
      valueOf(fams, 'velithon_circuit_breaker_state', 'velithon_circuit_breaker_state', { server, state: st })
    expect([state(broken.url, 'closed'), state(broken.url, 'open'), state(broken.url, 'half_open')]).toEqual([0, 1, 0])
    expect([state(good.url, 'closed'), state(good.url, 'open'), state(good.url, 'half_open')]).toEqual([1, 0, 0])
    // The pool: the good server's keep-alive connection waits idle after the requests.
    const host = new URL(good.url).host
    expect(fams.get('velithon_pool_idle_connections')?.type).toBe('gauge')
    expect(valueOf(fams, 'velithon_pool_idle_connections', 'velithon_pool_idle_connections', { host })).toBeGreaterThanOrEqual(1)
  })
})

// ---------------------------------------------------------------------------------------

describe('the /metrics endpoint', () => {
  /** Some traffic of every kind on a two-server balancer and a single upstream. */
  async function trafficApp(path?: string | false) {
    const [a, b] = await Promise.all([startUpstream(fixed(200, 'a')), startUpstream(fixed(200, 'b'))])
    const c = await startUpstream((req, res) => {
      res.writeHead(req.url?.includes('boom') ? 500 : 404)
      res.end()
    })
    const gateway = new Gateway({ loadBalancer: new LoadBalancer({ upstreamServers: [a.url, b.url] }), timeout: '10s' })
    gateway.route('/api/{path:path}')
    gateway.route('/odd/{path:path}', { upstream: c.url, retryConfig: false })
    const middleware = new MetricsMiddleware(path === undefined ? {} : { path })
    const { app, url } = await serve(gateway, { middleware: [middleware] })
    for (let i = 0; i < 12; i++) expect((await send(`${url}/gw/api/${i}`)).status).toBe(200)
    for (let i = 0; i < 3; i++) expect((await send(`${url}/gw/odd/nothing/${i}`)).status).toBe(404)
    for (let i = 0; i < 2; i++) expect((await send(`${url}/gw/odd/boom/${i}`)).status).toBe(500)
    expect((await send(`${url}/gw/api/x`, { method: 'POST', body: 'hello' })).status).toBe(200)
    return { gateway, app, url, servers: [a.url, b.url, c.url] }
  }

  /** Checks that the exposition says what the JS API says. */
  function expectAgreement(fams: Map<string, Family>, metrics: GatewayMetrics, servers: string[]) {
    const s = snap(metrics)
    const byStatus = metrics.getRequestsByStatus()
    const requests = fams.get('velithon_requests_total')!
    expect(requests.type).toBe('counter')
    const fromText = Object.fromEntries(requests.samples.map((x) => [Number(x.labels.status), x.value]))
    expect(fromText).toEqual(byStatus)
    expect(requests.samples.reduce((n, x) => n + x.value, 0)).toBe(metrics.getTotalRequests())

    expect(fams.get('velithon_request_duration_seconds')?.type).toBe('histogram')
    expect(valueOf(fams, 'velithon_request_duration_seconds', 'velithon_request_duration_seconds_count')).toBe(metrics.getTotalRequests())
    const sum = valueOf(fams, 'velithon_request_duration_seconds', 'velithon_request_duration_seconds_sum')!
    expect(sum).toBeCloseTo(s.latency.sumMs / 1000, 6)

    for (const r of s.routes) {
      for (const cls of ['1xx', '2xx', '3xx', '4xx', '5xx']) {
        expect(valueOf(fams, 'velithon_route_requests_total', 'velithon_route_requests_total', { route: r.route, class: cls }), `${r.route} ${cls}`).toBe(
          r.byClass[cls],
        )
      }
      expect(valueOf(fams, 'velithon_route_request_duration_seconds', 'velithon_route_request_duration_seconds_count', { route: r.route })).toBe(r.requests)
    }
    for (const u of s.upstreams) {
      expect(valueOf(fams, 'velithon_upstream_errors_total', 'velithon_upstream_errors_total', { server: u.server })).toBe(u.errors)
      expect(valueOf(fams, 'velithon_upstream_requests_total', 'velithon_upstream_requests_total', { server: u.server, class: '2xx' })).toBe(u.byClass['2xx'])
      expect(valueOf(fams, 'velithon_upstream_request_duration_seconds', 'velithon_upstream_request_duration_seconds_count', { server: u.server })).toBe(u.requests)
    }
    expect(valueOf(fams, 'velithon_retries_total', 'velithon_retries_total')).toBe(s.retries)
    for (const [reason, key] of [
      ['rate_limited', 'rateLimited'],
      ['circuit_open', 'circuitOpen'],
      ['no_healthy_upstream', 'noHealthyUpstream'],
      ['body_too_large', 'bodyTooLarge'],
    ] as const) {
      expect(valueOf(fams, 'velithon_rejections_total', 'velithon_rejections_total', { reason })).toBe(s.rejections[key])
    }
    const up = fams.get('velithon_upstream_up')
    expect(up?.type).toBe('gauge')
    for (const server of servers) expect(valueOf(fams, 'velithon_upstream_up', 'velithon_upstream_up', { server }), server).toBe(1)
  }

  it('serves the text format at /metrics with new MetricsMiddleware(), agreeing with the JS API; not counting itself', async () => {
    const { gateway, app, url, servers } = await trafficApp()
    const metrics = gateway.metrics!
    expect(app.metrics).toBe(metrics)
    expect(metrics.getTotalRequests()).toBe(18)

    const reply = await send(`${url}/metrics`)
    expect(reply.status).toBe(200)
    expect(reply.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4(;|$)/)
    const text = reply.body.toString('utf8')
    const fams = parsePrometheus(text)
    expect([...fams.keys()]).toEqual(
      expect.arrayContaining([
        'velithon_requests_total',
        'velithon_request_duration_seconds',
        'velithon_route_requests_total',
        'velithon_route_request_duration_seconds',
        'velithon_upstream_requests_total',
        'velithon_upstream_errors_total',
        'velithon_upstream_request_duration_seconds',
        'velithon_retries_total',
        'velithon_rejections_total',
        'velithon_upstream_up',
      ]),
    )
    for (const f of fams.values()) expect(f.help, f.name).toBeTruthy()
    expectAgreement(fams, metrics, servers)
    expect(Object.fromEntries(fams.get('velithon_requests_total')!.samples.map((x) => [x.labels.status, x.value]))).toEqual({ '200': 13, '404': 3, '500': 2 })

    // Asking for /metrics is not a request it counts (GET nor HEAD).
    for (let i = 0; i < 3; i++) expect((await send(`${url}/metrics`)).status).toBe(200)
    const head = await send(`${url}/metrics`, { method: 'HEAD' })
    expect(head.status).toBe(200)
    expect(head.body.length).toBe(0)
    expect(metrics.getTotalRequests()).toBe(18)
    // The library's own rendering parses the same way.
    expectAgreement(parsePrometheus(metrics.toPrometheus()), metrics, servers)
  })

  it('serves it at a custom path, and path: false serves none (404, counted as a miss)', async () => {
    const custom = await trafficApp('/internal/prom')
    const r = await send(`${custom.url}/internal/prom`)
    expect(r.status).toBe(200)
    expect(r.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4(;|$)/)
    expectAgreement(parsePrometheus(r.body.toString()), custom.gateway.metrics!, custom.servers)
    const miss = await send(`${custom.url}/metrics`)
    expect(miss.status).toBe(404)
    expect(errorOf(miss).code).toBe('VG_NO_ROUTE')

    const none = await trafficApp(false)
    const before = none.gateway.metrics!.getTotalRequests()
    const r2 = await send(`${none.url}/metrics`)
    expect(r2.status).toBe(404)
    expect(errorOf(r2).code).toBe('VG_NO_ROUTE')
    // Still recording: the 404 itself is one more request.
    expect(none.gateway.metrics!.getTotalRequests()).toBe(before + 1)
    expect(none.app.metrics).toBe(none.gateway.metrics)
  })
})

// ---------------------------------------------------------------------------------------

describe('where an app records', () => {
  it('new Gateway({ metrics: false }) records nothing', async () => {
    const u = await startUpstream(fixed(200, 'ok'))
    const gateway = new Gateway({ metrics: false })
    expect(gateway.metrics).toBeUndefined()
    gateway.route('/api/{path:path}', { upstream: u.url })
    const { app, url } = await serve(gateway)
    for (let i = 0; i < 5; i++) expect((await send(`${url}/gw/api/${i}`)).status).toBe(200)
    expect(app.metrics).toBeUndefined()
    expect((await send(`${url}/metrics`)).status).toBe(404)
  })

  it('new MetricsMiddleware({ metrics }) records into the given GatewayMetrics', async () => {
    const u = await startUpstream(fixed(200, 'ok'))
    // A gateway without metrics of its own…
    const mine = new GatewayMetrics()
    const quiet = new Gateway({ metrics: false })
    quiet.route('/api/{path:path}', { upstream: u.url })
    const first = await serve(quiet, { middleware: [new MetricsMiddleware({ metrics: mine })] })
    for (let i = 0; i < 4; i++) expect((await send(`${first.url}/gw/api/${i}`)).status).toBe(200)
    expect(first.app.metrics).toBe(mine)
    expect(mine.getTotalRequests()).toBe(4)
    expect(mine.getRequestsByStatus()).toEqual({ 200: 4 })
    expect(upstreamIn(snap(mine), u.url).requests).toBe(4)
    expect(routeOf(snap(mine), '/gw/api/{path:path}').requests).toBe(4)

    // …and one with its own: the middleware's wins, the gateway's stays at zero.
    const other = new GatewayMetrics()
    const loud = new Gateway()
    loud.route('/api/{path:path}', { upstream: u.url })
    const second = await serve(loud, { middleware: [new MetricsMiddleware({ metrics: other, path: '/m' })] })
    for (let i = 0; i < 3; i++) expect((await send(`${second.url}/gw/api/${i}`)).status).toBe(200)
    expect(second.app.metrics).toBe(other)
    expect(other.getTotalRequests()).toBe(3)
    expect(loud.metrics!.getTotalRequests()).toBe(0)
    expect(mine.getTotalRequests()).toBe(4)
    const fams = parsePrometheus((await send(`${second.url}/m`)).body.toString())
    expect(valueOf(fams, 'velithon_requests_total', 'velithon_requests_total', { status: '200' })).toBe(3)

    // Without a gateway's metrics, new MetricsMiddleware() makes its own.
    const bare = new Gateway({ metrics: false })
    bare.route('/api/{path:path}', { upstream: u.url })
    const third = await serve(bare, { middleware: [new MetricsMiddleware()] })
    for (let i = 0; i < 2; i++) await send(`${third.url}/gw/api/${i}`)
    expect(third.app.metrics).toBeInstanceOf(GatewayMetrics)
    expect(third.app.metrics!.getTotalRequests()).toBe(2)
  })
})

// ---------------------------------------------------------------------------------------

type Seen = { request: RequestSummary; response: ResponseSummary; durationMs: number }

describe('the collector', () => {
  it('gets every request (N of N): method, path, route, status, headers, duration', async () => {
    const u = await startUpstream(fixed(200, 'ok'))
    const gateway = new Gateway()
    gateway.route('/api/{path:path}', { upstream: u.url })
    const seen: Seen[] = []
    const { url } = await serve(
      gateway,
      { middleware: [new MetricsMiddleware({ collectorFunction: (request, response, durationMs) => void seen.push({ request, response, durationMs }) })] },
      (app) => app.post('/hello', () => new JSONResponse({ hi: true }, 201)),
    )
    const agent = keepAliveAgent(8)
    const N = 60
    await pool(N, 8, async (i) => {
      const headers = { 'x-seq': String(i) }
      if (i % 3 === 0) return send(`${url}/gw/api/item/${i}`, { agent, headers })
      if (i % 3 === 1) return send(`${url}/hello`, { agent, headers, method: 'POST', body: 'x' })
      return send(`${url}/nowhere/${i}`, { agent, headers, method: 'DELETE' })
    })
    await waitFor(() => seen.length >= N, 10_000, `the collector to see ${N} requests (saw ${seen.length})`)
    await sleep(100)
    expect(seen).toHaveLength(N)
    const bySeq = new Map(seen.map((s) => [Number(new Map(s.request.requestHeaders).get('x-seq')), s]))
    expect(bySeq.size).toBe(N)
    for (let i = 0; i < N; i++) {
      const s = bySeq.get(i)!
      expect(s.request.client).toBe('127.0.0.1')
      expect(Number.isFinite(s.durationMs) && s.durationMs > 0).toBe(true)
      const responseHeaders = new Map(s.response.responseHeaders)
      if (i % 3 === 0) {
        expect([s.request.method, s.request.path, s.request.route, s.response.status]).toEqual(['GET', `/gw/api/item/${i}`, '/gw/api/{path:path}', 200])
        expect(responseHeaders.get('content-type')).toBe('text/plain')
      } else if (i % 3 === 1) {
        expect([s.request.method, s.request.path, s.request.route, s.response.status]).toEqual(['POST', '/hello', '/hello', 201])
        expect(responseHeaders.get('content-type')).toMatch(/^application\/json/)
      } else {
        expect([s.request.method, s.request.path, s.request.route, s.response.status]).toEqual(['DELETE', `/nowhere/${i}`, '', 404])
      }
      // Header names arrive lower-case, as pairs.
      for (const [name] of s.request.requestHeaders) expect(name).toBe(name.toLowerCase())
    }
  })

  it('a collector that throws (or rejects) leaves responses alone; onError is told once', async () => {
    const u = await startUpstream(fixed(200, 'ok'))
    for (const mode of ['throw', 'reject'] as const) {
      const gateway = new Gateway()
      gateway.route('/api/{path:path}', { upstream: u.url })
      let calls = 0
      const errors: unknown[] = []
      const collectorFunction =
        mode === 'throw'
          ? () => {
              calls++
              throw new Error('collector broke')
            }
          : async () => {
              calls++
              throw new Error('collector broke (async)')
            }
      const { url } = await serve(gateway, { middleware: [new MetricsMiddleware({ collectorFunction, onError: (e) => void errors.push(e) })] })
      for (let i = 0; i < 30; i++) {
        const r = await send(`${url}/gw/api/${i}`)
        expect(r.status, mode).toBe(200)
        expect(r.body.toString()).toBe('ok')
      }
      await waitFor(() => calls === 30, 10_000, `the ${mode} collector to be called 30 times (was ${calls})`)
      await sleep(50)
      expect(errors, mode).toHaveLength(1)
      expect(String(errors[0])).toMatch(/collector broke/)
    }
  })

  /**
   * An app whose collector blocks on its first call until released; `load` requests are
   * sent while it is blocked. Resolves with what the collector saw in the end.
   */
  async function blockedCollector(queueSize: number, load: number) {
    const u = await startUpstream(fixed(200, 'ok'))
    const gateway = new Gateway()
    gateway.route('/api/{path:path}', { upstream: u.url })
    let release!: () => void
    const gate = new Promise<void>((r) => (release = r))
    let calls = 0
    let busy = 0
    const collectorFunction = async () => {
      calls++
      busy++
      await gate // held until the test lets go
      await sleep(5)
      busy--
    }
    const { url } = await serve(gateway, { middleware: [new MetricsMiddleware({ collectorFunction, queueSize })] })
    // One request, and the collector is stuck on it.
    expect((await send(`${url}/gw/api/first`)).status).toBe(200)
    await waitFor(() => busy === 1, 5_000, 'the collector to start on the first summary')

    const agent = keepAliveAgent(10)
    const started = performance.now()
    const replies = await withTimeout(
      pool(load, 10, (i) => send(`${url}/gw/api/${i}`, { agent })),
      30_000,
      `${load} requests while the collector is busy`,
    )
    const elapsed = performance.now() - started
    expect(replies.every((r) => r.status === 200)).toBe(true)
    // Every response came back while the collector was still on its first call.
    const stillBlocked = busy === 1 && calls === 1

    release()
    // Let it drain what it kept, until nothing more arrives.
    let last = -1
    await waitFor(
      () => {
        const settled = busy === 0 && calls === last
        last = calls
        return settled
      },
      10_000,
      'the collector to drain',
    )
    await sleep(200)
    const total = calls
    return { url, elapsed, stillBlocked, total, calls: () => calls }
  }

  it('a slow collector never delays a response, and what it cannot take is dropped (queueSize 5)', async () => {
    const run = await blockedCollector(5, 100)
    expect(run.stillBlocked).toBe(true)
    expect(run.total).toBeGreaterThanOrEqual(1)
    expect(run.total).toBeLessThan(101)
    console.log(`[metrics] queueSize 5: 100 requests in ${run.elapsed.toFixed(0)} ms while the collector was blocked; it then saw ${run.total} of 101`)

    // Nothing is stuck afterwards: new requests reach the collector again.
    for (let i = 0; i < 3; i++) await send(`${run.url}/gw/api/later/${i}`)
    await waitFor(() => run.calls() === run.total + 3, 5_000, 'the collector to see later requests')
  })

  it('keeps at most queueSize summaries waiting behind a busy collector (as MetricsMiddlewareOptions.queueSize documents)', async () => {
    // Documented: "Summaries waiting for a slow collector before new ones are dropped".
    // The collector is busy with the first summary; at most queueSize more may wait.
    const QUEUE = 5
    const run = await blockedCollector(QUEUE, 100)
    expect(run.stillBlocked).toBe(true)
    expect(run.total, `the collector saw ${run.total}: 1 in progress + ${run.total - 1} that waited, with queueSize ${QUEUE}`).toBeLessThanOrEqual(1 + QUEUE)
  })

  it('accessLog: fn gets one JSON line per request', async () => {
    const u = await startUpstream(fixed(200, 'ok'))
    const gateway = new Gateway()
    gateway.route('/api/{path:path}', { upstream: u.url })
    const lines: string[] = []
    const { url } = await serve(gateway, { middleware: [new MetricsMiddleware({ accessLog: (line) => void lines.push(line) })] })
    for (let i = 0; i < 10; i++) await send(`${url}/gw/api/${i}`)
    await send(`${url}/missing`, { method: 'PUT', body: '' })
    await waitFor(() => lines.length >= 11, 5_000, 'eleven access log lines')
    await sleep(50)
    expect(lines).toHaveLength(11)
    const entries = lines.map((l) => {
      expect(l).not.toContain('\n')
      return JSON.parse(l) as Record<string, unknown>
    })
    for (const e of entries) {
      expect(Number.isNaN(Date.parse(String(e.time)))).toBe(false)
      expect(typeof e.durationMs).toBe('number')
      expect(e.client).toBe('127.0.0.1')
    }
    const paths = entries.map((e) => `${e.method} ${e.path} ${e.route} ${e.status}`).sort()
    expect(paths).toContain('PUT /missing  404')
    expect(paths.filter((p) => p.startsWith('GET /gw/api/') && p.endsWith(' /gw/api/{path:path} 200'))).toHaveLength(10)
  })
})

// ---------------------------------------------------------------------------------------

describe('traceparent', () => {
  const TRACEPARENT = /^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/
  const VALID = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'

  function expectGenerated(value: unknown, sent?: string) {
    expect(typeof value).toBe('string')
    const v = value as string
    expect(v).toMatch(TRACEPARENT)
    const [, traceId, parentId] = v.split('-')
    expect(traceId).not.toBe('0'.repeat(32))
    expect(parentId).not.toBe('0'.repeat(16))
    if (sent !== undefined) expect(v).not.toBe(sent)
  }

  it('traceparent: true sends a valid one upstream: generated when absent or malformed, the client\'s when valid', async () => {
    const u = await startUpstream(echoHandler())
    const gateway = new Gateway()
    gateway.route('/api/{path:path}', { upstream: u.url })
    const { url } = await serve(gateway, { traceparent: true })

    const a = echoOf(await send(`${url}/gw/api/a`)).headers.traceparent
    const b = echoOf(await send(`${url}/gw/api/b`)).headers.traceparent
    expectGenerated(a)
    expectGenerated(b)
    expect((a as string).split('-')[1]).not.toBe((b as string).split('-')[1])

    const malformed = [
      'garbage',
      '00-zz-1-01',
      '00-00000000000000000000000000000000-00f067aa0ba902b7-01', // all-zero trace id
      '00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01', // all-zero parent id
      '00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01', // upper case
      'ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', // version ff
      '00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01', // 31 hex digits
    ]
    for (const sent of malformed) {
      const echo = echoOf(await send(`${url}/gw/api/m`, { headers: { traceparent: sent } }))
      expectGenerated(echo.headers.traceparent, sent)
      // One header upstream, not the client's plus ours.
      expect(echo.rawHeaders.filter((_, i) => i % 2 === 0 && echo.rawHeaders[i].toLowerCase() === 'traceparent')).toHaveLength(1)
    }

    const kept = echoOf(await send(`${url}/gw/api/v`, { headers: { traceparent: VALID } }))
    expect(kept.headers.traceparent).toBe(VALID)
  })

  it('is off by default: nothing is added, the client\'s passes as sent', async () => {
    const u = await startUpstream(echoHandler())
    const gateway = new Gateway()
    gateway.route('/api/{path:path}', { upstream: u.url })
    const { url } = await serve(gateway)
    expect(echoOf(await send(`${url}/gw/api/a`)).headers.traceparent).toBeUndefined()
    expect(echoOf(await send(`${url}/gw/api/b`, { headers: { traceparent: VALID } })).headers.traceparent).toBe(VALID)
    expect(echoOf(await send(`${url}/gw/api/c`, { headers: { traceparent: 'garbage' } })).headers.traceparent).toBe('garbage')
  })
})
