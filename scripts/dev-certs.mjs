// Certificates made at test and bench time (no private key is committed): a throw-away CA
// and leaf certificates it signs, ECDSA P-256, PEM strings, as a real deployment would
// have them. Plain ESM so both the TypeScript tests (__test__/helpers/certs.ts) and the
// benchmark (bench/) import it; types in dev-certs.d.mts. Needs the devDependencies
// @peculiar/x509 and reflect-metadata.
import 'reflect-metadata'
import { webcrypto } from 'node:crypto'
import * as x509 from '@peculiar/x509'

x509.cryptoProvider.set(webcrypto)

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' }
const DAY = 24 * 60 * 60 * 1000

/** @param {ArrayBuffer} der */
function pemKey(der) {
  const b64 = Buffer.from(der).toString('base64').replace(/(.{64})/g, '$1\n')
  return `-----BEGIN PRIVATE KEY-----\n${b64.trim()}\n-----END PRIVATE KEY-----\n`
}

function serial() {
  return Buffer.from(webcrypto.getRandomValues(new Uint8Array(12))).toString('hex').replace(/^0*/, '1')
}

/** @returns {Promise<CryptoKeyPair>} */
async function keyPair() {
  return /** @type {CryptoKeyPair} */ (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']))
}

/**
 * A new certificate authority, valid from yesterday for a year.
 * @param {string} [name]
 * @returns {Promise<import('./dev-certs.d.mts').TestCa>}
 */
export async function createCa(name = 'velithon test CA') {
  const keys = await keyPair()
  const now = Date.now()
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=${name}`,
    notBefore: new Date(now - DAY),
    notAfter: new Date(now + 365 * DAY),
    keys,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  })
  const ca = {
    cert: cert.toString('pem') + '\n',
    key: pemKey(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)),
  }
  return {
    ...ca,
    async issue(options) {
      const leafKeys = await keyPair()
      const hosts = options.hosts ?? ['localhost', '127.0.0.1']
      const names = hosts.map((h) => (/^[\d.]+$/.test(h) || h.includes(':') ? { type: 'ip', value: h } : { type: 'dns', value: h }))
      const leaf = await x509.X509CertificateGenerator.create({
        serialNumber: serial(),
        subject: `CN=${options.commonName ?? hosts[0] ?? 'leaf'}`,
        issuer: cert.subject,
        notBefore: new Date(Date.now() + (options.notBeforeDays ?? -1) * DAY),
        notAfter: new Date(Date.now() + (options.notAfterDays ?? 30) * DAY),
        publicKey: leafKeys.publicKey,
        signingKey: keys.privateKey,
        signingAlgorithm: ALG,
        extensions: [
          new x509.BasicConstraintsExtension(false, undefined, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
          new x509.ExtendedKeyUsageExtension(
            [options.usage === 'client' ? x509.ExtendedKeyUsage.clientAuth : x509.ExtendedKeyUsage.serverAuth],
            false,
          ),
          new x509.SubjectAlternativeNameExtension(names, false),
          await x509.AuthorityKeyIdentifierExtension.create(cert, false),
        ],
      })
      return {
        cert: leaf.toString('pem') + '\n',
        key: pemKey(await webcrypto.subtle.exportKey('pkcs8', leafKeys.privateKey)),
      }
    },
  }
}
