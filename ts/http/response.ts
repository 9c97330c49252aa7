import { ConfigError, ErrorCodes, VelithonError, statusOf } from '../errors'
import { splitHeaders, type Completion, type HandlerReply } from '../native'
import { show } from '../options'
import type { Request } from './request'

export type HeadersInit = Record<string, string | string[]> | [string, string][] | Headers

export interface ResponseInit {
  status?: number
  headers?: HeadersInit
}

/** A response a handler builds: status, headers and a body held in memory. */
export class Response {
  readonly status: number
  readonly headers: Headers
  readonly body: Buffer | undefined

  constructor(body?: string | Buffer | Uint8Array | null, init: ResponseInit = {}) {
    const status = init.status ?? 200
    // 1xx are interim answers (101 switches protocols): only a forwarded 101 may be one.
    if (!Number.isInteger(status) || status < 200 || status > 999) {
      throw new ConfigError('status', `Response: option "status" must be a whole number from 200 to 999, got ${show(status)}`)
    }
    this.status = status
    this.headers = toHeaders(init.headers)
    if (body === undefined || body === null) this.body = undefined
    else if (typeof body === 'string') {
      this.body = Buffer.from(body, 'utf8')
      if (!this.headers.has('content-type')) this.headers.set('content-type', 'text/plain; charset=utf-8')
    } else if (body instanceof Uint8Array) {
      this.body = Buffer.isBuffer(body) ? body : Buffer.from(body.buffer, body.byteOffset, body.byteLength)
    } else {
      throw new ConfigError('body', `Response: the body must be a string, Buffer or Uint8Array, got ${show(body)}`)
    }
  }
}

/** A response whose body is `data` as JSON. */
export class JSONResponse extends Response {
  constructor(data: unknown, status = 200, headers?: HeadersInit) {
    const h = toHeaders(headers)
    if (!h.has('content-type')) h.set('content-type', 'application/json')
    super(Buffer.from(JSON.stringify(data) ?? 'null', 'utf8'), { status, headers: h })
  }
}

/**
 * The upstream's answer to `forwardRequest`/`forwardTo`: its status and headers. Return
 * it from the handler and its body streams to the client from Rust, never entering JS.
 */
export class ForwardedResponse {
  readonly status: number
  #joinedHeaders: string
  #headers: Headers | undefined
  #request: Request

  /** @internal */
  constructor(request: Request, head: Pick<Completion, 'status' | 'headers'>) {
    this.status = head.status
    this.#joinedHeaders = head.headers
    this.#request = request
  }

  /** The upstream's response headers (built when first read). */
  get headers(): Headers {
    if (!this.#headers) {
      const h = new Headers()
      const flat = splitHeaders(this.#joinedHeaders)
      for (let i = 0; i < flat.length; i += 2) {
        try {
          h.append(flat[i], flat[i + 1])
        } catch {
          // shown as best it can be; the client gets the bytes as sent
        }
      }
      this.#headers = h
    }
    return this.#headers
  }

  /** @internal */
  static requestOf(res: ForwardedResponse): Request {
    return res.#request
  }
}

function toHeaders(init: HeadersInit | undefined): Headers {
  const h = new Headers()
  if (!init) return h
  if (init instanceof Headers) {
    init.forEach((v, k) => h.append(k, v))
    for (const c of init.getSetCookie()) h.append('set-cookie', c)
    return h
  }
  const entries = Array.isArray(init) ? init : Object.entries(init)
  for (const [k, v] of entries) {
    for (const one of Array.isArray(v) ? v : [v]) h.append(k, String(one))
  }
  return h
}

function flatHeaders(h: Headers): string[] {
  const out: string[] = []
  h.forEach((v, k) => {
    if (k !== 'set-cookie') out.push(k, v)
  })
  for (const c of h.getSetCookie()) out.push('set-cookie', c)
  return out
}

/** Turns whatever a handler returned into the reply the data plane sends. */
export function toReply(result: unknown, request: Request): HandlerReply {
  if (result instanceof ForwardedResponse) {
    if (ForwardedResponse.requestOf(result) !== request) {
      throw new VelithonError(ErrorCodes.CALLBACK_FAILED, 'the handler returned a forwarded response of another request')
    }
    return { status: result.status, headers: [], forwarded: true }
  }
  if (result instanceof Response) {
    return { status: result.status, headers: flatHeaders(result.headers), body: result.body, forwarded: false }
  }
  if (result === undefined || result === null) return { status: 204, headers: [], forwarded: false }
  if (typeof result === 'string') return replyOf(new Response(result))
  if (result instanceof Uint8Array) {
    return replyOf(new Response(result, { headers: { 'content-type': 'application/octet-stream' } }))
  }
  if (typeof result === 'function' || typeof result === 'symbol' || typeof result === 'bigint') {
    throw new VelithonError(ErrorCodes.CALLBACK_FAILED, `the handler returned ${typeof result}, which cannot be sent`)
  }
  return replyOf(new JSONResponse(result))
}

function replyOf(res: Response): HandlerReply {
  return { status: res.status, headers: flatHeaders(res.headers), body: res.body, forwarded: false }
}

/** The reply for a handler that threw: typed gateway errors keep their status. */
export function errorReply(err: unknown): HandlerReply {
  const known = err instanceof VelithonError ? statusOf(err.code) : undefined
  const status = known ?? 500
  const code = known ? (err as VelithonError).code : ErrorCodes.HANDLER_ERROR
  const message = known ? (err as VelithonError).message : 'the route handler failed'
  const headers = ['content-type', 'application/json']
  if (status === 503 || status === 429) {
    const after = err instanceof VelithonError ? err.retryAfter : undefined
    headers.push('retry-after', String(after ?? 1))
  }
  const reason = STATUS_TEXT[status] ?? 'Error'
  return {
    status,
    headers,
    body: Buffer.from(JSON.stringify({ error: reason, code, message })),
    forwarded: false,
  }
}

const STATUS_TEXT: Record<number, string> = {
  400: 'Bad Request',
  413: 'Payload Too Large',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
}
