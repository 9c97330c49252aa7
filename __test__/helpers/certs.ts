/**
 * Certificates made at test time (no private key is committed): a throw-away CA and leaf
 * certificates it signs, ECDSA P-256, PEM strings. The generator is plain ESM in
 * scripts/dev-certs.mjs (typed by dev-certs.d.mts), shared with the benchmark.
 */
export { createCa } from '../../scripts/dev-certs.mjs'
export type { Pem, TestCa, LeafOptions } from '../../scripts/dev-certs.mjs'
