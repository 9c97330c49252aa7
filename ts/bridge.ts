/**
 * The JS side of the callback bridge for handler routes. The data plane calls
 * `dispatch` for each request; a handler's `body()` and `forwardRequest` ask the data
 * plane by request id and get their result through `complete`, matched by token. Every
 * answer to Rust is a plain synchronous native call: no Promise crosses the FFI.
 */
import { fromNative } from './errors'
import type {
  Completion,
  HandlerReply,
  NativeApp,
  NativeClient,
  NativeForwardOptions,
  NativeLoadBalancer,
  NativeRetryPolicy,
  NativeTransforms,
  NativeTransport,
} from './native'

interface Waiter {
  resolve(c: Completion): void
  reject(e: unknown): void
}

export class HandlerBridge {
  #native: NativeApp
  #next = 1
  #waiting = new Map<number, Waiter>()

  constructor(native: NativeApp) {
    this.#native = native
  }

  /** Receives the result of a `readBody` or `forward`. Never throws. */
  readonly complete = (token: number, ok: boolean, status: number, headers: string, body: Buffer | null, error: string): void => {
    const waiter = this.#waiting.get(token)
    if (!waiter) return
    this.#waiting.delete(token)
    if (ok) waiter.resolve({ ok, status, headers, body: body ?? undefined, error })
    else waiter.reject(fromNative(new Error(error)))
  }

  respond(token: number, reply: HandlerReply): void {
    this.#native.respond(token, reply.status, reply.headers.join('\n'), reply.body, reply.forwarded)
  }

  async readBody(requestId: number): Promise<Buffer> {
    const done = await this.#ask((token) => this.#native.readBody(requestId, token))
    return done.body ?? Buffer.alloc(0)
  }

  forward(
    requestId: number,
    balancer: NativeLoadBalancer,
    client: NativeClient,
    retry: NativeRetryPolicy,
    transforms: NativeTransforms,
    options: NativeForwardOptions,
    transport?: NativeTransport,
  ): Promise<Completion> {
    return this.#ask((token) => this.#native.forward(requestId, token, balancer, client, retry, transforms, options, transport))
  }

  #ask(start: (token: number) => void): Promise<Completion> {
    const token = this.#next
    this.#next = this.#next >= 0xffff_ffff ? 1 : this.#next + 1
    return new Promise<Completion>((resolve, reject) => {
      this.#waiting.set(token, { resolve, reject })
      try {
        start(token)
      } catch (err) {
        this.#waiting.delete(token)
        reject(fromNative(err))
      }
    })
  }
}
