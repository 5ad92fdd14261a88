# Sourced by the setup scripts: installs a package.json and package-lock.json from the
# clone into a Node cache outside it, only when they changed (their hash is stamped) or a
# package is missing.
#
#   npm_cache_install WHAT SRC_DIR CACHE_DIR PACKAGE...
npm_cache_install() {
  local what=$1 src=$2 dir=$3
  shift 3
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "setup: node and npm are missing; $what needs Node.js >= 20 with npm" >&2
    return 1
  fi
  local files=("$src/package.json" "$src/package-lock.json")
  local want stamp missing=0 p
  want=$(cat "${files[@]}" | sha256sum | cut -d' ' -f1)
  stamp="$dir/.streamgate-stamp"
  for p in "$@"; do
    [ -d "$dir/node_modules/$p" ] || missing=1
  done
  if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ] || [ "$missing" = 1 ]; then
    echo "setup: installing $what into $dir"
    mkdir -p "$dir"
    rm -f "$stamp"
    cp "${files[@]}" "$dir/"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" >"$stamp"
  fi
}
