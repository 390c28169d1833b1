#!/usr/bin/env bash
# Refreshes the vendored Swagger UI served at /docs from the npm package swagger-ui-dist.
#
#   api/assets/swagger-ui/update.sh          # latest 5.x
#   api/assets/swagger-ui/update.sh 5.35.0   # an exact version (or any npm version range)
#
# Needs npm, tar, sed and grep. Only the files the page needs are copied; source maps are not
# shipped, so their sourceMappingURL comments are stripped. index.html and init.js are ours and
# are not touched. Review `git diff --stat` and the VERSION file afterwards, and record the
# change of this SOUP item (version, integrity) as the change procedure requires.
set -euo pipefail

spec="${1:-5}"
dest="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cd "$work"
# `npm pack` only downloads the tarball: no install scripts of the package or its dependencies run.
tarball="$(npm pack --silent "swagger-ui-dist@${spec}" | tail -n 1)"
tar -xzf "$tarball"
version="$(node -p 'require("./package/package.json").version' 2>/dev/null \
  || sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' package/package.json)"
integrity="$(npm view "swagger-ui-dist@${version}" dist.integrity)"

# The registry's integrity must be that of the tarball just unpacked.
local_integrity="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 | tr -d '\n')"
if [ "$integrity" != "$local_integrity" ]; then
  echo "integrity mismatch: registry $integrity, tarball $local_integrity" >&2
  exit 1
fi

# Whole-line sourceMappingURL comments only (//# ..., //@ ..., /*# ... */); code is never edited.
strip_source_map() {
  sed -E \
    -e '/^[[:space:]]*\/\/[#@][[:space:]]*sourceMappingURL=[^[:space:]]*[[:space:]]*$/d' \
    -e '/^[[:space:]]*\/\*[#@][[:space:]]*sourceMappingURL=[^*]*\*\/[[:space:]]*$/d' \
    "$1" > "$2"
  if grep -Eq '[#@][[:space:]]*sourceMappingURL=' "$2"; then
    echo "a sourceMappingURL comment is left in $2 (not on a line of its own): strip it by hand" >&2
    exit 1
  fi
}

strip_source_map package/swagger-ui-bundle.js "$dest/swagger-ui-bundle.js"
strip_source_map package/swagger-ui.css "$dest/swagger-ui.css"
cp package/favicon-32x32.png package/LICENSE "$dest/"
# The bundle's own header points to this file: the licences of the third-party code inside it.
cp package/swagger-ui-bundle.js.LICENSE.txt "$dest/"
if [ -f package/NOTICE ]; then
  cp package/NOTICE "$dest/"
else
  rm -f "$dest/NOTICE"
fi

cat > "$dest/VERSION" <<EOF
package: swagger-ui-dist
version: ${version}
integrity: ${integrity}
source: npm registry, npm pack swagger-ui-dist@${version}
files: swagger-ui-bundle.js swagger-ui.css favicon-32x32.png LICENSE$([ -f package/NOTICE ] && echo ' NOTICE') swagger-ui-bundle.js.LICENSE.txt
modified: sourceMappingURL comment lines, where present, removed from swagger-ui-bundle.js and swagger-ui.css
EOF

echo "swagger-ui-dist ${version} vendored into ${dest}"
echo "integrity ${integrity}"
