// README's first command runs `npm run demo`; its --smoke mode sends requests through the
// gateway and exits, so the demo itself is tested.
import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { expect, it } from 'vitest'

const root = fileURLToPath(new URL('..', import.meta.url))

it('npm run demo -- --smoke round-robins two upstreams and exits', async () => {
  const out = await new Promise<string>((resolve, reject) => {
    execFile(process.execPath, ['scripts/demo.mjs', '--smoke'], { cwd: root, timeout: 30_000 }, (err, stdout) =>
      err ? reject(err) : resolve(stdout),
    )
  })
  expect(out).toMatch(/gateway listening on http:\/\/127\.0\.0\.1:\d+/)
  expect(out).toContain('GET /gateway/api/users?page=1 -> 200 {"upstream":"users-1"')
  expect(out).toContain('GET /gateway/api/users?page=2 -> 200 {"upstream":"users-2"')
  expect(out).toContain('GET /nowhere -> 404')
})
