#!/usr/bin/env bash
# Creates the throwaway secrets of the compose demo in ./secrets (git-ignored):
#
#   secrets/ca/ca.key                 cluster CA private key (never mounted)
#   secrets/tls/ca.pem                cluster CA certificate
#   secrets/tls/node{1,2,3}.pem|.key  node certificates, same names and
#                                     subjectAltNames as `dermagate certs init`
#                                     (node-N.dermagate, localhost, 127.0.0.1,
#                                     ::1) plus the compose host name nodeN
#   secrets/node{1,2,3}/kek.key       one key-encryption key per node
#   secrets/admin-password            first administrator (bootstrap node)
#   secrets/haproxy/lb.pem            load balancer certificate + key
#   secrets/haproxy/ca.pem            CA used by HAProxy to verify the nodes
#   secrets/grafana-admin-password    Grafana's admin password
#
# For a demo on one machine only: the files are made readable by the
# containers' unprivileged users (dermagate 10001, haproxy 99, grafana 472).
# Running as root, they are owned by the right uid and mode 0600; otherwise
# they are left world-readable (0644) with a warning. Production keys come
# from your PKI and secret store.
#
# Usage: gen-secrets.sh [--force] [DIR]   (DIR defaults to ./secrets)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
force=no
if [[ "${1:-}" == "--force" ]]; then force=yes; shift; fi
out="${1:-$here/secrets}"

if [[ -e "$out/tls/ca.pem" && $force == no ]]; then
    echo "$out already holds secrets; use --force to replace them" >&2
    exit 1
fi
command -v openssl >/dev/null 2>&1 || { echo "openssl not found" >&2; exit 127; }

umask 077
mkdir -p "$out"/{ca,tls,haproxy,node1,node2,node3}
days=365

echo "cluster CA"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$out/ca/ca.key"
openssl req -x509 -new -key "$out/ca/ca.key" -sha256 -days "$days" \
    -subj "/O=dermagate/CN=dermagate compose CA" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out "$out/tls/ca.pem"

# issue NAME SANS EKU KEY_OUT CERT_OUT
issue() {
    local cn="$1" sans="$2" eku="$3" key="$4" cert="$5" ext
    ext="$(mktemp)"
    printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\nsubjectAltName=%s\n' \
        "$eku" "$sans" > "$ext"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$key"
    openssl req -new -key "$key" -subj "/O=dermagate/CN=$cn" -out "$cert.csr"
    openssl x509 -req -in "$cert.csr" -CA "$out/tls/ca.pem" -CAkey "$out/ca/ca.key" \
        -CAcreateserial -days "$days" -sha256 -extfile "$ext" -out "$cert" 2>/dev/null
    rm -f "$cert.csr" "$ext"
}

for id in 1 2 3; do
    echo "node $id certificate and KEK"
    # Server and client: the same certificate serves the API and mutual-TLS Raft.
    issue "node-$id.dermagate" \
        "DNS:node-$id.dermagate,DNS:node$id,DNS:localhost,IP:127.0.0.1,IP:::1" \
        "serverAuth,clientAuth" "$out/tls/node$id.key" "$out/tls/node$id.pem"
    openssl rand -hex 32 > "$out/node$id/kek.key"
done

echo "load balancer certificate"
issue "localhost" "DNS:localhost,DNS:haproxy,IP:127.0.0.1,IP:::1" "serverAuth" \
    "$out/haproxy/lb.key" "$out/haproxy/lb.crt"
cat "$out/haproxy/lb.crt" "$out/haproxy/lb.key" > "$out/haproxy/lb.pem"
rm -f "$out/haproxy/lb.crt" "$out/haproxy/lb.key"
cp "$out/tls/ca.pem" "$out/haproxy/ca.pem"
rm -f "$out/tls/ca.srl"

echo "passwords"
openssl rand -base64 24 | tr -d '\n' > "$out/admin-password"
openssl rand -base64 24 | tr -d '\n' > "$out/grafana-admin-password"

# Make each file readable by the container user that needs it.
own() {  # own UID FILE...
    local uid="$1"; shift
    if [[ $(id -u) -eq 0 ]]; then
        chown "$uid:$uid" "$@"
        chmod 0600 "$@"
    else
        chmod 0644 "$@"
    fi
}
chmod 0755 "$out" "$out"/{tls,haproxy,node1,node2,node3}
chmod 0644 "$out/tls/ca.pem" "$out/haproxy/ca.pem"
own 10001 "$out"/tls/node*.key "$out"/tls/node*.pem "$out"/node*/kek.key "$out/admin-password"
own 99 "$out/haproxy/lb.pem"
own 472 "$out/grafana-admin-password"
if [[ $(id -u) -ne 0 ]]; then
    echo "warning: not root, so the private keys in $out are world-readable (demo only)" >&2
fi

echo "secrets written to $out"
