/**
 * The listener's TLS option, `listen({ tls: { cert, key } })` and `reloadTls({ cert, key })`:
 * its shape is checked here; the PEM itself is parsed by the data plane (rustls), whose
 * errors name `tls.cert` or `tls.key` and become `ConfigError`s here.
 */
import { ConfigError, ErrorCodes, VelithonError } from './errors'
import type { NativeListenTls } from './native'
import { show } from './options'

/** The listener's certificate and private key, PEM, as strings or Buffers. */
export interface ListenTlsOptions {
  /** The certificate chain, PEM: the server's certificate first, then any intermediates. */
  cert: string | Buffer
  /** The certificate's private key, PEM (PKCS#8, PKCS#1 RSA or SEC1 EC). */
  key: string | Buffer
}

const KEYS = ['cert', 'key'] as const

/** Checks `{ cert, key }` (undefined = plain HTTP) and turns both into Buffers. */
export function listenTls(owner: string, value: unknown): NativeListenTls | undefined {
  if (value === undefined) return undefined
  if (value === null || typeof value !== 'object' || Array.isArray(value) || value instanceof Uint8Array) {
    throw new ConfigError('tls', `${owner}: option "tls" must be an object { cert, key } of PEM strings or Buffers, got ${show(value)}`)
  }
  const tls = value as Record<string, unknown>
  for (const name of Object.keys(tls)) {
    if (!(KEYS as readonly string[]).includes(name)) {
      throw new ConfigError(`tls.${name}`, `${owner}: unknown option "tls.${name}" (known options: tls.cert, tls.key)`)
    }
  }
  const [cert, key] = KEYS.map((name) => pem(owner, name, tls[name]))
  return { cert, key }
}

function pem(owner: string, name: string, value: unknown): Buffer {
  if (typeof value === 'string' && value.length > 0) return Buffer.from(value, 'utf8')
  if (value instanceof Uint8Array && value.length > 0) return Buffer.from(value.buffer, value.byteOffset, value.length)
  const got = value instanceof Uint8Array ? 'an empty Buffer' : show(value)
  throw new ConfigError(`tls.${name}`, `${owner}: option "tls.${name}" must be a non-empty PEM string or Buffer, got ${got}`)
}

const NAMED = /^(tls\.(?:cert|key)) ([\s\S]*)$/

/**
 * A data-plane error about the certificate or key (`VG_INVALID_CONFIG: tls.key does not
 * match …`) as a `ConfigError` naming that option; any other error unchanged.
 */
export function tlsError(owner: string, err: unknown): unknown {
  if (err instanceof VelithonError && err.code === ErrorCodes.INVALID_CONFIG) {
    const m = NAMED.exec(err.message)
    if (m) return new ConfigError(m[1], `${owner}: option "${m[1]}" ${m[2]}`)
  }
  return err
}
