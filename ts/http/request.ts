import { ErrorCodes, VelithonError } from '../errors'
import type { HandlerBridge } from '../bridge'
import { splitHeaders } from '../native'

/** The client end of a request: its address and port. */
export interface ClientAddress {
  address: string
  port: number
}

/**
 * A request as a JS route handler sees it. The head is plain data; the body stays in
 * Rust until `body()`, `text()` or `json()` reads it (at most the app's `maxBodySize`).
 * A body JS never reads is streamed to the upstream by `forwardRequest` untouched.
 */
export class Request {
  readonly method: string
  /** Path and query exactly as the client sent them. */
  readonly url: string
  readonly path: string
  /** The raw query string, without '?'. */
  readonly queryString: string
  readonly httpVersion: string
  /** Path parameters by name, percent-decoded (`{id:int}` gives the digits as a string). */
  readonly pathParams: Readonly<Record<string, string>>
  readonly client: ClientAddress
  /** A place for handlers to leave facts for later steps (a custom strategy sees them). */
  context: Record<string, unknown> = {}
  #bridge: HandlerBridge
  #id: number
  #joinedHeaders: string
  #flat: string[] | undefined
  #headers: Headers | undefined
  #query: URLSearchParams | undefined
  #body: Promise<Buffer> | undefined

  /** @internal */
  constructor(
    bridge: HandlerBridge,
    id: number,
    method: string,
    url: string,
    headers: string,
    params: string[],
    clientAddress: string,
    clientPort: number,
    httpVersion: string,
  ) {
    this.method = method
    this.url = url
    const q = url.indexOf('?')
    this.path = q < 0 ? url : url.slice(0, q)
    this.queryString = q < 0 ? '' : url.slice(q + 1)
    this.httpVersion = httpVersion
    this.client = { address: clientAddress, port: clientPort }
    const decoded: Record<string, string> = {}
    for (let i = 0; i < params.length; i += 2) decoded[params[i]] = decode(params[i + 1])
    this.pathParams = decoded
    this.#joinedHeaders = headers
    this.#bridge = bridge
    this.#id = id
  }

  #flatHeaders(): string[] {
    return (this.#flat ??= splitHeaders(this.#joinedHeaders))
  }

  /** The request headers (case-insensitive `get`, `getSetCookie`, …). */
  get headers(): Headers {
    if (!this.#headers) {
      const h = new Headers()
      for (let i = 0; i < this.#flatHeaders().length; i += 2) {
        try {
          h.append(this.#flatHeaders()[i], this.#flatHeaders()[i + 1])
        } catch {
          // A value fetch's Headers refuses (odd bytes) is still forwarded as sent.
        }
      }
      this.#headers = h
    }
    return this.#headers
  }

  /** The headers in the order sent, names lower-case, repeats kept. */
  get rawHeaders(): [string, string][] {
    const out: [string, string][] = []
    for (let i = 0; i < this.#flatHeaders().length; i += 2) out.push([this.#flatHeaders()[i], this.#flatHeaders()[i + 1]])
    return out
  }

  get query(): URLSearchParams {
    return (this.#query ??= new URLSearchParams(this.queryString))
  }

  /** The whole body. Reading it is fine before `forwardRequest`: the same bytes are sent. */
  body(): Promise<Buffer> {
    return (this.#body ??= this.#bridge.readBody(this.#id))
  }

  async text(): Promise<string> {
    return (await this.body()).toString('utf8')
  }

  /** The body parsed as JSON; a body that is not JSON fails the request with 400. */
  async json<T = unknown>(): Promise<T> {
    const text = await this.text()
    try {
      return JSON.parse(text) as T
    } catch (err) {
      throw new VelithonError(ErrorCodes.BAD_REQUEST, 'the request body is not valid JSON', { cause: err })
    }
  }

  /** @internal */
  static handleOf(request: Request): { bridge: HandlerBridge; id: number } {
    return { bridge: request.#bridge, id: request.#id }
  }
}

function decode(raw: string): string {
  try {
    return decodeURIComponent(raw)
  } catch {
    return raw
  }
}
