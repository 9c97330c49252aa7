/**
 * A real redis-server for the Redis-store suites: spawned on 127.0.0.1 with no
 * persistence, ready once it answers PING on a raw TCP socket, killed by its PID.
 * Every server started here is stopped after the test (registered with `defer`).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import net from 'node:net'
import { defer, refusedPort, sleep, withTimeout } from './net'

const CANDIDATES = ['/usr/bin/redis-server', '/usr/local/bin/redis-server']

/** Where redis-server is, or undefined when it is not installed. */
export function redisServerPath(): string | undefined {
  return CANDIDATES.find((p) => existsSync(p))
}

export interface RedisServer {
  readonly port: number
  /** `redis://127.0.0.1:<port>` */
  readonly url: string
  readonly pid: number
  /** Whether the process is still running. */
  readonly running: boolean
  /** Kills the process (SIGKILL by default: an abrupt outage) and waits for it to exit. */
  stop(signal?: NodeJS.Signals): Promise<void>
}

/**
 * One RESP command (or several, pipelined) over a fresh TCP connection; resolves with
 * the raw replies (e.g. `+PONG\r\n`). Every reply must be one line (+OK, :1, -ERR …),
 * which is all these suites ask for. Rejects on a connect error or after `timeoutMs`.
 */
export function redisCommand(port: number, command: string[] | string[][], timeoutMs = 1_000): Promise<string> {
  const commands = Array.isArray(command[0]) ? (command as string[][]) : [command as string[]]
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1')
    let reply = ''
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new Error(`redis on port ${port}: no reply to ${commands.map((c) => c[0]).join(', ')} within ${timeoutMs} ms`))
    }, timeoutMs)
    socket.setEncoding('latin1')
    socket.on('connect', () => {
      socket.write(commands.map((args) => `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`).join(''))
    })
    socket.on('data', (chunk: string) => {
      reply += chunk
      if (reply.split('\r\n').length - 1 >= commands.length) {
        clearTimeout(timer)
        socket.destroy()
        resolve(reply)
      }
    })
    socket.on('error', (err) => {
      clearTimeout(timer)
      reject(err)
    })
  })
}

/** Resolves once redis on `port` answers PING with +PONG (or rejects after `ms`). */
export async function waitForPong(port: number, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms
  let last: unknown
  for (;;) {
    try {
      const reply = await redisCommand(port, ['PING'], 500)
      if (reply.startsWith('+PONG')) return
      last = new Error(`unexpected reply ${JSON.stringify(reply)}`)
    } catch (err) {
      last = err
    }
    if (Date.now() > deadline) throw new Error(`redis on port ${port} did not answer PING within ${ms} ms: ${String(last)}`)
    await sleep(20)
  }
}

/** Resolves once redis on `port` accepts AUTH `password` (or rejects after `ms`). */
async function waitForAuth(port: number, password: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms
  let last: unknown
  for (;;) {
    try {
      const reply = await redisCommand(port, ['AUTH', password], 500)
      if (reply.startsWith('+OK')) return
      last = new Error(`unexpected reply ${JSON.stringify(reply)}`)
    } catch (err) {
      last = err
    }
    if (Date.now() > deadline) throw new Error(`redis on port ${port} did not accept AUTH within ${ms} ms: ${String(last)}`)
    await sleep(20)
  }
}

/**
 * Starts `redis-server --port <port> --save '' --appendonly no` (a free port unless
 * given; give the same port again to restart after `stop()`). `password` sets
 * `--requirepass` (PING then needs AUTH, so readiness is checked with AUTH + PING).
 */
export async function startRedis(port?: number, password?: string): Promise<RedisServer> {
  const bin = redisServerPath()
  if (!bin) throw new Error('redis-server is not installed')
  const chosen = port ?? (await refusedPort())
  const child: ChildProcess = spawn(
    bin,
    [
      '--port', String(chosen), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'no', '--loglevel', 'warning',
      ...(password === undefined ? [] : ['--requirepass', password]),
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  )
  let stderr = ''
  child.stderr?.setEncoding('utf8')
  child.stderr?.on('data', (c: string) => {
    stderr += c
  })
  let exited = false
  const exit = new Promise<void>((resolve) => {
    child.once('exit', () => {
      exited = true
      resolve()
    })
    child.once('error', () => {
      exited = true
      resolve()
    })
  })
  if (child.pid === undefined) throw new Error(`could not spawn ${bin}`)
  const pid = child.pid

  const stop = async (signal: NodeJS.Signals = 'SIGKILL'): Promise<void> => {
    if (!exited) {
      try {
        process.kill(pid, signal)
      } catch {
        // already gone
      }
    }
    await withTimeout(exit, 10_000, `redis-server (pid ${pid}) to exit`)
  }
  defer(() => stop())

  try {
    await Promise.race([
      password === undefined ? waitForPong(chosen) : waitForAuth(chosen, password),
      exit.then(() => {
        throw new Error(`redis-server exited at start (port ${chosen}): ${stderr.trim()}`)
      }),
    ])
  } catch (err) {
    await stop()
    throw err
  }
  return {
    port: chosen,
    url: `redis://127.0.0.1:${chosen}`,
    pid,
    get running() {
      return !exited
    },
    stop,
  }
}
