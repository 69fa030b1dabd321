// The search page's logic: reads the form, calls /search, renders the answer.
// Plain browser JavaScript; the query is kept in the URL (?q=&k=) so a result page can be
// shared and reloaded. A `relevance_mode` in the page's URL (backfill or strict) is passed
// on to /search; without it the server's mode answers.
'use strict';

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === 'class') node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function pct(x) {
  return x === null || x === undefined ? 'n/a' : `${Math.round(100 * x)}%`;
}

function renderSummary(answer) {
  const summary = $('summary');
  summary.replaceChildren();
  // data-query: the query whose answer is shown.
  summary.append(
    'answered by ',
    el('span', { class: `path ${answer.path}`, id: 'path', 'data-query': answer.query },
       answer.path),
    answer.fallback_reason ? ` (${answer.fallback_reason})` : '',
    ` · ${answer.results.length} results in ${answer.latency_ms.server.toFixed(1)} ms`,
    ` · strategy ${answer.strategy} · filters: `,
  );
  const filters = el('span', { id: 'filters' });
  const entries = Object.entries(answer.filters);
  if (entries.length === 0) filters.append(el('span', { class: 'none' }, 'none'));
  for (const [field, values] of entries) {
    filters.append(el('span', { class: 'chip' }, `${field}: ${values.join(' | ')}`));
  }
  summary.append(filters);
  if (answer.fallback_reason === 'no_known_words') {
    summary.append(el('div', { id: 'no-known-words', class: 'none' },
      'No word of this query is in the model\'s vocabulary: nothing was searched.'));
  }
  // Backfilled products (after those that satisfy the filters) are counted and marked.
  const outside = answer.results.filter((r) => !r.satisfies_filter).length;
  if (outside > 0) {
    summary.append(el('span', { id: 'outside-count', class: 'none' },
                      ` · ${outside} outside the filters`));
  }
}

function renderResults(answer) {
  const grid = $('results');
  grid.replaceChildren();
  for (const r of answer.results) {
    const img = el('img', { src: r.image_url, alt: r.title, loading: 'lazy' });
    img.addEventListener('error', () => { img.alt = 'no image'; img.removeAttribute('src'); });
    const bar = el('div', { class: 'weights', title: 'title / image weight' });
    if (r.title_weight !== null) {
      bar.append(el('div', { class: 't', style: `width:${100 * r.title_weight}%` }),
                 el('div', { class: 'i', style: `width:${100 * r.image_weight}%` }));
    }
    const meta = el('div', { class: 'meta' }, `#${r.product_id} · score ${r.score.toFixed(3)}`);
    if (!r.satisfies_filter) {
      meta.append(' · ', el('span', {
        class: 'outside-mark',
        title: 'does not satisfy the filters: shown after the products that do',
      }, 'outside filters'));
    }
    grid.append(el('article', { class: r.satisfies_filter ? 'card' : 'card outside' },
      img,
      el('div', { class: 'title' }, r.title),
      meta,
      bar,
      el('div', { class: 'legend' },
         `title ${pct(r.title_weight)} · image ${pct(r.image_weight)}`),
    ));
  }
}

// Each search has a number; an answer that arrives after a newer search began is dropped,
// so the page always shows the last query's answer.
let latestSearch = 0;
const relevanceMode = new URLSearchParams(location.search).get('relevance_mode');

function searchParams(q, k) {
  const params = `q=${encodeURIComponent(q)}&k=${encodeURIComponent(k)}`;
  return relevanceMode ? `${params}&relevance_mode=${encodeURIComponent(relevanceMode)}` : params;
}

async function runSearch(q, k) {
  const mine = ++latestSearch;
  $('error').hidden = true;
  const url = `/search?${searchParams(q, k)}`;
  let response;
  try {
    response = await fetch(url);
  } catch (e) {
    if (mine === latestSearch) showError(`request failed: ${e}`);
    return;
  }
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (mine !== latestSearch) return;
  if (!response.ok) {
    showError(body.error || `HTTP ${response.status}`);
    return;
  }
  renderSummary(body);
  renderResults(body);
}

function showError(message) {
  $('summary').replaceChildren();
  $('results').replaceChildren();
  $('error').textContent = message;
  $('error').hidden = false;
}

$('search-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const q = $('q').value;
  const k = $('k').value || '20';
  history.replaceState(null, '', `/?${searchParams(q, k)}`);
  runSearch(q, k);
});

// A k the browser refuses (outside 1-100, not a number) blocks the submit: say so, and do
// not leave the previous query's results on the page as if they answered this one.
$('k').addEventListener('invalid', () => {
  latestSearch++;
  showError(`k must be a whole number from 1 to 100; got ${JSON.stringify($('k').value)}`);
});

const initial = new URLSearchParams(location.search);
if (initial.get('q')) {
  $('q').value = initial.get('q');
  if (initial.get('k')) $('k').value = initial.get('k');
  runSearch($('q').value, $('k').value);
}
