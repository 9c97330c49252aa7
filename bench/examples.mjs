// Release builds of velithon-core's examples the benchmark runs: the fixed upstream and
// the floor proxy. Built with cargo when missing or older than their source.
import { existsSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { which } from './procs.mjs'

/** A release build of one of velithon-core's examples (`fixed-upstream`, `floor-proxy`). */
export async function ensureExampleBinary(root, procs, example) {
  const targetDir = process.env.CARGO_TARGET_DIR ?? join(root, 'target')
  const bin = join(targetDir, 'release', 'examples', example)
  const src = join(root, 'crates', 'core', 'examples', `${example.replace(/-/g, '_')}.rs`)
  // Rebuilt when its own source changed (e.g. the --tls mode), not for every crates/ edit.
  if (existsSync(bin) && (!existsSync(src) || statSync(bin).mtimeMs >= statSync(src).mtimeMs)) return bin
  const cargo = process.env.CARGO || 'cargo'
  if (!which(cargo) && !existsSync(cargo)) {
    if (existsSync(bin)) return bin
    throw new Error(`${bin} is missing and cargo was not found to build it`)
  }
  process.stderr.write(`bench: building ${example} (cargo build --release --example ${example} -p velithon-core)…\n`)
  const rec = procs.spawn('cargo build', cargo, ['build', '--release', '--example', example, '-p', 'velithon-core'], { cwd: root })
  rec.child.stderr.on('data', (d) => process.stderr.write(d))
  let timer
  const r = await Promise.race([rec.exit, new Promise((res) => (timer = setTimeout(() => res('timeout'), 30 * 60_000)))])
  clearTimeout(timer)
  if (r === 'timeout') {
    await procs.kill(rec.pid)
    throw new Error(`cargo build of ${example} took more than 30 minutes; killed`)
  }
  if (r.code !== 0 || !existsSync(bin)) throw new Error(`cargo build of ${example} failed (code ${r.code})`)
  return bin
}

