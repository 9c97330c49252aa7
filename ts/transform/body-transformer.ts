import { ConfigError } from '../errors'
import { knownKeys, object, show } from '../options'

/** Your body function: the new body (a Buffer or a string, sent as UTF-8). */
export type TransformFunction = (body: Buffer, contentType: string) => Buffer | Uint8Array | string | Promise<Buffer | Uint8Array | string>

export interface BodyTransformerOptions {
  transformFunction: TransformFunction
  /** Media types (`'application/json'`) or families (`'text/'`) to transform; others stream untouched. Default: all. */
  contentTypes?: string[]
  /** Bodies up to this many bytes are transformed; larger ones get 413 (request) or 502 (response). Default 1 MiB. */
  maxBodySize?: number
  /** Which bodies: `'request'` (default), `'response'` or `'both'`. */
  direction?: 'request' | 'response' | 'both'
}

const OWNER = 'BodyTransformer'

/**
 * Rewrites whole bodies with your function: the body is read into memory (up to
 * `maxBodySize`), passed to `transformFunction(body, contentType)` in JavaScript, and the
 * result is sent with a corrected `Content-Length`. Bodies of other types stream untouched.
 */
export class BodyTransformer {
  readonly transformFunction: TransformFunction
  readonly contentTypes: string[]
  readonly maxBodySize: number
  readonly direction: 'request' | 'response' | 'both'

  constructor(options: BodyTransformerOptions) {
    const opts = object(OWNER, options)
    knownKeys(OWNER, opts, ['transformFunction', 'contentTypes', 'maxBodySize', 'direction'])
    if (typeof opts.transformFunction !== 'function') {
      throw new ConfigError('transformFunction', `${OWNER}: option "transformFunction" must be a function, got ${show(opts.transformFunction)}`)
    }
    const types = opts.contentTypes ?? []
    if (!Array.isArray(types) || !types.every((t) => typeof t === 'string' && /^[a-z0-9!#$&^_.+-]+\/[a-z0-9!#$&^_.+-]*$/i.test(t))) {
      throw new ConfigError('contentTypes', `${OWNER}: option "contentTypes" must be media types like 'application/json' or 'text/', got ${show(types)}`)
    }
    const max = opts.maxBodySize ?? 1024 * 1024
    if (typeof max !== 'number' || !Number.isInteger(max) || max < 0 || max > 256 * 1024 * 1024) {
      throw new ConfigError('maxBodySize', `${OWNER}: option "maxBodySize" must be a whole number of bytes up to 256 MiB, got ${show(max)}`)
    }
    const direction = opts.direction ?? 'request'
    if (direction !== 'request' && direction !== 'response' && direction !== 'both') {
      throw new ConfigError('direction', `${OWNER}: option "direction" must be 'request', 'response' or 'both', got ${show(direction)}`)
    }
    this.transformFunction = opts.transformFunction as TransformFunction
    this.contentTypes = (types as string[]).map((t) => t.toLowerCase())
    this.maxBodySize = max
    this.direction = direction
  }
}
