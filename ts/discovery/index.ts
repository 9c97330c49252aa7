/**
 * Service discovery: where the servers behind a service come from. The data plane only
 * ever sees a LoadBalancer's server list; a discovery source keeps that list current.
 *
 * - `StaticServiceDiscovery`: lists written in code (and changed with `setServers`).
 * - `ConsulServiceDiscovery`: Consul's health API, followed with blocking queries.
 * - `DnsServiceDiscovery`: A/AAAA records of a host name, re-resolved when their TTL ends.
 */

/** Something that knows which servers back a service. */
export interface ServiceDiscovery {
  /**
   * The servers of `service` now, as URLs like `'http://10.0.0.5:8080'`. An empty list
   * means the source knows the service but has no (healthy) server for it. Rejects with a
   * `ServiceDiscoveryError` when the source cannot be reached or does not know the service
   * (a `ConfigError` for a malformed name).
   */
  getServers(service: string): Promise<string[]>

  /**
   * Follows `service`. `onChange` gets the first list as soon as it is known and then
   * every list whose sorted contents differ from the previous one; after a failure, the
   * next list is delivered even when unchanged, so a watcher learns the source is back.
   * `onError` gets one Error per failure streak (the last good list stays in effect).
   * A throw from either callback is ignored.
   *
   * Returns `stop` (idempotent): afterwards no callback fires and the watch holds no
   * timer, request or socket. A watch does not keep the process alive: its timers and
   * Consul's held queries are unref'd (only a DNS query in flight, bounded by the
   * resolver's timeout, holds the event loop while it lasts). Throws a
   * `ConfigError` at once for a malformed name or a callback that is not a function.
   */
  watch(service: string, onChange: (servers: string[]) => void, onError: (error: Error) => void): () => void
}

export { StaticServiceDiscovery } from './static'
export { ConsulServiceDiscovery, type ConsulServiceDiscoveryOptions } from './consul'
export { DnsServiceDiscovery, type DnsServiceDiscoveryOptions } from './dns'
export { ServiceDiscoveryError, followDiscovery, type DiscoveryStatus, type DiscoveryFollower } from './follow'
