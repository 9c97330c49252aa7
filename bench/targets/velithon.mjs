// Benchmark target: Velithon with one pure-proxy route (no JavaScript per request).
//   node bench/targets/velithon.mjs <upstream-url> [workerThreads] [strategy | transforms | header-function]
// `transforms`: the plain route plus static header rules (add two, remove one, modify
// one) and a path rule (strip + add a prefix), all applied in Rust. `header-function`:
// the plain route plus one header whose value a JS function computes per request.
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
} from '../../dist/esm/index.js'
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
if (!strategyName || strategyName === 'transforms' || strategyName === 'header-function') {
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
const gw = new Gateway({ loadBalancer: lb, transformers })
gw.route('/{path:path}')
const app = new Velithon({ workerThreads })
app.includeRouter(gw.getRouter())
await serveUntilKilled(app)
