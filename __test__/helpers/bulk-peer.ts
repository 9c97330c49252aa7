/**
 * A child Node process that is both ends of a bulk transfer: an upstream (node:http on
 * 127.0.0.1, port 0) that hashes what it receives or streams N bytes, and a client that
 * uploads or downloads N bytes through a URL, hashing while streaming.
 *
 * Why a child process: the memory suite measures the RSS of the process the gateway runs
 * in. Node's own side of a 100 MiB transfer (garbage Buffers V8 only collects after tens
 * of MiB of external memory) would swamp that measurement if the upstream and client
 * lived there too. With them here, the test process holds the gateway and little else.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { defer, withTimeout } from './net'

const CHILD = String.raw`
'use strict'
const http = require('node:http')
const crypto = require('node:crypto')
const { once } = require('node:events')

const CHUNK = 64 * 1024
const BASE = crypto.randomBytes(CHUNK)

// Chunk i: random bytes stamped with i, so a reordered or repeated chunk changes the digest.
function chunkAt(i, size) {
  const chunk = Buffer.allocUnsafe(size)
  BASE.copy(chunk, 0, 0, size)
  if (size >= 8) { chunk.writeUInt32BE(i >>> 0, 0); chunk.writeUInt32BE(i >>> 0, size - 4) }
  return chunk
}

async function writeBytes(out, total) {
  const hash = crypto.createHash('sha256')
  for (let i = 0, sent = 0; sent < total; i++) {
    const chunk = chunkAt(i, Math.min(CHUNK, total - sent))
    sent += chunk.length
    hash.update(chunk)
    if (!out.write(chunk)) await once(out, 'drain')
  }
  return hash.digest('hex')
}

async function drain(stream) {
  const hash = crypto.createHash('sha256')
  let bytes = 0
  for await (const chunk of stream) { bytes += chunk.length; hash.update(chunk) }
  return { bytes, sha256: hash.digest('hex') }
}

const sourceDigests = []
const server = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, 'http://peer')
    if (req.method === 'POST') {
      const seen = await drain(req)
      const body = JSON.stringify({ ...seen, contentLength: req.headers['content-length'] ?? null })
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
      res.end(body)
    } else {
      const total = Number(url.searchParams.get('bytes') ?? 0)
      res.writeHead(200, { 'content-type': 'application/octet-stream' })
      if (req.method !== 'HEAD') sourceDigests.push(await writeBytes(res, total))
      res.end()
    }
  } catch (err) {
    res.destroy(err)
  }
})
server.keepAliveTimeout = 60000

function upload(url, bytes) {
  let req
  const answered = new Promise((resolve, reject) => {
    req = http.request(url, { method: 'POST', agent: false,
      headers: { 'content-length': bytes, 'content-type': 'application/octet-stream' } }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c) => (body += c))
      res.on('end', () => resolve({ status: res.statusCode, body }))
      res.on('error', reject)
    })
    req.on('error', reject)
  })
  const sent = writeBytes(req, bytes).then((digest) => { req.end(); return digest })
  return Promise.all([answered, sent]).then(([answer, digest]) => ({ ...answer, sent: digest }))
}

function download(url) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { agent: false }, (res) => {
      drain(res).then((got) => resolve({ status: res.statusCode,
        transferEncoding: res.headers['transfer-encoding'] ?? null,
        contentLength: res.headers['content-length'] ?? null,
        got, sourceDigest: sourceDigests.at(-1) ?? null }), reject)
    })
    req.on('error', reject)
    req.end()
  })
}

process.on('message', (msg) => {
  const job = msg.op === 'upload' ? upload(msg.url, msg.bytes) : download(msg.url)
  job.then((result) => process.send({ id: msg.id, result }),
           (err) => process.send({ id: msg.id, error: String(err && err.stack || err) }))
})
process.on('disconnect', () => process.exit(0))
server.listen(0, '127.0.0.1', () => process.send({ ready: server.address().port }))
`

export interface UploadResult {
  status: number
  /** The upstream's JSON answer: `{ bytes, sha256, contentLength }`. */
  body: string
  /** The sha256 of what the client sent. */
  sent: string
}

export interface DownloadResult {
  status: number
  transferEncoding: string | null
  contentLength: string | null
  got: { bytes: number; sha256: string }
  /** The sha256 of what the upstream sent. */
  sourceDigest: string | null
}

export interface BulkPeer {
  /** The upstream: POST hashes the body; GET `?bytes=N` streams N bytes (chunked). */
  url: string
  upload(url: string, bytes: number): Promise<UploadResult>
  download(url: string): Promise<DownloadResult>
  close(): Promise<void>
}

interface Reply {
  id?: number
  ready?: number
  result?: unknown
  error?: string
}

export async function startBulkPeer(): Promise<BulkPeer> {
  const child: ChildProcess = spawn(process.execPath, ['-e', CHILD], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  let closed: Promise<void> | undefined
  const close = (): Promise<void> => {
    closed ??= (async () => {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = once(child, 'exit')
        child.kill('SIGKILL')
        await exited
      }
    })()
    return closed
  }
  defer(close)

  const pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>()
  let nextId = 1
  child.on('message', (msg: Reply) => {
    if (msg.id === undefined) return
    const job = pending.get(msg.id)
    pending.delete(msg.id)
    if (msg.error !== undefined) job?.reject(new Error(`bulk peer: ${msg.error}`))
    else job?.resolve(msg.result)
  })
  child.on('exit', (code, signal) => {
    for (const job of pending.values()) job.reject(new Error(`bulk peer exited (${code ?? signal})`))
    pending.clear()
  })

  const ready = await withTimeout(
    new Promise<number>((resolve, reject) => {
      child.on('message', (msg: Reply) => {
        if (msg.ready !== undefined) resolve(msg.ready)
      })
      child.on('error', reject)
      child.on('exit', (code) => reject(new Error(`bulk peer exited early (${code})`)))
    }),
    10_000,
    'the bulk peer to start',
  )

  function call<T>(message: Record<string, unknown>, what: string): Promise<T> {
    const id = nextId++
    const result = new Promise<T>((resolve, reject) => {
      pending.set(id, { resolve: resolve as (v: unknown) => void, reject })
    })
    child.send({ ...message, id })
    return withTimeout(result, 50_000, what)
  }

  return {
    url: `http://127.0.0.1:${ready}`,
    upload: (url, bytes) => call<UploadResult>({ op: 'upload', url, bytes }, `uploading ${bytes} bytes to ${url}`),
    download: (url) => call<DownloadResult>({ op: 'download', url }, `downloading ${url}`),
    close,
  }
}
