/**
 * Installs an app's middleware on its native app at listen(): which metrics it records
 * into, the `/metrics` path, the rate limit (and its JS key function), trace context,
 * and the collector (JS gets batches of request summaries, one batch at a time).
 */
import { callHook, native } from '../errors'
import { headerObject, type NativeApp } from '../native'
import type { GatewayRouter } from '../router'
import { GatewayRouter as Router } from '../router'
import { GatewayMetrics } from './gateway-metrics'
import { MetricsMiddleware, type RequestSummary, type ResponseSummary } from './metrics-middleware'
import { RateLimitMiddleware } from './rate-limit-middleware'

type Summary = RequestSummary & ResponseSummary & { durationMs: number }

export function installMiddleware(
  app: NativeApp,
  middleware: Array<MetricsMiddleware | RateLimitMiddleware>,
  traceparent: boolean,
  routes: ReadonlyArray<{ kind: string; router?: GatewayRouter }>,
): GatewayMetrics | undefined {
  const metricsMw = middleware.find((m): m is MetricsMiddleware => m instanceof MetricsMiddleware)
  const rate = middleware.find((m): m is RateLimitMiddleware => m instanceof RateLimitMiddleware)
  // By default an app counts into the metrics of the first gateway it mounts.
  const mounted = routes
    .map((r) => (r.kind === 'router' && r.router ? Router.metricsOf(r.router) : undefined))
    .find((m) => m !== undefined)
  const metrics = metricsMw?.metrics ?? mounted ?? (metricsMw ? new GatewayMetrics() : undefined)
  if (!metrics && !rate && !traceparent) return undefined

  const keyFunction = rate?.keyFunction
  const key = keyFunction
    ? (token: number, method: string, path: string, headers: string, client: string) => {
        Promise.resolve()
          .then(() => keyFunction({ method, path, headers: headerObject(headers), client }))
          .then(
            (k) => app.completeKey(token, typeof k === 'string' ? k : ''),
            () => app.completeKey(token, ''),
          )
      }
    : null

  const collector = metricsMw?.collectorFunction
  const log = metricsMw?.accessLog
  let reported = false
  const report = (error: unknown) => {
    if (reported) return
    reported = true
    callHook(metricsMw?.onError ?? ((e: unknown) => console.error('velithon-gateway: the metrics collector failed:', e)), error)
  }
  const collect =
    collector || log
      ? (json: string) => {
          const work: Array<Promise<unknown>> = []
          try {
            for (const s of JSON.parse(json) as Summary[]) {
              if (log) log(JSON.stringify({ time: new Date().toISOString(), method: s.method, path: s.path, route: s.route, status: s.status, durationMs: s.durationMs, client: s.client }))
              if (collector) {
                try {
                  const done = collector(
                    { method: s.method, path: s.path, route: s.route, client: s.client, requestHeaders: s.requestHeaders },
                    { status: s.status, responseHeaders: s.responseHeaders },
                    s.durationMs,
                  )
                  if (done && typeof (done as Promise<void>).then === 'function') work.push((done as Promise<void>).catch(report))
                } catch (err) {
                  report(err)
                }
              }
            }
          } catch (err) {
            report(err)
          }
          // The next batch comes when this one is done, or after a minute at most (a
          // promise that never settles must not stop the collector for good).
          let timer: NodeJS.Timeout | undefined
          const limit = new Promise<void>((resolve) => {
            timer = setTimeout(resolve, 60_000)
            timer.unref()
          })
          Promise.race([Promise.all(work), limit]).finally(() => {
            clearTimeout(timer)
            app.collectorDone()
          })
        }
      : null

  native(() =>
    app.setMiddleware(
      {
        metrics: metrics !== undefined,
        metricsPath: metricsMw?.path,
        traceparent,
        rateLimit: rate?.native,
        collectorQueue: metricsMw?.queueSize ?? 1,
        collectorBatch: metricsMw?.batchSize ?? 1,
      },
      GatewayMetrics.nativeOf(metrics ?? new GatewayMetrics()),
      key,
      collect,
    ),
  )
  return metrics
}
