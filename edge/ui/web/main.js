// Meridian's web UI: the query page (PromQL editor with highlighting and completion, table and graph
// views, state in the URL as Prometheus' `/graph?g0.expr=…`), and the stores, rules, alerts and status
// pages. Everything it shows comes from the Prometheus HTTP API the gateway serves; nothing is fetched
// from anywhere else.
import { EditorView, keymap, placeholder } from '@codemirror/view';
import { EditorState } from '@codemirror/state';
import { defaultKeymap, history as editHistory, historyKeymap } from '@codemirror/commands';
import { autocompletion, closeBrackets, completionKeymap } from '@codemirror/autocomplete';
import { syntaxHighlighting, defaultHighlightStyle, bracketMatching } from '@codemirror/language';
import { PromQLExtension } from '@prometheus-io/codemirror-promql';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import './style.css';

const $ = (tag, attrs = {}, ...children) => {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') el.className = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  }
  return el;
};

async function api(path, params) {
  const url = params ? `${path}?${new URLSearchParams(params)}` : path;
  const started = performance.now();
  const resp = await fetch(url, { headers: { Accept: 'application/json' } });
  let body;
  try {
    body = await resp.json();
  } catch (e) {
    throw new Error(`${resp.status} ${resp.statusText}: the answer is not JSON`);
  }
  body.clientMs = performance.now() - started;
  if (body.status !== 'success') {
    const err = new Error(`${body.errorType || resp.status}: ${body.error || resp.statusText}`);
    err.warnings = body.warnings;
    throw err;
  }
  return body;
}

const labelsText = (metric) => {
  const name = metric.__name__ || '';
  const rest = Object.entries(metric)
    .filter(([k]) => k !== '__name__')
    .map(([k, v]) => `${k}=${JSON.stringify(v)}`);
  return rest.length ? `${name}{${rest.join(', ')}}` : name || '{}';
};

// --- Durations and times as Prometheus' UI writes them ------------------------------------------
const UNITS = { y: 31536000, w: 604800, d: 86400, h: 3600, m: 60, s: 1 };
function parseDuration(s) {
  const re = /(\d+)(ms|y|w|d|h|m|s)/g;
  let total = 0;
  let consumed = 0;
  for (const m of s.matchAll(re)) {
    total += m[2] === 'ms' ? Number(m[1]) / 1000 : Number(m[1]) * UNITS[m[2]];
    consumed += m[0].length;
  }
  return consumed === s.length && total > 0 ? total : null;
}
function formatDuration(sec) {
  let out = '';
  for (const [u, n] of Object.entries(UNITS)) {
    if (sec >= n) {
      out += `${Math.floor(sec / n)}${u}`;
      sec %= n;
    }
  }
  return out || '0s';
}

// --- The query page ---------------------------------------------------------------------------
function readState() {
  const q = new URLSearchParams(location.search);
  return {
    expr: q.get('g0.expr') || '',
    tab: q.get('g0.tab') === '0' ? 'graph' : 'table',
    range: q.get('g0.range_input') || '1h',
    end: q.get('g0.end_input') || '',
    step: q.get('g0.step_input') || '',
    stacked: q.get('g0.stacked') === '1',
    dedup: q.get('g0.dedup') !== '0',
    partial: q.get('g0.partial_response') === '1',
    resolution: q.get('g0.max_source_resolution') || '0s',
  };
}

function writeState(s) {
  const q = new URLSearchParams({
    'g0.expr': s.expr,
    'g0.tab': s.tab === 'graph' ? '0' : '1',
    'g0.range_input': s.range,
    'g0.stacked': s.stacked ? '1' : '0',
    'g0.dedup': s.dedup ? '1' : '0',
    'g0.partial_response': s.partial ? '1' : '0',
    'g0.max_source_resolution': s.resolution,
  });
  if (s.end) q.set('g0.end_input', s.end);
  if (s.step) q.set('g0.step_input', s.step);
  history.replaceState(null, '', `/graph?${q}`);
}

function queryPage(main) {
  const state = readState();
  const promql = new PromQLExtension().setComplete({ remote: { url: '', httpMethod: 'GET' } });
  let view;
  const run = () => execute();
  view = new EditorView({
    parent: $('div'),
    state: EditorState.create({
      doc: state.expr,
      extensions: [
        editHistory(),
        closeBrackets(),
        bracketMatching(),
        autocompletion(),
        syntaxHighlighting(defaultHighlightStyle),
        placeholder('Expression (press Shift+Enter for newlines)'),
        promql.asExtension(),
        keymap.of([
          { key: 'Enter', run: () => (run(), true) },
          ...completionKeymap,
          ...defaultKeymap,
          ...historyKeymap,
        ]),
        EditorView.lineWrapping,
      ],
    }),
  });
  view.dom.parentElement.className = 'editor';
  view.dom.parentElement.id = 'expr';

  const range = $('input', { class: 'short', id: 'range', value: state.range, title: 'Range (graph)' });
  const end = $('input', { id: 'end', value: state.end, placeholder: 'end (now)', title: 'End time, RFC 3339 or Unix seconds' });
  const step = $('input', { class: 'short', id: 'step', value: state.step, placeholder: 'step (auto)' });
  const stacked = $('input', { type: 'checkbox', id: 'stacked', checked: state.stacked });
  const dedup = $('input', { type: 'checkbox', id: 'dedup', checked: state.dedup });
  const partial = $('input', { type: 'checkbox', id: 'partial', checked: state.partial });
  const resolution = $('select', { id: 'resolution' },
    ['0s', '5m', '1h', 'auto'].map((r) => $('option', { value: r, selected: r === state.resolution }, r === '0s' ? 'raw' : r)));
  const tabs = {
    table: $('button', { id: 'tab-table', onclick: () => { state.tab = 'table'; execute(); } }, 'Table'),
    graph: $('button', { id: 'tab-graph', onclick: () => { state.tab = 'graph'; execute(); } }, 'Graph'),
  };
  const info = $('div', { class: 'muted', id: 'info' });
  const messages = $('div', { id: 'messages' });
  const result = $('div', { id: 'result' });
  main.append(
    $('div', { class: 'panel' },
      $('div', { class: 'row' }, view.dom.parentElement, $('button', { id: 'execute', onclick: run }, 'Execute')),
      $('div', { class: 'row', style: 'margin-top:8px' },
        $('label', {}, dedup, ' deduplication'),
        $('label', {}, partial, ' partial response'),
        $('label', {}, 'resolution ', resolution),
        $('span', { class: 'muted' }, '|'),
        $('label', {}, 'range ', range),
        $('label', {}, 'end ', end),
        $('label', {}, 'step ', step),
        $('label', {}, stacked, ' stacked')),
      $('div', { class: 'tabs' }, tabs.table, tabs.graph),
      info, messages, result));

  function endTime() {
    const v = end.value.trim();
    if (!v) return Date.now() / 1000;
    if (/^\d+(\.\d+)?$/.test(v)) return Number(v);
    const t = Date.parse(v);
    if (Number.isNaN(t)) throw new Error(`end time ${JSON.stringify(v)}: use RFC 3339 or Unix seconds`);
    return t / 1000;
  }

  async function execute() {
    state.expr = view.state.doc.toString();
    state.range = range.value.trim() || '1h';
    state.end = end.value.trim();
    state.step = step.value.trim();
    state.stacked = stacked.checked;
    state.dedup = dedup.checked;
    state.partial = partial.checked;
    state.resolution = resolution.value;
    writeState(state);
    tabs.table.classList.toggle('on', state.tab === 'table');
    tabs.graph.classList.toggle('on', state.tab === 'graph');
    messages.replaceChildren();
    result.replaceChildren();
    info.textContent = '';
    if (!state.expr.trim()) return;
    const common = {
      query: state.expr,
      dedup: String(state.dedup),
      partial_response: String(state.partial),
      max_source_resolution: state.resolution,
      stats: 'all',
    };
    try {
      const t = endTime();
      let body;
      if (state.tab === 'table') {
        body = await api('/api/v1/query', { ...common, time: String(t) });
        renderTable(body.data);
      } else {
        const rangeSec = parseDuration(state.range);
        if (!rangeSec) throw new Error(`range ${JSON.stringify(state.range)}: use a duration such as 1h or 30m`);
        let stepSec = state.step ? parseDuration(state.step) : Math.max(Math.round(rangeSec / 250), 1);
        if (!stepSec) throw new Error(`step ${JSON.stringify(state.step)}: use a duration such as 15s`);
        body = await api('/api/v1/query_range', { ...common, start: String(t - rangeSec), end: String(t), step: String(stepSec) });
        renderGraph(body.data, state.stacked);
      }
      for (const w of body.warnings || []) messages.append($('div', { class: 'warning' }, w));
      for (const w of body.infos || []) messages.append($('div', { class: 'muted' }, w));
      const samples = body.data.stats?.samples?.totalQueryableSamples;
      info.textContent = `Load time: ${Math.round(body.clientMs)}ms` +
        (samples !== undefined ? `   Samples read: ${samples}` : '') +
        `   Result series: ${Array.isArray(body.data.result) ? body.data.result.length : 1}`;
    } catch (e) {
      messages.append($('div', { class: 'error', id: 'error' }, e.message));
      for (const w of e.warnings || []) messages.append($('div', { class: 'warning' }, w));
    }
  }

  function renderTable(data) {
    const rows = [];
    const fmt = (v) => (Array.isArray(v) ? v[1] : v);
    const hist = (h) => `count: ${h.count} sum: ${h.sum} (${(h.buckets || []).length} buckets)`;
    if (data.resultType === 'scalar' || data.resultType === 'string') {
      rows.push([$('td', { class: 'labels' }, 'scalar'), $('td', { class: 'value' }, fmt(data.result))]);
    } else {
      for (const r of data.result) {
        const v = r.value ? fmt(r.value) : r.histogram ? hist(r.histogram[1]) : (r.values || []).map((x) => `${x[1]} @${x[0]}`).join('\n');
        rows.push([$('td', { class: 'labels' }, labelsText(r.metric)), $('td', { class: 'value' }, v)]);
      }
    }
    result.append(rows.length
      ? $('table', { id: 'table' }, $('tbody', {}, rows.map((cells) => $('tr', {}, cells))))
      : $('div', { class: 'muted' }, 'Empty query result'));
  }

  function renderGraph(data, stack) {
    const series = data.result || [];
    if (!series.length) {
      result.append($('div', { class: 'muted' }, 'Empty query result'));
      return;
    }
    const times = [...new Set(series.flatMap((s) => (s.values || []).map((v) => v[0])))].sort((a, b) => a - b);
    const index = new Map(times.map((t, i) => [t, i]));
    const columns = series.map((s) => {
      const col = new Array(times.length).fill(null);
      for (const [t, v] of s.values || []) col[index.get(t)] = Number(v);
      return col;
    });
    if (stack) {
      for (let i = 1; i < columns.length; i++) {
        columns[i] = columns[i].map((v, k) => (v === null ? null : v + (columns[i - 1][k] ?? 0)));
      }
    }
    const palette = ['#2256c9', '#e8590c', '#2f9e44', '#c2255c', '#7048e8', '#1098ad', '#f08c00', '#5c940d'];
    const color = (i) => palette[i % palette.length];
    const width = Math.max(result.clientWidth || main.clientWidth - 40, 400);
    const plot = $('div', { id: 'graph' });
    result.append(plot);
    new uPlot({
      width,
      height: 360,
      legend: { show: false },
      series: [{}, ...series.map((s, i) => ({ label: labelsText(s.metric), stroke: color(i), width: 1.5, fill: stack ? `${color(i)}33` : undefined, spanGaps: false }))],
      axes: [{}, { size: 70 }],
    }, [times, ...columns], plot);
    result.append($('div', { class: 'legend', id: 'legend' },
      series.map((s, i) => $('span', { class: 'labels' }, $('span', { class: 'swatch', style: `background:${color(i)}` }), labelsText(s.metric)))));
  }

  if (state.expr) execute();
  else {
    tabs[state.tab].classList.add('on');
  }
  view.focus();
}

// --- Stores, rules, alerts, status -------------------------------------------------------------
const when = (s) => (s && !s.startsWith('0001') ? new Date(s).toLocaleString() : 'never');
const timeMs = (ms) => (ms && Math.abs(ms) < 9e15 ? new Date(ms).toISOString() : ms < 0 ? '-∞' : '+∞');

async function storesPage(main) {
  const body = await api('/api/v1/stores');
  main.append($('h2', {}, 'Stores'));
  const types = Object.keys(body.data).sort();
  if (!types.length) main.append($('div', { class: 'muted' }, 'No stores.'));
  for (const type of types) {
    main.append($('div', { class: 'panel' }, $('h3', {}, type),
      $('table', { class: 'stores' },
        $('thead', {}, $('tr', {}, ['Endpoint', 'Health', 'Labels', 'Min time', 'Max time', 'Last check', 'Last error'].map((h) => $('th', {}, h)))),
        $('tbody', {}, body.data[type].map((s) => $('tr', {},
          $('td', { class: 'labels endpoint' }, s.name),
          $('td', { class: s.lastError ? 'down' : 'up' }, s.lastError ? 'DOWN' : 'UP'),
          $('td', { class: 'labels' }, (s.labelSets || []).map((l) => $('div', {}, labelsText(l)))),
          $('td', {}, timeMs(s.minTime)),
          $('td', {}, timeMs(s.maxTime)),
          $('td', {}, when(s.lastCheck)),
          $('td', { class: 'down' }, s.lastError || '')))))));
  }
}

async function rulesPage(main) {
  const body = await api('/api/v1/rules');
  main.append($('h2', {}, 'Rules'));
  const groups = body.data.groups || [];
  if (!groups.length) main.append($('div', { class: 'muted' }, 'No rule groups.'));
  for (const g of groups) {
    main.append($('div', { class: 'panel' },
      $('h3', {}, `${g.name} `, $('span', { class: 'muted' }, `${g.file} · every ${formatDuration(g.interval)} · last evaluation ${when(g.lastEvaluation)}`)),
      $('table', { class: 'rules' }, $('tbody', {}, (g.rules || []).map((r) => $('tr', {},
        $('td', { class: 'labels' }, r.type === 'alerting' ? `alert: ${r.name}` : `record: ${r.name}`,
          $('div', { class: 'muted' }, r.query),
          Object.keys(r.labels || {}).length ? $('div', {}, `labels: ${labelsText(r.labels)}`) : null,
          Object.entries(r.annotations || {}).map(([k, v]) => $('div', { class: 'muted' }, `${k}: ${v}`)),
          (r.alerts || []).map((a) => $('div', {}, `${a.state} since ${when(a.activeAt)}: ${labelsText(a.labels)}`))),
        $('td', { class: r.state === 'firing' ? 'down' : r.state === 'pending' ? 'pending' : '' }, r.state ? r.state.toUpperCase() : ''),
        $('td', { class: r.health === 'ok' ? 'up' : 'down' }, r.health),
        $('td', { class: 'down' }, r.lastError || '')))))));
  }
}

async function alertsPage(main) {
  const body = await api('/api/v1/alerts');
  main.append($('h2', {}, 'Alerts'));
  const alerts = body.data.alerts || [];
  if (!alerts.length) main.append($('div', { class: 'muted' }, 'No active alerts.'));
  main.append($('div', { class: 'panel' }, $('table', { id: 'alerts' },
    $('thead', {}, $('tr', {}, ['Alert', 'State', 'Active since', 'Value', 'Annotations'].map((h) => $('th', {}, h)))),
    $('tbody', {}, alerts.map((a) => $('tr', {},
      $('td', { class: 'labels' }, labelsText({ __name__: a.labels.alertname, ...a.labels, alertname: undefined })),
      $('td', { class: a.state === 'firing' ? 'down' : 'pending' }, a.state.toUpperCase()),
      $('td', {}, when(a.activeAt)),
      $('td', { class: 'value' }, a.value),
      $('td', {}, Object.entries(a.annotations || {}).map(([k, v]) => $('div', {}, $('b', {}, k), ': ', v)))))))));
}

async function statusPage(main) {
  const kv = (obj) => $('table', {}, $('tbody', {}, Object.entries(obj).map(([k, v]) => $('tr', {}, $('th', {}, k), $('td', { class: 'labels' }, String(v))))));
  main.append($('h2', {}, 'Status'));
  main.append($('div', { class: 'panel' }, $('h3', {}, 'Build'), kv((await api('/api/v1/status/buildinfo')).data)));
  // The edge has no flags endpoint: its configuration is its prometheus.yml.
  if (ROLE === 'gateway') {
    main.append($('div', { class: 'panel' }, $('h3', {}, 'Flags'), kv((await api('/api/v1/status/flags')).data)));
  }
  const config = await api('/api/v1/status/config');
  main.append($('div', { class: 'panel' }, $('h3', {}, 'Configuration'), $('pre', { class: 'labels' }, config.data.yaml || '')));
}

async function targetsPage(main) {
  const body = await api('/api/v1/targets');
  main.append($('h2', {}, 'Targets'));
  const byPool = new Map();
  for (const t of body.data.activeTargets || []) {
    if (!byPool.has(t.scrapePool)) byPool.set(t.scrapePool, []);
    byPool.get(t.scrapePool).push(t);
  }
  if (!byPool.size) main.append($('div', { class: 'muted' }, 'No targets.'));
  for (const [pool, targets] of [...byPool].sort(([a], [b]) => a.localeCompare(b))) {
    const up = targets.filter((t) => t.health === 'up').length;
    main.append($('div', { class: 'panel' },
      $('h3', {}, `${pool} `, $('span', { class: 'muted' }, `(${up}/${targets.length} up)`)),
      $('table', { class: 'targets' },
        $('thead', {}, $('tr', {}, ['Endpoint', 'State', 'Labels', 'Last scrape', 'Duration', 'Error'].map((h) => $('th', {}, h)))),
        $('tbody', {}, targets.map((t) => $('tr', {},
          $('td', { class: 'labels target' }, t.scrapeUrl),
          $('td', { class: t.health === 'up' ? 'up' : t.health === 'down' ? 'down' : 'pending' }, t.health.toUpperCase()),
          $('td', { class: 'labels' }, labelsText(t.labels),
            $('details', {}, $('summary', { class: 'muted' }, 'discovered labels'),
              Object.entries(t.discoveredLabels || {}).map(([k, v]) => $('div', {}, `${k}=${JSON.stringify(v)}`)))),
          $('td', {}, when(t.lastScrape)),
          $('td', {}, t.lastScrapeDuration !== undefined ? `${(t.lastScrapeDuration * 1000).toFixed(1)}ms` : ''),
          $('td', { class: 'down' }, t.lastError || '')))))));
  }
}

const ROLE = document.body.dataset.role || 'gateway';
const NAV = {
  gateway: [['graph', 'Query'], ['stores', 'Stores'], ['rules', 'Rules'], ['alerts', 'Alerts'], ['status', 'Status']],
  edge: [['targets', 'Targets'], ['status', 'Status']],
}[ROLE];
const PAGES = { graph: queryPage, stores: storesPage, rules: rulesPage, alerts: alertsPage, status: statusPage, targets: targetsPage };

async function route() {
  const page = location.pathname.replace(/^\/+/, '').split('/')[0] || NAV[0][0];
  const nav = document.getElementById('nav');
  nav.replaceChildren($('a', { class: 'brand', href: `/${NAV[0][0]}` }, ROLE === 'edge' ? 'Meridian edge' : 'Meridian'),
    ...NAV.map(([p, title]) => $('a', { href: `/${p}`, 'data-page': p, class: p === page ? 'active' : undefined }, title)));
  const main = document.getElementById('main');
  main.replaceChildren();
  const render = PAGES[page] || PAGES[NAV[0][0]];
  try {
    await render(main);
  } catch (e) {
    main.append($('div', { class: 'error' }, e.message));
  }
}

route();
