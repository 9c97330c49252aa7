// Load generators: wrk (preferred; results via a Lua `done` script printing JSON) or,
// if wrk is missing, an installed autocannon; for the HTTP/2 rows, h2load (nghttp2-client).
// All are normalised to one result shape:
//   { tool, commandLine, requests, durationS, rps, latencyUs: { p50, p90, p99, max, mean },
//     errors: { …counters, total }, statusNote }
// h2load prints no percentiles: its rows have latencyUs { min, max, mean, sd } only
// (p50/p90/p99 undefined, shown as "—").
import { writeFileSync, existsSync } from 'node:fs'
import { join } from 'node:path'
import { createRequire } from 'node:module'
import { which } from './procs.mjs'

const WRK_LUA = `-- written by bench/load.mjs: report wrk's summary as one JSON line
done = function(summary, latency, requests)
  local e = summary.errors
  local f = math.floor
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d},' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\\n',
    summary.requests, summary.duration, summary.bytes,
    f(latency.min), latency.mean, latency.stdev, f(latency.max),
    f(latency:percentile(50)), f(latency:percentile(90)), f(latency:percentile(99)), f(latency:percentile(99.9)),
    e.connect, e.read, e.write, e.status, e.timeout))
end
`

function assertLoopback(url) {
  const u = new URL(url)
  if (u.hostname !== '127.0.0.1') throw new Error(`refusing to load ${url}: the benchmark only targets 127.0.0.1`)
}

/**
 * Picks the load generator: `prefer` ('wrk' | 'autocannon' | undefined = wrk first).
 * Returns undefined when none is installed.
 */
export function findLoadGenerator({ root, prefer, tmp }) {
  const wrk = which('wrk', ['/usr/bin/wrk', '/usr/local/bin/wrk'])
  let autocannon
  try {
    const req = createRequire(join(root, 'package.json'))
    const pkg = req.resolve('autocannon/package.json')
    const bin = join(pkg, '..', 'autocannon.js')
    if (existsSync(bin)) autocannon = bin
  } catch {}
  autocannon ??= which('autocannon')
  const order = prefer === 'autocannon' ? ['autocannon', 'wrk'] : ['wrk', 'autocannon']
  for (const tool of order) {
    if (tool === 'wrk' && wrk) {
      const script = join(tmp, 'wrk-report.lua')
      writeFileSync(script, WRK_LUA)
      return new Wrk(wrk, script)
    }
    if (tool === 'autocannon' && autocannon) return new Autocannon(autocannon)
  }
  return undefined
}

class Wrk {
  constructor(bin, script) {
    this.bin = bin
    this.script = script
    this.tool = 'wrk'
    this.statusNote = 'wrk counts responses with status >= 400 as errors (its "non-2xx" counter)'
  }


  /** One run; `durationS` whole seconds. */
  async run(procs, { url, connections, durationS, cpus, timeoutS = 5 }) {
    assertLoopback(url)
    const args = ['-t1', `-c${connections}`, `-d${durationS}s`, `--timeout`, `${timeoutS}s`, '-s', this.script, url]
    const rec = procs.spawn('wrk', this.bin, args, { cpus })
    const result = await finish(procs, rec, durationS)
    const m = /WRK_JSON (\{.*\})/.exec(rec.out)
    if (result.code !== 0 || !m) {
      throw new Error(`wrk failed (code ${result.code}, signal ${result.signal})\ncommand: ${rec.commandLine}\nstdout: ${rec.out.slice(-2000)}\nstderr: ${rec.err.slice(-2000)}`)
    }
    const raw = JSON.parse(m[1])
    const durationSec = raw.duration_us / 1e6
    const e = raw.errors
    return {
      tool: 'wrk',
      commandLine: rec.commandLine,
      requests: raw.requests,
      durationS: durationSec,
      rps: raw.requests / durationSec,
      latencyUs: { p50: raw.latency_us.p50, p90: raw.latency_us.p90, p99: raw.latency_us.p99, max: raw.latency_us.max, mean: raw.latency_us.mean },
      errors: { ...e, total: e.connect + e.read + e.write + e.status + e.timeout },
      raw,
    }
  }
}

class Autocannon {
  constructor(bin) {
    this.bin = bin
    this.tool = 'autocannon'
    this.statusNote = 'autocannon: errors include non-2xx responses, socket errors and timeouts'
  }

  async run(procs, { url, connections, durationS, cpus, timeoutS = 5 }) {
    assertLoopback(url)
    const isJs = this.bin.endsWith('.js')
    const cmd = isJs ? process.execPath : this.bin
    const args = [...(isJs ? [this.bin] : []), '-c', String(connections), '-d', String(durationS), '-t', String(timeoutS), '-j', url]
    const rec = procs.spawn('autocannon', cmd, args, { cpus })
    const result = await finish(procs, rec, durationS)
    const start = rec.out.indexOf('{')
    if (result.code !== 0 || start < 0) {
      throw new Error(`autocannon failed (code ${result.code})\ncommand: ${rec.commandLine}\nstderr: ${rec.err.slice(-2000)}`)
    }
    const raw = JSON.parse(rec.out.slice(start))
    const ms = (v) => Math.round(Number(v) * 1000)
    const requests = raw.requests.total
    const durationSec = Number(raw.duration)
    const errors = {
      connect: 0,
      read: 0,
      write: 0,
      status: Number(raw.non2xx ?? 0),
      timeout: Number(raw.timeouts ?? 0),
      socket: Number(raw.errors ?? 0),
    }
    errors.total = errors.status + errors.timeout + errors.socket
    return {
      tool: 'autocannon',
      commandLine: rec.commandLine,
      requests,
      durationS: durationSec,
      rps: requests / durationSec,
      latencyUs: { p50: ms(raw.latency.p50), p90: ms(raw.latency.p90), p99: ms(raw.latency.p99), max: ms(raw.latency.max), mean: ms(raw.latency.mean) },
      errors,
      raw,
    }
  }
}

/** h2load's HTTP/2 load generator, or undefined when it is not installed. */
export function findH2load() {
  const bin = which('h2load', ['/usr/bin/h2load', '/usr/local/bin/h2load'])
  return bin ? new H2load(bin) : undefined
}

/** `1.23ms`, `456us`, `1.2s` (h2load's units) → µs. */
function h2Duration(text) {
  const m = /^([\d.]+)(us|ms|s)$/.exec(text)
  if (!m) return undefined
  return Math.round(Number(m[1]) * { us: 1, ms: 1000, s: 1e6 }[m[2]])
}

/**
 * Parses h2load's text summary:
 *   finished in 8.00s, 41234.50 req/s, 4.52MB/s
 *   requests: 329876 total, 329876 started, 329876 done, 329876 succeeded, 0 failed, 0 errored, 0 timeout
 *   status codes: 329876 2xx, 0 3xx, 0 4xx, 0 5xx
 *                        min         max         mean         sd        +/- sd
 *   time for request:      210us     12.34ms      3.01ms       812us    71.23%
 *   Application protocol: h2
 */
export function parseH2load(out) {
  const finished = /finished in ([\d.]+)s, ([\d.]+) req\/s/.exec(out)
  const reqs = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(out)
  const codes = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(out)
  const time = /time for request:\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)/.exec(out)
  const proto = /Application protocol: (\S+)/.exec(out)
  if (!finished || !reqs || !codes || !time) return undefined
  const [total, started, done, succeeded, failed, errored, timeout] = reqs.slice(1).map(Number)
  const [s2xx, s3xx, s4xx, s5xx] = codes.slice(1).map(Number)
  return {
    durationS: Number(finished[1]),
    rps: Number(finished[2]),
    requests: { total, started, done, succeeded, failed, errored, timeout },
    status: { '2xx': s2xx, '3xx': s3xx, '4xx': s4xx, '5xx': s5xx },
    timeForRequestUs: { min: h2Duration(time[1]), max: h2Duration(time[2]), mean: h2Duration(time[3]), sd: h2Duration(time[4]) },
    protocol: proto?.[1],
  }
}

class H2load {
  constructor(bin) {
    this.bin = bin
    this.tool = 'h2load'
    this.statusNote =
      'h2load: errors = its "failed" count, which includes non-2xx/3xx responses and its "errored" (stream resets, ' +
      'network errors) and "timeout" requests (both subsets of "failed", shown apart)'
  }

  /**
   * One timed run (`-D`): `clients` connections × `streams` concurrent streams each, one
   * thread. `http://` URLs use HTTP/2 with prior knowledge (h2c), `https://` ones ALPN
   * `h2` only. Throws unless the negotiated protocol is h2 / h2c.
   */
  async run(procs, { url, durationS, cpus, h2Clients = 8, h2Streams = 16 }) {
    assertLoopback(url)
    const tls = new URL(url).protocol === 'https:'
    const args = ['-t', '1', '-c', String(h2Clients), '-m', String(h2Streams), '-D', String(durationS), ...(tls ? ['--npn-list=h2'] : []), url]
    const rec = procs.spawn('h2load', this.bin, args, { cpus })
    const result = await finish(procs, rec, durationS)
    const raw = parseH2load(rec.out)
    if (result.code !== 0 || !raw) {
      throw new Error(`h2load failed (code ${result.code}, signal ${result.signal})\ncommand: ${rec.commandLine}\nstdout: ${rec.out.slice(-2000)}\nstderr: ${rec.err.slice(-2000)}`)
    }
    const want = tls ? 'h2' : 'h2c'
    if (raw.protocol !== want) throw new Error(`h2load negotiated ${raw.protocol ?? 'no protocol'}, expected ${want}\ncommand: ${rec.commandLine}\nstdout: ${rec.out.slice(-2000)}`)
    const r = raw.requests
    const t = raw.timeForRequestUs
    return {
      tool: 'h2load',
      commandLine: rec.commandLine,
      requests: r.done,
      durationS: raw.durationS,
      rps: raw.rps,
      latencyUs: { p50: undefined, p90: undefined, p99: undefined, min: t.min, max: t.max, mean: t.mean, sd: t.sd },
      errors: { failed: r.failed, errored: r.errored, timeout: r.timeout, total: r.failed },
      raw,
    }
  }
}

/** Waits for a load-generator process, killing it if it overruns its duration by 20 s. */
async function finish(procs, rec, durationS) {
  let timer
  const overrun = new Promise((resolve) => {
    timer = setTimeout(() => resolve('overrun'), (durationS + 20) * 1000)
  })
  const r = await Promise.race([rec.exit, overrun])
  clearTimeout(timer)
  if (r === 'overrun') {
    await procs.kill(rec.pid)
    throw new Error(`${rec.name} did not finish within ${durationS + 20} s; killed (pid ${rec.pid})`)
  }
  return r
}
