import { ConfigError, ErrorCodes, UpstreamError, callHook, fromNative, native } from '../errors'
import { nativeBinding, splitHeaders, type NativeRetryOptions, type NativeRetryPolicy, type RetryDecide } from '../native'
import {
  boolean,
  duration,
  knownKeys,
  numberIn,
  object,
  optionalFunction,
  positiveDuration,
  positiveInt,
  show,
  statusCodes,
  type Duration,
} from '../options'

/** What `customRetryFunction` is told of one finished attempt. */
export interface RetryAttempt {
  /** The response status, or `undefined` when the attempt failed without a response. */
  status: number | undefined
  headers: Headers
  /** The server that was tried. */
  server: string
  method: string
  /** Why there was no response (`VG_UPSTREAM_CONNECT`, `VG_UPSTREAM_TIMEOUT`, …). */
  error: UpstreamError | undefined
}

/** Whether to try again: true, false, or undefined to let the default rule decide. */
export type CustomRetryFunction = (response: RetryAttempt, attempt: number) => boolean | undefined | Promise<boolean | undefined>

export interface RetryConfigOptions {
  /** Attempts in all, the first included (1 = no retry). Default 3. */
  maxAttempts?: number
  /** Each retry may wait up to `baseDelay × backoffFactor^(retry-1)` (full jitter). Default 2. */
  backoffFactor?: number
  /** The first retry's longest wait. Default `'100ms'`. */
  baseDelay?: Duration
  /** No wait is longer than this. Default `'2s'`. */
  maxDelay?: Duration
  /** Response statuses retried. Default 502, 503, 504. */
  retryableStatusCodes?: number[]
  /** Failures without a response that are retried. Default all four: connect refused/failed, TLS handshake failed, timeout, connection reset before a response. */
  retryableErrors?: Array<'VG_UPSTREAM_CONNECT' | 'VG_UPSTREAM_TLS' | 'VG_UPSTREAM_TIMEOUT' | 'VG_UPSTREAM_PROTOCOL'>
  /** Retry POST and PATCH too (only when the body was small enough to keep). Default false. */
  retryNonIdempotent?: boolean
  /** Each attempt's own timeout; the route's `timeout` still bounds all attempts together. */
  perTryTimeout?: Duration
  /** A request body up to this many bytes is kept so it can be sent again; larger bodies are not retried. Default 64 KiB. */
  maxReplayBodySize?: number
  /**
   * Retries allowed as a share of requests over 10 s (plus `minRetriesPerSecond`), so
   * retries cannot multiply an outage. Default 0.2; `false` turns the budget off.
   */
  retryBudget?: number | false
  /** Retries always allowed per second, on top of the budget. Default 10. */
  minRetriesPerSecond?: number
  /**
   * Your own rule, asked after every attempt that is not the last one allowed (a success
   * too: answer `false` or `undefined` to keep it). Only requests that may be retried at
   * all (idempotent, or `retryNonIdempotent` with a replayable body) call it.
   */
  customRetryFunction?: CustomRetryFunction
  /** How long `customRetryFunction` may take; then the default rule decides. Default `'1s'`. */
  customRetryTimeout?: Duration
  /** Told (once per RetryConfig) when `customRetryFunction` throws (default: console.error). */
  onError?: (error: unknown) => void
}

const OWNER = 'RetryConfig'
const KNOWN = [
  'maxAttempts',
  'backoffFactor',
  'baseDelay',
  'maxDelay',
  'retryableStatusCodes',
  'retryableErrors',
  'retryNonIdempotent',
  'perTryTimeout',
  'maxReplayBodySize',
  'retryBudget',
  'minRetriesPerSecond',
  'customRetryFunction',
  'customRetryTimeout',
  'onError',
] as const
const ERRORS = [ErrorCodes.UPSTREAM_CONNECT, ErrorCodes.UPSTREAM_TLS, ErrorCodes.UPSTREAM_TIMEOUT, ErrorCodes.UPSTREAM_PROTOCOL] as string[]

/**
 * When a failed attempt is tried again, on another server when there is one. Only
 * idempotent methods are retried unless `retryNonIdempotent`; a body is replayed only
 * if it fit in `maxReplayBodySize`. Waits use exponential backoff with full jitter.
 */
export class RetryConfig {
  /** @internal */
  readonly native: NativeRetryOptions
  readonly maxAttempts: number
  readonly customRetryFunction: CustomRetryFunction | undefined
  /** @internal */
  readonly decideTimeoutMs: number
  /** @internal */
  readonly onError: ((error: unknown) => void) | undefined
  #policy: NativeRetryPolicy | undefined
  #options: RetryConfigOptions

  constructor(options: RetryConfigOptions = {}) {
    const opts = object(OWNER, options)
    this.#options = { ...(opts as RetryConfigOptions) }
    knownKeys(OWNER, opts, KNOWN)
    const errors = opts.retryableErrors ?? ERRORS
    if (!Array.isArray(errors) || !errors.every((e) => ERRORS.includes(e as string))) {
      throw new ConfigError(
        'retryableErrors',
        `${OWNER}: option "retryableErrors" must be an array of ${ERRORS.join(', ')}, got ${show(errors)}`,
      )
    }
    const budget = opts.retryBudget === false ? undefined : numberIn(OWNER, 'retryBudget', opts.retryBudget, 0, 10, 0.2)
    this.maxAttempts = positiveInt(OWNER, 'maxAttempts', opts.maxAttempts, 3)
    this.native = {
      maxAttempts: this.maxAttempts,
      backoffFactor: numberIn(OWNER, 'backoffFactor', opts.backoffFactor, 1, 100, 2),
      baseDelayMs: duration(OWNER, 'baseDelay', opts.baseDelay, 100),
      maxDelayMs: positiveDuration(OWNER, 'maxDelay', opts.maxDelay, 2_000),
      retryableStatusCodes: statusCodes(OWNER, 'retryableStatusCodes', opts.retryableStatusCodes, [502, 503, 504]),
      retryableErrors: errors as string[],
      retryNonIdempotent: boolean(OWNER, 'retryNonIdempotent', opts.retryNonIdempotent, false),
      perTryTimeoutMs: opts.perTryTimeout === undefined ? undefined : positiveDuration(OWNER, 'perTryTimeout', opts.perTryTimeout, 0),
      maxReplayBody: replayLimit(opts.maxReplayBodySize),
      budgetRatio: budget,
      budgetMinPerSecond: opts.minRetriesPerSecond === 0 ? 0 : positiveInt(OWNER, 'minRetriesPerSecond', opts.minRetriesPerSecond, 10),
    }
    this.customRetryFunction = optionalFunction(OWNER, 'customRetryFunction', opts.customRetryFunction)
    this.decideTimeoutMs = positiveDuration(OWNER, 'customRetryTimeout', opts.customRetryTimeout, 1_000)
    this.onError = optionalFunction(OWNER, 'onError', opts.onError)
  }

  /** @internal The rules of `base` (or the defaults) with `attempts` attempts (a route's `maxRetries`). */
  static withAttempts(base: RetryConfig | undefined, attempts: number): RetryConfig {
    return new RetryConfig({ ...(base ? base.#options : {}), maxAttempts: attempts })
  }

  /** @internal The native policy, made once (a config shared by routes shares its budget). */
  static policyOf(config: RetryConfig | undefined): NativeRetryPolicy {
    if (!config) return noRetry()
    if (!config.#policy) config.#policy = makePolicy(config)
    return config.#policy
  }
}

/** Bytes of request body kept for replay: a whole number up to 16 MiB. */
function replayLimit(value: unknown): number {
  const limit = value === undefined ? 64 * 1024 : value
  if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 0 || limit > 16 * 1024 * 1024) {
    throw new ConfigError(
      'maxReplayBodySize',
      `${OWNER}: option "maxReplayBodySize" must be a whole number of bytes from 0 to 16 MiB, got ${show(value)}`,
    )
  }
  return limit
}

let none: NativeRetryPolicy | undefined

/** The policy of "send once". */
function noRetry(): NativeRetryPolicy {
  if (!none) {
    const { NativeRetryPolicy } = nativeBinding()
    none = native(
      () =>
        new NativeRetryPolicy(
          {
            maxAttempts: 1,
            backoffFactor: 1,
            baseDelayMs: 0,
            maxDelayMs: 0,
            retryableStatusCodes: [],
            retryableErrors: [],
            retryNonIdempotent: false,
            maxReplayBody: 0,
            budgetMinPerSecond: 0,
          },
          null,
          0,
        ),
    )
  }
  return none
}

function makePolicy(config: RetryConfig): NativeRetryPolicy {
  const { NativeRetryPolicy } = nativeBinding()
  const custom = config.customRetryFunction
  if (!custom) return native(() => new NativeRetryPolicy(config.native, null, 0))
  let reported = false
  const report = (error: unknown) => {
    if (reported) return
    reported = true
    callHook(config.onError ?? defaultReport, error)
  }
  let policy: NativeRetryPolicy | undefined
  const answer = (token: number, value: unknown) => {
    // 1 retry, 0 don't, 2 let the default rule decide.
    const code = value === true ? 1 : value === false ? 0 : 2
    policy?.completeRetry(token, code)
  }
  const decide: RetryDecide = (token, attempt, method, server, status, headers, error) => {
    try {
      const flat = splitHeaders(headers)
      const list = new Headers()
      for (let i = 0; i < flat.length; i += 2) list.append(flat[i], flat[i + 1])
      const result = custom(
        {
          status: status === 0 ? undefined : status,
          headers: list,
          server,
          method,
          error: error === '' ? undefined : (fromNative(new Error(`${error}: attempt ${attempt} failed`)) as UpstreamError),
        },
        attempt,
      )
      if (result && typeof (result as PromiseLike<unknown>).then === 'function') {
        ;(result as Promise<unknown>).then(
          (v) => answer(token, v),
          (err) => {
            report(err)
            answer(token, undefined)
          },
        )
      } else answer(token, result)
    } catch (err) {
      report(err)
      answer(token, undefined)
    }
  }
  policy = native(() => new NativeRetryPolicy(config.native, decide, config.decideTimeoutMs))
  return policy
}

function defaultReport(error: unknown): void {
  console.error('velithon-gateway: customRetryFunction failed; the default retry rule decided:', error)
}
