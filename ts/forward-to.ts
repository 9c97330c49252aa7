import { Gateway, forwardWith, type ForwardOptions } from './gateway'
import type { Request } from './http/request'
import type { ForwardedResponse } from './http/response'
import { native } from './errors'
import { nativeBinding, type NativeLoadBalancer, type NativeTransforms } from './native'
import { upstreamUrl } from './options'
import { RetryConfig } from './resilience/retry-config'

let defaultGateway: Gateway | undefined
let defaultTransforms: NativeTransforms | undefined
const balancers = new Map<string, NativeLoadBalancer>()

/**
 * Forwards a handler's request to one upstream URL, through a shared default pool
 * (the defaults of `new Gateway()`). `forwardTo('http://svc:8080', request)` sends
 * `request.url` to that server; a path in the URL is put in front.
 */
export function forwardTo(url: string, request: Request, options: ForwardOptions = {}): Promise<ForwardedResponse> {
  const owner = 'forwardTo'
  upstreamUrl(owner, 'url', url)
  defaultGateway ??= new Gateway()
  defaultTransforms ??= Gateway.transformsOf(defaultGateway)
  let balancer = balancers.get(url)
  if (!balancer) {
    const { NativeLoadBalancer } = nativeBinding()
    balancer = native(() => new NativeLoadBalancer([url], [], 'round_robin', null))
    balancers.set(url, balancer)
  }
  return forwardWith(owner, request, balancer, Gateway.clientOf(defaultGateway), RetryConfig.policyOf(undefined), defaultTransforms, options, defaultGateway.timeoutMs, undefined)
}
