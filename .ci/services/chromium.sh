# Chromium for the dashboard's browser test (tests/test_dashboard_browser.py).
# Sourced by .ci/run (set -euo pipefail): installs Debian's `chromium` if it is missing, checks it
# starts, and exports AUTOPETL_REQUIRE_BROWSER=1 so the test fails instead of skipping without it.

_autopetl_chromium_start() {
  if ! command -v chromium >/dev/null 2>&1; then
    echo "chromium.sh: installing chromium (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
  command -v chromium >/dev/null 2>&1 || { echo "chromium.sh: chromium is not on PATH after install" >&2; return 1; }
  chromium --version >/dev/null 2>&1 || { echo "chromium.sh: chromium does not start" >&2; return 1; }
  export AUTOPETL_REQUIRE_BROWSER=1
  echo "chromium.sh: $(chromium --version 2>/dev/null | head -n 1)"
}

_autopetl_chromium_start
