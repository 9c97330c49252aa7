// Child-process bookkeeping for the benchmark: every process we start is tracked by PID
// and killed by PID at the end (normal exit, error, SIGINT/SIGTERM). Also CPU-time reads
// from /proc/<pid>/stat.
import { spawn, execFileSync } from 'node:child_process'
import { accessSync, constants, existsSync, readFileSync, readdirSync } from 'node:fs'

/** Clock ticks per second for /proc/<pid>/stat utime/stime (`getconf CLK_TCK`). */
export const CLK_TCK = (() => {
  try {
    const n = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim())
    if (Number.isFinite(n) && n > 0) return n
  } catch {}
  return 100
})()

/** Fields of /proc/<pid>/stat after the `(comm)` field; index 0 is field 3 (state). */
function statFields(pid) {
  const text = readFileSync(`/proc/${pid}/stat`, 'utf8')
  return text.slice(text.lastIndexOf(')') + 2).trim().split(/\s+/)
}

/**
 * utime + stime of a process, in clock ticks. For the main PID of a multi-threaded process
 * this already totals all its threads (live ones, plus the ones that exited).
 * Returns NaN if the process is gone.
 */
export function cpuTicks(pid) {
  try {
    const f = statFields(pid)
    return Number(f[11]) + Number(f[12]) // fields 14 (utime) and 15 (stime)
  } catch {
    return NaN
  }
}

/** utime and stime of a process, in clock ticks ({ user: NaN, sys: NaN } if it is gone). */
export function cpuSplit(pid) {
  try {
    const f = statFields(pid)
    return { user: Number(f[11]), sys: Number(f[12]) }
  } catch {
    return { user: NaN, sys: NaN }
  }
}

/** Sum of cpuSplit over PIDs. */
export function cpuSplitOf(pids) {
  return pids.reduce((sum, pid) => {
    const s = cpuSplit(pid)
    return { user: sum.user + s.user, sys: sum.sys + s.sys }
  }, { user: 0, sys: 0 })
}

/** Sum of cpuTicks over PIDs. */
export function cpuTicksOf(pids) {
  return pids.reduce((sum, pid) => sum + cpuTicks(pid), 0)
}

/** Direct children of `pid` (scans /proc; no CONFIG_PROC_CHILDREN needed). */
export function childrenOf(pid) {
  const kids = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      if (Number(statFields(entry)[1]) === pid) kids.push(Number(entry))
    } catch {}
  }
  return kids
}

export function alive(pid) {
  try {
    // A zombie still has /proc/<pid>; treat it as gone.
    return existsSync(`/proc/${pid}`) && statFields(pid)[0] !== 'Z'
  } catch {
    return false
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** Finds an executable in PATH (and optional extra absolute candidates). */
export function which(name, extra = []) {
  const dirs = (process.env.PATH || '').split(':').filter(Boolean)
  for (const candidate of [...dirs.map((d) => `${d}/${name}`), ...extra]) {
    try {
      accessSync(candidate, constants.X_OK)
      return candidate
    } catch {}
  }
  return undefined
}

export class Procs {
  /** @type {Map<number, { name: string, child?: import('node:child_process').ChildProcess }>} */
  #live = new Map()
  #cleaning

  constructor() {
    const onSignal = (sig) => {
      process.stderr.write(`\nbench: ${sig}, stopping every process started…\n`)
      this.killAll()
        .then(() => this.#runCleanups())
        .finally(() => process.exit(sig === 'SIGINT' ? 130 : 143))
    }
    process.once('SIGINT', onSignal)
    process.once('SIGTERM', onSignal)
    process.once('SIGHUP', onSignal)
    // Last resort if we exit without cleanup (uncaught error): SIGKILL synchronously.
    process.on('exit', () => {
      for (const pid of this.#live.keys()) {
        try {
          process.kill(pid, 'SIGKILL')
        } catch {}
      }
    })
  }

  #cleanups = []

  /** Runs `fn` (sync) after the processes are killed on a signal (e.g. removing a temp dir). */
  onCleanup(fn) {
    this.#cleanups.push(fn)
  }

  #runCleanups() {
    for (const fn of this.#cleanups.splice(0)) {
      try {
        fn()
      } catch {}
    }
  }

  /** PIDs still tracked (for the report). */
  get pids() {
    return [...this.#live.keys()]
  }

  /**
   * Spawns and tracks a process. Its stdout/stderr are kept (last 64 KiB) for diagnostics
   * and for waitFor(). `cpus`: a taskset CPU list (e.g. '1') to pin it.
   */
  spawn(name, cmd, args = [], { cpus, cwd, env } = {}) {
    const [file, argv] = cpus === undefined ? [cmd, args] : ['taskset', ['-c', String(cpus), cmd, ...args]]
    const child = spawn(file, argv, { cwd, env: env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] })
    const rec = { name, child, out: '', err: '', exited: false, code: null, signal: null }
    child.stdout.setEncoding('utf8')
    child.stderr.setEncoding('utf8')
    child.stdout.on('data', (d) => (rec.out = (rec.out + d).slice(-65536)))
    child.stderr.on('data', (d) => (rec.err = (rec.err + d).slice(-65536)))
    rec.exit = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        rec.exited = true
        rec.code = code
        rec.signal = signal
        this.#live.delete(child.pid)
        resolve({ code, signal })
      })
      child.on('error', (error) => {
        rec.exited = true
        rec.error = error
        if (child.pid) this.#live.delete(child.pid)
        resolve({ code: null, signal: null, error })
      })
    })
    if (child.pid) this.#live.set(child.pid, rec)
    rec.commandLine = [file, ...argv].join(' ')
    rec.pid = child.pid
    return rec
  }

  /** Tracks a PID we did not spawn directly (e.g. an nginx worker) so it is killed too. */
  adopt(name, pid) {
    if (!this.#live.has(pid)) this.#live.set(pid, { name, adopted: true })
  }

  /** Stops tracking a PID that is already gone. */
  forget(pid) {
    this.#live.delete(pid)
  }

  /** Waits until `regex` matches the process's stdout (or stderr); resolves to the match. */
  async waitFor(rec, regex, timeoutMs = 15_000) {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const m = regex.exec(rec.out) ?? regex.exec(rec.err)
      if (m) return m
      if (rec.exited) {
        throw new Error(
          `${rec.name} exited (code ${rec.code}, signal ${rec.signal}${rec.error ? `, ${rec.error.message}` : ''}) before printing ${regex}\n` +
            `command: ${rec.commandLine}\nstdout: ${rec.out.slice(-2000)}\nstderr: ${rec.err.slice(-2000)}`,
        )
      }
      if (Date.now() > deadline) {
        throw new Error(`${rec.name} did not print ${regex} within ${timeoutMs} ms\ncommand: ${rec.commandLine}\nstderr: ${rec.err.slice(-2000)}`)
      }
      await sleep(20)
    }
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the PID is gone. */
  async kill(pid, graceMs = 3000) {
    const rec = this.#live.get(pid)
    if (!rec) return
    if (rec.adopted && !alive(pid)) return void this.#live.delete(pid)
    try {
      process.kill(pid, 'SIGTERM')
    } catch {}
    const deadline = Date.now() + graceMs
    while (Date.now() < deadline) {
      if (rec.child ? rec.exited : !alive(pid)) break
      await sleep(20)
    }
    if (rec.child ? !rec.exited : alive(pid)) {
      try {
        process.kill(pid, 'SIGKILL')
      } catch {}
      if (rec.child) await Promise.race([rec.exit, sleep(2000)])
      else for (let i = 0; i < 100 && alive(pid); i++) await sleep(20)
    }
    this.#live.delete(pid)
  }

  /** Kills every tracked PID (spawned ones first, then adopted ones). */
  killAll() {
    this.#cleaning ??= (async () => {
      const entries = [...this.#live.entries()]
      const spawned = entries.filter(([, r]) => !r.adopted).map(([pid]) => pid)
      const adopted = entries.filter(([, r]) => r.adopted).map(([pid]) => pid)
      await Promise.all(spawned.map((pid) => this.kill(pid)))
      await Promise.all(adopted.map((pid) => this.kill(pid)))
    })()
    return this.#cleaning.finally(() => (this.#cleaning = undefined))
  }
}

/** Expands a taskset CPU list ('1', '0,2', '1-3') to numbers. */
export function cpuList(spec) {
  const out = []
  for (const part of String(spec).split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim())
    if (!m) continue
    for (let c = Number(m[1]); c <= Number(m[2] ?? m[1]); c++) out.push(c)
  }
  return out
}

/**
 * Per-core time from /proc/stat (clock ticks), summed over `cpus`:
 * { busy, idle, softirq, irq, steal, total }. busy = user+nice+system+irq+softirq+steal.
 */
export function coreTicks(cpus) {
  const want = new Set(cpus.map((c) => `cpu${c}`))
  const sum = { busy: 0, idle: 0, softirq: 0, irq: 0, steal: 0, total: 0 }
  for (const line of readFileSync('/proc/stat', 'utf8').split('\n')) {
    const f = line.trim().split(/\s+/)
    if (!want.has(f[0])) continue
    const [user, nice, system, idle, iowait, irq, softirq, steal] = f.slice(1, 9).map(Number)
    sum.busy += user + nice + system + irq + softirq + steal
    sum.idle += idle + iowait
    sum.softirq += softirq
    sum.irq += irq
    sum.steal += steal
  }
  sum.total = sum.busy + sum.idle
  return sum
}
