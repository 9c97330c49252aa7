/**
 * Configuration is validated once, at construction, in TypeScript: a bad value throws a
 * ConfigError whose message names the option and shows the value.
 */
import { describe, expect, test } from 'vitest'
import {
  ConfigError,
  ErrorCodes,
  Gateway,
  GatewayRouter,
  LoadBalancer,
  RoundRobinStrategy,
  Velithon,
  VelithonError,
} from 'velithon-gateway'

/** Lets a test pass a value the types forbid, as a JavaScript user could. */
const untyped = (value: unknown): never => value as never

/** Runs `fn`, expects a ConfigError, and returns it. */
function configError(fn: () => unknown): ConfigError {
  let caught: unknown
  try {
    fn()
  } catch (err) {
    caught = err
  }
  expect(caught, 'expected a ConfigError to be thrown').toBeInstanceOf(ConfigError)
  return caught as ConfigError
}

async function configErrorAsync(fn: () => Promise<unknown>): Promise<ConfigError> {
  const caught = await Promise.resolve()
    .then(fn)
    .then(
      () => undefined,
      (err: unknown) => err,
    )
  expect(caught, 'expected a ConfigError').toBeInstanceOf(ConfigError)
  return caught as ConfigError
}

const lb = (): LoadBalancer => new LoadBalancer({ upstreamServers: ['http://127.0.0.1:9001'] })

describe('ConfigError', () => {
  test('is a typed error with a stable code (and instanceof works across the package boundary)', () => {
    const err = configError(() => new Gateway({ timeout: untyped('abc') }))
    expect(err).toBeInstanceOf(VelithonError)
    expect(err).toBeInstanceOf(Error)
    expect(err.name).toBe('ConfigError')
    expect(err.code).toBe('VG_INVALID_OPTION')
    expect(err.code).toBe(ErrorCodes.INVALID_OPTION)
    expect(err.option).toBe('timeout')
    expect(err.stack).toContain('ConfigError')
  })
})

describe('the examples from the spec of this suite', () => {
  test("timeout: 'abc'", () => {
    const err = configError(() => new Gateway({ timeout: untyped('abc') }))
    expect(err.option).toBe('timeout')
    expect(err.message).toContain('"timeout"')
    expect(err.message).toContain('"abc"')
  })

  test("upstreamServers: ['ftp://x']", () => {
    const err = configError(() => new LoadBalancer({ upstreamServers: ['ftp://x'] }))
    expect(err.option).toMatch(/^upstreamServers/)
    expect(err.message).toContain('upstreamServers')
    expect(err.message).toContain('"ftp://x"')
  })

  test("unknown option 'stripPaths' (a typo of stripPath)", () => {
    const gateway = new Gateway({ loadBalancer: lb() })
    const err = configError(() => gateway.route('/api/{path:path}', untyped({ stripPaths: true })))
    expect(err.option).toBe('stripPaths')
    expect(err.message).toContain('"stripPaths"')
    expect(err.message).toContain('stripPath')
  })

  test("route pattern '/a/{p:path}/b' ({…:path} must come last)", () => {
    const gateway = new Gateway({ loadBalancer: lb() })
    const err = configError(() => gateway.route('/a/{p:path}/b'))
    expect(err.message).toContain('"/a/{p:path}/b"')
    expect(err.message).toMatch(/path/)
  })

  test("methods: ['FETCH']", () => {
    const gateway = new Gateway({ loadBalancer: lb() })
    const err = configError(() => gateway.route('/a/{path:path}', { methods: ['FETCH'] }))
    expect(err.option).toBe('methods')
    expect(err.message).toContain('"methods"')
    expect(err.message).toContain('"FETCH"')
  })

  test('listen port 70000', async () => {
    const app = new Velithon({ workerThreads: 1 })
    const err = await configErrorAsync(() => app.listen({ port: 70000 }))
    expect(err.option).toBe('port')
    expect(err.message).toContain('"port"')
    expect(err.message).toContain('70000')
    // Nothing started: the app can still listen (on a valid port) afterwards.
    const { port } = await app.listen({ port: 0 })
    expect(port).toBeGreaterThan(0)
    await app.close()
  })
})

describe('Velithon options', () => {
  test.each([
    ['workerThreads', { workerThreads: 0 }, '0'],
    ['workerThreads', { workerThreads: 1.5 }, '1.5'],
    ['workerThreads', { workerThreads: '4' }, '"4"'],
    ['requestHeaderTimeout', { requestHeaderTimeout: '5 parsecs' }, '"5 parsecs"'],
    ['shutdownTimeout', { shutdownTimeout: -1 }, '-1'],
    ['trustedProxies', { trustedProxies: '127.0.0.1' }, '"127.0.0.1"'],
    ['trustedProxies', { trustedProxies: ['not-an-ip'] }, '"not-an-ip"'],
    ['trustedProxies', { trustedProxies: ['10.0.0.0/33'] }, '"10.0.0.0/33"'],
    ['trustedProxies', { trustedProxies: ['::1/129'] }, '"::1/129"'],
    ['trustedProxy', { trustedProxy: ['127.0.0.1'] }, 'trustedProxy'],
  ])('%s: %j', (option, options, shown) => {
    const err = configError(() => new Velithon(untyped(options)))
    expect(err.option).toBe(option)
    expect(err.message).toContain(option)
    expect(err.message).toContain(shown)
  })

  test('valid options are accepted', () => {
    expect(
      () =>
        new Velithon({
          workerThreads: 3,
          requestHeaderTimeout: '1.5s',
          shutdownTimeout: 250,
          trustedProxies: ['127.0.0.1', '10.0.0.0/8', '::1', 'fd00::/8'],
        }),
    ).not.toThrow()
    expect(() => new Velithon()).not.toThrow()
  })

  test('options must be an object', () => {
    const err = configError(() => new Velithon(untyped('fast')))
    expect(err.message).toContain('"fast"')
  })
})

describe('listen options', () => {
  test.each([
    ['port', { port: -1 }, '-1'],
    ['port', { port: 80.5 }, '80.5'],
    ['port', { port: '8080' }, '"8080"'],
    ['host', { host: 'example.com' }, '"example.com"'],
    ['hostname', { hostname: '127.0.0.1' }, 'hostname'],
  ])('%s: %j', async (option, options, shown) => {
    const app = new Velithon({ workerThreads: 1 })
    const err = await configErrorAsync(() => app.listen(untyped(options)))
    expect(err.option).toBe(option)
    expect(err.message).toContain(shown)
    await app.close()
  })
})

describe('Gateway options', () => {
  test.each([
    ['connectTimeout', { connectTimeout: {} }, '{}'],
    ['keepAliveTimeout', { keepAliveTimeout: '10 sec' }, '"10 sec"'],
    ['connectionPoolSize', { connectionPoolSize: 0 }, '0'],
    ['maxConnectionsPerHost', { maxConnectionsPerHost: 'many' }, '"many"'],
    ['connectionPoolTimeout', { connectionPoolTimeout: Number.NaN }, 'null'],
    ['loadBalancer', { loadBalancer: { upstreamServers: ['http://127.0.0.1:1'] } }, 'upstreamServers'],
    ['timeOut', { timeOut: '1s' }, 'timeOut'],
  ])('%s: %j', (option, options, shown) => {
    const err = configError(() => new Gateway(untyped(options)))
    expect(err.option).toBe(option)
    expect(err.message).toContain(option)
    expect(err.message).toContain(shown)
  })

  test.each([250, '250ms', '1.5s', '5m', '1h'])('duration %j is accepted', (value) => {
    expect(() => new Gateway({ timeout: untyped(value), connectTimeout: untyped(value) })).not.toThrow()
  })
})

describe('LoadBalancer options', () => {
  test.each([
    ['upstreamServers', { upstreamServers: [] }, '[]'],
    ['upstreamServers', { upstreamServers: 'http://127.0.0.1:9001' }, '"http://127.0.0.1:9001"'],
    ['upstreamServers', { upstreamServers: ['http://a:1', 'http://a:1'] }, '"http://a:1"'],
    ['upstreamServers[1]', { upstreamServers: ['http://a:1', 'localhost:9000'] }, '"localhost:9000"'],
    ['upstreamServers[0]', { upstreamServers: ['http://user:pw@a:1'] }, '"http://user:pw@a:1"'],
    ['upstreamServers[0]', { upstreamServers: ['http://a:1/?x=1'] }, '"http://a:1/?x=1"'],
    ['upstreamServers[0]', { upstreamServers: ['not a url'] }, '"not a url"'],
    ['strategy', { upstreamServers: ['http://a:1'], strategy: 'round_robin' }, '"round_robin"'],
    ['servers', { servers: ['http://a:1'] }, 'servers'],
  ])('%s: %j', (option, options, shown) => {
    const err = configError(() => new LoadBalancer(untyped(options)))
    expect(err.option).toBe(option)
    expect(err.message).toContain(option.replace(/\[\d+\]$/, ''))
    expect(err.message).toContain(shown)
  })

  test('setServers validates too, and keeps the old list on error', () => {
    const balancer = new LoadBalancer({ upstreamServers: ['http://127.0.0.1:9001'], strategy: new RoundRobinStrategy() })
    const err = configError(() => balancer.setServers(['ftp://x']))
    expect(err.message).toContain('"ftp://x"')
    expect(balancer.upstreamServers).toEqual(['http://127.0.0.1:9001'])
  })
})

describe('route options', () => {
  test.each([
    ['stripPath', { stripPath: 'yes' }, '"yes"'],
    ['preserveHost', { preserveHost: 1 }, '1'],
    ['timeout', { timeout: '1 week' }, '"1 week"'],
    ['methods', { methods: [] }, '[]'],
    ['methods', { methods: 'GET' }, '"GET"'],
    ['upstream', { upstream: 'ftp://x' }, '"ftp://x"'],
    ['loadBalancer', { upstream: 'http://127.0.0.1:1', loadBalancer: 'LB' }, '"LB"'],
    ['loadBalancer', { loadBalancer: {} }, '{}'],
  ])('%s: %j', (option, options, shown) => {
    const gateway = new Gateway({ loadBalancer: lb() })
    const err = configError(() => gateway.route('/a/{path:path}', untyped(options)))
    expect(err.option).toBe(option)
    expect(err.message).toContain(option)
    expect(err.message).toContain(shown)
  })

  test('both loadBalancer and upstream is an error', () => {
    const gateway = new Gateway({})
    const err = configError(() => gateway.route('/a', { loadBalancer: lb(), upstream: 'http://127.0.0.1:1' }))
    expect(err.message).toMatch(/loadBalancer.*upstream|upstream.*loadBalancer/)
  })

  test('no loadBalancer anywhere is an error that says what is missing', () => {
    const gateway = new Gateway({})
    const err = configError(() => gateway.route('/a/{path:path}'))
    expect(err.option).toBe('loadBalancer')
    expect(err.message).toContain('"/a/{path:path}"')
  })

  test.each(['no-slash', '/a/{x:bogus}', '/a/{x}/{x}', '/a/pre{x}', '/a/{x', '/{1x}'])('pattern %j', (pattern) => {
    const gateway = new Gateway({ loadBalancer: lb() })
    const err = configError(() => gateway.route(pattern))
    expect(err.message).toContain(JSON.stringify(pattern))
  })

  test.each(['/', '/a', '/a/{id}', '/a/{id:int}/b', '/a/{id:uuid}', '/a/{x:float}/{rest:path}', '/{path:path}'])(
    'pattern %j is accepted',
    (pattern) => {
      const gateway = new Gateway({ loadBalancer: lb() })
      expect(() => gateway.route(pattern)).not.toThrow()
    },
  )
})

describe('includeRouter', () => {
  test.each(['gw', '/gw/', '/g{w}', '/gw?x'])('prefix %j', (prefix) => {
    const app = new Velithon()
    const err = configError(() => app.includeRouter(new Gateway({}).getRouter(), { prefix }))
    expect(err.option).toBe('prefix')
    expect(err.message).toContain(JSON.stringify(prefix))
  })

  test('a router that is not a GatewayRouter', () => {
    const app = new Velithon()
    const err = configError(() => app.includeRouter(untyped({ routes: [] })))
    expect(err.option).toBe('router')
    expect(new Gateway({}).getRouter()).toBeInstanceOf(GatewayRouter)
  })

  test('an unknown includeRouter option', () => {
    const app = new Velithon()
    const err = configError(() => app.includeRouter(new Gateway({}).getRouter(), untyped({ prefx: '/gw' })))
    expect(err.option).toBe('prefx')
  })
})
