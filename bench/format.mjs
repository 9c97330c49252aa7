// Number and table formatting for the benchmark's report (Markdown tables).

export const fmtInt = (n) => Math.round(n).toLocaleString('en-US')
export const fmtUs = (us) => (us === undefined || Number.isNaN(us) ? '—' : us >= 10_000 ? `${(us / 1000).toFixed(1)} ms` : us >= 1000 ? `${(us / 1000).toFixed(2)} ms` : `${Math.round(us)} µs`)
export const fmtRatio = (a, b) => (a && b ? `${(a / b).toFixed(2)}×` : '—')
export const fmtPct = (v) => (v === undefined || Number.isNaN(v) ? '—' : `${(v * 100).toFixed(0)}%`)
export const fmtCpu = (v) => (v === undefined || Number.isNaN(v) ? '—' : v.toFixed(1))

export function table(headers, rows, align) {
  const lines = [`| ${headers.join(' | ')} |`, `|${align.map((a) => (a === 'r' ? '---:' : ':---')).join('|')}|`]
  for (const r of rows) lines.push(`| ${r.join(' | ')} |`)
  return lines.join('\n')
}

export function median(values) {
  const s = [...values].sort((a, b) => a - b)
  return s[Math.floor((s.length - 1) / 2)]
}
