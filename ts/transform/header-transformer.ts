import { ConfigError } from '../errors'
import { knownKeys, object, show } from '../options'

/** What a header function knows of the exchange. */
export interface TransformContext {
  method: string
  path: string
  /** Lower-case names; repeated headers joined with ', '. */
  headers: Record<string, string>
  /** The response status (response functions only). */
  status?: number
}

/** A value to add: a string (applied in Rust) or a function called per request. */
export type AddValue = string | ((context: TransformContext) => string | Promise<string>)
/** A new value for a present header: a string, or a function of the old value. */
export type ModifyValue = string | ((value: string, context: TransformContext) => string | Promise<string>)

export interface HeaderRulesInit {
  /** Set these headers (replacing any values of the same name). */
  addHeaders?: Record<string, AddValue>
  /** Remove these headers. */
  removeHeaders?: string[]
  /** Change these headers when present (absent ones stay absent). */
  modifyHeaders?: Record<string, ModifyValue>
}

export interface HeaderTransformerOptions extends HeaderRulesInit {
  /** The same rules for the response on its way back to the client. */
  responseHeaders?: HeaderRulesInit
}

/** @internal Rules split into what Rust applies and what needs JavaScript. */
export interface CompiledHeaderRules {
  remove: string[]
  /** Flat name/value pairs. */
  modify: string[]
  add: string[]
  dynamicAdd: Array<[string, (context: TransformContext) => string | Promise<string>]>
  dynamicModify: Array<[string, (value: string, context: TransformContext) => string | Promise<string>]>
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
const FIELD_VALUE = /^[\t\x20-\x7e]*$/
/** Headers the gateway manages itself: no transformer may touch them. */
const MANAGED = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'content-length', 'host'])

function headerName(owner: string, option: string, name: string): string {
  if (!TOKEN.test(name)) {
    throw new ConfigError(option, `${owner}: option "${option}" has ${show(name)}, which is not a header name`)
  }
  const lower = name.toLowerCase()
  if (MANAGED.has(lower)) {
    throw new ConfigError(option, `${owner}: option "${option}" names ${show(name)}, which the gateway manages itself`)
  }
  return lower
}

function staticValue(owner: string, option: string, name: string, value: string): string {
  if (!FIELD_VALUE.test(value)) {
    throw new ConfigError(option, `${owner}: option "${option}" gives ${show(name)} a value with characters a header cannot carry: ${show(value)}`)
  }
  return value
}

/** The option names errors mention. */
export interface RuleOptionNames {
  add: string
  remove: string
  modify: string
}

/** @internal */
export function compileHeaderRules(owner: string, init: unknown, prefix = '', names?: RuleOptionNames): CompiledHeaderRules {
  const opts = object(owner, init ?? {})
  const opt = names ?? { add: `${prefix}addHeaders`, remove: `${prefix}removeHeaders`, modify: `${prefix}modifyHeaders` }
  const out: CompiledHeaderRules = { remove: [], modify: [], add: [], dynamicAdd: [], dynamicModify: [] }
  const add = opts.addHeaders
  const remove = opts.removeHeaders
  const modify = opts.modifyHeaders
  const record = (option: string, value: unknown): Record<string, unknown> => {
    if (value === undefined) return {}
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      throw new ConfigError(option, `${owner}: option "${option}" must map header names to values, got ${show(value)}`)
    }
    return value as Record<string, unknown>
  }
  for (const [name, value] of Object.entries(record(opt.add, add))) {
    const n = headerName(owner, opt.add, name)
    if (typeof value === 'string') out.add.push(n, staticValue(owner, opt.add, name, value))
    else if (typeof value === 'function') out.dynamicAdd.push([n, value as (c: TransformContext) => string])
    else throw new ConfigError(opt.add, `${owner}: option "${opt.add}" needs a string or a function for ${show(name)}, got ${show(value)}`)
  }
  for (const [name, value] of Object.entries(record(opt.modify, modify))) {
    const n = headerName(owner, opt.modify, name)
    if (typeof value === 'string') out.modify.push(n, staticValue(owner, opt.modify, name, value))
    else if (typeof value === 'function') out.dynamicModify.push([n, value as (v: string, c: TransformContext) => string])
    else throw new ConfigError(opt.modify, `${owner}: option "${opt.modify}" needs a string or a function for ${show(name)}, got ${show(value)}`)
  }
  if (remove !== undefined) {
    if (!Array.isArray(remove) || !remove.every((r) => typeof r === 'string')) {
      throw new ConfigError(opt.remove, `${owner}: option "${opt.remove}" must be an array of header names, got ${show(remove)}`)
    }
    for (const name of remove) out.remove.push(headerName(owner, opt.remove, name))
  }
  return out
}

/**
 * Adds, removes and changes headers on the way to the upstream (and, with
 * `responseHeaders`, on the way back). String values are applied in Rust; a function
 * value runs in JavaScript for each request, e.g. `{ 'X-Trace': () => randomUUID() }` or
 * `{ 'User-Agent': (ua) => `${ua} via gateway` }`.
 */
export class HeaderTransformer {
  /** @internal */
  readonly request: CompiledHeaderRules
  /** @internal */
  readonly response: CompiledHeaderRules

  constructor(options: HeaderTransformerOptions) {
    const owner = 'HeaderTransformer'
    const opts = object(owner, options)
    knownKeys(owner, opts, ['addHeaders', 'removeHeaders', 'modifyHeaders', 'responseHeaders'])
    this.request = compileHeaderRules(owner, { addHeaders: opts.addHeaders, removeHeaders: opts.removeHeaders, modifyHeaders: opts.modifyHeaders })
    if (opts.responseHeaders !== undefined) {
      knownKeys(`${owner} responseHeaders`, object(owner, opts.responseHeaders), ['addHeaders', 'removeHeaders', 'modifyHeaders'])
    }
    this.response = compileHeaderRules(owner, opts.responseHeaders, 'responseHeaders.')
  }
}
