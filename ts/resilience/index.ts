export { CircuitBreaker, type CircuitBreakerOptions } from './circuit-breaker'
export { OutlierDetection, type OutlierDetectionOptions } from './outlier-detection'
export { HealthChecker, HealthCheckResult, type HealthCheckerOptions, type CustomCheckFunction } from './health-checker'
export { RetryConfig, type RetryConfigOptions, type RetryAttempt, type CustomRetryFunction } from './retry-config'
