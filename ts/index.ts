/**
 * velithon-gateway: an API gateway and reverse proxy for Node.js whose data plane is
 * Rust (hyper, tokio, rustls).
 */
export { Velithon, type VelithonOptions, type ListenOptions, type AddressInfo } from './app'
export { Gateway, type GatewayOptions, type GatewayRouteOptions } from './gateway'
export { GatewayRouter } from './router'
export { LoadBalancer, type LoadBalancerOptions } from './load-balancer'
export { LoadBalancingStrategy, RoundRobinStrategy } from './strategies'
export {
  VelithonError,
  ConfigError,
  ListenError,
  UpstreamError,
  CircuitBreakerOpenError,
  ErrorCodes,
  type ErrorCode,
} from './errors'
export type { Duration } from './options'
