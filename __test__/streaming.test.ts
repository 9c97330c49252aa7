/**
 * Bodies stream through the gateway: 100 MiB each way arrives intact while the process
 * the gateway runs in grows by far less than the body, and a client that goes away
 * mid-transfer releases the upstream side.
 */
import http from 'node:http'
import { afterEach, describe, expect, test } from 'vitest'
import { startBulkPeer } from './helpers/bulk-peer'
import { closeAll, send, sleep, startProxy, startUpstream, waitFor, withTimeout } from './helpers/net'

afterEach(closeAll)

const MiB = 1024 * 1024
const TOTAL = 100 * MiB
const RSS_BUDGET = 50 * MiB

/** Samples this process's RSS every 10 ms; `stop()` returns the peak seen. */
function sampleRss(): { stop(): number } {
  let peak = process.memoryUsage.rss()
  const timer = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage.rss())
  }, 10)
  return {
    stop() {
      clearInterval(timer)
      return Math.max(peak, process.memoryUsage.rss())
    },
  }
}

const mib = (bytes: number): string => `${(bytes / MiB).toFixed(1)} MiB`

// The gateway runs in this process; the upstream and the client run in a child process
// (helpers/bulk-peer.ts) and hash while streaming, so this process's RSS is the gateway's
// (plus the test runner's). A gateway that buffered a body would add 100 MiB or more.
describe('100 MiB bodies', () => {
  test('a 100 MiB upload passes through intact, and RSS grows by less than 50 MiB', async () => {
    const peer = await startBulkPeer()
    const proxy = await startProxy({ upstreams: [peer.url], gateway: { timeout: '60s' } })
    // Warm up: the data plane's threads, a pooled upstream connection.
    expect((await peer.upload(`${proxy.url}/gw/api/warmup`, MiB)).status).toBe(200)
    await sleep(50)

    const before = process.memoryUsage.rss()
    const sampler = sampleRss()
    const reply = await peer.upload(`${proxy.url}/gw/api/upload`, TOTAL)
    const peak = sampler.stop()

    expect(reply.status).toBe(200)
    const seen = JSON.parse(reply.body) as { bytes: number; sha256: string; contentLength: string | null }
    expect(seen.bytes).toBe(TOTAL)
    expect(seen.sha256).toBe(reply.sent)
    expect(seen.contentLength).toBe(String(TOTAL))
    if (process.env.VG_DEBUG) console.log(`upload: RSS +${mib(peak - before)} (baseline ${mib(before)})`)
    expect(peak - before, `RSS grew by ${mib(peak - before)}`).toBeLessThan(RSS_BUDGET)
  })

  test('a 100 MiB download passes through intact, and RSS grows by less than 50 MiB', async () => {
    const peer = await startBulkPeer()
    const proxy = await startProxy({ upstreams: [peer.url], gateway: { timeout: '60s' } })
    expect((await peer.download(`${proxy.url}/gw/api/warmup?bytes=${MiB}`)).got.bytes).toBe(MiB)
    await sleep(50)

    const before = process.memoryUsage.rss()
    const sampler = sampleRss()
    const reply = await peer.download(`${proxy.url}/gw/api/download?bytes=${TOTAL}`)
    const peak = sampler.stop()

    expect(reply.status).toBe(200)
    expect(reply.transferEncoding).toBe('chunked')
    expect(reply.got.bytes).toBe(TOTAL)
    expect(reply.got.sha256).toBe(reply.sourceDigest)
    if (process.env.VG_DEBUG) console.log(`download: RSS +${mib(peak - before)} (baseline ${mib(before)})`)
    expect(peak - before, `RSS grew by ${mib(peak - before)}`).toBeLessThan(RSS_BUDGET)
  })

  test('the memory check would catch a buffered body (control: holding 100 MiB in this process)', async () => {
    // Proves the measurement can fail: the same sampler sees a 100 MiB allocation.
    const before = process.memoryUsage.rss()
    const sampler = sampleRss()
    const held = Buffer.alloc(TOTAL, 1)
    await sleep(30)
    const peak = sampler.stop()
    expect(held.length).toBe(TOTAL)
    expect(peak - before).toBeGreaterThan(RSS_BUDGET)
  })
})

describe('a client that goes away', () => {
  test('mid-response: the upstream sees its response closed within seconds, and the gateway keeps serving', async () => {
    let upstreamRes: http.ServerResponse | undefined
    let closedAt = 0
    let finished = true
    const upstream = await startUpstream(async (req, res) => {
      if (req.url?.endsWith('/ok')) {
        res.end('still here')
        return
      }
      upstreamRes = res
      res.on('close', () => {
        closedAt = Date.now()
        finished = res.writableFinished
      })
      res.writeHead(200, { 'content-type': 'text/plain' })
      // Slowly: 30 s in all, unless someone stops listening.
      for (let i = 0; i < 300 && !res.destroyed; i++) {
        res.write(`tick ${i}\n`)
        await sleep(100)
      }
      if (!res.destroyed) res.end()
    })
    const proxy = await startProxy({ upstreams: [upstream.url] })

    const firstPiece = await withTimeout(
      new Promise<string>((resolve, reject) => {
        const req = http.request(`${proxy.url}/gw/api/stream`, { agent: false }, (res) => {
          res.once('data', (chunk: Buffer) => {
            // Hang up after the first piece.
            req.destroy()
            resolve(chunk.toString())
          })
        })
        req.on('error', (err) => {
          if (!req.destroyed) reject(err)
        })
        req.end()
      }),
      10_000,
      'the first piece of the slow response',
    )
    const disconnectedAt = Date.now()
    expect(firstPiece).toMatch(/^tick 0\n/)
    expect(upstreamRes).toBeDefined()

    await waitFor(() => closedAt > 0, 5_000, "the upstream response's 'close' event")
    expect(closedAt - disconnectedAt).toBeLessThan(5_000)
    expect(finished).toBe(false)

    const after = await send(`${proxy.url}/gw/api/ok`)
    expect(after.status).toBe(200)
    expect(after.body.toString()).toBe('still here')
  })

  test('mid-upload: the upstream request is aborted within seconds, and the gateway keeps serving', async () => {
    let aborted = false
    let bytesSeen = 0
    const upstream = await startUpstream((req, res) => {
      if (req.url?.endsWith('/ok')) {
        res.end('still here')
        return
      }
      req.on('data', (c: Buffer) => (bytesSeen += c.length))
      req.on('error', () => (aborted = true))
      req.on('aborted', () => (aborted = true))
      req.on('close', () => {
        if (!req.complete) aborted = true
      })
      req.on('end', () => res.end('complete?'))
    })
    const proxy = await startProxy({ upstreams: [upstream.url] })

    const req = http.request(`${proxy.url}/gw/api/upload`, {
      method: 'POST',
      agent: false,
      headers: { 'content-length': 10 * MiB },
    })
    req.on('error', () => {})
    req.write(Buffer.alloc(256 * 1024, 1))
    await waitFor(() => bytesSeen > 0, 5_000, 'the first bytes of the upload upstream')
    req.destroy()
    await waitFor(() => aborted, 5_000, 'the upstream request to be aborted')
    expect(bytesSeen).toBeLessThan(10 * MiB)

    const after = await send(`${proxy.url}/gw/api/ok`)
    expect(after.status).toBe(200)
  })
})
