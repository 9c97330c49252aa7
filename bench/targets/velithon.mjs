// Benchmark target: Velithon with one pure-proxy route (no JavaScript per request).
//   node bench/targets/velithon.mjs <upstream-url> [workerThreads] [strategy | transforms | header-function |
//     metrics-off | minimal | rate-memory | rate-redis | collector | https <cert.pem> <key.pem> |
//     https-upstream <ca.pem>]
// `https`: the plain route, the app listening with TLS (`listen({ tls: { cert, key } })`;
// ALPN h2 and http/1.1). `https-upstream`: the plain route to an `https://` upstream whose
// certificate `ca.pem` signed (`Gateway({ tls: { ca } })`).
// `transforms`: the plain route plus static header rules (add two, remove one, modify
// one) and a path rule (strip + add a prefix), all applied in Rust. `header-function`:
// the plain route plus one header whose value a JS function computes per request.
// The plain route records metrics (the gateway's, on by default); `metrics-off` turns
// that off. `rate-memory` / `rate-redis`: a rate limit far above the load (every request
// is decided, none refused), in memory or in a redis-server this script starts on a free
// port (and stops). `collector`: a MetricsMiddleware with a JS collectorFunction.
// With a strategy (round_robin | random | weighted | least_connections | p2c |
// consistent_hash) the load balancer has three servers, all the same upstream under
// three base paths (/a, /b, /c: the fixed upstream answers any path), so the row
// measures the strategy's cost and nothing else changes.
// Prints `listening on <url>` and runs until killed (SIGTERM closes it gracefully).
import {
  Velithon,
  Gateway,
  LoadBalancer,
  RoundRobinStrategy,
  RandomStrategy,
  WeightedStrategy,
  LeastConnectionsStrategy,
  PowerOfTwoChoicesStrategy,
  ConsistentHashStrategy,
  HeaderTransformer,
  PathTransformer,
  MetricsMiddleware,
  RateLimitMiddleware,
} from '../../dist/esm/index.js'
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import net from 'node:net'
import { serveUntilKilled } from './serve.mjs'

const upstream = process.argv[2]
const workerThreads = Number(process.argv[3] ?? 1)
const strategyName = process.argv[4]
if (!upstream) {
  console.error('usage: node bench/targets/velithon.mjs <upstream-url> [workerThreads] [strategy]')
  process.exit(2)
}

let lb
let transformers = []
if (strategyName === 'transforms') {
  transformers = [
    new HeaderTransformer({
      addHeaders: { 'X-Gateway': 'velithon', 'X-Env': 'bench' },
      removeHeaders: ['X-Internal'],
      modifyHeaders: { 'User-Agent': 'velithon-bench' },
    }),
    new PathTransformer({ stripPrefix: '/api', addPrefix: '/v1' }),
  ]
} else if (strategyName === 'header-function') {
  let n = 0
  transformers = [new HeaderTransformer({ addHeaders: { 'X-Seq': () => String(++n) } })]
}
const MODES = ['transforms', 'header-function', 'metrics-off', 'minimal', 'rate-memory', 'rate-redis', 'collector', 'https', 'https-upstream']
const pemArg = (i) => {
  if (!process.argv[i]) {
    console.error(`${strategyName}: missing the PEM file argument(s)`)
    process.exit(2)
  }
  return readFileSync(process.argv[i], 'utf8')
}
// https: TLS on the listener; https-upstream: the CA that signed the upstream's certificate.
const listenTls = strategyName === 'https' ? { tls: { cert: pemArg(5), key: pemArg(6) } } : {}
const upstreamTls = strategyName === 'https-upstream' ? { tls: { ca: pemArg(5) } } : {}
if (!strategyName || MODES.includes(strategyName)) {
  lb = new LoadBalancer({ upstreamServers: [upstream] })
} else {
  const servers = ['/a', '/b', '/c'].map((p) => upstream + p)
  const strategies = {
    round_robin: () => new RoundRobinStrategy(),
    random: () => new RandomStrategy(),
    weighted: () => new WeightedStrategy({ [servers[0]]: 3, [servers[1]]: 2, [servers[2]]: 1 }),
    least_connections: () => new LeastConnectionsStrategy(),
    p2c: () => new PowerOfTwoChoicesStrategy(),
    consistent_hash: () => new ConsistentHashStrategy({ key: 'ip' }),
  }
  const make = strategies[strategyName]
  if (!make) {
    console.error(`unknown strategy ${strategyName}; one of ${Object.keys(strategies).join(', ')}`)
    process.exit(2)
  }
  lb = new LoadBalancer({ upstreamServers: servers, strategy: make() })
}
const gw = new Gateway({
  loadBalancer: lb,
  transformers,
  ...upstreamTls,
  ...(strategyName === 'metrics-off' && { metrics: false }),
  // Every default per-request feature off: no request id, no identity-header stripping, no metrics.
  ...(strategyName === 'minimal' && { metrics: false, requestId: false, stripIncomingHeaders: false }),
})
gw.route('/{path:path}')
const middleware = []
if (strategyName === 'rate-memory') middleware.push(new RateLimitMiddleware({ requestsPerMinute: 100_000_000, burst: 1_000_000 }))
if (strategyName === 'rate-redis') {
  const port = await startRedis()
  middleware.push(new RateLimitMiddleware({ requestsPerMinute: 100_000_000, burst: 1_000_000, store: { redis: `redis://127.0.0.1:${port}` } }))
}
if (strategyName === 'collector') {
  let n = 0
  middleware.push(new MetricsMiddleware({ path: false, collectorFunction: () => void n++ }))
}
const app = new Velithon({ workerThreads, middleware })
app.includeRouter(gw.getRouter())
await serveUntilKilled(app, listenTls)

/** Starts redis-server on a free port (stopped when this process exits). */
async function startRedis() {
  const port = await new Promise((resolve) => {
    const srv = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' })
  process.on('exit', () => child.kill())
  for (let i = 0; i < 100; i++) {
    const up = await new Promise((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port }, () => { s.destroy(); resolve(true) })
      s.on('error', () => resolve(false))
    })
    if (up) return port
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error('redis-server did not start')
}
