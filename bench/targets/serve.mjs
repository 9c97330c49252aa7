// Shared by the Velithon bench targets: listen on a free loopback port, print
// `listening on <url>` (the runner waits for it), and close gracefully on SIGTERM/SIGINT.
// `listen`: more listen options (e.g. `tls: { cert, key }`).
export async function serveUntilKilled(app, listen = {}) {
  const { url } = await app.listen({ host: '127.0.0.1', port: 0, ...listen })
  console.log(`listening on ${url}`)
  let closing = false
  const stop = () => {
    if (closing) return
    closing = true
    app.close({ timeout: 1000 }).finally(() => process.exit(0))
    setTimeout(() => process.exit(0), 2000).unref()
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
}
