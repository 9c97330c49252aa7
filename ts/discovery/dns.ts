/**
 * DNS as a discovery source: the service is a host name, its servers are the addresses of
 * its A and/or AAAA records, and a watch re-resolves when the shortest record TTL ends
 * (clamped to `[minTtl, maxTtl]`).
 *
 * Names DNS does not hold: `localhost` and `*.localhost` (RFC 6761 reserves them for the
 * loopback; they are never sent to DNS) are resolved with the operating system's resolver
 * (`dns.lookup`, which reads /etc/hosts). So are names the configured DNS reports as
 * unknown (NXDOMAIN / no data) when no `servers` option is given, i.e. when the system's
 * resolver configuration is in use anyway. Such answers carry no TTL: they are re-checked
 * after `minTtl`. An IP address given as the service is used as it is.
 *
 * Between resolutions a watch holds only an unref'd timer; node:dns offers no way to unref
 * a query, so one in flight keeps the process up until it ends (at most `timeout` × 2).
 */
import dns from 'node:dns'
import net from 'node:net'
import { ConfigError, ErrorCodes, type ErrorCode } from '../errors'
import { duration, knownKeys, object, show, type Duration } from '../options'
import { Pause, ServiceDiscoveryError, WatchChannel, atLeast, choiceOption, portOption, serverUrl, serviceName } from './follow'
import type { ServiceDiscovery } from './index'

export interface DnsServiceDiscoveryOptions {
  /** The port every discovered server listens on. Default 80 (443 with `scheme: 'https'`). */
  port?: number
  /** The scheme of the URLs. Default `'http'`. (With https, certificates must name the IP addresses.) */
  scheme?: 'http' | 'https'
  /** 4: A records only, 6: AAAA only, 0: both. Default 0. */
  family?: 0 | 4 | 6
  /** The shortest pause between two resolutions of a watch (and the TTL of answers without one). Default `'1s'`, at least `'100ms'`. */
  minTtl?: Duration
  /** The longest time a watch trusts an answer. Default `'5m'`. */
  maxTtl?: Duration
  /** DNS servers to ask instead of the system's, e.g. `['10.0.0.2', '127.0.0.1:5353', '[fd00::53]:53']`. */
  servers?: string[]
  /** How long one DNS query may take (it is tried twice). Default `'3s'`. */
  timeout?: Duration
}

const OWNER = 'DnsServiceDiscovery'
const KNOWN = ['port', 'scheme', 'family', 'minTtl', 'maxTtl', 'servers', 'timeout'] as const
/** DNS error codes that mean "this name has no such records", not "DNS failed". */
const NOT_IN_DNS = new Set<string>([dns.NOTFOUND, dns.NODATA])
/** A failing watch retries after minTtl, doubling per failure up to this (or maxTtl if shorter). */
const MAX_RETRY_MS = 30_000
const HOST_NAME = /^(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62}))*\.?$/

/** What one resolution produced. */
interface Resolution {
  servers: string[]
  /** How long the answer may be trusted, already clamped to [minTtl, maxTtl]. */
  ttlMs: number
}

/** The addresses behind host names, as server URLs. */
export class DnsServiceDiscovery implements ServiceDiscovery {
  readonly #port: number
  readonly #scheme: 'http' | 'https'
  readonly #family: 0 | 4 | 6
  readonly #minTtlMs: number
  readonly #maxTtlMs: number
  readonly #dnsServers: string[] | undefined
  readonly #timeoutMs: number
  readonly #resolver: dns.promises.Resolver

  constructor(options: DnsServiceDiscoveryOptions = {}) {
    const opts = object(OWNER, options)
    knownKeys(OWNER, opts, KNOWN)
    this.#scheme = choiceOption(OWNER, 'scheme', opts.scheme, ['http', 'https'] as const, 'http')
    this.#port = portOption(OWNER, 'port', opts.port, this.#scheme === 'https' ? 443 : 80)
    this.#family = choiceOption(OWNER, 'family', opts.family, [0, 4, 6] as const, 0)
    this.#minTtlMs = atLeast(OWNER, 'minTtl', duration(OWNER, 'minTtl', opts.minTtl, 1000), 100, "'100ms'")
    this.#maxTtlMs = duration(OWNER, 'maxTtl', opts.maxTtl, 300_000)
    if (this.#maxTtlMs < this.#minTtlMs) {
      throw new ConfigError('maxTtl', `${OWNER}: option "maxTtl" must not be shorter than "minTtl" (${this.#minTtlMs} ms), got ${show(opts.maxTtl)}`)
    }
    this.#timeoutMs = atLeast(OWNER, 'timeout', duration(OWNER, 'timeout', opts.timeout, 3000), 1, '1 ms')
    this.#dnsServers = dnsServers(opts.servers)
    this.#resolver = this.#newResolver()
  }

  /** The servers behind the host name `service` now (resolved afresh). */
  async getServers(service: string): Promise<string[]> {
    const host = hostName(service)
    return (await this.#resolve(host, this.#resolver)).servers
  }

  /** Follows the host name `service`, re-resolving when its answer's TTL ends. */
  watch(service: string, onChange: (servers: string[]) => void, onError: (error: Error) => void): () => void {
    const host = hostName(service)
    const channel = new WatchChannel(OWNER, onChange, onError)
    const resolver = this.#newResolver() // its own, so stop can cancel its queries
    const pause = new Pause()
    const run = async (): Promise<void> => {
      let failures = 0
      while (!channel.stopped) {
        let next: number
        try {
          const { servers, ttlMs } = await this.#resolve(host, resolver)
          if (channel.stopped) return
          channel.deliver(servers)
          failures = 0
          next = ttlMs
        } catch (err) {
          if (channel.stopped) return
          channel.fail(err instanceof Error ? err : new Error(String(err)))
          failures++
          const cap = Math.max(this.#minTtlMs, Math.min(this.#maxTtlMs, MAX_RETRY_MS))
          next = Math.min(this.#minTtlMs * 2 ** Math.min(failures - 1, 20), cap)
        }
        await pause.wait(next)
      }
    }
    run().catch(() => {}) // every failure is handled inside; never leave a rejection
    return () => {
      if (!channel.stop()) return
      pause.cancel()
      resolver.cancel()
    }
  }

  #newResolver(): dns.promises.Resolver {
    const resolver = new dns.promises.Resolver({ timeout: this.#timeoutMs, tries: 2 })
    if (this.#dnsServers !== undefined) resolver.setServers(this.#dnsServers)
    return resolver
  }

  async #resolve(host: string, resolver: dns.promises.Resolver): Promise<Resolution> {
    if (net.isIP(host) !== 0) return { servers: [this.#url(host)], ttlMs: this.#maxTtlMs }
    if (isLocalhostName(host)) return this.#lookup(host)
    const queries: Promise<dns.RecordWithTtl[]>[] = []
    if (this.#family !== 6) queries.push(resolver.resolve4(host, { ttl: true }))
    if (this.#family !== 4) queries.push(resolver.resolve6(host, { ttl: true }))
    const results = await Promise.allSettled(queries)
    const records = results.flatMap((r) => (r.status === 'fulfilled' ? r.value : []))
    if (records.length > 0) {
      const ttlMs = Math.min(...records.map((r) => r.ttl * 1000))
      return { servers: unique(records.map((r) => this.#url(r.address))), ttlMs: this.#clamp(ttlMs) }
    }
    const errors = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as NodeJS.ErrnoException] : []))
    const notInDns = errors.every((e) => NOT_IN_DNS.has(e.code ?? ''))
    if (notInDns && this.#dnsServers === undefined) {
      try {
        return await this.#lookup(host)
      } catch {
        // report what DNS said
      }
    }
    const first = errors[0] ?? new Error('no records')
    const code: ErrorCode = notInDns ? ErrorCodes.NO_ROUTE : first.code === dns.TIMEOUT ? ErrorCodes.UPSTREAM_TIMEOUT : ErrorCodes.UPSTREAM_CONNECT
    const what = notInDns ? `has no ${this.#recordTypes()} records` : `could not be resolved`
    return Promise.reject(new ServiceDiscoveryError(code, host, `${OWNER}: ${show(host)} ${what} (${first.code ?? first.message})`, { cause: first }))
  }

  /** The operating system's resolver (getaddrinfo: /etc/hosts, then DNS); no TTL known. */
  async #lookup(host: string): Promise<Resolution> {
    let found: dns.LookupAddress[]
    try {
      found = await dns.promises.lookup(host, { all: true, family: this.#family, verbatim: true })
    } catch (err) {
      const e = err as NodeJS.ErrnoException
      const code = e.code === dns.NOTFOUND || e.code === dns.NODATA ? ErrorCodes.NO_ROUTE : ErrorCodes.UPSTREAM_CONNECT
      throw new ServiceDiscoveryError(code, host, `${OWNER}: ${show(host)} could not be resolved (${e.code ?? e.message})`, { cause: err })
    }
    if (found.length === 0) {
      throw new ServiceDiscoveryError(ErrorCodes.NO_ROUTE, host, `${OWNER}: ${show(host)} has no ${this.#recordTypes()} addresses`)
    }
    return { servers: unique(found.map((a) => this.#url(a.address))), ttlMs: this.#minTtlMs }
  }

  #url(address: string): string {
    return serverUrl(this.#scheme, address, this.#port)
  }

  #clamp(ttlMs: number): number {
    return Math.min(this.#maxTtlMs, Math.max(this.#minTtlMs, ttlMs))
  }

  #recordTypes(): string {
    return this.#family === 4 ? 'A' : this.#family === 6 ? 'AAAA' : 'A or AAAA'
  }
}

/** `localhost`, `api.localhost`, `localhost.` (RFC 6761 §6.3). */
function isLocalhostName(host: string): boolean {
  const name = host.toLowerCase().replace(/\.$/, '')
  return name === 'localhost' || name.endsWith('.localhost')
}

function hostName(service: unknown): string {
  const name = serviceName(OWNER, service)
  if (net.isIP(name) === 0 && !HOST_NAME.test(name)) {
    throw new ConfigError('service', `${OWNER}: the service must be a host name or IP address, got ${show(service)}`)
  }
  return name
}

function dnsServers(value: unknown): string[] | undefined {
  if (value === undefined) return undefined
  const fail = (why: string): never => {
    throw new ConfigError('servers', `${OWNER}: option "servers" ${why}, got ${show(value)}`)
  }
  if (!Array.isArray(value) || value.length === 0 || !value.every((s) => typeof s === 'string' && s.length > 0)) {
    return fail("must be a non-empty array of DNS server addresses like '10.0.0.2' or '127.0.0.1:5353'")
  }
  try {
    new dns.promises.Resolver().setServers(value as string[])
  } catch (err) {
    fail(`has an address node:dns does not accept (${(err as Error).message})`)
  }
  return [...(value as string[])]
}

function unique(urls: string[]): string[] {
  return [...new Set(urls)]
}
