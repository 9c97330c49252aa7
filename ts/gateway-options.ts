/**
 * The checks of `Gateway` options that are values rather than objects of their own:
 * transformers, request ids, stripped identity headers, the breaker and retry shorthands,
 * and `additionalHeaders`. Each throws a `ConfigError` naming the option and the value.
 */
import { ConfigError } from './errors'
import { numberIn, positiveInt, show } from './options'
import { CircuitBreaker } from './resilience/circuit-breaker'
import { RetryConfig } from './resilience/retry-config'
import { BodyTransformer } from './transform/body-transformer'
import type { Transformer } from './transform/compile'
import { HeaderTransformer } from './transform/header-transformer'
import { PathTransformer } from './transform/path-transformer'

const OWNER = 'Gateway'

/** Identity headers a client must never set itself (see `stripIncomingHeaders`). */
export const DEFAULT_STRIPPED_HEADERS: readonly string[] = Object.freeze([
  'x-user-id',
  'x-user-roles',
  'x-user-email',
  'x-user-name',
  'x-user-groups',
  'x-authenticated-user',
  'x-auth-user',
  'x-auth-request-user',
  'x-auth-request-email',
  'x-forwarded-user',
  'x-remote-user',
  'remote-user',
])

/** A list of transformers. */
export function transformersOption(owner: string, value: unknown): Transformer[] {
  if (value === undefined) return []
  const ok = Array.isArray(value) && value.every((t) => t instanceof HeaderTransformer || t instanceof PathTransformer || t instanceof BodyTransformer)
  if (!ok) {
    throw new ConfigError('transformers', `${owner}: option "transformers" must be an array of HeaderTransformer, PathTransformer or BodyTransformer, got ${show(value)}`)
  }
  return [...(value as Transformer[])]
}

export function reportTransformError(error: unknown): void {
  console.error('velithon-gateway: a transformer function failed; the client got 500:', error)
}

export function requestIdOption(value: unknown): string | undefined {
  if (value === undefined || value === true) return 'x-request-id'
  if (value === false) return undefined
  const header = (value as { header?: unknown })?.header
  if (value !== null && typeof value === 'object' && Object.keys(value).every((k) => k === 'header') && typeof header === 'string' && TOKEN.test(header)) {
    return header.toLowerCase()
  }
  throw new ConfigError('requestId', `${OWNER}: option "requestId" must be true, false or { header: 'X-Request-ID' }, got ${show(value)}`)
}

export function stripOption(value: unknown): string[] {
  if (value === undefined) return [...DEFAULT_STRIPPED_HEADERS]
  if (value === false) return []
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'string' && TOKEN.test(v))) {
    throw new ConfigError('stripIncomingHeaders', `${OWNER}: option "stripIncomingHeaders" must be an array of header names or false, got ${show(value)}`)
  }
  return value.map((v: string) => v.toLowerCase())
}

export function breakerOption(owner: string, value: unknown): CircuitBreaker | undefined {
  if (value === undefined || value instanceof CircuitBreaker) return value
  throw new ConfigError('circuitBreaker', `${owner}: option "circuitBreaker" must be a CircuitBreaker, got ${show(value)}`)
}

export function retryConfigValue(owner: string, value: unknown): RetryConfig | undefined {
  if (value === undefined || value instanceof RetryConfig) return value
  throw new ConfigError('retryConfig', `${owner}: option "retryConfig" must be a RetryConfig${owner === OWNER ? '' : ' or false'}, got ${show(value)}`)
}

export function retryOption(opts: Record<string, unknown>): RetryConfig | undefined {
  const config = retryConfigValue(OWNER, opts.retryConfig)
  if (opts.retryAttempts === undefined && opts.retryBackoffFactor === undefined) return config
  if (config) {
    throw new ConfigError('retryAttempts', `${OWNER}: give "retryConfig" or "retryAttempts"/"retryBackoffFactor", not both`)
  }
  if (opts.retryAttempts === undefined) {
    throw new ConfigError('retryBackoffFactor', `${OWNER}: option "retryBackoffFactor" needs "retryAttempts"`)
  }
  return new RetryConfig({
    maxAttempts: positiveInt(OWNER, 'retryAttempts', opts.retryAttempts, 1),
    backoffFactor: numberIn(OWNER, 'retryBackoffFactor', opts.retryBackoffFactor, 1, 100, 2),
  })
}

/** Framing and hop-by-hop headers: never set by options (Host may be). */
const FRAMING = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'content-length'])

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
// Visible ASCII, space and tab: values cross to Rust as text, so no obs-text bytes.
const FIELD_VALUE = /^[\t\x20-\x7e]*$/

export function flatHeaderOption(owner: string, value: unknown): string[] {
  if (value === undefined) return []
  const entries: unknown[] = Array.isArray(value)
    ? value
    : value !== null && typeof value === 'object'
      ? Object.entries(value)
      : [value]
  const out: string[] = []
  for (const entry of entries) {
    const ok = Array.isArray(entry) && entry.length === 2 && typeof entry[0] === 'string' && typeof entry[1] === 'string'
    if (!ok || !TOKEN.test(entry[0]) || !FIELD_VALUE.test(entry[1])) {
      throw new ConfigError(
        'additionalHeaders',
        `${owner}: option "additionalHeaders" must map header names to string values of visible ASCII, got ${show(entry)}`,
      )
    }
    const name = entry[0].toLowerCase()
    if (FRAMING.has(name)) {
      throw new ConfigError(
        'additionalHeaders',
        `${owner}: option "additionalHeaders" cannot set ${show(entry[0])}: the gateway manages framing and connection headers itself`,
      )
    }
    out.push(name, entry[1])
  }
  return out
}
