/**
 * The built-in load-balancing strategies (all run in Rust), end to end: real node:http
 * upstreams that answer with their own id, a Gateway mounting one LoadBalancer on every
 * path, and keep-alive clients that tally who served each request.
 *
 * Statistical bounds are stated next to each assertion: they are chosen so that a correct
 * implementation fails them with a probability far below one in a million runs, while a
 * wrong one (a skewed or sticky pick) fails them.
 */
import { afterEach, describe, expect, test } from 'vitest'
import {
  ConfigError,
  ConsistentHashStrategy,
  LeastConnectionsStrategy,
  LoadBalancer,
  PowerOfTwoChoicesStrategy,
  RandomStrategy,
  RoundRobinStrategy,
  WeightedStrategy,
  type HashKey,
} from 'velithon-gateway'
import { closeAll } from './helpers/net'
import { drive, driveSequential, hit, idOfUrl, idUpstream, idUpstreams, keepAliveAgent, serveBalancer, Tally } from './helpers/tally'

afterEach(closeAll)

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

/** Four upstreams a–d behind a balancer with `strategy`; resolves with the gateway's base URL. */
async function fourBehind(strategy: ConstructorParameters<typeof LoadBalancer>[0]['strategy']) {
  const ups = await idUpstreams(4)
  const loadBalancer = new LoadBalancer({ upstreamServers: ups.map((u) => u.url), strategy })
  const base = await serveBalancer(loadBalancer)
  return { ups, loadBalancer, base }
}

function expectNoFailures(t: Tally): void {
  expect(t.failures.length, `failed requests: ${t.describeFailures()}`).toBe(0)
}

// ---------------------------------------------------------------------------------------
// Round robin and random

describe('RoundRobinStrategy and RandomStrategy over 10,000 requests', () => {
  const N = 10_000

  test('round robin: each server in turn, exactly a quarter each', async () => {
    const { base } = await fourBehind(new RoundRobinStrategy())
    // Sequential requests see the order itself: a b c d a b c d …
    const seq = await driveSequential(base, 40)
    expectNoFailures(seq)
    const start = seq.order[0]
    const cycle = ['a', 'b', 'c', 'd']
    const rotated = [...cycle.slice(cycle.indexOf(start)), ...cycle.slice(0, cycle.indexOf(start))]
    expect(seq.order.join('')).toBe(rotated.join('').repeat(10))

    // Concurrent: every pick still takes the next server. The bound asked for is 25% ± 2%;
    // round robin owes more — a shared counter gives each of 4 servers exactly N/4 picks
    // (the 40 sequential ones above were 10 whole turns).
    const t = await drive(base, N, { concurrency: 16 })
    expectNoFailures(t)
    console.log('round robin, 10,000 requests:', t.summary())
    for (const id of cycle) {
      expect(Math.abs(t.share(id) - 0.25), `${id}: ${JSON.stringify(t.shares())}`).toBeLessThan(0.02)
      expect(t.count(id), `${id}: ${JSON.stringify(t.summary())}`).toBe(N / 4)
    }
  })

  test('random: each server 25% ± 2%', async () => {
    const { base } = await fourBehind(new RandomStrategy())
    const t = await drive(base, N, { concurrency: 16 })
    expectNoFailures(t)
    console.log('random, 10,000 requests:', t.summary())
    // A server's count is Binomial(n = 10,000, p = 1/4): σ = √(n·p·(1−p)) ≈ 43.3 requests,
    // 0.433% of n. ±2% is ≈ 4.6σ: a fair pick misses it with probability ≈ 4·10⁻⁶ per
    // server (< 2·10⁻⁵ for the four), a pick that favours one server by 3% fails it.
    for (const id of ['a', 'b', 'c', 'd']) {
      expect(Math.abs(t.share(id) - 0.25), `${id}: ${JSON.stringify(t.shares())}`).toBeLessThan(0.02)
    }
    // And it is not round robin in disguise: sequential picks are not a fixed cycle.
    const seq = await driveSequential(base, 40)
    expectNoFailures(seq)
    expect(seq.order.join('')).not.toMatch(/^(?:(abcd)|(bcda)|(cdab)|(dabc)){10}$/)
  })
})

// ---------------------------------------------------------------------------------------
// Weighted

/** Per-id counts of one window. */
function countsOf(ids: string[]): Record<string, number> {
  const out: Record<string, number> = {}
  for (const id of ids) out[id] = (out[id] ?? 0) + 1
  return out
}

describe('WeightedStrategy (smooth weighted round robin)', () => {
  test('3:2:1 — every window of 6 holds 3/2/1 picks, interleaved (a b a c b a)', async () => {
    const [a, b, c] = await idUpstreams(3)
    const strategy = new WeightedStrategy({ [a.url]: 3, [b.url]: 2, [c.url]: 1 })
    const loadBalancer = new LoadBalancer({ upstreamServers: [a.url, b.url, c.url], strategy })
    const base = await serveBalancer(loadBalancer)

    const seq = await driveSequential(base, 60)
    expectNoFailures(seq)
    const order = seq.order
    console.log('weighted 3:2:1, first 12 picks:', order.slice(0, 12).join(' '))
    // Every window of 6 consecutive picks (sliding, not only aligned) has exactly 3/2/1.
    for (let i = 0; i + 6 <= order.length; i++) {
      expect(countsOf(order.slice(i, i + 6)), `window at ${i}: ${order.join('')}`).toEqual({ a: 3, b: 2, c: 1 })
    }
    // Interleaved, not in blocks: never the same server three times running, and never
    // a run of 'a' as long as its weight.
    expect(order.join(''), 'a block of picks').not.toMatch(/(.)\1\1/)
    // NGINX's exact sequence (ties go to the server listed first).
    expect(order.join('')).toBe('abacba'.repeat(10))
    // status() reports the weights.
    expect(loadBalancer.status().map((s) => [idOfUrl([a, b, c], s.url), s.weight])).toEqual([
      ['a', 3],
      ['b', 2],
      ['c', 1],
    ])
  })

  test('3:2:1 — exactly 50% / 33% / 17% of 6,000 concurrent requests', async () => {
    const [a, b, c] = await idUpstreams(3)
    // Weights given as { url, weight } entries this time.
    const loadBalancer = new LoadBalancer({
      upstreamServers: [
        { url: a.url, weight: 3 },
        { url: b.url, weight: 2 },
        { url: c.url, weight: 1 },
      ],
      strategy: new WeightedStrategy({ [a.url]: 3, [b.url]: 2, [c.url]: 1 }),
    })
    const base = await serveBalancer(loadBalancer)
    const t = await drive(base, 6_000, { concurrency: 12 })
    expectNoFailures(t)
    console.log('weighted 3:2:1, 6,000 requests:', t.summary())
    // Each whole turn of 6 picks is 3/2/1 whatever the interleaving of clients, so 6,000
    // picks (1,000 turns) are exactly 3,000 / 2,000 / 1,000.
    expect(t.summary()).toEqual({ a: 3_000, b: 2_000, c: 1_000 })
  })

  test('5:1:1 — the exact sequence a a b a c a a', async () => {
    const [a, b, c] = await idUpstreams(3)
    const strategy = new WeightedStrategy({ [a.url]: 5, [b.url]: 1, [c.url]: 1 })
    const loadBalancer = new LoadBalancer({ upstreamServers: [a.url, b.url, c.url], strategy })
    const base = await serveBalancer(loadBalancer)
    const seq = await driveSequential(base, 35)
    expectNoFailures(seq)
    console.log('weighted 5:1:1, 14 picks:', seq.order.slice(0, 14).join(' '))
    expect(seq.order.join('')).toBe('aabacaa'.repeat(5))
  })

  test('a weight change through setServers([{ url, weight }]) takes effect', async () => {
    const [a, b, c] = await idUpstreams(3)
    const strategy = new WeightedStrategy({ [a.url]: 3, [b.url]: 2, [c.url]: 1 })
    const loadBalancer = new LoadBalancer({ upstreamServers: [a.url, b.url, c.url], strategy })
    const base = await serveBalancer(loadBalancer)
    const agent = keepAliveAgent(1)
    const before = await driveSequential(base, 12, { agent })
    expect(before.summary()).toEqual({ a: 6, b: 4, c: 2 })

    // Now c weighs 4, a 1, b 1: 1/6, 1/6, 4/6.
    loadBalancer.setServers([
      { url: a.url, weight: 1 },
      { url: b.url, weight: 1 },
      { url: c.url, weight: 4 },
    ])
    expect(loadBalancer.status().map((s) => s.weight)).toEqual([1, 1, 4])
    const after = await driveSequential(base, 600, { agent })
    expectNoFailures(after)
    console.log('weighted after setServers 1:1:4, 600 requests:', after.summary())
    // Smooth WRR may carry the old turn's running state into the new weights; from any
    // state a server's count after k picks is k·w/W plus at most a couple (the running
    // values stay within ±W). So 600 picks: 100 / 100 / 400, each ± 3.
    expect(Math.abs(after.count('a') - 100), JSON.stringify(after.summary())).toBeLessThanOrEqual(3)
    expect(Math.abs(after.count('b') - 100), JSON.stringify(after.summary())).toBeLessThanOrEqual(3)
    expect(Math.abs(after.count('c') - 400), JSON.stringify(after.summary())).toBeLessThanOrEqual(3)
    // Still interleaved: the light servers a and b never twice in a row.
    expect(after.order.join('')).not.toMatch(/aa|bb/)

    // Back to plain strings: the strategy's own map (3:2:1) applies again.
    loadBalancer.setServers([a.url, b.url, c.url])
    expect(loadBalancer.status().map((s) => s.weight)).toEqual([3, 2, 1])
    const back = await driveSequential(base, 600, { agent })
    expect(Math.abs(back.count('a') - 300), JSON.stringify(back.summary())).toBeLessThanOrEqual(3)
    expect(Math.abs(back.count('b') - 200), JSON.stringify(back.summary())).toBeLessThanOrEqual(3)
    expect(Math.abs(back.count('c') - 100), JSON.stringify(back.summary())).toBeLessThanOrEqual(3)
  })
})

// ---------------------------------------------------------------------------------------
// Least connections

describe('LeastConnectionsStrategy', () => {
  test('a server that holds every request 300 ms gets far fewer requests', async () => {
    const ups = await idUpstreams(4)
    const slow = ups[0]
    slow.delayMs = 300
    const loadBalancer = new LoadBalancer({ upstreamServers: ups.map((u) => u.url), strategy: new LeastConnectionsStrategy() })
    const base = await serveBalancer(loadBalancer)
    const N = 2_000
    const started = Date.now()
    const t = await drive(base, N, { concurrency: 8 })
    const ms = Date.now() - started
    expectNoFailures(t)
    console.log(`least connections, slow 'a' (300 ms), ${N} requests in ${ms} ms:`, t.summary(), 'peak in flight at a:', slow.peakInFlight)
    // Round robin would send it 25% (500). Least connections sends a request to 'a' only
    // when no fast server has fewer in flight than 'a' does; with 8 clients 'a' holds at
    // most a request or two at a time, each for 300 ms, so over the whole run it can serve
    // at most ~(run time / 300 ms) × (a few) requests. Bound: under 5% of the traffic.
    expect(t.share('a'), JSON.stringify(t.shares())).toBeLessThan(0.05)
    // It is not shut out, though: it is still a least-loaded server now and then.
    expect(t.count('a')).toBeGreaterThan(0)
    for (const id of ['b', 'c', 'd']) expect(t.share(id), JSON.stringify(t.shares())).toBeGreaterThan(0.28)
  })

  test('equal servers share evenly', async () => {
    const { base } = await fourBehind(new LeastConnectionsStrategy())
    const t = await drive(base, 4_000, { concurrency: 8 })
    expectNoFailures(t)
    console.log('least connections, equal servers, 4,000 requests:', t.summary())
    // Ties are taken in turn, so equal servers each get about a quarter. In-flight counts
    // differ from moment to moment, so this is not exact; 25% ± 5% (a fair random pick
    // would be within ± 3.5σ ≈ 2.4%; this allows for the moments of unequal load).
    for (const id of ['a', 'b', 'c', 'd']) {
      expect(Math.abs(t.share(id) - 0.25), `${id}: ${JSON.stringify(t.shares())}`).toBeLessThan(0.05)
    }
    // Sequential requests (nothing in flight at each pick: all tied) go strictly in turn.
    const seq = await driveSequential(base, 40)
    expectNoFailures(seq)
    for (let i = 0; i + 4 <= 40; i += 4) {
      expect(new Set(seq.order.slice(i, i + 4)).size, seq.order.join('')).toBe(4)
    }
  })
})

// ---------------------------------------------------------------------------------------
// Power of two choices

describe('PowerOfTwoChoicesStrategy', () => {
  test('traffic moves away from a server whose latency rises', async () => {
    const { ups, base, loadBalancer } = await fourBehind(new PowerOfTwoChoicesStrategy())
    const agent = keepAliveAgent(8)
    const before = await drive(base, 2_000, { concurrency: 8, agent })
    expectNoFailures(before)
    // With real (jittery) latencies P2C does not split evenly: it favours whichever
    // servers measured fastest. Slow down the one it favoured most, so its share before
    // is at least 25% (the largest of four shares).
    const favourite = ups.reduce((x, y) => (before.count(y.id) > before.count(x.id) ? y : x))
    console.log(`p2c, all fast, 2,000 requests (slowing '${favourite.id}' next):`, before.summary())
    expect(before.share(favourite.id)).toBeGreaterThanOrEqual(0.25)

    // 200 ms rather than 50: the others' estimates measured 3–9 ms on this debug build,
    // so with a few requests in flight they can cost ~50 ms themselves; 200 ms keeps the
    // margin wide on a busy machine.
    favourite.delayMs = 200
    const after = await drive(base, 1_000, { concurrency: 8, agent })
    expectNoFailures(after)
    const latency = Object.fromEntries(loadBalancer.status().map((s) => [idOfUrl(ups, s.url), Math.round(s.latencyMs * 10) / 10]))
    console.log(`p2c, '${favourite.id}' delays 200 ms, next 1,000 requests:`, after.summary(), 'latencyMs:', latency)
    // Peak EWMA takes the first 200 ms sample at once; from then on it costs ≥ 200 ms
    // while the others cost a few ms × (in flight + 1) with at most 8 in flight, so every
    // pair holding it also holds a cheaper server: it gets only the requests picked before
    // its first slow answer came back (≤ 8 + a few). Bound: under 3% of the next 1,000
    // (it had ≥ 25% before).
    expect(after.share(favourite.id), JSON.stringify(after.shares())).toBeLessThan(0.03)
    expect(latency[favourite.id]).toBeGreaterThanOrEqual(190)
  })

  // Recovery: the peak-EWMA estimate should fade with time (linkerd2/tower and Finagle
  // decay it on every read), so a server that slowed down once and then recovered is
  // tried again ("its estimate decays, so it comes back", says power_of_two.rs). With a
  // 10 s decay a 50 ms estimate falls to 50·e^(−0.3) ≈ 37 ms within 3 s. This checks the
  // estimate (status().latencyMs, what P2C compares) to stay bounded: waiting for the
  // traffic itself to return would take ~20–40 s at this load, so that part is skipped.
  // Today the estimate only moves when a response is observed, and a server costlier than
  // every other one is never picked, so it stays at its peak and the server gets no
  // request at all, however long the wait (seen: 0 of ~80,000 requests over 25 s).
  test('after the server recovers its estimate fades with time (peak EWMA decay)', async () => {
    const { ups, base, loadBalancer } = await fourBehind(new PowerOfTwoChoicesStrategy())
    const a = ups[0]
    a.delayMs = 50
    const agent = keepAliveAgent(4)
    await drive(base, 400, { concurrency: 4, agent })
    a.delayMs = 0
    const latencyOfA = () => loadBalancer.status().find((s) => s.url === a.url || s.url === `${a.url}/`)!.latencyMs
    const peak = latencyOfA()
    expect(peak).toBeGreaterThanOrEqual(45)
    // Light traffic for 3 s; 'a' is never picked (every pair holds a cheaper server).
    const deadline = Date.now() + 3_000
    const during = new Tally()
    while (Date.now() < deadline) await drive(base, 40, { concurrency: 4, agent, tally: during })
    expectNoFailures(during)
    const later = latencyOfA()
    console.log(`p2c recovery: 'a' estimate ${peak.toFixed(1)} ms -> ${later.toFixed(1)} ms after 3 s; requests meanwhile:`, during.summary())
    expect(later, `estimate of 'a' after 3 s (was ${peak} ms); it served ${during.count('a')} of ${during.total}`).toBeLessThan(peak * 0.9)
  })
})

// ---------------------------------------------------------------------------------------
// Consistent hashing

async function hashBehind(key: HashKey, n = 4) {
  const ups = await idUpstreams(n)
  const loadBalancer = new LoadBalancer({ upstreamServers: ups.map((u) => u.url), strategy: new ConsistentHashStrategy({ key }) })
  const base = await serveBalancer(loadBalancer)
  return { ups, loadBalancer, base }
}

/** Which server each key goes to, sending `x-user: <key>`. */
async function mapKeys(base: string, keys: string[], concurrency = 8): Promise<Map<string, string>> {
  const out = new Map<string, string>()
  const agent = keepAliveAgent(concurrency)
  let next = 0
  const failures: string[] = []
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < keys.length) {
        const key = keys[next++]
        const h = await hit(`${base}/k`, agent, { 'x-user': key })
        if (h.status !== 200) failures.push(`${key}: ${h.status} ${h.body.slice(0, 200)}`)
        else out.set(key, h.body)
      }
    }),
  )
  expect(failures, failures.slice(0, 3).join('; ')).toEqual([])
  return out
}

function distribution(map: Map<string, string>): Record<string, number> {
  return countsOf([...map.values()].sort())
}

describe('ConsistentHashStrategy', () => {
  test('header key: the same key always reaches the same server (1,000 keys × 3)', async () => {
    const { base } = await hashBehind({ header: 'X-User' })
    const keys = Array.from({ length: 1_000 }, (_, i) => `user-${i}`)
    const first = await mapKeys(base, keys)
    for (let round = 0; round < 2; round++) {
      const again = await mapKeys(base, keys)
      const moved = keys.filter((k) => again.get(k) !== first.get(k))
      expect(moved.length, `keys that changed server in round ${round + 2}: ${moved.slice(0, 5).join(', ')}`).toBe(0)
    }
    // And all four servers are in use.
    expect(Object.keys(distribution(first)).sort()).toEqual(['a', 'b', 'c', 'd'])
  })

  test('2,000 keys spread over 4 servers, each 25% ± 8%', async () => {
    const { base } = await hashBehind({ header: 'x-user' })
    const keys = Array.from({ length: 2_000 }, (_, i) => `k${i}-${(i * 2654435761) % 1000003}`)
    const map = await mapKeys(base, keys)
    const dist = distribution(map)
    console.log('consistent hash, 2,000 keys over 4 servers:', dist)
    // Two sources of spread: the ring (160 points per server, placed by hashing the URL,
    // whose port is random here: an arc share is 25% with σ ≈ 25%/√160 ≈ 2%) and the
    // sampling of 2,000 keys (σ ≈ 1%); together σ ≈ 2.2%, so ±8% is ≈ 3.6σ. A simulation
    // of random rings (20,000 runs) put some server outside ±8% in ~1 run in 4,000 and
    // outside ±7.2% in 1 in 1,000.
    for (const id of ['a', 'b', 'c', 'd']) {
      expect(Math.abs((dist[id] ?? 0) / 2_000 - 0.25), JSON.stringify(dist)).toBeLessThan(0.08)
    }
  })

  test('removing one server moves only its keys (~1/4); adding one moves ~1/5, only to it', async () => {
    const ups = await idUpstreams(5)
    const [a, b, c, d, e] = ups
    const loadBalancer = new LoadBalancer({
      upstreamServers: [a.url, b.url, c.url, d.url],
      strategy: new ConsistentHashStrategy({ key: { header: 'x-user' } }),
    })
    const base = await serveBalancer(loadBalancer)
    const keys = Array.from({ length: 2_000 }, (_, i) => `member-${i}`)
    const four = await mapKeys(base, keys)

    // Remove d.
    loadBalancer.setServers([a.url, b.url, c.url])
    const three = await mapKeys(base, keys)
    const movedOnRemove = keys.filter((k) => three.get(k) !== four.get(k))
    const strayOnRemove = movedOnRemove.filter((k) => four.get(k) !== 'd')
    console.log(`consistent hash: removing d moved ${movedOnRemove.length} of 2,000 keys; of 4:`, distribution(four), 'of 3:', distribution(three))
    expect(strayOnRemove.length, `keys not on d that moved: ${strayOnRemove.slice(0, 5).join(', ')}`).toBe(0)
    expect(movedOnRemove.length).toBe(keys.filter((k) => four.get(k) === 'd').length)
    // About 1/4 of keys (d's share, 25% ± 8% as above).
    expect(Math.abs(movedOnRemove.length / 2_000 - 0.25)).toBeLessThan(0.08)
    expect(new Set(three.values())).toEqual(new Set(['a', 'b', 'c']))

    // Add e (a server the ring has not seen).
    loadBalancer.setServers([a.url, b.url, c.url, e.url])
    const withE = await mapKeys(base, keys)
    const movedOnAdd = keys.filter((k) => withE.get(k) !== three.get(k))
    const strayOnAdd = movedOnAdd.filter((k) => withE.get(k) !== 'e')
    console.log(`consistent hash: adding e moved ${movedOnAdd.length} of 2,000 keys:`, distribution(withE))
    expect(strayOnAdd.length, `keys that moved elsewhere than e: ${strayOnAdd.slice(0, 5).join(', ')}`).toBe(0)
    // The new server takes its arcs: about 1/4 of keys with 4 servers (1/5 in the brief's
    // 4 → 5 case; here 3 → 4), ± 8%.
    expect(Math.abs(movedOnAdd.length / 2_000 - 0.25)).toBeLessThan(0.08)

    // Add d back (4 → 5): about 1/5 move, only to d; and d gets back exactly the keys
    // it had, those not taken by e.
    loadBalancer.setServers([a.url, b.url, c.url, d.url, e.url])
    const five = await mapKeys(base, keys)
    const movedToD = keys.filter((k) => five.get(k) !== withE.get(k))
    console.log(`consistent hash: adding d back (4 → 5) moved ${movedToD.length} of 2,000 keys:`, distribution(five))
    expect(movedToD.filter((k) => five.get(k) !== 'd')).toEqual([])
    expect(Math.abs(movedToD.length / 2_000 - 0.2)).toBeLessThan(0.08)
    // Same ring positions as before: a key that was on d with four servers is on d again
    // unless e took it.
    for (const k of keys) {
      if (four.get(k) === 'd' && five.get(k) !== 'd') expect(five.get(k), k).toBe('e')
    }
  })

  test('a request without the header still succeeds (round robin)', async () => {
    const { base } = await hashBehind({ header: 'x-user' })
    const t = await driveSequential(base, 40)
    expectNoFailures(t)
    console.log('consistent hash, no header, 40 requests:', t.summary())
    // Round robin: all four, evenly.
    expect(t.summary()).toEqual({ a: 10, b: 10, c: 10, d: 10 })
  })

  test('cookie key', async () => {
    const { base } = await hashBehind({ cookie: 'session' })
    const agent = keepAliveAgent(4)
    const firstOf = new Map<string, string>()
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 100; i++) {
        const h = await hit(`${base}/c`, agent, { cookie: `theme=dark; session=s${i}; other=${round}` })
        expect(h.status).toBe(200)
        if (round === 0) firstOf.set(`s${i}`, h.body)
        else expect(h.body, `session s${i} in round ${round}`).toBe(firstOf.get(`s${i}`))
      }
    }
    expect(new Set(firstOf.values()).size, 'keys spread over several servers').toBeGreaterThanOrEqual(3)
    // Without the cookie (another cookie only): still answered.
    const h = await hit(`${base}/c`, agent, { cookie: 'theme=dark' })
    expect(h.status).toBe(200)
  })

  test('path key', async () => {
    const { base } = await hashBehind('path')
    const agent = keepAliveAgent(4)
    const firstOf = new Map<string, string>()
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 100; i++) {
        const h = await hit(`${base}/items/${i}`, agent)
        expect(h.status).toBe(200)
        if (round === 0) firstOf.set(`/items/${i}`, h.body)
        else expect(h.body, `/items/${i} in round ${round}`).toBe(firstOf.get(`/items/${i}`))
      }
    }
    expect(new Set(firstOf.values()).size, 'paths spread over several servers').toBeGreaterThanOrEqual(3)
  })

  test('ip key: one client address always reaches one server', async () => {
    const { base } = await hashBehind('ip')
    // All clients here are 127.0.0.1: whatever sockets they use, one server takes them all.
    const t = await drive(base, 200, { concurrency: 8 })
    expectNoFailures(t)
    expect(Object.keys(t.summary()), JSON.stringify(t.summary())).toHaveLength(1)
    // Fresh connections (other source ports) too.
    const again = await hit(`${base}/x`, false)
    expect(again.body).toBe(t.order[0])
  })
})

// ---------------------------------------------------------------------------------------
// Validation

describe('strategy options are checked', () => {
  test('WeightedStrategy: zero, negative and non-integer weights name the option', () => {
    for (const bad of [0, -1, 1.5, NaN, '2', 1001]) {
      const err = configError(() => new WeightedStrategy({ 'http://127.0.0.1:9001': untyped(bad) }))
      expect(err.option).toBe('weights')
      expect(err.message).toContain('http://127.0.0.1:9001')
      expect(err.message).toMatch(/weight/)
    }
    expect(configError(() => new WeightedStrategy({})).option).toBe('weights')
    expect(configError(() => new WeightedStrategy(untyped(null))).option).toBe('weights')
    expect(configError(() => new WeightedStrategy(untyped([3, 2]))).option).toBe('weights')
    expect(configError(() => new WeightedStrategy({ 'not a url': 1 })).message).toContain('not a url')
  })

  test('weights in server entries and setServers are checked too', async () => {
    const a = await idUpstream('a')
    const strategy = new WeightedStrategy({ [a.url]: 2 })
    for (const bad of [0, -3, 2.5]) {
      const err = configError(() => new LoadBalancer({ upstreamServers: [{ url: a.url, weight: bad }], strategy }))
      expect(err.option).toBe('weights')
      expect(err.message).toContain(a.url)
    }
    // A server the WeightedStrategy map gives no weight to.
    const missing = configError(() => new LoadBalancer({ upstreamServers: [a.url, 'http://127.0.0.1:9'], strategy }))
    expect(missing.option).toBe('strategy')
    expect(missing.message).toContain('http://127.0.0.1:9')

    const loadBalancer = new LoadBalancer({ upstreamServers: [a.url], strategy })
    expect(configError(() => loadBalancer.setServers([{ url: a.url, weight: 0 }])).option).toBe('weights')
    expect(configError(() => loadBalancer.setServers([])).option).toBe('servers')
    // The failed calls changed nothing.
    expect(loadBalancer.status().map((s) => s.weight)).toEqual([2])
    loadBalancer.close()
  })

  test('ConsistentHashStrategy: a bad key names the option', () => {
    for (const bad of ['cookie', 'header', 'host', 42, {}, { header: '' }, { header: 'bad header' }, { cookie: '' }, { cookie: 'a;b' }, { header: 3 }]) {
      const err = configError(() => new ConsistentHashStrategy({ key: untyped(bad) }))
      expect(err.option, JSON.stringify(bad)).toBe('key')
      expect(err.message).toContain('ConsistentHashStrategy')
    }
    // No key: the client IP.
    expect(new ConsistentHashStrategy().key).toBe('ip')
  })
})
