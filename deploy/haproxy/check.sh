#!/usr/bin/env bash
# Validates the HAProxy assets in this folder:
#   1. haproxy.cfg is exactly `render.py --example` (template and example in
#      step),
#   2. the template, rendered with throwaway certificates and loopback
#      servers (what `dermagate local up --lb` produces), passes `haproxy -c`,
#   3. the static example passes `haproxy -c` with only its certificate
#      paths pointed at throwaway files (node1..node3 need not resolve:
#      `init-addr last,libc,none` lets HAProxy start without them).
# Any HAProxy warning counts as a failure.
# Needs haproxy (apt-get install haproxy), openssl and python3.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

for tool in haproxy openssl python3; do
    command -v "$tool" >/dev/null 2>&1 || { echo "$tool not found" >&2; exit 127; }
done

echo "== throwaway CA and load balancer certificate in $work"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$work/ca.key" -out "$work/ca.pem" -days 1 -subj "/CN=check-ca" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$work/lb.key" -out "$work/lb.csr" -subj "/CN=localhost" 2>/dev/null
openssl x509 -req -in "$work/lb.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
    -CAcreateserial -out "$work/lb.crt" -days 1 2>/dev/null
cat "$work/lb.crt" "$work/lb.key" > "$work/lb.pem"

# haproxy -c prints "Configuration file is valid" and exits 0 even with
# warnings; treat warnings and alerts as errors.
# An optional second argument is a regular expression of warnings to accept.
haproxy_check() {
    local cfg="$1" allowed="${2:-^$}" out
    if ! out="$(haproxy -c -f "$cfg" 2>&1)"; then
        echo "$out" >&2
        return 1
    fi
    if grep -E '\[(WARNING|ALERT)\]' <<<"$out" | grep -Evq "$allowed"; then
        echo "$out" >&2
        return 1
    fi
    echo "$out" | grep -v '^\[NOTICE\]'
}

echo "== haproxy.cfg is the rendered example"
if ! diff -u "$here/haproxy.cfg" <(python3 "$here/render.py" --example); then
    echo "haproxy.cfg differs from the template; run: render.py --example -o haproxy.cfg" >&2
    exit 1
fi

echo "== haproxy -c on the template rendered for a local cluster"
python3 "$here/render.py" \
    --lb-bind 127.0.0.1:18443 \
    --lb-cert-pem "$work/lb.pem" \
    --ca-cert "$work/ca.pem" \
    --stats-bind 127.0.0.1:18405 \
    --server node1=127.0.0.1:18444,node-1.dermagate \
    --server node2=127.0.0.1:28444,node-2.dermagate \
    --server node3=127.0.0.1:38444,node-3.dermagate \
    -o "$work/local.cfg"
haproxy_check "$work/local.cfg"

echo "== haproxy -c on the static example (certificate paths redirected)"
sed -e "s#/usr/local/etc/haproxy/certs/lb.pem#$work/lb.pem#" \
    -e "s#/usr/local/etc/haproxy/certs/ca.pem#$work/ca.pem#" \
    "$here/haproxy.cfg" > "$work/example.cfg"
# node1..node3 exist only inside the compose network: HAProxy warns that it
# cannot resolve them here and starts them disabled until DNS answers.
haproxy_check "$work/example.cfg" "could not resolve address 'node[123]'"

echo "haproxy: all checks passed"
