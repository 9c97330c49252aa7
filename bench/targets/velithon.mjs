// Benchmark target: Velithon with one pure-proxy route (no JavaScript per request).
//   node bench/targets/velithon.mjs <upstream-url> [workerThreads]
// Prints `listening on <url>` and runs until killed (SIGTERM closes it gracefully).
import { Velithon, Gateway, LoadBalancer } from '../../dist/esm/index.js'
import { serveUntilKilled } from './serve.mjs'

const upstream = process.argv[2]
const workerThreads = Number(process.argv[3] ?? 1)
if (!upstream) {
  console.error('usage: node bench/targets/velithon.mjs <upstream-url> [workerThreads]')
  process.exit(2)
}

const lb = new LoadBalancer({ upstreamServers: [upstream] })
const gw = new Gateway({ loadBalancer: lb })
gw.route('/{path:path}')
const app = new Velithon({ workerThreads })
app.includeRouter(gw.getRouter())
await serveUntilKilled(app)
