#!/usr/bin/env python3
# traces: FM-06, FM-10, R-13
"""The administration console in headless Chromium against a live 3-node cluster behind HAProxy.

Flows: the platform administrator creates an organisation (with its attestation and first
administrator) from the console; the organisation's administrator creates a client key (secret
shown once) which this script then uses for a real analysis through the API (OAuth client
credentials), and a clinician; the clinician submits three analyses from the browser, sees the
series chart and a report; exports download; a forbidden page answers 403; erasure (typed
confirmation) leaves the subject not found on every node; signing out on one node ends the session
on the others; `/docs` loads. On every page the browser's console log must hold no error and no
CSP violation. Screenshots of each page go to $CONSOLE_ARTEFACTS.

Usage: browser_test.py CLUSTER_DIR IFU_MD (run by scripts/check-console.sh).
"""

import base64
import json
import os
import re
import secrets
import signal
import sys
import time

import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

CLUSTER_DIR, IFU = sys.argv[1], sys.argv[2]
ARTEFACTS = os.environ.get("CONSOLE_ARTEFACTS", "/tmp")
info = json.load(open(os.path.join(CLUSTER_DIR, "cluster.json")))
CA = info["ca_cert"]
LB = info["lb_url"]
NODES = [n["api_url"] for n in info["nodes"]]
ADMIN = info["admin"]["username"]
ADMIN_PASSWORD = open(info["admin"]["password_file"]).read().strip()
PASSWORD = "console-" + secrets.token_hex(8)
SUBJECT = "console-subj-" + secrets.token_hex(3)


def say(msg):
    print(f"browser_test: {msg}", flush=True)


def fail(msg):
    raise SystemExit(f"browser_test: FAILED: {msg}")


def test_image(path):
    """The IFU's 640x480 test PNG (written from the base64 block of step 11)."""
    text = open(IFU).read()
    m = re.search(r"base64 -d >\"\$WORK/lesion.png\" <<'EOF'\n(.*?)\nEOF", text, re.S)
    if not m:
        fail("docs/ifu.md no longer holds the test image")
    with open(path, "wb") as f:
        f.write(base64.b64decode("".join(m.group(1).split())))
    return path


# SIGTERM from the wrapper's trap: unwind, so chromedriver is stopped by `finally`.
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800",
            "--ignore-certificate-errors", "--disable-gpu", "--no-first-run"):
    options.add_argument(arg)
options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
driver.set_page_load_timeout(60)
shots = 0


def check_log(where):
    """No console error and no CSP violation on the page just shown."""
    bad = [e for e in driver.get_log("browser")
           if e["level"] in ("SEVERE", "ERROR") or "Content Security Policy" in e["message"]]
    # A page that is an HTTP error on purpose logs its status as a failed resource load.
    bad = [e for e in bad if not re.search(r"status of (403|404|400)", e["message"])]
    if bad:
        fail(f"{where}: browser console errors: {bad}")


def shot(name):
    global shots
    shots += 1
    path = os.path.join(ARTEFACTS, f"{shots:02d}-{name}.png")
    driver.save_screenshot(path)
    check_log(name)


def go(path, name=None):
    driver.get(LB + path)
    if name:
        shot(name)


def fill(field_id, value):
    el = driver.find_element(By.ID, field_id)
    el.clear()
    el.send_keys(value)


def replaced(old):
    """A wait condition: `old` no longer belongs to the current document."""

    def predicate(_driver):
        try:
            old.is_enabled()
            return False
        except StaleElementReferenceException:
            return True
        except WebDriverException as e:
            # chromedriver sometimes reports a node of a replaced document as an inspector
            # error rather than as a stale element; it means the same.
            if "does not belong to the document" in str(e):
                return True
            raise

    return predicate


def click_and_wait(element):
    """Clicks and waits for the next page to replace this one."""
    old = driver.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(driver, 60).until(replaced(old))
    WebDriverWait(driver, 60).until(lambda d: d.execute_script("return document.readyState") == "complete")


def submit(form_css="form.card"):
    click_and_wait(driver.find_element(By.CSS_SELECTOR, f"{form_css} button[type=submit]"))


def sign_in(user, password, name):
    go("/console/login", f"login-{name}")
    fill("username", user)
    fill("password", password)
    submit()
    if not driver.current_url.endswith("/console/"):
        fail(f"{user} could not sign in: {driver.current_url} {driver.page_source[:400]}")
    shot(f"home-{name}")


def sign_out():
    go("/console/")
    click_and_wait(driver.find_element(By.CSS_SELECTOR, "form.signout button"))
    if "/console/login" not in driver.current_url:
        fail("sign-out did not return to the sign-in page")


def session_cookie():
    for c in driver.get_cookies():
        if c["name"] == "dermagate_session":
            if not (c.get("httpOnly") and c.get("secure") and c.get("sameSite") == "Strict"):
                fail(f"session cookie flags: {c}")
            return c["value"]
    fail("no session cookie")


def on_node(url, path, cookie, **kw):
    return requests.get(url + path, headers={"Cookie": f"dermagate_session={cookie}"}, verify=CA,
                        allow_redirects=False, timeout=20, **kw)


try:
    image = test_image(os.path.join(ARTEFACTS, "lesion.png"))

    # 1. The platform administrator creates an organisation with its first administrator.
    sign_in(ADMIN, ADMIN_PASSWORD, "platform-admin")
    go("/console/organizations", "organizations")
    fill("name", "Clinic Console")
    fill("contract_reference", "CTR-2026-16")
    fill("attested_by", "QA lead")
    fill("admin_username", "console-orgadmin")
    fill("admin_password", PASSWORD)
    submit()
    if "Clinic Console" not in driver.page_source:
        fail("the new organisation is not listed")
    shot("organizations-created")
    go("/console/cluster", "cluster")
    if len(driver.find_elements(By.CSS_SELECTOR, "table tbody tr")) != 3:
        fail("the cluster page does not list three nodes")
    sign_out()
    say("platform administrator: organisation and first administrator created")

    # 2. The organisation's administrator: a client key (secret once) and a clinician.
    sign_in("console-orgadmin", PASSWORD, "org-admin")
    go("/console/clients", "clients")
    fill("name", "PACS gateway")
    submit()
    client_id = driver.find_element(By.ID, "client-id").text
    secret = driver.find_element(By.ID, "client-secret").text
    if not secret.startswith("dgk_"):
        fail(f"no client secret shown: {secret!r}")
    shot("client-created")
    go("/console/clients")
    if secret in driver.page_source:
        fail("the client secret is shown again")
    token = requests.post(LB + "/oauth/token", auth=(client_id, secret), data={"grant_type": "client_credentials"},
                          verify=CA, timeout=20)
    if token.status_code != 200:
        fail(f"client credentials: {token.status_code} {token.text}")
    bearer = {"Authorization": "Bearer " + token.json()["access_token"]}
    body = {"images": [{"data": base64.b64encode(open(image, "rb").read()).decode(), "contentType": "image/png"}],
            "subject": "console-api-subject", "bodySite": "ARM_LEFT"}
    analysis = requests.post(LB + "/v1/analyses", json=body, headers=bearer, verify=CA, timeout=60)
    if analysis.status_code != 201:
        fail(f"analysis with the console's client key: {analysis.status_code} {analysis.text}")
    say("client key created in the console analysed through the API")
    go("/console/users", "users")
    fill("username", "console-clinician")
    fill("password", PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "input[name=role_clinician]").click()
    submit()
    if "console-clinician" not in driver.page_source:
        fail(f"the clinician is not listed: {driver.find_element(By.TAG_NAME, 'main').text[:600]}")
    shot("users-created")
    go("/console/organization", "organization")
    go("/console/audit", "audit")
    sign_out()

    # 3. The clinician: three analyses from the browser, the series chart, a report.
    sign_in("console-clinician", PASSWORD, "clinician")
    previous = ""
    for i in range(3):
        go(f"/console/analyses/new?subject={SUBJECT}&previous={previous}", "analysis-form" if i == 0 else None)
        Select(driver.find_element(By.ID, "bodySite")).select_by_value("ARM_LEFT")
        driver.find_element(By.ID, "image1").send_keys(image)
        submit()
        if "/console/reports/" not in driver.current_url:
            fail(f"analysis {i + 1} did not show its report: {driver.current_url} {driver.page_source[:600]}")
        previous = driver.find_element(By.ID, "report-id").text
    shot("report")
    go(f"/console/subjects/{SUBJECT}", "subject-series")
    points = driver.find_elements(By.CSS_SELECTOR, "svg.chart a circle")
    if len(points) < 3:
        fail(f"the chart has {len(points)} points")
    say(f"clinician: three analyses, chart with {len(points)} points")
    # Tablet width: the page reflows, nothing wider than the window.
    driver.set_window_size(820, 1180)
    go(f"/console/subjects/{SUBJECT}", "subject-series-tablet")
    if driver.execute_script("return document.documentElement.scrollWidth > window.innerWidth"):
        fail("the subject page overflows a tablet-width window")
    driver.set_window_size(1280, 800)
    go("/console/users", "forbidden")
    if "403 Forbidden" not in driver.page_source:
        fail("a clinician opened the users page")
    cookie = session_cookie()
    if on_node(LB, "/console/users", cookie).status_code != 403:
        fail("the users page did not answer 403 to a clinician")
    for kind in ("export.json", "export.fhir.json"):
        r = on_node(LB, f"/console/subjects/{SUBJECT}/{kind}", cookie)
        if r.status_code != 200 or "attachment" not in r.headers.get("content-disposition", ""):
            fail(f"{kind}: {r.status_code}")
        with open(os.path.join(ARTEFACTS, f"{SUBJECT}-{kind}"), "wb") as f:
            f.write(r.content)
        if kind == "export.json" and len(r.json()["reports"]) != 3:
            fail("the export does not hold the three reports")
    say("exports downloaded")
    sign_out()

    # 4. Erasure by the organisation's administrator, then not found on every node.
    sign_in("console-orgadmin", PASSWORD, "org-admin-erase")
    go(f"/console/subjects/{SUBJECT}", "subject-admin")
    fill("confirm", SUBJECT)
    submit("form.danger")
    if "Subject erased" not in driver.page_source:
        fail(f"erasure: {driver.page_source[:500]}")
    shot("erased")
    cookie = session_cookie()
    for node in NODES:
        r = on_node(node, f"/console/subjects/{SUBJECT}", cookie)
        if r.status_code != 404:
            fail(f"{node} still shows the erased subject ({r.status_code})")
        api = requests.get(f"{node}/v1/subjects/{SUBJECT}/analyses", headers=bearer, verify=CA, timeout=20)
        if api.status_code != 404:
            fail(f"{node} API still lists the erased subject ({api.status_code})")
    say("subject erased: not found on every node")

    # 5. Signing out on one node ends the session on the others at once.
    for node in NODES:
        if on_node(node, "/console/", cookie).status_code != 200:
            fail(f"{node} does not accept the session before sign-out")
    home = on_node(NODES[0], "/console/", cookie).text
    csrf = re.search(r'name="csrf" value="([0-9a-f]{64})"', home).group(1)
    out = requests.post(NODES[0] + "/console/logout", data={"csrf": csrf}, verify=CA, allow_redirects=False,
                        headers={"Cookie": f"dermagate_session={cookie}"}, timeout=20)
    if out.status_code != 303:
        fail(f"sign-out on node 1: {out.status_code}")
    for node in NODES[1:] + [LB]:
        r = on_node(node, "/console/", cookie)
        if r.status_code != 303 or not r.headers["location"].endswith("/console/login"):
            fail(f"{node} still accepts a session ended on another node ({r.status_code})")
    say("sign-out on node 1 ended the session on every node")

    # 6. The API reference loads without console errors.
    go("/docs")
    time.sleep(2)
    shot("docs")
    say(f"all flows passed; {shots} screenshots in {ARTEFACTS}")
finally:
    driver.quit()
