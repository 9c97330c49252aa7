#!/usr/bin/env node
// The demo: two local upstreams and a gateway in front of them, all on loopback.
//   npm run demo                 runs until Ctrl-C
//   npm run demo -- --smoke      sends a few requests through the gateway, prints them, exits
//   PORT=9090 npm run demo       gateway port (default 8080; 0 picks a free one)
import http from 'node:http'
import { Velithon, Gateway, LoadBalancer, RoundRobinStrategy } from '../dist/esm/index.js'

const smoke = process.argv.includes('--smoke')
const port = Number(process.env.PORT ?? (smoke ? 0 : 8080))

function startUpstream(name) {
  const server = http.createServer((req, res) => {
    const chunks = []
    req.on('data', (c) => chunks.push(c))
    req.on('end', () => {
      res.setHeader('content-type', 'application/json')
      res.end(
        JSON.stringify({
          upstream: name,
          method: req.method,
          url: req.url,
          forwardedFor: req.headers['x-forwarded-for'],
          bodyBytes: Buffer.concat(chunks).length,
        }) + '\n',
      )
    })
  })
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)))
}

const upstreams = await Promise.all([startUpstream('users-1'), startUpstream('users-2')])
const urls = upstreams.map((s) => `http://127.0.0.1:${s.address().port}`)

const loadBalancer = new LoadBalancer({ upstreamServers: urls, strategy: new RoundRobinStrategy() })
const gateway = new Gateway({ loadBalancer, timeout: '5s' })
gateway.route('/api/{path:path}', { stripPath: true })
gateway.route('/first/{path:path}', { upstream: urls[0] })

const app = new Velithon()
app.includeRouter(gateway.getRouter(), { prefix: '/gateway' })
const { url } = await app.listen({ port, host: '127.0.0.1' })

console.log(`demo upstreams: ${urls.join(', ')}`)
console.log(`gateway listening on ${url}`)
console.log('try:')
console.log(`  curl -s ${url}/gateway/api/users?page=1        # round robin over both upstreams`)
console.log(`  curl -s -d 'hello' ${url}/gateway/api/echo     # a body, streamed through`)
console.log(`  curl -s ${url}/gateway/first/anything           # always the first upstream`)
console.log(`  curl -si ${url}/nowhere                         # 404 with a JSON body`)

async function shutdown() {
  await app.close()
  await Promise.all(upstreams.map((s) => new Promise((r) => s.close(r))))
}

if (smoke) {
  for (const path of ['/gateway/api/users?page=1', '/gateway/api/users?page=2', '/gateway/first/x', '/nowhere']) {
    const res = await fetch(url + path)
    console.log(`GET ${path} -> ${res.status} ${(await res.text()).trim()}`)
  }
  await shutdown()
} else {
  console.log('Ctrl-C to stop.')
  process.once('SIGINT', () => shutdown().then(() => process.exit(0)))
  process.once('SIGTERM', () => shutdown().then(() => process.exit(0)))
}
