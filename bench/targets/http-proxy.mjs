// Benchmark target: node http-proxy 1.18.1 with a keep-alive agent to the upstream.
//   node bench/targets/http-proxy.mjs <upstream-url> [maxSockets]
// Prints `listening on <url>` and runs until killed.
import http from 'node:http'
import httpProxy from 'http-proxy'

const upstream = process.argv[2]
const maxSockets = Number(process.argv[3] ?? 128)
if (!upstream) {
  console.error('usage: node bench/targets/http-proxy.mjs <upstream-url> [maxSockets]')
  process.exit(2)
}

const agent = new http.Agent({ keepAlive: true, maxSockets, maxFreeSockets: maxSockets })
const proxy = httpProxy.createProxyServer({ target: upstream, agent })
proxy.on('error', (err, _req, res) => {
  if (res && !res.headersSent && typeof res.writeHead === 'function') {
    res.writeHead(502, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ error: 'bad_gateway', message: err.message }))
  } else res?.destroy?.()
})
const server = http.createServer((req, res) => proxy.web(req, res))
server.keepAliveTimeout = 60_000
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address()
  console.log(`listening on http://127.0.0.1:${port}`)
})

const stop = () => {
  server.close()
  server.closeAllConnections?.()
  agent.destroy()
  process.exit(0)
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
