/**
 * Server lists written in code. `setServers` changes a service's list and tells its
 * watchers at once, so membership can change while traffic flows.
 */
import { ConfigError, ErrorCodes } from '../errors'
import { show, upstreamUrl } from '../options'
import { ServiceDiscoveryError, WatchChannel, serviceName } from './follow'
import type { ServiceDiscovery } from './index'

const OWNER = 'StaticServiceDiscovery'

/** Checks one service's list: an array (possibly empty) of distinct upstream URLs. */
function serverList(owner: string, option: string, value: unknown): string[] {
  if (!Array.isArray(value)) {
    throw new ConfigError(option, `${owner}: option "${option}" must be an array of URLs, got ${show(value)}`)
  }
  const list = value.map((url, i) => upstreamUrl(owner, `${option}[${i}]`, url))
  const dup = list.find((url, i) => list.indexOf(url) !== i)
  if (dup !== undefined) throw new ConfigError(option, `${owner}: option "${option}" lists ${show(dup)} twice`)
  return list
}

/** Services and their servers, fixed in code unless changed with `setServers`. */
export class StaticServiceDiscovery implements ServiceDiscovery {
  readonly #services = new Map<string, string[]>()
  readonly #watchers = new Map<string, Set<WatchChannel>>()

  /** `services`: service name → server URLs, e.g. `{ users: ['http://10.0.0.5:8080'] }`. */
  constructor(services: Record<string, string[]> = {}) {
    if (services === null || typeof services !== 'object' || Array.isArray(services)) {
      throw new ConfigError('services', `${OWNER}: services must be an object mapping service names to URL arrays, got ${show(services)}`)
    }
    for (const [name, urls] of Object.entries(services)) {
      const service = serviceName(OWNER, name, 'services')
      this.#services.set(service, serverList(OWNER, `services[${JSON.stringify(service)}]`, urls))
    }
  }

  /** The names of the services this source knows. */
  get serviceNames(): string[] {
    return [...this.#services.keys()]
  }

  /** Whether `service` is known. */
  has(service: string): boolean {
    return this.#services.has(service)
  }

  /** The servers of `service`, synchronously; throws a `ServiceDiscoveryError` (`VG_NO_ROUTE`) for an unknown one. */
  servers(service: string): string[] {
    const list = this.#services.get(serviceName(OWNER, service))
    if (list === undefined) throw unknownService(service, this.serviceNames)
    return [...list]
  }

  async getServers(service: string): Promise<string[]> {
    return this.servers(service)
  }

  /**
   * Replaces (or adds) a service's list and tells its watchers before returning (an empty
   * list is allowed: the service has no servers now).
   */
  setServers(service: string, servers: string[]): void {
    const name = serviceName(`${OWNER}.setServers`, service)
    const list = serverList(`${OWNER}.setServers`, 'servers', servers)
    this.#services.set(name, list)
    for (const channel of this.#watchers.get(name) ?? []) channel.deliver(list)
  }

  watch(service: string, onChange: (servers: string[]) => void, onError: (error: Error) => void): () => void {
    const name = serviceName(OWNER, service)
    const channel = new WatchChannel(OWNER, onChange, onError)
    let channels = this.#watchers.get(name)
    if (!channels) this.#watchers.set(name, (channels = new Set()))
    channels.add(channel)
    // The first answer comes asynchronously, like every other source's.
    queueMicrotask(() => {
      const list = this.#services.get(name)
      if (list === undefined) channel.fail(unknownService(name, this.serviceNames))
      else channel.deliver(list)
    })
    return () => {
      if (!channel.stop()) return
      channels.delete(channel)
      if (channels.size === 0 && this.#watchers.get(name) === channels) this.#watchers.delete(name)
    }
  }
}

function unknownService(service: string, known: string[]): ServiceDiscoveryError {
  const names = known.length > 0 ? known.map((n) => show(n)).join(', ') : 'none'
  return new ServiceDiscoveryError(ErrorCodes.NO_ROUTE, service, `${OWNER}: unknown service ${show(service)} (known services: ${names})`)
}
