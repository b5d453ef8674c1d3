#!/usr/bin/env bash
# Bundles the web UI (crate meridian-ui) into dist/ (committed: building Meridian needs no Node.js). Run after changing
# web/ or package.json: installs the pinned packages from the npm registry (package-lock.json), then
# esbuild writes one minified script and one stylesheet, which the gateway and the edge embed (`include_bytes!`)
# with web/index.html.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund --silent
./node_modules/.bin/esbuild web/main.js --bundle --minify --format=iife --target=es2020 \
  --legal-comments=none --outfile=dist/app.js --log-level=warning
# esbuild writes the CSS the script imports (uPlot's and ours) next to it, as dist/app.css; the
# page itself is web/index.html.
ls -l dist
