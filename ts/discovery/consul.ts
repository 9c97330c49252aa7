/**
 * Consul's health API as a discovery source: `GET /v1/health/service/<name>?passing=true`
 * lists the instances whose checks all pass; `watch` follows it with blocking queries
 * (https://developer.hashicorp.com/consul/api-docs/features/blocking).
 *
 * Requests go through node:http / node:https rather than the global fetch: a watch unrefs
 * its socket (so a held blocking query never keeps the process alive), owns a one-socket
 * keep-alive agent it destroys at `stop`, and has no client-side header timeout shorter
 * than a long `wait`.
 */
import http from 'node:http'
import https from 'node:https'
import net from 'node:net'
import { ConfigError, ErrorCodes, type ErrorCode } from '../errors'
import { duration, knownKeys, object, show, type Duration } from '../options'
import {
  Pause,
  ServiceDiscoveryError,
  WatchChannel,
  atLeast,
  choiceOption,
  portOption,
  serverUrl,
  serviceName,
} from './follow'
import type { ServiceDiscovery } from './index'

export interface ConsulServiceDiscoveryOptions {
  /** Consul agent host name or IP address (no scheme, no port). Default `'127.0.0.1'`. */
  consulHost?: string
  /** Consul HTTP API port. Default `8500`. */
  consulPort?: number
  /** How to talk to Consul. Default `'http'`. */
  scheme?: 'http' | 'https'
  /** An ACL token, sent as `X-Consul-Token`. */
  token?: string
  /**
   * The pause after a failed request before the next try (plus up to 10% jitter), and the
   * polling period when Consul's answers carry no usable `X-Consul-Index`. Default `'30s'`.
   */
  refreshInterval?: Duration
  /** How long Consul may hold a blocking query, `'1s'` to `'10m'` (Consul's limit). Default `'55s'`. */
  wait?: Duration
  /** The time limit of a plain request, and the margin a blocking query gets beyond `wait`. Default `'10s'`. */
  timeout?: Duration
  /** Ask this datacenter (`dc=`) instead of the agent's own. */
  datacenter?: string
  /** Only instances carrying this tag (`tag=`). */
  tag?: string
}

const OWNER = 'ConsulServiceDiscovery'
const KNOWN = ['consulHost', 'consulPort', 'scheme', 'token', 'refreshInterval', 'wait', 'timeout', 'datacenter', 'tag'] as const
/** A watch never starts requests closer together than this, whatever Consul answers. */
const MIN_REQUEST_GAP_MS = 100
/** Consul's own ceiling for `wait`. */
const MAX_WAIT_MS = 10 * 60_000
/** More than any real health listing; a bigger body is treated as a protocol error. */
const MAX_BODY_BYTES = 32 * 1024 * 1024

/** What one health query produced. */
interface HealthAnswer {
  servers: string[]
  /** `X-Consul-Index` when it is a whole number, else undefined (no blocking possible). */
  index: number | undefined
}

/** A request under way; `abort` ends it (its promise then rejects with `AbortedByStop`). */
interface PendingQuery {
  done: Promise<HealthAnswer>
  abort(): void
}

class AbortedByStop extends Error {}

/** Healthy instances of Consul services. */
export class ConsulServiceDiscovery implements ServiceDiscovery {
  /** Where Consul is asked, e.g. `'http://127.0.0.1:8500'`. */
  readonly consulUrl: string
  readonly #host: string
  readonly #port: number
  readonly #scheme: 'http' | 'https'
  readonly #token: string | undefined
  readonly #refreshMs: number
  readonly #waitMs: number
  readonly #timeoutMs: number
  readonly #datacenter: string | undefined
  readonly #tag: string | undefined

  constructor(options: ConsulServiceDiscoveryOptions = {}) {
    const opts = object(OWNER, options)
    knownKeys(OWNER, opts, KNOWN)
    this.#host = consulHost(opts.consulHost)
    this.#port = portOption(OWNER, 'consulPort', opts.consulPort, 8500)
    this.#scheme = choiceOption(OWNER, 'scheme', opts.scheme, ['http', 'https'] as const, 'http')
    this.#token = token(opts.token)
    this.#refreshMs = atLeast(OWNER, 'refreshInterval', duration(OWNER, 'refreshInterval', opts.refreshInterval, 30_000), 1, '1 ms')
    this.#waitMs = atLeast(OWNER, 'wait', duration(OWNER, 'wait', opts.wait, 55_000), 1000, "'1s'")
    if (this.#waitMs > MAX_WAIT_MS) {
      throw new ConfigError('wait', `${OWNER}: option "wait" must be at most '10m' (Consul's limit for blocking queries), got ${show(opts.wait)}`)
    }
    this.#timeoutMs = atLeast(OWNER, 'timeout', duration(OWNER, 'timeout', opts.timeout, 10_000), 1, '1 ms')
    this.#datacenter = queryWord('datacenter', opts.datacenter, /^[A-Za-z0-9_.-]+$/, 'letters, digits, ".", "_" or "-"')
    this.#tag = queryWord('tag', opts.tag, /^[^\s\x00-\x1f\x7f]+$/, 'visible characters without spaces')
    this.consulUrl = serverUrl(this.#scheme, this.#host, this.#port)
  }

  /** The healthy instances of `service`, as URLs; `Service.Meta.scheme === 'https'` gives an https URL. */
  async getHealthyServers(service: string): Promise<string[]> {
    const name = serviceName(OWNER, service)
    const answer = await this.#query(name, 0, false, this.#timeoutMs, false).done
    return answer.servers
  }

  /** The same as `getHealthyServers`. */
  getServers(service: string): Promise<string[]> {
    return this.getHealthyServers(service)
  }

  /**
   * Follows `service` with blocking queries: each request carries the previous answer's
   * `X-Consul-Index` and `wait`, so Consul answers as soon as the instances change. The
   * index is reset (a plain read follows) when it goes backwards and after a failure; a
   * failure waits `refreshInterval` (with jitter) before the next try.
   */
  watch(service: string, onChange: (servers: string[]) => void, onError: (error: Error) => void): () => void {
    const name = serviceName(OWNER, service)
    const channel = new WatchChannel(OWNER, onChange, onError)
    const Agent = this.#scheme === 'https' ? https.Agent : http.Agent
    const agent = new Agent({ keepAlive: true, maxSockets: 1 })
    const pause = new Pause()
    let pending: PendingQuery | undefined

    const run = async (): Promise<void> => {
      let index = 0
      let lastStart = -Infinity
      while (!channel.stopped) {
        const gap = lastStart + MIN_REQUEST_GAP_MS - Date.now()
        if (gap > 0) await pause.wait(gap)
        if (channel.stopped) return
        lastStart = Date.now()
        const limit = index > 0 ? this.#waitMs + this.#waitMs / 16 + this.#timeoutMs : this.#timeoutMs
        pending = this.#query(name, index, agent, limit, true)
        let answer: HealthAnswer
        try {
          answer = await pending.done
        } catch (err) {
          pending = undefined
          if (channel.stopped) return
          channel.fail(err instanceof Error ? err : new Error(String(err)))
          index = 0 // Consul may have restarted with lower indexes: start over with a plain read
          await pause.wait(jittered(this.#refreshMs))
          continue
        }
        pending = undefined
        if (channel.stopped) return
        channel.deliver(answer.servers)
        if (answer.index === undefined) {
          // Nothing to block on (a proxy dropped the header?): poll instead.
          index = 0
          await pause.wait(jittered(this.#refreshMs))
        } else if (answer.index < index) {
          index = 0 // went backwards: restart the blocking loop
        } else {
          index = Math.max(answer.index, 1) // an index of 0 would not block
        }
      }
    }
    run().catch(() => {}) // every failure is handled inside; never leave a rejection

    return () => {
      if (!channel.stop()) return
      pause.cancel()
      pending?.abort()
      agent.destroy()
    }
  }

  /**
   * One `GET /v1/health/service/<name>`; blocking when `index > 0`. `agent: false` opens a
   * connection for this request alone; `unref` lets the process exit while it is held.
   */
  #query(service: string, index: number, agent: http.Agent | false, limitMs: number, unref: boolean): PendingQuery {
    const query = new URLSearchParams({ passing: 'true' })
    if (this.#datacenter !== undefined) query.set('dc', this.#datacenter)
    if (this.#tag !== undefined) query.set('tag', this.#tag)
    if (index > 0) {
      query.set('index', String(index))
      query.set('wait', this.#waitMs % 1000 === 0 ? `${this.#waitMs / 1000}s` : `${this.#waitMs}ms`)
    }
    const path = `/v1/health/service/${encodeURIComponent(service)}?${query}`
    const where = `${this.consulUrl}${path}`
    const headers: http.OutgoingHttpHeaders = { accept: 'application/json' }
    if (this.#token !== undefined) headers['x-consul-token'] = this.#token
    const request = (this.#scheme === 'https' ? https : http).request({
      host: this.#host,
      port: this.#port,
      path,
      method: 'GET',
      headers,
      agent,
    })
    const fail = (code: ErrorCode, why: string, cause?: unknown) =>
      new ServiceDiscoveryError(code, service, `${OWNER}: ${why} (GET ${where})`, cause === undefined ? undefined : { cause })

    // Why we ended the request ourselves (timeout, oversized body, stop), if we did.
    let ended: Error | undefined
    const end = (reason: Error) => {
      ended ??= reason
      request.destroy(reason)
    }
    const done = new Promise<HealthAnswer>((resolve, reject) => {
      const timer = setTimeout(() => end(fail(ErrorCodes.UPSTREAM_TIMEOUT, `Consul did not answer within ${Math.round(limitMs)} ms`)), limitMs)
      if (unref) {
        timer.unref()
        request.on('socket', (socket) => socket.unref())
      }
      const failed = (err: Error) => {
        clearTimeout(timer)
        reject(ended ?? fail(ErrorCodes.UPSTREAM_CONNECT, `cannot reach Consul: ${err.message}`, err))
      }
      request.on('error', failed)
      request.on('response', (response) => {
        const chunks: Buffer[] = []
        let size = 0
        response.on('data', (chunk: Buffer) => {
          size += chunk.length
          if (size > MAX_BODY_BYTES) end(fail(ErrorCodes.UPSTREAM_PROTOCOL, `Consul's answer is larger than ${MAX_BODY_BYTES} bytes`))
          else chunks.push(chunk)
        })
        // The connection broke mid-answer.
        response.on('error', failed)
        response.on('close', () => {
          if (!response.complete) failed(new Error('the connection closed before the answer was complete'))
        })
        response.on('end', () => {
          clearTimeout(timer)
          const body = Buffer.concat(chunks).toString('utf8')
          const status = response.statusCode ?? 0
          if (status !== 200) {
            const hint = status === 403 ? ' (an ACL denied it: check the token)' : ''
            reject(fail(ErrorCodes.UPSTREAM_PROTOCOL, `Consul answered ${status}${hint}: ${snippet(body)}`))
            return
          }
          let entries: unknown
          try {
            entries = JSON.parse(body)
          } catch (err) {
            reject(fail(ErrorCodes.UPSTREAM_PROTOCOL, `Consul's answer is not JSON: ${snippet(body)}`, err))
            return
          }
          if (!Array.isArray(entries)) {
            reject(fail(ErrorCodes.UPSTREAM_PROTOCOL, `Consul's answer is not a list of service entries: ${snippet(body)}`))
            return
          }
          resolve({ servers: entryUrls(entries), index: consulIndex(response.headers['x-consul-index']) })
        })
      })
      request.end()
    })
    return { done, abort: () => end(new AbortedByStop('stopped')) }
  }
}

/** The URLs of the entries whose checks all pass, in Consul's order, without duplicates. */
function entryUrls(entries: unknown[]): string[] {
  const urls = new Set<string>()
  for (const entry of entries) {
    const url = entryUrl(entry)
    if (url !== undefined) urls.add(url)
  }
  return [...urls]
}

/**
 * `http://<Service.Address or Node.Address>:<Service.Port>`; https when `Service.Meta.scheme`
 * says so. An entry without an address or port, or with a check that is not passing, is
 * skipped.
 */
function entryUrl(entry: unknown): string | undefined {
  if (!isRecord(entry) || !isRecord(entry.Service)) return undefined
  const { Service: svc, Node: node, Checks: checks } = entry
  if (Array.isArray(checks) && checks.some((check) => !isRecord(check) || check.Status !== 'passing')) return undefined
  const address = nonEmpty(svc.Address) ?? (isRecord(node) ? nonEmpty(node.Address) : undefined)
  const port = svc.Port
  if (address === undefined || typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) return undefined
  const scheme = isRecord(svc.Meta) && svc.Meta.scheme === 'https' ? 'https' : 'http'
  const url = serverUrl(scheme, address, port)
  return URL.canParse(url) ? url : undefined
}

function consulIndex(header: string | string[] | undefined): number | undefined {
  const value = Array.isArray(header) ? header[0] : header
  if (value === undefined || !/^\d{1,15}$/.test(value.trim())) return undefined
  return Number(value.trim())
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value)
}

function nonEmpty(value: unknown): string | undefined {
  return typeof value === 'string' && value.length > 0 ? value : undefined
}

function snippet(body: string): string {
  const text = body.trim().replace(/\s+/g, ' ')
  return text.length === 0 ? '(empty body)' : text.length > 200 ? `${text.slice(0, 200)}…` : text
}

function jittered(ms: number): number {
  return ms + Math.random() * ms * 0.1
}

// ---------------------------------------------------------------------------------------
// Option checks

function consulHost(value: unknown): string {
  if (value === undefined) return '127.0.0.1'
  const fail = (why: string): never => {
    throw new ConfigError('consulHost', `${OWNER}: option "consulHost" ${why}, got ${show(value)}`)
  }
  if (typeof value !== 'string' || value.length === 0) return fail('must be a host name or IP address')
  if (value.includes('://')) return fail('must be a host only (set "scheme" and "consulPort" separately)')
  const bare = value.startsWith('[') && value.endsWith(']') ? value.slice(1, -1) : value
  if (bare.includes(':')) {
    if (!net.isIPv6(bare)) fail('must be a host name or IP address (a port goes in "consulPort")')
    return bare
  }
  if (!/^[A-Za-z0-9_.-]+$/.test(bare) || bare.startsWith('.') || bare.startsWith('-')) fail('must be a host name or IP address')
  return bare
}

/** Checked without showing the token in the message. */
function token(value: unknown): string | undefined {
  if (value === undefined) return undefined
  if (typeof value !== 'string' || !/^[\x21-\x7e]+$/.test(value)) {
    const got = typeof value === 'string' ? `a string of ${value.length} characters` : show(value)
    throw new ConfigError('token', `${OWNER}: option "token" must be a non-empty string of visible ASCII characters, got ${got}`)
  }
  return value
}

function queryWord(name: string, value: unknown, pattern: RegExp, what: string): string | undefined {
  if (value === undefined) return undefined
  if (typeof value !== 'string' || !pattern.test(value)) {
    throw new ConfigError(name, `${OWNER}: option "${name}" must be a non-empty string of ${what}, got ${show(value)}`)
  }
  return value
}
