#!/usr/bin/env node
// `npm run bench`: proxies side by side against one fixed-response upstream, in one run,
// with ratios (the machine is small and shared, so only same-run comparisons mean much).
//
// Layout on a 2-core box: core 0 = fixed upstream + load generator (+ this runner),
// core 1 = the proxy under test, alone. See bench/README.md.
import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { cpus, loadavg, release, tmpdir, hostname } from 'node:os'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import http from 'node:http'
import https from 'node:https'
import http2 from 'node:http2'
import { Procs, CLK_TCK, cpuTicksOf, cpuSplitOf, which, coreTicks, cpuList } from './procs.mjs'
import { findLoadGenerator, findH2load } from './load.mjs'
import { pathToFileURL } from 'node:url'
import { TARGETS as BUILTIN_TARGETS } from './targets.mjs'
import { ensureExampleBinary as buildExample } from './examples.mjs'
import { fmtInt, fmtUs, fmtRatio, fmtPct, fmtCpu, table, median } from './format.mjs'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')

// Extra rows without editing this file: BENCH_TARGETS_MODULE=/path/to/extra.mjs, a module
// whose `TARGETS` (or default) export is an array of descriptors (see bench/targets.mjs).
const TARGETS = [...BUILTIN_TARGETS]
if (process.env.BENCH_TARGETS_MODULE) {
  const mod = await import(pathToFileURL(process.env.BENCH_TARGETS_MODULE).href)
  TARGETS.push(...(mod.TARGETS ?? mod.default ?? []))
}
const LOAD_CPUS = process.env.BENCH_LOAD_CPUS ?? '0'
const PROXY_CPUS = process.env.BENCH_PROXY_CPUS ?? '1'

const USAGE = `usage: node bench/run.mjs [options]   (npm run bench -- [options])
  --duration <s>        measured seconds per target (env BENCH_DURATION, default 10)
  --warmup <s>          warm-up seconds per target, not measured (env BENCH_WARMUP, default 2)
  --connections <n>     concurrent connections (env BENCH_CONNECTIONS, default 64)
  --only <a,b>          targets to run, of: ${TARGETS.map((t) => t.name).join(', ')} (env BENCH_ONLY)
  --rounds <n>          repeat the whole set n times, order rotated; median reported (env BENCH_ROUNDS, default 1)
  --loadgen <tool>      wrk | autocannon (env BENCH_LOADGEN; default wrk if installed)
  --velithon-workers <n> Velithon workerThreads (env BENCH_VELITHON_WORKERS, default 1)
  --upstream-threads <n> fixed upstream's tokio threads (env BENCH_UPSTREAM_THREADS, default 1)
  --h2-clients <n>      HTTP/2 rows: h2load connections (env BENCH_H2_CLIENTS, default 8)
  --h2-streams <n>      HTTP/2 rows: concurrent streams per connection (env BENCH_H2_STREAMS, default 16)
  --quiet-wait <s>      before each target, wait up to s seconds for both cores to be < 20% busy
                        (other tenants); 0 disables (env BENCH_QUIET_WAIT, default 30)
  --out <file>          JSON results (default bench/results/latest.json)`

function seconds(name, v) {
  const m = /^(\d+(?:\.\d+)?)(s|m)?$/.exec(String(v).trim())
  if (!m) throw new Error(`--${name} must be a number of seconds (e.g. 10 or 10s), got ${JSON.stringify(v)}`)
  const s = Number(m[1]) * (m[2] === 'm' ? 60 : 1)
  return Math.max(1, Math.round(s))
}
function count(name, v, max) {
  const n = Number(v)
  if (!Number.isInteger(n) || n < 1 || n > max) throw new Error(`--${name} must be a whole number from 1 to ${max}, got ${JSON.stringify(v)}`)
  return n
}

function parseOptions() {
  const { values } = parseArgs({
    options: {
      duration: { type: 'string' },
      warmup: { type: 'string' },
      connections: { type: 'string' },
      only: { type: 'string' },
      rounds: { type: 'string' },
      loadgen: { type: 'string' },
      'velithon-workers': { type: 'string' },
      'upstream-threads': { type: 'string' },
      'h2-clients': { type: 'string' },
      'h2-streams': { type: 'string' },
      out: { type: 'string' },
      'quiet-wait': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (values.help) {
    console.log(USAGE)
    process.exit(0)
  }
  const env = process.env
  const opts = {
    durationS: seconds('duration', values.duration ?? env.BENCH_DURATION ?? 10),
    warmupS: Number(values.warmup ?? env.BENCH_WARMUP ?? 2) === 0 ? 0 : seconds('warmup', values.warmup ?? env.BENCH_WARMUP ?? 2),
    connections: count('connections', values.connections ?? env.BENCH_CONNECTIONS ?? 64, 10_000),
    rounds: count('rounds', values.rounds ?? env.BENCH_ROUNDS ?? 1, 20),
    loadgen: values.loadgen ?? env.BENCH_LOADGEN,
    velithonWorkers: count('velithon-workers', values['velithon-workers'] ?? env.BENCH_VELITHON_WORKERS ?? 1, 256),
    upstreamThreads: count('upstream-threads', values['upstream-threads'] ?? env.BENCH_UPSTREAM_THREADS ?? 1, 256),
    h2Clients: count('h2-clients', values['h2-clients'] ?? env.BENCH_H2_CLIENTS ?? 8, 10_000),
    h2Streams: count('h2-streams', values['h2-streams'] ?? env.BENCH_H2_STREAMS ?? 16, 10_000),
    quietWaitS: Number(values['quiet-wait'] ?? env.BENCH_QUIET_WAIT ?? 30),
    out: values.out ?? env.BENCH_OUT ?? join(root, 'bench', 'results', 'latest.json'),
  }
  if (!Number.isFinite(opts.quietWaitS) || opts.quietWaitS < 0) throw new Error('--quiet-wait must be a number of seconds >= 0')
  if (opts.loadgen && !['wrk', 'autocannon'].includes(opts.loadgen)) throw new Error(`--loadgen must be wrk or autocannon, got ${JSON.stringify(opts.loadgen)}`)
  const only = values.only ?? env.BENCH_ONLY
  const names = TARGETS.map((t) => t.name)
  opts.only = only ? only.split(',').map((s) => s.trim()).filter(Boolean) : names
  for (const n of opts.only) if (!names.includes(n)) throw new Error(`--only: unknown target ${JSON.stringify(n)} (known: ${names.join(', ')})`)
  return opts
}

// ---------------------------------------------------------------- environment

function tryRun(cmd, args) {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim()
  } catch (e) {
    return `${e.stdout ?? ''}${e.stderr ?? ''}`.trim() || undefined
  }
}

function newestMtime(dir) {
  let newest = 0
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name)
    if (entry.isDirectory()) newest = Math.max(newest, newestMtime(p))
    else newest = Math.max(newest, statSync(p).mtimeMs)
  }
  return newest
}

function sha1(file) {
  return createHash('sha1').update(readFileSync(file)).digest('hex')
}

/**
 * Which cargo profile the addon at the package root came from: build-native.cjs copies
 * target/<profile>/lib….so, so compare with both. Returns { file, size, mtime, sha1, profile }.
 */
function addonIdentity() {
  const name = readdirSync(root).find((f) => /^velithon-gateway\..*\.node$/.test(f))
  if (!name) return undefined
  const file = join(root, name)
  const st = statSync(file)
  const id = { file: name, size: st.size, mtime: st.mtime.toISOString(), sha1: sha1(file), profile: 'unknown' }
  const targetDir = process.env.CARGO_TARGET_DIR ?? join(root, 'target')
  const lib = process.platform === 'darwin' ? 'libvelithon_gateway.dylib' : 'libvelithon_gateway.so'
  for (const profile of ['release', 'debug']) {
    const built = join(targetDir, profile, lib)
    if (existsSync(built) && statSync(built).size === st.size && sha1(built) === id.sha1) id.profile = profile
  }
  if (id.profile === 'unknown' && readFileSync(file).includes('.debug_info')) id.profile = 'debug?'
  return id
}

/** true, or why the velithon target cannot run. Warns (does not rebuild) when stale. */
function velithonReadiness(warnings, addonId) {
  const addon = addonId?.file
  if (!addon) return 'no native addon at the package root: run `node scripts/build-native.cjs && node scripts/build-ts.cjs`'
  if (!existsSync(join(root, 'dist', 'esm', 'index.js'))) return 'dist/esm/index.js missing: run `node scripts/build-ts.cjs`'
  if (addonId.profile.startsWith('debug') && !process.env.BENCH_ALLOW_DEBUG) {
    return `${addon} is a DEBUG build (same bytes as target/debug): run \`node scripts/build-native.cjs\` (release), or set BENCH_ALLOW_DEBUG=1`
  }
  if (addonId.profile.startsWith('debug')) warnings.push(`${addon} is a DEBUG build: the velithon row is not representative`)
  const addonTime = statSync(join(root, addon)).mtimeMs
  const srcTime = Math.max(newestMtime(join(root, 'crates')), statSync(join(root, 'Cargo.toml')).mtimeMs)
  if (srcTime > addonTime) warnings.push(`${addon} is older than crates/** — the velithon row measures a stale build (run \`node scripts/build-native.cjs\`)`)
  if (newestMtime(join(root, 'ts')) > newestMtime(join(root, 'dist', 'esm'))) warnings.push('dist/ is older than ts/ (run `node scripts/build-ts.cjs`)')
  return true
}

const ensureExampleBinary = (procs, example) => buildExample(root, procs, example)

/** Pins this runner (all its threads) to the load-generator core. */
function pinSelf() {
  try {
    execFileSync('taskset', ['-a', '-p', '-c', LOAD_CPUS, String(process.pid)], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

/**
 * Waits (up to maxS) until every core of the machine is < 20% busy over a 500 ms sample —
 * i.e. other tenants are quiet. Returns { waitedS, busy } (busy: last sample, per core).
 */
async function waitQuiet(maxS) {
  const all = cpus().map((_, i) => i)
  const t0 = Date.now()
  let busy = []
  for (;;) {
    const a = all.map((c) => coreTicks([c]))
    await new Promise((r) => setTimeout(r, 500))
    const b = all.map((c) => coreTicks([c]))
    busy = all.map((_, i) => (b[i].total - a[i].total ? (b[i].busy - a[i].busy) / (b[i].total - a[i].total) : 0))
    const waitedS = (Date.now() - t0) / 1000
    if (busy.every((x) => x < 0.2) || waitedS >= maxS) return { waitedS, busy, quiet: busy.every((x) => x < 0.2) }
  }
}

/**
 * One GET with a fresh connection: { status, body, headers, protocol, tls }. `https://`
 * URLs are checked against `ca` (HTTP/1.1, no ALPN, as wrk); `h2`: over HTTP/2 instead
 * (prior knowledge on http://, ALPN h2 on https://). `protocol` is what was spoken and
 * `tls` { version, cipher } what was negotiated (the load generator negotiates its own, with
 * the same server preferences).
 */
function get(url, { ca, h2 = false } = {}, timeoutMs = 5000) {
  const u = new URL(url)
  const isTls = u.protocol === 'https:'
  const tlsOf = (socket) => {
    try {
      return isTls ? { version: socket.getProtocol(), cipher: socket.getCipher()?.name, alpn: socket.alpnProtocol || undefined } : undefined
    } catch {
      return undefined
    }
  }
  if (h2) {
    return new Promise((resolve, reject) => {
      const session = http2.connect(u.origin, isTls ? { ca } : {})
      const fail = (e) => {
        clearTimeout(timer)
        session.destroy()
        reject(e)
      }
      const timer = setTimeout(() => fail(new Error(`HTTP/2 GET ${url} timed out`)), timeoutMs)
      session.on('error', fail)
      const req = session.request({ ':path': `${u.pathname}${u.search}` })
      let headers = {}
      let body = ''
      req.setEncoding('utf8')
      req.on('response', (h) => (headers = h))
      req.on('data', (d) => (body += d))
      req.on('error', fail)
      req.on('end', () => {
        clearTimeout(timer)
        const tls = tlsOf(session.socket)
        const protocol = session.alpnProtocol
        session.close()
        resolve({ status: headers[':status'], body, headers, protocol, tls })
      })
    })
  }
  return new Promise((resolve, reject) => {
    const req = (isTls ? https : http).get(url, { agent: false, timeout: timeoutMs, ...(isTls && { ca }) }, (res) => {
      let body = ''
      const tls = tlsOf(res.socket)
      res.setEncoding('utf8')
      res.on('data', (d) => (body += d))
      res.on('end', () => resolve({ status: res.statusCode, body, headers: res.headers, protocol: `http/${res.httpVersion}`, tls }))
    })
    req.on('timeout', () => req.destroy(new Error(`GET ${url} timed out`)))
    req.on('error', reject)
  })
}

/** Certificates for the TLS rows, made now (scripts/dev-certs.mjs), PEM files in `dir`. */
async function makeCerts(dir) {
  const { createCa } = await import('../scripts/dev-certs.mjs')
  const ca = await createCa('velithon bench CA')
  const leaf = await ca.issue({ hosts: ['127.0.0.1', 'localhost'], commonName: 'velithon bench' })
  mkdirSync(dir, { recursive: true })
  const files = { caFile: join(dir, 'ca.pem'), certFile: join(dir, 'cert.pem'), keyFile: join(dir, 'key.pem') }
  writeFileSync(files.caFile, ca.cert)
  writeFileSync(files.certFile, leaf.cert)
  writeFileSync(files.keyFile, leaf.key, { mode: 0o600 })
  return { ...files, ca: ca.cert }
}

// ---------------------------------------------------------------- main

async function measure(ctx, target, loadgen, expectBody) {
  const { options, procs } = ctx
  const handle = await target.start(ctx)
  try {
    const url = new URL(target.path ?? '/', handle.url).href
    if (new URL(url).hostname !== '127.0.0.1') throw new Error(`${target.name}: ${url} is not on 127.0.0.1`)
    const h2 = loadgen.tool === 'h2load'
    const probe = await get(url, { ca: ctx.certs?.ca, h2 })
    if (probe.status !== 200 || (expectBody !== undefined && probe.body !== expectBody)) {
      throw new Error(`${target.name}: preflight GET ${url} answered ${probe.status} ${JSON.stringify(probe.body.slice(0, 200))}, expected 200 ${JSON.stringify(expectBody)}`)
    }
    const quiet = options.quietWaitS > 0 ? await waitQuiet(options.quietWaitS) : undefined
    const run = { url, connections: options.connections, cpus: LOAD_CPUS, h2Clients: options.h2Clients, h2Streams: options.h2Streams }
    if (options.warmupS > 0) await loadgen.run(procs, { ...run, durationS: options.warmupS })
    const pids = handle.cpuPids()
    const upstreamPid = handle.upstreamPid ?? ctx.upstream.pid
    const upBefore = cpuTicksOf([upstreamPid])
    const coreBefore = coreTicks(cpuList(PROXY_CPUS))
    const before = cpuTicksOf(pids)
    const splitBefore = cpuSplitOf(pids)
    const t0 = process.hrtime.bigint()
    const r = await loadgen.run(procs, { ...run, durationS: options.durationS })
    const stillRunning = handle.cpuPids().filter((p) => pids.includes(p))
    const after = cpuTicksOf(stillRunning)
    const splitAfter = cpuSplitOf(stillRunning)
    const wallS = Number(process.hrtime.bigint() - t0) / 1e9
    const coreAfter = coreTicks(cpuList(PROXY_CPUS))
    const coreDelta = Object.fromEntries(Object.keys(coreAfter).map((k) => [k, coreAfter[k] - coreBefore[k]]))
    const upAfter = cpuTicksOf([upstreamPid])
    const cpuTicks = pids.length ? after - before : undefined
    const cpuS = cpuTicks === undefined ? undefined : cpuTicks / CLK_TCK
    const upCpuS = (upAfter - upBefore) / CLK_TCK
    return {
      target: target.name,
      url,
      proxyPids: pids,
      ...r,
      cpu: {
        ticks: cpuTicks,
        clkTck: CLK_TCK,
        seconds: cpuS,
        usPerRequest: cpuS === undefined ? undefined : (cpuS * 1e6) / r.requests,
        coresUsed: cpuS === undefined ? undefined : cpuS / wallS,
        // Share of that time spent in the kernel (stime; on loopback this includes the
        // receiving side's TCP processing, run in the sender's context).
        sysShare: cpuTicks ? (splitAfter.sys - splitBefore.sys) / cpuTicks : undefined,
        windowS: wallS,
      },
      upstreamCpu: { seconds: upCpuS, usPerRequest: (upCpuS * 1e6) / r.requests },
      // The proxy core(s) as a whole (/proc/stat): busy share; irq+softirq share (on this
      // kernel charged to the running task too, i.e. mostly inside the proxy's stime); and
      // busy time that was not the proxy process (other tenants, steal). High = noisy run.
      proxyCore: {
        ticks: coreDelta,
        busy: coreDelta.total ? coreDelta.busy / coreDelta.total : undefined,
        softirq: coreDelta.total ? (coreDelta.softirq + coreDelta.irq) / coreDelta.total : undefined,
        othersBusy: coreDelta.total ? Math.max(0, coreDelta.busy - (cpuTicks ?? 0)) / coreDelta.total : undefined,
      },
      quietBefore: quiet,
      preflight: { protocol: probe.protocol, tls: probe.tls },
      info: handle.info,
    }
  } finally {
    await target.stop(ctx, handle)
  }
}

async function main() {
  const options = parseOptions()
  const procs = new Procs()
  const warnings = []
  const started = new Date()
  const tmp = mkdtempSync(join(tmpdir(), 'velithon-bench-'))
  procs.onCleanup(() => rmSync(tmp, { recursive: true, force: true }))
  const selected = TARGETS.filter((t) => options.only.includes(t.name))
  // Bounded: everything after the (possible) cargo build must finish within this budget.
  const budgetS = options.rounds * selected.length * (options.warmupS + options.durationS + options.quietWaitS + 60) + 60
  let watchdog
  try {
    const pinned = pinSelf()
    const loadgen = findLoadGenerator({ root, prefer: options.loadgen, tmp })
    if (!loadgen) {
      console.error('bench: no load generator found. Install wrk (preferred): `apt-get install wrk` — or have autocannon installed.')
      process.exitCode = 1
      return
    }
    if (options.loadgen && loadgen.tool !== options.loadgen) warnings.push(`${options.loadgen} not found; using ${loadgen.tool}`)
    const upstreamBin = await ensureExampleBinary(procs, 'fixed-upstream')
    watchdog = setTimeout(() => {
      console.error(`bench: took longer than its ${budgetS} s budget; stopping everything`)
      procs
        .killAll()
        .then(() => rmSync(tmp, { recursive: true, force: true }))
        .finally(() => process.exit(1))
    }, budgetS * 1000)

    const addonId = addonIdentity()
    const velithonReady = velithonReadiness(warnings, addonId)
    const up = procs.spawn('fixed-upstream', upstreamBin, ['0', String(options.upstreamThreads)], { cpus: LOAD_CPUS })
    const [, upAddr] = await procs.waitFor(up, /listening on (127\.0\.0\.1:\d+)/)
    const upstream = { url: `http://${upAddr}`, port: Number(upAddr.split(':')[1]), pid: up.pid, command: up.commandLine }
    const expect = await get(`${upstream.url}/`)
    const ctx = {
      root, procs, tmp, upstream, proxyCpus: PROXY_CPUS, loadCpus: LOAD_CPUS, options, velithonReady, h2load: findH2load(),
      exampleBinary: (example) => ensureExampleBinary(procs, example),
    }
    // What the selected rows need: certificates (made now, never committed) and the fixed
    // upstream over HTTPS (a second one, same core, same answer).
    const needs = new Set(selected.flatMap((t) => t.needs ?? []))
    if (needs.has('certs') || needs.has('tls-upstream')) {
      try {
        ctx.certs = await makeCerts(join(tmp, 'certs'))
      } catch (e) {
        ctx.certsError = `${e.message.split('\n')[0]} (scripts/dev-certs.mjs needs the devDependencies @peculiar/x509 and reflect-metadata)`
      }
    }
    let tlsUp
    if (needs.has('tls-upstream') && ctx.certs) {
      try {
        tlsUp = procs.spawn('fixed-upstream --tls', upstreamBin, ['0', String(options.upstreamThreads), '--tls', ctx.certs.certFile, ctx.certs.keyFile], { cpus: LOAD_CPUS })
        const [, addr] = await procs.waitFor(tlsUp, /listening on (127\.0\.0\.1:\d+)/)
        const tlsUpstream = { url: `https://${addr}`, port: Number(addr.split(':')[1]), pid: tlsUp.pid, command: tlsUp.commandLine }
        const probe = await get(`${tlsUpstream.url}/`, { ca: ctx.certs.ca })
        if (probe.status !== 200 || probe.body !== expect.body) throw new Error(`GET ${tlsUpstream.url}/ answered ${probe.status} ${JSON.stringify(probe.body.slice(0, 200))}`)
        ctx.tlsUpstream = tlsUpstream
      } catch (e) {
        ctx.tlsUpstreamError = e.message.split('\n')[0]
        if (tlsUp && !tlsUp.exited) await procs.kill(tlsUp.pid)
        tlsUp = undefined
      }
    }
    const usesH2 = selected.some((t) => t.loadgen === 'h2load')

    // ---- header
    const cpuModel = cpus()[0]?.model ?? 'unknown CPU'
    const cmdline = [relative(root, process.argv[1]) === 'bench/run.mjs' ? 'node bench/run.mjs' : process.argv.slice(0, 2).join(' '), ...process.argv.slice(2)].join(' ')
    const viaNpm = process.env.npm_lifecycle_event === 'bench'
    const versions = {
      node: process.version,
      loadgen: loadgen.tool === 'wrk' ? tryRun(loadgen.bin, ['--version'])?.split('\n')[0] : `autocannon (${loadgen.bin})`,
      nginx: selected.some((t) => t.name.startsWith('nginx')) ? tryRun(which('nginx', ['/usr/sbin/nginx']) ?? 'nginx', ['-v']) : undefined,
      h2load: usesH2 && ctx.h2load ? tryRun(ctx.h2load.bin, ['--version'])?.split('\n')[0] : undefined,
    }
    const header = [
      `## velithon-gateway proxy benchmark — ${started.toISOString()}`,
      '',
      `command: \`${viaNpm ? `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}` : cmdline}\` (runs \`${cmdline}\`, cwd ${root})`,
      `machine: ${hostname()}, ${cpus().length} × ${cpuModel}, Linux ${release()}, load average before ${loadavg().map((l) => l.toFixed(2)).join(' ')}; ${versions.node}; ${versions.loadgen}${versions.h2load ? `; ${versions.h2load}` : ''}${versions.nginx ? `; ${versions.nginx}` : ''}`,
      `layout: core ${LOAD_CPUS} = fixed upstream (${options.upstreamThreads} tokio thread${options.upstreamThreads > 1 ? 's' : ''}, pid ${up.pid}${ctx.tlsUpstream ? `; and the same over HTTPS, pid ${ctx.tlsUpstream.pid}` : ''}) + ${loadgen.tool}${usesH2 && ctx.h2load ? ' / h2load' : ''} (1 thread) + this runner${pinned ? '' : ' (runner not pinned)'}; core ${PROXY_CPUS} = the proxy under test alone (taskset -c ${PROXY_CPUS})`,
      `load: ${loadgen.tool}, ${options.connections} keep-alive connections, GET / (${Buffer.byteLength(expect.body)}-byte 200 body), ${options.warmupS} s warm-up + ${options.durationS} s measured per target, ${options.rounds} round${options.rounds > 1 ? 's (order rotated; median by req/s)' : ''}${usesH2 ? `; HTTP/2 rows: h2load -c ${options.h2Clients} -m ${options.h2Streams} (${options.h2Clients * options.h2Streams} concurrent streams), no percentiles (mean of its "time for request")` : ''}`,
      `addon: ${addonId ? `${addonId.file} (${addonId.profile} build, ${(addonId.size / 1e6).toFixed(1)} MB, ${addonId.mtime}, sha1 ${addonId.sha1.slice(0, 12)})` : 'none'}`,
      `CPU µs/req: utime+stime of the proxy process (all threads; nginx: master + worker) from /proc/<pid>/stat around the measured window, CLK_TCK ${CLK_TCK}; ratios are req/s ÷ the reference's req/s`,
    ]
    console.log(header.join('\n'))
    for (const w of warnings) console.log(`warning: ${w}`)
    const headerWarnings = warnings.length
    console.log('')

    // ---- runs
    const runs = new Map(selected.map((t) => [t.name, []]))
    const skipped = new Map()
    for (let round = 0; round < options.rounds; round++) {
      const order = selected.map((_, i) => selected[(i + round) % selected.length])
      for (const target of order) {
        const avail = target.available(ctx)
        if (avail !== true) {
          skipped.set(target.name, avail)
          continue
        }
        const lg = target.loadgen === 'h2load' ? ctx.h2load : loadgen
        if (!lg) {
          skipped.set(target.name, `${target.loadgen} not installed`)
          continue
        }
        process.stderr.write(`bench: round ${round + 1}/${options.rounds}: ${target.name}…`)
        try {
          const r = await measure(ctx, target, lg, expect.body)
          runs.get(target.name).push(r)
          process.stderr.write(` ${fmtInt(r.rps)} req/s${r.cpu.usPerRequest !== undefined ? `, ${fmtCpu(r.cpu.usPerRequest)} CPU µs/req` : ''}\n`)
        } catch (e) {
          process.stderr.write(' failed\n')
          skipped.set(target.name, `failed: ${e.message.split('\n')[0]}`)
          runs.get(target.name).push({ target: target.name, error: e.message })
        }
      }
    }
    const addonAfter = addonIdentity()
    if (addonId && addonAfter?.sha1 !== addonId.sha1) warnings.push(`${addonId.file} changed during the run (someone rebuilt it): the velithon rows may mix builds`)
    if (up.exited) warnings.push(`the fixed upstream exited during the run (code ${up.code})`)
    if (tlsUp?.exited) warnings.push(`the fixed upstream over HTTPS exited during the run (code ${tlsUp.code})`)
    if (ctx.certsError) warnings.push(`no certificates for the TLS rows: ${ctx.certsError}`)
    if (ctx.tlsUpstreamError) warnings.push(`the fixed upstream over HTTPS did not start: ${ctx.tlsUpstreamError}`)

    // ---- summary
    const summary = new Map()
    for (const [name, list] of runs) {
      const ok = list.filter((r) => !r.error)
      if (ok.length === 0) continue
      const med = median(ok.map((r) => r.rps))
      summary.set(name, ok.find((r) => r.rps === med))
    }
    const ref = (n) => summary.get(n)?.rps
    const rows = []
    for (const t of selected) {
      const s = summary.get(t.name)
      if (!s) {
        rows.push([t.name, '—', '—', '—', '—', '—', '—', '—', '—', '—'].map((c, i) => (i === 1 ? `skipped: ${skipped.get(t.name) ?? 'no result'}` : c)))
        continue
      }
      const e = s.errors
      const parts = Object.entries(e).filter(([k, v]) => k !== 'total' && v > 0).map(([k, v]) => `${k} ${v}`)
      rows.push([
        t.name,
        fmtInt(s.rps),
        fmtUs(s.latencyUs.p50),
        fmtUs(s.latencyUs.p99),
        fmtUs(s.latencyUs.mean),
        e.total ? `${e.total} (${parts.join(', ')})` : '0',
        fmtCpu(s.cpu.usPerRequest),
        fmtRatio(s.rps, ref('direct')),
        fmtRatio(s.rps, ref('http-proxy')),
        fmtRatio(s.rps, ref('nginx')),
      ])
    }
    console.log(table(['target', 'req/s', 'p50', 'p99', 'mean', 'errors', 'CPU µs/req', 'vs direct', 'vs http-proxy', 'vs nginx'], rows, ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r']))
    console.log('')
    // Pairs a row names in `compare` (e.g. velithon-https vs velithon), when both ran.
    const pairs = []
    for (const t of selected) {
      const a = summary.get(t.name)
      for (const other of t.compare ?? []) {
        const b = summary.get(other)
        if (!a || !b) continue
        const cpuA = a.cpu.usPerRequest
        const cpuB = b.cpu.usPerRequest
        pairs.push([
          t.name,
          other,
          fmtRatio(a.rps, b.rps),
          cpuA !== undefined && cpuB ? `${(cpuA / cpuB).toFixed(2)}×` : '—',
          cpuA !== undefined && cpuB !== undefined ? `${cpuA - cpuB >= 0 ? '+' : ''}${(cpuA - cpuB).toFixed(1)}` : '—',
        ])
      }
    }
    if (pairs.length) {
      console.log(table(['target', 'compared with', 'req/s ratio', 'CPU/req ratio', 'CPU µs/req difference'], pairs, ['l', 'l', 'r', 'r', 'r']))
      console.log('')
    }
    const details = []
    for (const t of selected) {
      const s = summary.get(t.name)
      if (!s) continue
      const ng = summary.get('nginx')?.cpu.usPerRequest
      details.push([
        t.name,
        s.cpu.coresUsed === undefined ? '—' : s.cpu.coresUsed.toFixed(2),
        ng && s.cpu.usPerRequest !== undefined ? `${(s.cpu.usPerRequest / ng).toFixed(2)}×` : '—',
        s.cpu.sysShare === undefined ? '—' : `${fmtCpu(s.cpu.usPerRequest * (1 - s.cpu.sysShare))} / ${fmtCpu(s.cpu.usPerRequest * s.cpu.sysShare)}`,
        fmtCpu(s.upstreamCpu.usPerRequest),
        fmtPct(s.proxyCore.busy),
        fmtPct(s.proxyCore.softirq),
        fmtPct(s.proxyCore.othersBusy),
        fmtInt(s.requests),
        fmtUs(s.latencyUs.p90),
        fmtUs(s.latencyUs.max),
      ])
    }
    if (details.length) console.log(table(['target', 'proxy cores used', 'CPU/req vs nginx', 'user / kernel µs/req', 'upstream CPU µs/req', `core ${PROXY_CPUS} busy`, 'irq+softirq', 'not the proxy', 'requests', 'p90', 'max'], details, ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r']))
    if (loadgen.statusNote) console.log(`\nerrors: ${loadgen.statusNote}; socket errors and timeouts are counted too.`)
    if (selected.some((t) => t.loadgen === 'h2load' && summary.get(t.name))) {
      console.log(`errors (HTTP/2 rows): ${ctx.h2load.statusNote}. h2load prints no percentiles: p50/p99 are "—"; mean is its "time for request" mean (also in the JSON: min, max, sd).`)
    }
    const tlsNotes = selected
      .map((t) => [t.name, summary.get(t.name)?.preflight])
      .filter(([, p]) => p?.tls)
      .map(([n, p]) => `${n} ${p.tls.version} ${p.tls.cipher}${p.protocol ? ` (${p.protocol})` : ''}`)
    if (tlsNotes.length) console.log(`TLS (negotiated by the preflight client): ${tlsNotes.join('; ')}`)
    for (const t of selected) if (t.describe) console.log(`- ${t.name}: ${t.describe}`)
    for (const [name, list] of runs) {
      for (const r of list) {
        if (r.error) continue
        if (r.proxyCore?.othersBusy > 0.1) warnings.push(`noisy: during ${name}, other processes used ${fmtPct(r.proxyCore.othersBusy)} of core ${PROXY_CPUS} — compare with care, or rerun (--rounds 3)`)
        if (r.quietBefore && !r.quietBefore.quiet) warnings.push(`noisy: before ${name} the machine was still busy after ${r.quietBefore.waitedS.toFixed(0)} s (cores ${r.quietBefore.busy.map(fmtPct).join(' / ')})`)
      }
    }
    for (const w of warnings.slice(headerWarnings)) console.log(`warning: ${w}`)

    // ---- JSON
    const results = {
      date: started.toISOString(),
      command: cmdline,
      viaNpm,
      cwd: root,
      machine: { hostname: hostname(), cpus: cpus().length, cpuModel, kernel: release(), loadavgBefore: loadavg(), clkTck: CLK_TCK },
      layout: { loadCpus: LOAD_CPUS, proxyCpus: PROXY_CPUS, upstream: upstream.command, tlsUpstream: ctx.tlsUpstream?.command, runnerPinned: pinned },
      versions,
      addon: addonId,
      options,
      loadgen: loadgen.tool,
      h2load: usesH2 ? ctx.h2load?.bin ?? 'not installed' : undefined,
      targets: selected.map((t) => ({ name: t.name, describe: t.describe, path: t.path, loadgen: t.loadgen ?? loadgen.tool, skipped: skipped.get(t.name), summary: summary.get(t.name), runs: runs.get(t.name) })),
      warnings,
    }
    mkdirSync(dirname(options.out), { recursive: true })
    writeFileSync(options.out, `${JSON.stringify(results, null, 2)}\n`)
    console.log(`\nraw results: ${relative(process.cwd(), options.out) || options.out}`)
    if ([...runs.values()].some((l) => l.some((r) => r.error))) process.exitCode = 1
  } finally {
    clearTimeout(watchdog)
    await procs.killAll()
    rmSync(tmp, { recursive: true, force: true })
  }
}

main().catch((e) => {
  console.error(`bench: ${e.stack ?? e}`)
  process.exitCode = 1
})
