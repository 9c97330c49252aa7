/**
 * Builds the native transformations of one route from its layers: gateway, load
 * balancer, route. Static rules go to Rust as data; functions are gathered into one
 * header bridge and one body bridge per route, so a route without functions never
 * enters JavaScript.
 */
import { callHook, native } from '../errors'
import { headerObject, nativeBinding, type HeaderRuleOptions, type NativeTransforms, type PathRuleOptions } from '../native'
import { BodyTransformer } from './body-transformer'
import { HeaderTransformer, type CompiledHeaderRules, type TransformContext } from './header-transformer'
import { PathTransformer } from './path-transformer'

export type Transformer = HeaderTransformer | PathTransformer | BodyTransformer

export interface TransformPlan {
  /** Client-sent headers removed first (identity headers a client must not forge). */
  stripIncoming: string[]
  /** The request id header, or undefined for none. */
  requestId: string | undefined
  /** Transformers in request order: gateway, load balancer, route. */
  layers: Transformer[]
  /** The route's own `headersToAdd` / `headersToRemove`, applied after the layers. */
  routeHeaders?: CompiledHeaderRules
  /** The route's own `pathRewrite`, applied after the layers' path rules. */
  routePath?: PathRuleOptions
  /** How long a header or body function may take. */
  timeoutMs: number
  /** Told when a function throws (the request then fails with 500). */
  onError?: (error: unknown) => void
}

const EMPTY_RULES = (r: CompiledHeaderRules): HeaderRuleOptions => ({ remove: r.remove, modify: r.modify, add: r.add })

let empty: NativeTransforms | undefined

/** The native transformations for `plan` (one shared object when there is nothing to do). */
export function nativeTransforms(plan: TransformPlan): NativeTransforms {
  const headerLayers = plan.layers.filter((l): l is HeaderTransformer => l instanceof HeaderTransformer)
  const requestRules = headerLayers.map((l) => l.request)
  if (plan.routeHeaders) requestRules.push(plan.routeHeaders)
  // Responses go back through the layers in reverse.
  const responseRules = headerLayers.map((l) => l.response).reverse()
  const path = plan.layers.filter((l): l is PathTransformer => l instanceof PathTransformer).map((l) => l.native)
  if (plan.routePath) path.push(plan.routePath)
  const bodies = plan.layers.filter((l): l is BodyTransformer => l instanceof BodyTransformer)
  const requestBodies = bodies.filter((b) => b.direction !== 'response')
  // Responses go back through the layers in reverse, bodies as headers.
  const responseBodies = bodies.filter((b) => b.direction !== 'request').reverse()
  const dynamicRequest = requestRules.some((r) => r.dynamicAdd.length > 0 || r.dynamicModify.length > 0)
  const dynamicResponse = responseRules.some((r) => r.dynamicAdd.length > 0 || r.dynamicModify.length > 0)
  const staticOnly = (rules: CompiledHeaderRules[]) => rules.map(EMPTY_RULES).filter((r) => r.remove.length + r.modify.length + r.add.length > 0)

  const nothing =
    plan.stripIncoming.length === 0 &&
    plan.requestId === undefined &&
    staticOnly(requestRules).length === 0 &&
    staticOnly(responseRules).length === 0 &&
    path.length === 0 &&
    bodies.length === 0 &&
    !dynamicRequest &&
    !dynamicResponse
  const { NativeTransforms } = nativeBinding()
  if (nothing) {
    empty ??= native(() => new NativeTransforms(emptyOptions(), null, null, 0))
    return empty
  }

  let transforms: NativeTransforms | undefined
  const report = (error: unknown) => {
    if (plan.onError) callHook(plan.onError, error)
  }
  const headerFn =
    dynamicRequest || dynamicResponse
      ? (token: number, phase: number, method: string, path: string, status: number, headers: string) => {
          const rules = phase === 0 ? requestRules : responseRules
          runHeaderFunctions(rules, { method, path, headers: headerObject(headers), ...(phase === 1 && { status }) }).then(
            (pairs) => transforms?.completeHeaders(token, true, pairs, ''),
            (err: unknown) => {
              report(err)
              // The client gets a bare 500; what the function said goes to onError only.
              transforms?.completeHeaders(token, false, [], 'the header function threw or returned a bad value')
            },
          )
        }
      : null
  const bodyFn =
    bodies.length > 0
      ? (token: number, phase: number, body: Buffer, contentType: string) => {
          runBodyFunctions(phase === 0 ? requestBodies : responseBodies, body, contentType).then(
            (out) => transforms?.completeBody(token, true, out, ''),
            (err: unknown) => {
              report(err)
              transforms?.completeBody(token, false, null, 'transformFunction threw or returned a bad value')
            },
          )
        }
      : null
  const stage = (list: BodyTransformer[]) =>
    list.length === 0
      ? undefined
      : {
          // A body is read when any transformer wants it; each one checks its own types.
          contentTypes: list.some((b) => b.contentTypes.length === 0) ? [] : [...new Set(list.flatMap((b) => b.contentTypes))],
          maxSize: Math.min(...list.map((b) => b.maxBodySize)),
        }
  transforms = native(
    () =>
      new NativeTransforms(
        {
          stripIncoming: plan.stripIncoming,
          requestId: plan.requestId,
          requestHeaders: staticOnly(requestRules),
          path,
          responseHeaders: staticOnly(responseRules),
          requestFunctions: dynamicRequest,
          responseFunctions: dynamicResponse,
          requestBody: stage(requestBodies),
          responseBody: stage(responseBodies),
        },
        headerFn,
        bodyFn,
        plan.timeoutMs,
      ),
  )
  return transforms
}

function emptyOptions() {
  return {
    stripIncoming: [],
    requestHeaders: [],
    path: [],
    responseHeaders: [],
    requestFunctions: false,
    responseFunctions: false,
  }
}



/** Runs the function values in order; each sees the headers as the previous left them. */
async function runHeaderFunctions(rules: CompiledHeaderRules[], context: TransformContext): Promise<string[]> {
  const set = new Map<string, string>()
  for (const r of rules) {
    for (const [name, fn] of r.dynamicModify) {
      const current = set.get(name) ?? context.headers[name]
      if (current === undefined || current === '') continue
      const value = await fn(current, context)
      checkValue(name, value)
      set.set(name, value)
      context.headers[name] = value
    }
    for (const [name, fn] of r.dynamicAdd) {
      const value = await fn(context)
      checkValue(name, value)
      set.set(name, value)
      context.headers[name] = value
    }
  }
  return [...set].flat()
}

function checkValue(name: string, value: unknown): asserts value is string {
  if (typeof value !== 'string' || !/^[\t\x20-\x7e]*$/.test(value)) {
    throw new TypeError(`the header function for ${JSON.stringify(name)} returned ${typeof value === 'string' ? 'a value with characters a header cannot carry' : typeof value}`)
  }
}

async function runBodyFunctions(list: BodyTransformer[], body: Buffer, contentType: string): Promise<Buffer> {
  const media = contentType.split(';')[0].trim().toLowerCase()
  let out = body
  for (const b of list) {
    const applies = b.contentTypes.length === 0 || b.contentTypes.some((t) => (t.endsWith('/') ? media.startsWith(t) : media === t))
    if (!applies) continue
    const result = await b.transformFunction(out, contentType)
    if (typeof result === 'string') out = Buffer.from(result, 'utf8')
    else if (result instanceof Uint8Array) out = Buffer.from(result.buffer, result.byteOffset, result.byteLength)
    else throw new TypeError(`transformFunction returned ${typeof result}, not a Buffer or a string`)
  }
  return out
}
