/**
 * velithon-gateway: an API gateway and reverse proxy for Node.js whose data plane is
 * Rust (hyper, tokio, rustls).
 */
export {
  Velithon,
  type VelithonOptions,
  type ListenOptions,
  type AddressInfo,
  type Handler,
  type HandlerResult,
  type ErrorHook,
} from './app'
export type { ListenTlsOptions } from './listen-tls'
export {
  Gateway,
  DEFAULT_STRIPPED_HEADERS,
  type GatewayOptions,
  type GatewayRouteOptions,
  type ForwardOptions,
  type CircuitBreakerStatus,
} from './gateway'
export { forwardTo } from './forward-to'
export type { UpstreamTlsOptions } from './upstream-tls'
export { Request, type ClientAddress } from './http/request'
export { Response, JSONResponse, ForwardedResponse, type ResponseInit, type HeadersInit } from './http/response'
export { GatewayRouter } from './router'
export { LoadBalancer, type LoadBalancerOptions, type ServerEntry, type UpstreamStatus } from './load-balancer'
export {
  LoadBalancingStrategy,
  RoundRobinStrategy,
  RandomStrategy,
  WeightedStrategy,
  LeastConnectionsStrategy,
  PowerOfTwoChoicesStrategy,
  ConsistentHashStrategy,
  type HashKey,
  type RequestContext,
} from './strategies'
export * from './resilience'
export * from './discovery'
export * from './transform'
export * from './metrics'
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
