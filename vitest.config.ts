import { fileURLToPath } from 'node:url'
import { defineConfig } from 'vitest/config'

// The suites test the package as users get it: `import … from 'velithon-gateway'` resolves
// to the built ESM entry (dist/esm/index.js, a re-export of dist/cjs), and Node loads dist/
// itself (externalized, not transformed by Vite), so there is one instance of every class
// and `instanceof ConfigError` works. Build first: `node scripts/build-native.cjs --debug`
// and `node scripts/build-ts.cjs`.
const esmEntry = fileURLToPath(new URL('./dist/esm/index.js', import.meta.url))

export default defineConfig({
  resolve: {
    alias: [{ find: /^velithon-gateway$/, replacement: esmEntry }],
  },
  test: {
    include: ['__test__/**/*.test.ts'],
    environment: 'node',
    // The native addon runs its own threads and sockets; a child process per file keeps
    // files apart (and memory measurements honest).
    pool: 'forks',
    // Run the files one at a time: several suites measure memory, count upstream
    // connections or time things, which other files running alongside would disturb.
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 30_000,
    teardownTimeout: 10_000,
    server: {
      deps: {
        external: [/[\\/]dist[\\/](esm|cjs)[\\/]/],
      },
    },
  },
})
