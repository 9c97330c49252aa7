/**
 * How the gateway reaches upstreams: `tls: { ca, cert, key, servername, rejectUnauthorized }`
 * (the names of Node's `tls.connect`) and `http2`, on a `Gateway`, a `LoadBalancer` or a
 * `route()`. The most specific level that sets an option wins, as a whole object: a
 * route's `tls` replaces its load balancer's, which replaces the gateway's.
 *
 * The shape is checked here; the PEM itself is parsed by the data plane (rustls), whose
 * errors name `tls.ca`, `tls.cert`, `tls.key` or `tls.servername` and become `ConfigError`s.
 */
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

/** @internal Checked options, PEM as Buffers; one object per user object (the cache key). */
export interface TlsConfig {
  readonly ca?: Buffer
  readonly cert?: Buffer
  readonly key?: Buffer
  readonly servername?: string
  readonly rejectUnauthorized: boolean
}

const KEYS = ['ca', 'cert', 'key', 'servername', 'rejectUnauthorized'] as const
const checked = new WeakMap<object, TlsConfig>()
const warned = new WeakSet<object>()

/** Checks a `tls` option (undefined = not set at this level). */
export function tlsOption(owner: string, value: unknown): TlsConfig | undefined {
  if (value === undefined) return undefined
  if (value === null || typeof value !== 'object' || Array.isArray(value) || value instanceof Uint8Array) {
    throw new ConfigError(
      'tls',
      `${owner}: option "tls" must be an object { ca, cert, key, servername, rejectUnauthorized }, got ${show(value)}`,
    )
  }
  const known = checked.get(value)
  if (known) return known
  const tls = value as Record<string, unknown>
  for (const name of Object.keys(tls)) {
    if (!(KEYS as readonly string[]).includes(name)) {
      throw new ConfigError(`tls.${name}`, `${owner}: unknown option "tls.${name}" (known options: ${KEYS.map((k) => `tls.${k}`).join(', ')})`)
    }
  }
  const config: TlsConfig = Object.freeze({
    ca: caOption(owner, tls.ca),
    cert: pem(owner, 'cert', tls.cert, 'CERTIFICATE'),
    key: pem(owner, 'key', tls.key, 'PRIVATE KEY'),
    servername: servername(owner, tls.servername),
    rejectUnauthorized: rejectOption(owner, tls.rejectUnauthorized),
  })
  if ((config.cert === undefined) !== (config.key === undefined)) {
    const [given, missing] = config.cert ? ['cert', 'key'] : ['key', 'cert']
    throw new ConfigError(`tls.${missing}`, `${owner}: option "tls.${given}" needs "tls.${missing}" (a client certificate and its private key go together)`)
  }
  if (!config.rejectUnauthorized && !warned.has(value)) {
    warned.add(value)
    process.emitWarning(
      `${owner}: tls.rejectUnauthorized is false, so upstream TLS certificates are NOT verified: ` +
        'anyone on the network path can impersonate the upstream and read or change its traffic. ' +
        'Trust a private CA with tls.ca instead.',
      { type: 'SecurityWarning', code: 'VG_TLS_INSECURE' },
    )
  }
  checked.set(value, config)
  return config
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

/** A PEM string or Buffer with at least one `-----BEGIN …<label>-----` block. */
function pem(owner: string, name: string, value: unknown, label: string): Buffer | undefined {
  if (value === undefined) return undefined
  let bytes: Buffer | undefined
  if (typeof value === 'string') bytes = Buffer.from(value, 'utf8')
  else if (value instanceof Uint8Array) bytes = Buffer.from(value.buffer, value.byteOffset, value.length)
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

const NAMED = /^(tls\.(?:ca|cert|key|servername))\b:? ?([\s\S]*)$/

/** A data-plane error naming a `tls.*` option as a `ConfigError`; any other unchanged. */
function tlsError(owner: string, err: unknown): unknown {
  if (err instanceof VelithonError && err.code === ErrorCodes.INVALID_CONFIG) {
    const m = NAMED.exec(err.message)
    if (m) return new ConfigError(m[1], `${owner}: option "${m[1]}": ${m[2]}`)
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

/** No `tls` at any level (a key of the transport cache). */
const NO_TLS: TlsConfig = Object.freeze({ rejectUnauthorized: true })

/**
 * The native transports of one gateway's client, one per distinct (`tls`, `http2`):
 * connections made under one set of options are never reused under another.
 */
export class Transports {
  #client: NativeClient
  #made = new Map<TlsConfig, [NativeTransport | undefined, NativeTransport | undefined]>()

  constructor(client: NativeClient) {
    this.#client = client
  }

  /** The transport for these options; undefined for the defaults (no tls, no http2). */
  get(owner: string, tls: TlsConfig | undefined, http2: boolean): NativeTransport | undefined {
    if (!tls && !http2) return undefined
    const key = tls ?? NO_TLS
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
      const transport = native(() => new NativeTransport(this.#client, nativeTransportOptions(key, http2)))
      pair[at] = transport
      return transport
    } catch (err) {
      throw tlsError(owner, err)
    }
  }
}
