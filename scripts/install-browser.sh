#!/usr/bin/env bash
# Installs what the browser tests need: Debian's chromium and chromium-driver (apt-get,
# only when missing and only as root; Playwright drives /usr/bin/chromium and never
# downloads a browser of its own). Node.js >= 20 runs the clipserve.js tests; it is
# checked, not installed (Debian's own nodejs is older).
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
    else
        echo "install-browser.sh: chromium/chromium-driver missing and not root: the" \
             "browser tests will be skipped (apt-get install chromium chromium-driver)" >&2
    fi
fi
if ! node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' 2>/dev/null; then
    echo "install-browser.sh: Node.js >= 20 not found: the clipserve.js tests need it" >&2
fi
