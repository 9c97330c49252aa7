// Benchmark target: Velithon with a JS route handler that forwards with
// gateway.forwardRequest (one JS call per request; the upstream body streams from Rust),
// or, with the `strategy` mode, a pure route whose load balancer has a custom JS
// strategy (the data plane asks JS through the callback bridge for every request).
//   node bench/targets/velithon-js.mjs <upstream-url> <handler|strategy> [workerThreads]
import { Velithon, Gateway, LoadBalancer, LoadBalancingStrategy } from '../../dist/esm/index.js'
import { serveUntilKilled } from './serve.mjs'

const [upstream, mode = 'handler', workers = '1'] = process.argv.slice(2)
if (!upstream || !['handler', 'strategy'].includes(mode)) {
  console.error('usage: node bench/targets/velithon-js.mjs <upstream-url> <handler|strategy> [workerThreads]')
  process.exit(2)
}

/** Round robin, in JS: the cheapest possible user strategy, so the row shows the bridge. */
class JsRoundRobin extends LoadBalancingStrategy {
  #next = 0
  selectServer(servers) {
    return servers[this.#next++ % servers.length]
  }
}

const app = new Velithon({ workerThreads: Number(workers) })
if (mode === 'handler') {
  const gateway = new Gateway({ loadBalancer: new LoadBalancer({ upstreamServers: [upstream] }) })
  app.get('/{path:path}', (request) => gateway.forwardRequest(request))
} else {
  const loadBalancer = new LoadBalancer({ upstreamServers: [upstream], strategy: new JsRoundRobin() })
  const gateway = new Gateway({ loadBalancer })
  gateway.route('/{path:path}')
  app.includeRouter(gateway.getRouter())
}
await serveUntilKilled(app)
