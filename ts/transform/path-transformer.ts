import { ConfigError } from '../errors'
import type { PathRuleOptions } from '../native'
import { nativeBinding } from '../native'
import { knownKeys, object, show } from '../options'

/** @internal Checks `rule` as the data plane will build it; throws a ConfigError naming `option`. */
export function checkPathRule(owner: string, option: string, rule: PathRuleOptions): void {
  const why = nativeBinding().checkPathRule(rule)
  if (why !== '') throw new ConfigError(option, `${owner}: option "${option}" cannot be used: ${why}`)
}

export interface PathTransformerOptions {
  /** Remove this leading path (at a segment boundary): `/api/v1`. */
  stripPrefix?: string
  /** Put this in front: `/internal`. */
  addPrefix?: string
  /** Replace a leading path (at a segment boundary): `{ '/users': '/accounts' }`; the first match wins. */
  pathMappings?: Record<string, string>
  /** A regular expression rewrite with capture groups: `{ pattern: '^/u/(\\d+)$', replacement: '/users/$1' }` (Rust regex syntax; `$1`, `${name}`). */
  rewrite?: { pattern: string | RegExp; replacement: string }
}

const OWNER = 'PathTransformer'

function pathOption(option: string, value: unknown): string | undefined {
  if (value === undefined) return undefined
  if (typeof value !== 'string' || !value.startsWith('/') || /[\s?#]/.test(value)) {
    throw new ConfigError(option, `${OWNER}: option "${option}" must be a path starting with '/' (no query, no spaces), got ${show(value)}`)
  }
  return value
}

/** @internal Turns a route's `pathRewrite` / a transformer's `rewrite` into native options. */
export function rewriteOption(owner: string, option: string, value: unknown): { pattern: string; replacement: string } | undefined {
  if (value === undefined) return undefined
  const v = value as { pattern?: unknown; replacement?: unknown }
  const pattern = v?.pattern instanceof RegExp ? v.pattern : v?.pattern
  if (pattern instanceof RegExp && pattern.flags !== '') {
    throw new ConfigError(option, `${owner}: option "${option}" takes a RegExp without flags, got /${pattern.source}/${pattern.flags}`)
  }
  const source = pattern instanceof RegExp ? pattern.source : pattern
  if (typeof source !== 'string' || source === '' || typeof v?.replacement !== 'string') {
    throw new ConfigError(option, `${owner}: option "${option}" must be { pattern, replacement } (a regular expression and a string with $1, \${name}), got ${show(value)}`)
  }
  return { pattern: source, replacement: v.replacement }
}

/**
 * Rewrites the upstream path in Rust: `stripPrefix`, then the first matching of
 * `pathMappings`, then `rewrite`, then `addPrefix` (`/api/v1/users/7` →
 * `/internal/accounts/7` with the spec's example). The query string passes untouched;
 * percent-encoding is kept as sent; a path with a `..` segment (also `%2e%2e`) is refused
 * with 400, so no request can escape the route's prefix.
 */
export class PathTransformer {
  /** @internal */
  readonly native: PathRuleOptions

  constructor(options: PathTransformerOptions) {
    const opts = object(OWNER, options)
    knownKeys(OWNER, opts, ['stripPrefix', 'addPrefix', 'pathMappings', 'rewrite'])
    const mappings: PathRuleOptions['mappings'] = []
    if (opts.pathMappings !== undefined) {
      const m = opts.pathMappings
      if (m === null || typeof m !== 'object' || Array.isArray(m)) {
        throw new ConfigError('pathMappings', `${OWNER}: option "pathMappings" must map paths to paths, got ${show(m)}`)
      }
      for (const [from, to] of Object.entries(m as Record<string, unknown>)) {
        mappings.push({ from: pathOption('pathMappings', from)!, to: pathOption('pathMappings', to)!, prefix: true })
      }
    }
    const rewrite = rewriteOption(OWNER, 'rewrite', opts.rewrite)
    // Each part checked alone first, so the error names the option that is wrong.
    const none = { mappings: [] as PathRuleOptions['mappings'] }
    checkPathRule(OWNER, 'stripPrefix', { ...none, stripPrefix: pathOption('stripPrefix', opts.stripPrefix) })
    checkPathRule(OWNER, 'addPrefix', { ...none, addPrefix: pathOption('addPrefix', opts.addPrefix) })
    checkPathRule(OWNER, 'pathMappings', { mappings })
    checkPathRule(OWNER, 'rewrite', { ...none, rewritePattern: rewrite?.pattern, rewriteReplacement: rewrite?.replacement })
    this.native = {
      stripPrefix: pathOption('stripPrefix', opts.stripPrefix),
      addPrefix: pathOption('addPrefix', opts.addPrefix),
      mappings,
      rewritePattern: rewrite?.pattern,
      rewriteReplacement: rewrite?.replacement,
    }
  }
}
