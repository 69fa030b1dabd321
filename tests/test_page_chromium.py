"""The search page in a real headless Chromium, against the real server on loopback.

A person types a query into the box and presses Search; the page must show result cards
whose images really loaded (naturalWidth > 0), the titles, the title/image weights, the
path that answered and, for a query that names a restricted value, the filters and a
mark on each backfilled card (outside the filters); a `relevance_mode` in the page's URL
reaches the server. What the
page shows is compared with the server's own JSON answer, so a rendering bug fails here.

Chromium and its driver are Debian's (`apt-get install chromium chromium-driver`, which
`setup.sh` does when run as root): Selenium is given both paths, so Selenium Manager never
runs and nothing is downloaded. Without them the test skips, unless `CI` is set (fails).

The server and searcher are test_server.py's fixtures: the real server on a loopback port
over a real searcher (a 300-product synthetic catalogue with its PNG images, exact index,
dict table, Dirichlet modal weights) with a hashing query encoder: compiling the random
model of `service.demo_searcher` costs more than this test's budget on 2 CPU cores (its
init alone took ~100 s here), and the page does not depend on the model.
Set MAKE_PAGE_SCREENSHOT=docs/img/search_page.png to refresh the docs' screenshot.
"""

import http.client
import json
import os
import pathlib
import shutil

import numpy as np
import pytest

# The real server over test_server.py's searcher (fixtures `searcher`, `service`).
from test_server import searcher, service  # noqa: F401

# Debian's paths; MAKE_CHROMIUM / MAKE_CHROMEDRIVER name others.
CHROMIUM = os.environ.get('MAKE_CHROMIUM', '/usr/bin/chromium')
CHROMEDRIVER = os.environ.get('MAKE_CHROMEDRIVER', '/usr/bin/chromedriver')
TABLE_QUERY = 'cached query'  # The one entry of test_server.py's dict table.


def _browser_or_skip():
  """The selenium webdriver module, or a skip (a failure under CI) saying what is missing."""
  missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
  try:
    from selenium import webdriver
  except ImportError:
    missing.append('selenium (pip install -r requirements-test.txt)')
    webdriver = None
  if missing:
    reason = (
      f'headless Chromium test needs {", ".join(missing)}: run `bash setup.sh` as root or '
      '`apt-get install chromium chromium-driver`'
    )
    if os.environ.get('CI'):
      pytest.fail(reason)
    pytest.skip(reason)
  return webdriver


@pytest.fixture(scope='module')
def browser(tmp_path_factory):
  webdriver = _browser_or_skip()
  from selenium.webdriver.chrome.service import Service
  from selenium.webdriver.common import selenium_manager

  def no_manager(*args, **kwargs):
    raise AssertionError('Selenium Manager must not run: driver and browser paths are given')

  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  profile = tmp_path_factory.mktemp('chromium-profile')
  for arg in (
    '--headless=new',
    '--no-sandbox',  # CI runs as root.
    '--disable-dev-shm-usage',
    '--disable-gpu',
    '--window-size=1280,900',
    f'--user-data-dir={profile}',
    # Nothing but the loopback server: no background or update traffic.
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-default-apps',
    '--disable-sync',
    '--no-first-run',
    '--no-pings',
  ):
    options.add_argument(arg)
  original = selenium_manager.SeleniumManager.binary_paths
  selenium_manager.SeleniumManager.binary_paths = no_manager
  try:
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
  finally:
    selenium_manager.SeleniumManager.binary_paths = original
  driver.set_page_load_timeout(30)
  yield driver
  driver.quit()


def _answer(port: int, q: str, k: int) -> dict:
  conn = http.client.HTTPConnection('127.0.0.1', port, timeout=30)
  conn.request('GET', '/search?' + f'q={q.replace(" ", "+")}&k={k}')
  r = conn.getresponse()
  body = json.loads(r.read())
  conn.close()
  assert r.status == 200, body
  return body


def _wait_for_answer(driver, q: str, n: int) -> list:
  """Waits until the page shows the answer to q: n cards, every image loaded."""
  from selenium.webdriver.common.by import By
  from selenium.webdriver.support.ui import WebDriverWait

  WebDriverWait(driver, 20).until(
    lambda d: (
      d.execute_script('const p = document.getElementById("path"); return p && p.dataset.query;')
      == q
      and d.execute_script(
        'const imgs = [...document.querySelectorAll("#results img")];'
        'return imgs.length > 0 && imgs.every((i) => i.complete && i.naturalWidth > 0);'
      )
    )
  )
  cards = driver.find_elements(By.CSS_SELECTOR, '#results .card')
  assert len(cards) == n
  return cards


def _type_and_submit(driver, q: str, k: int) -> None:
  from selenium.webdriver.common.by import By
  from selenium.webdriver.common.keys import Keys

  k_box = driver.find_element(By.ID, 'k')
  k_box.clear()
  k_box.send_keys(str(k))
  box = driver.find_element(By.ID, 'q')
  box.clear()
  box.send_keys(q)
  box.send_keys(Keys.ENTER)


def _check_cards(cards, answer: dict) -> None:
  from selenium.webdriver.common.by import By

  assert len(cards) == len(answer['results'])
  for card, r in zip(cards, answer['results'], strict=True):
    assert card.find_element(By.CSS_SELECTOR, '.title').text == r['title']
    img = card.find_element(By.TAG_NAME, 'img')
    assert img.get_attribute('src').endswith(f'/image/{r["product_id"]}')
    assert int(img.get_property('naturalWidth')) > 0
    assert f'#{r["product_id"]}' in card.find_element(By.CSS_SELECTOR, '.meta').text
    legend = card.find_element(By.CSS_SELECTOR, '.legend').text
    tw, iw = round(100 * r['title_weight']), round(100 * r['image_weight'])
    assert legend == f'title {tw}% · image {iw}%', legend
    bar = card.find_element(By.CSS_SELECTOR, '.weights .t').value_of_css_property('width')
    total = card.find_element(By.CSS_SELECTOR, '.weights').value_of_css_property('width')
    assert float(bar.removesuffix('px')) == pytest.approx(
      r['title_weight'] * float(total.removesuffix('px')), abs=1.5
    )


def test_search_page_in_chromium(browser, service, searcher, tmp_path):  # noqa: F811
  port, _ = service
  from selenium.webdriver.common.by import By
  from selenium.webdriver.support.ui import WebDriverWait

  browser.get(f'http://127.0.0.1:{port}/')
  assert browser.title == 'make_jax search'

  # A query naming a brand and a category: answered online, both filters shown.
  attrs = searcher.catalogue.attributes
  pairs, counts = np.unique(
    np.stack([attrs['brand'], attrs['category']], 1).astype(str), axis=0, return_counts=True
  )
  brand, category = (str(v) for v in pairs[np.argmax(counts)])
  assert counts.max() >= 4
  q = f'{brand} {category}'
  answer = _answer(port, q, 4)
  assert answer['path'] == 'online'
  assert answer['filters'] == {'brand': [brand], 'category': [category]}
  _type_and_submit(browser, q, 4)
  _check_cards(_wait_for_answer(browser, q, 4), answer)
  assert browser.find_element(By.ID, 'path').text == 'online'
  chips = [c.text for c in browser.find_elements(By.CSS_SELECTOR, '#filters .chip')]
  assert chips == [f'brand: {brand}', f'category: {category}']
  assert browser.current_url.endswith(f'/?q={brand}%20{category}&k=4')

  # A query in the offline table: answered by it, no filter.
  answer = _answer(port, TABLE_QUERY, 8)
  assert answer['path'] == 'table'
  _type_and_submit(browser, TABLE_QUERY, 8)
  _check_cards(_wait_for_answer(browser, TABLE_QUERY, 8), answer)
  assert browser.find_element(By.ID, 'path').text == 'table'
  assert browser.find_element(By.CSS_SELECTOR, '#filters .none').text == 'none'

  # More places than products of the brand and category: the rest are backfilled, marked.
  k = int(counts.max()) + 3
  answer = _answer(port, q, k)
  m = sum(r['satisfies_filter'] for r in answer['results'])
  assert answer['relevance_mode'] == 'backfill' and m < k == len(answer['results'])
  _type_and_submit(browser, q, k)
  cards = _wait_for_answer(browser, q, k)
  _check_cards(cards, answer)
  marked = ['outside' in c.get_attribute('class').split() for c in cards]
  assert marked == [False] * m + [True] * (k - m)
  assert browser.find_element(By.ID, 'outside-count').text == f'· {k - m} outside the filters'
  # The strict filter, asked for in the page's URL: the satisfying products only.
  browser.get(f'http://127.0.0.1:{port}/?q={brand}+{category}&k={k}&relevance_mode=strict')
  cards = _wait_for_answer(browser, q, m)
  assert not browser.find_elements(By.CSS_SELECTOR, '#results .card.outside, #outside-count')

  # A blank query shows the server's message, and the last answer's cards go.
  _type_and_submit(browser, '   ', 8)
  error = browser.find_element(By.ID, 'error')
  WebDriverWait(browser, 20).until(lambda d: error.is_displayed())
  assert 'whitespace' in error.text
  assert browser.find_elements(By.CSS_SELECTOR, '#results .card') == []

  # A k the browser refuses: an error, and the last answer's cards go.
  _type_and_submit(browser, q, 4)
  _check_cards(_wait_for_answer(browser, q, 4), _answer(port, q, 4))
  _type_and_submit(browser, q, 0)
  WebDriverWait(browser, 20).until(lambda d: error.is_displayed())
  assert 'k must be' in error.text
  assert browser.find_elements(By.CSS_SELECTOR, '#results .card') == []

  # No word the model knows: no products, and the page says why.
  _type_and_submit(browser, '\u2603\u2603', 4)
  WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.ID, 'no-known-words'))
  assert browser.find_elements(By.CSS_SELECTOR, '#results .card') == []

  # At 400 px wide (a phone) the Search button is inside the window.
  browser.set_window_size(400, 800)
  browser.get(f'http://127.0.0.1:{port}/')
  button = browser.find_element(By.ID, 'go')
  right = browser.execute_script('return arguments[0].getBoundingClientRect().right', button)
  width = browser.execute_script('return document.documentElement.clientWidth')
  assert button.is_displayed() and right <= width, (right, width)
  browser.set_window_size(1280, 900)

  # A shared URL gives the same answer; its screenshot is what the docs show.
  browser.get(f'http://127.0.0.1:{port}/?q={brand}+{category}&k=4')
  _check_cards(_wait_for_answer(browser, q, 4), _answer(port, q, 4))
  shot = tmp_path / 'search_page.png'
  assert browser.save_screenshot(str(shot))
  assert shot.read_bytes().startswith(b'\x89PNG') and shot.stat().st_size > 10_000
  if target := os.environ.get('MAKE_PAGE_SCREENSHOT'):
    pathlib.Path(target).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, target)
