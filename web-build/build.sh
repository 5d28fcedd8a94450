#!/bin/sh
# Rebuilds duely/web/static/vendor/codemirror.js from the exact package versions in
# package-lock.json. Needs Node 18+ and npm; only this script does: `make run` and the tests
# use the committed file. Commit the rebuilt file together with any package change.
# To upgrade: `npm install --save-exact <pkg>@<version>` here, then this script.
set -eu
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
node build.mjs
