export { GatewayMetrics, type LatencySummary, type MetricsSnapshot } from './gateway-metrics'
export {
  MetricsMiddleware,
  type MetricsMiddlewareOptions,
  type CollectorFunction,
  type RequestSummary,
  type ResponseSummary,
} from './metrics-middleware'
export { RateLimitMiddleware, type RateLimitMiddlewareOptions, type RateLimitRequest } from './rate-limit-middleware'
