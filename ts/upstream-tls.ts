/**
 * How the gateway reaches upstreams: `tls: { ca, cert, key, servername, rejectUnauthorized }`
 * (the names of Node's `tls.connect`) and `http2`, on a `Gateway`, a `LoadBalancer` or a
 * `route()`. The most specific level that sets an option wins, as a whole object: a
 * route's `tls` replaces its load balancer's, which replaces the gateway's.
 *
 * The shape is checked here and the PEM parsed by the data plane (rustls) at once, at
 * configuration time; its errors name `tls.ca`, `tls.cert`, `tls.key` or `tls.servername`
 * and become `ConfigError`s. The bytes are copied when checked, and checked options are
 * known by their content: equal options share one native transport (one pool), and
 * options changed later (the same object mutated) are new options.
 */
import { createHash } from 'node:crypto'
import { ConfigError, ErrorCodes, VelithonError, native } from './errors'
import { nativeBinding, type NativeClient, type NativeTransport, type NativeTransportOptions } from './native'
import { show } from './options'

/** Upstream TLS options, as Node's `tls.connect` names them. */
export interface UpstreamTlsOptions {
  /**
   * The CA certificates (PEM) to trust for the upstreams, one string/Buffer holding one or
   * more, or an array. Replaces the platform's root store, as Node's `ca` does: only these
   * CAs are trusted (add a public CA too if the same upstreams also use one).
   */
  ca?: string | Buffer | Array<string | Buffer>
  /** A client certificate (PEM, chain), for upstreams that require mutual TLS. Needs `key`. */
  cert?: string | Buffer
  /** The client certificate's private key (PEM: PKCS#8, PKCS#1 RSA or SEC1 EC; unencrypted). */
  key?: string | Buffer
  /**
   * The name sent as SNI and checked in the upstream's certificate, instead of the URL's
   * host: reach `https://10.0.0.5:8443` and verify it as `api.internal`.
   */
  servername?: string
  /**
   * Verify the upstream's certificate (default true). `false` accepts any certificate:
   * anyone on the network path can pose as the upstream. Prefer `ca` for a private CA.
   */
  rejectUnauthorized?: boolean
}

/** @internal Checked options, PEM copied into Buffers of their own. */
export interface TlsConfig {
  /** A digest of the normalised options: equal options, equal id (the transport cache key). */
  readonly id: string
  readonly ca?: Buffer
  readonly cert?: Buffer
  readonly key?: Buffer
  readonly servername?: string
  readonly rejectUnauthorized: boolean
}

const KEYS = ['ca', 'cert', 'key', 'servername', 'rejectUnauthorized'] as const
/** The ids of options the data plane accepted (parsed once per distinct options). */
const validated = new Set<string>()
/** The ids of insecure options warned about (once per distinct options). */
const warned = new Set<string>()

/** Checks a `tls` option (undefined = not set at this level). */
export function tlsOption(owner: string, value: unknown): TlsConfig | undefined {
  if (value === undefined) return undefined
  if (value === null || typeof value !== 'object' || Array.isArray(value) || value instanceof Uint8Array) {
    throw new ConfigError(
      'tls',
      `${owner}: option "tls" must be an object { ca, cert, key, servername, rejectUnauthorized }, got ${show(value)}`,
    )
  }
  const tls = value as Record<string, unknown>
  for (const name of Object.keys(tls)) {
    if (!(KEYS as readonly string[]).includes(name)) {
      throw new ConfigError(`tls.${name}`, `${owner}: unknown option "tls.${name}" (known options: ${KEYS.map((k) => `tls.${k}`).join(', ')})`)
    }
  }
  const fields = {
    ca: caOption(owner, tls.ca),
    cert: pem(owner, 'cert', tls.cert, 'CERTIFICATE'),
    key: pem(owner, 'key', tls.key, 'PRIVATE KEY'),
    servername: servername(owner, tls.servername),
    rejectUnauthorized: rejectOption(owner, tls.rejectUnauthorized),
  }
  if ((fields.cert === undefined) !== (fields.key === undefined)) {
    const [given, missing] = fields.cert ? ['cert', 'key'] : ['key', 'cert']
    throw new ConfigError(`tls.${missing}`, `${owner}: option "tls.${given}" needs "tls.${missing}" (a client certificate and its private key go together)`)
  }
  const config: TlsConfig = Object.freeze({ id: contentId(fields), ...fields })
  if (!validated.has(config.id)) {
    // Parsed as the data plane will (PEM, the key against the certificate, servername),
    // so options that cannot work fail here, not at a first request or health check.
    const { validateTransportOptions } = nativeBinding()
    try {
      native(() => validateTransportOptions(nativeTransportOptions(config, false)))
    } catch (err) {
      throw tlsError(owner, err)
    }
    validated.add(config.id)
  }
  if (!config.rejectUnauthorized && !warned.has(config.id)) {
    warned.add(config.id)
    process.emitWarning(
      `${owner}: tls.rejectUnauthorized is false, so upstream TLS certificates are NOT verified: ` +
        'anyone on the network path can impersonate the upstream and read or change its traffic. ' +
        'Trust a private CA with tls.ca instead.',
      { type: 'SecurityWarning', code: 'VG_TLS_INSECURE' },
    )
  }
  return config
}

/** A sha256 of the normalised options (each field tagged and length-prefixed). */
function contentId(fields: Omit<TlsConfig, 'id'>): string {
  const hash = createHash('sha256')
  const part = (tag: string, value: Buffer | string | undefined) => {
    if (value === undefined) {
      hash.update(`${tag}-;`)
      return
    }
    const bytes = typeof value === 'string' ? Buffer.from(value, 'utf8') : value
    hash.update(`${tag}${bytes.length}:`)
    hash.update(bytes)
  }
  part('ca', fields.ca)
  part('cert', fields.cert)
  part('key', fields.key)
  part('servername', fields.servername)
  hash.update(fields.rejectUnauthorized ? 'verify' : 'insecure')
  return hash.digest('hex')
}

function rejectOption(owner: string, value: unknown): boolean {
  if (value === undefined) return true
  if (typeof value !== 'boolean') {
    throw new ConfigError('tls.rejectUnauthorized', `${owner}: option "tls.rejectUnauthorized" must be true or false, got ${show(value)}`)
  }
  return value
}

function servername(owner: string, value: unknown): string | undefined {
  if (value === undefined) return undefined
  if (typeof value !== 'string' || value.length === 0 || value.length > 253 || !/^[A-Za-z0-9._:\-[\]]+$/.test(value)) {
    throw new ConfigError('tls.servername', `${owner}: option "tls.servername" must be a host name or IP address, got ${show(value)}`)
  }
  return value
}

function caOption(owner: string, value: unknown): Buffer | undefined {
  if (value === undefined) return undefined
  if (Array.isArray(value)) {
    if (value.length === 0) {
      throw new ConfigError('tls.ca', `${owner}: option "tls.ca" must not be an empty array`)
    }
    return Buffer.concat(value.flatMap((v, i) => [pem(owner, `ca[${i}]`, v, 'CERTIFICATE')!, Buffer.from('\n')]))
  }
  return pem(owner, 'ca', value, 'CERTIFICATE')
}

/**
 * A PEM string or Buffer with at least one `-----BEGIN …<label>-----` block, as a copy:
 * the caller may reuse or change its Buffer afterwards.
 */
function pem(owner: string, name: string, value: unknown, label: string): Buffer | undefined {
  if (value === undefined) return undefined
  let bytes: Buffer | undefined
  if (typeof value === 'string') bytes = Buffer.from(value, 'utf8')
  else if (value instanceof Uint8Array) bytes = Buffer.from(value) // copies
  const text = bytes?.toString('latin1') ?? ''
  const begin = new RegExp(`-----BEGIN [A-Z0-9 ]*${label}-----`)
  if (!bytes || !begin.test(text)) {
    const what = label === 'CERTIFICATE' ? 'PEM certificate(s) (-----BEGIN CERTIFICATE-----)' : 'PEM private key (-----BEGIN PRIVATE KEY-----)'
    const got = value instanceof Uint8Array ? `a Buffer of ${value.length} bytes without one` : show(typeof value === 'string' && value.length > 80 ? `${value.slice(0, 77)}...` : value)
    throw new ConfigError(`tls.${name}`, `${owner}: option "tls.${name}" must be a ${what} as a string or Buffer, got ${got}`)
  }
  return bytes
}

/** Checks an `http2` option (undefined = not set at this level). */
export function http2Option(owner: string, value: unknown): boolean | undefined {
  if (value === undefined || typeof value === 'boolean') return value
  throw new ConfigError('http2', `${owner}: option "http2" must be true or false, got ${show(value)}`)
}

const NAMED = /^(tls\.(?:ca|cert|key|servername))\b(:?)\s*([\s\S]*)$/

/**
 * A data-plane error naming a `tls.*` option as a `ConfigError` (`LoadBalancer: option
 * "tls.ca" is not valid PEM: …`); any other unchanged.
 */
function tlsError(owner: string, err: unknown): unknown {
  if (err instanceof VelithonError && err.code === ErrorCodes.INVALID_CONFIG) {
    const m = NAMED.exec(err.message)
    if (m) return new ConfigError(m[1], `${owner}: option "${m[1]}"${m[2] || ''} ${m[3]}`)
  }
  return err
}

/** @internal What the data plane takes. */
export function nativeTransportOptions(tls: TlsConfig | undefined, http2: boolean): NativeTransportOptions {
  return {
    ca: tls?.ca,
    cert: tls?.cert,
    key: tls?.key,
    servername: tls?.servername,
    rejectUnauthorized: tls?.rejectUnauthorized ?? true,
    http2,
  }
}

/** Whether two effective (`tls`, `http2`) pairs reach upstreams the same way. */
export function sameTransport(a: TlsConfig | undefined, aHttp2: boolean | undefined, b: TlsConfig | undefined, bHttp2: boolean | undefined): boolean {
  return a?.id === b?.id && (aHttp2 ?? false) === (bHttp2 ?? false)
}

/**
 * The native transports of one gateway's client, one per distinct (`tls` content,
 * `http2`): connections made under one set of options are never reused under another,
 * and equal options given as different objects share one.
 */
export class Transports {
  #client: NativeClient
  /** By `TlsConfig.id` ('' for no tls): [HTTP/1.1 or ALPN, HTTP/2 only]. */
  #made = new Map<string, [NativeTransport | undefined, NativeTransport | undefined]>()

  constructor(client: NativeClient) {
    this.#client = client
  }

  /** The transport for these options; undefined for the defaults (no tls, no http2). */
  get(owner: string, tls: TlsConfig | undefined, http2: boolean): NativeTransport | undefined {
    if (!tls && !http2) return undefined
    const key = tls?.id ?? ''
    let pair = this.#made.get(key)
    if (!pair) {
      pair = [undefined, undefined]
      this.#made.set(key, pair)
    }
    const at = http2 ? 1 : 0
    const made = pair[at]
    if (made) return made
    const { NativeTransport } = nativeBinding()
    try {
      const transport = native(() => new NativeTransport(this.#client, nativeTransportOptions(tls, http2)))
      pair[at] = transport
      return transport
    } catch (err) {
      throw tlsError(owner, err)
    }
  }
}
