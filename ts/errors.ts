/**
 * Typed errors with stable codes. Errors from the native data plane arrive as
 * `VG_CODE: message` and become one of these classes (see `fromNative`).
 */

export const ErrorCodes = {
  INVALID_OPTION: 'VG_INVALID_OPTION',
  INVALID_CONFIG: 'VG_INVALID_CONFIG',
  NO_ROUTE: 'VG_NO_ROUTE',
  METHOD_NOT_ALLOWED: 'VG_METHOD_NOT_ALLOWED',
  BAD_REQUEST: 'VG_BAD_REQUEST',
  UPSTREAM_CONNECT: 'VG_UPSTREAM_CONNECT',
  UPSTREAM_TIMEOUT: 'VG_UPSTREAM_TIMEOUT',
  UPSTREAM_PROTOCOL: 'VG_UPSTREAM_PROTOCOL',
  UPSTREAM_TLS: 'VG_UPSTREAM_TLS',
  NO_HEALTHY_UPSTREAM: 'VG_NO_HEALTHY_UPSTREAM',
  POOL_TIMEOUT: 'VG_POOL_TIMEOUT',
  RATE_LIMITED: 'VG_RATE_LIMITED',
  CIRCUIT_OPEN: 'VG_CIRCUIT_OPEN',
  BODY_TOO_LARGE: 'VG_BODY_TOO_LARGE',
  CALLBACK_FAILED: 'VG_CALLBACK_FAILED',
  CALLBACK_TIMEOUT: 'VG_CALLBACK_TIMEOUT',
  HANDLER_ERROR: 'VG_HANDLER_ERROR',
  BIND: 'VG_BIND',
  INTERNAL: 'VG_INTERNAL',
  NATIVE_MISSING: 'VG_NATIVE_MISSING',
} as const

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes]

/** The base class of every error this package throws. */
export class VelithonError extends Error {
  readonly code: ErrorCode
  /** For 503s: seconds until trying again makes sense (sent as `Retry-After`). */
  retryAfter: number | undefined
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'VelithonError'
    this.code = code
    const after = RETRY_AFTER.exec(message)
    this.retryAfter = after ? Number(after[1]) : undefined
  }
}

const RETRY_AFTER = /\(retry after (\d+) s\)/

/** An option had a value the gateway cannot use; the message names the option. */
export class ConfigError extends VelithonError {
  readonly option: string
  constructor(option: string, message: string) {
    super(ErrorCodes.INVALID_OPTION, message)
    this.name = 'ConfigError'
    this.option = option
  }
}

/** The listener could not bind its address (in use, not permitted, …). */
export class ListenError extends VelithonError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCodes.BIND, message, options)
    this.name = 'ListenError'
  }
}

/** An upstream could not be reached or did not answer in time. */
export class UpstreamError extends VelithonError {
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options)
    this.name = 'UpstreamError'
  }
}

/** Every server's circuit breaker is open. */
export class CircuitBreakerOpenError extends VelithonError {
  constructor(message = 'the circuit breaker is open', options?: { cause?: unknown }) {
    super(ErrorCodes.CIRCUIT_OPEN, message, options)
    this.name = 'CircuitBreakerOpenError'
  }
}

const STATUS: Partial<Record<ErrorCode, number>> = {
  VG_BAD_REQUEST: 400,
  VG_NO_ROUTE: 404,
  VG_BODY_TOO_LARGE: 413,
  VG_UPSTREAM_CONNECT: 502,
  VG_UPSTREAM_PROTOCOL: 502,
  VG_UPSTREAM_TLS: 502,
  VG_UPSTREAM_TIMEOUT: 504,
  VG_NO_HEALTHY_UPSTREAM: 503,
  VG_POOL_TIMEOUT: 503,
  VG_RATE_LIMITED: 429,
  VG_CIRCUIT_OPEN: 503,
  VG_CALLBACK_TIMEOUT: 504,
}

/** The HTTP status a client gets when a handler lets this error escape. */
export function statusOf(code: ErrorCode): number | undefined {
  return STATUS[code]
}

const CODED = /^(VG_[A-Z_]+): ([\s\S]*)$/

/** Turns an error thrown by the native addon into the matching typed error. */
export function fromNative(err: unknown): Error {
  if (!(err instanceof Error)) return new VelithonError(ErrorCodes.INTERNAL, String(err))
  const m = CODED.exec(err.message)
  if (!m) return err
  const code = m[1] as ErrorCode
  const message = m[2]
  switch (code) {
    case ErrorCodes.BIND:
      return new ListenError(message, { cause: err })
    case ErrorCodes.CIRCUIT_OPEN:
      return new CircuitBreakerOpenError(message, { cause: err })
    case ErrorCodes.UPSTREAM_CONNECT:
    case ErrorCodes.UPSTREAM_TIMEOUT:
    case ErrorCodes.UPSTREAM_PROTOCOL:
    case ErrorCodes.UPSTREAM_TLS:
    case ErrorCodes.NO_HEALTHY_UPSTREAM:
    case ErrorCodes.POOL_TIMEOUT:
      return new UpstreamError(code, message, { cause: err })
    default:
      return new VelithonError(code, message, { cause: err })
  }
}

/** Runs a native call and rethrows its error as a typed one. */
export function native<T>(call: () => T): T {
  try {
    return call()
  } catch (err) {
    throw fromNative(err)
  }
}

export async function nativeAsync<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call()
  } catch (err) {
    throw fromNative(err)
  }
}

/** Calls a user's reporting hook: neither a throw nor a rejected Promise may escape. */
export function callHook(hook: (...args: never[]) => unknown, ...args: unknown[]): void {
  try {
    const r = (hook as (...a: unknown[]) => unknown)(...args)
    if (r && typeof (r as PromiseLike<unknown>).then === 'function') {
      ;(r as PromiseLike<unknown>).then(undefined, () => {})
    }
  } catch {
    // a failing hook must not fail the request
  }
}
