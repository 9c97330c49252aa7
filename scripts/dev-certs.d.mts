// Types of dev-certs.mjs: a throw-away CA and the certificates it issues (tests, bench).

export interface Pem {
  /** The certificate, PEM. */
  cert: string
  /** Its private key, PKCS#8 PEM. */
  key: string
}

export interface TestCa extends Pem {
  /** Issues a certificate signed by this CA. */
  issue(options: LeafOptions): Promise<Pem>
}

export interface LeafOptions {
  /** DNS names and IP addresses it is valid for (subjectAltName). */
  hosts?: string[]
  commonName?: string
  /** Days from now; negative numbers give a certificate that has expired. */
  notBeforeDays?: number
  notAfterDays?: number
  /** 'server' (default) or 'client' (for mutual TLS). */
  usage?: 'server' | 'client'
}

/** A new certificate authority, valid from yesterday for a year. */
export function createCa(name?: string): Promise<TestCa>
