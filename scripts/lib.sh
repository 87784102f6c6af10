# Shared by scripts/test and scripts/demo: `source scripts/lib.sh`.

GATEHOUSE_APT_PACKAGES=(libevent-dev libssl-dev libnghttp2-dev libcurl4-openssl-dev openssl python3 python3-h2 nghttp2-client curl pkg-config systemd logrotate haproxy pebble)

gh_log() { printf '==> %s\n' "$*" >&2; }

# Installs the Debian packages Gatehouse needs to build, test and demo, when any is
# missing (a fresh bookworm). Uses sudo only when not root.
gh_install_deps() {
    local missing=() pkg
    for pkg in "${GATEHOUSE_APT_PACKAGES[@]}"; do
        if ! dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install ok installed'; then
            missing+=("$pkg")
        fi
    done
    if ((${#missing[@]})); then
        local sudo=()
        if [ "$(id -u)" -ne 0 ]; then
            command -v sudo >/dev/null || { gh_log "missing packages (${missing[*]}) and no sudo: install them as root"; return 1; }
            sudo=(sudo)
        fi
        gh_log "installing missing packages: ${missing[*]}"
        "${sudo[@]}" apt-get update
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            "${GATEHOUSE_APT_PACKAGES[@]}"
    fi
    if ! command -v swift >/dev/null; then
        gh_log "swift is not on PATH: install the Swift 6 toolchain (swift.org) first"
        return 1
    fi
}

# gh_make_ca DIR: DIR/ca.pem + DIR/ca.key (P-256), unless they exist.
gh_make_ca() {
    local dir=$1
    [ -s "$dir/ca.pem" ] && [ -s "$dir/ca.key" ] && return 0
    mkdir -p "$dir"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$dir/ca.key" -out "$dir/ca.pem" -days 3650 -subj "/CN=Gatehouse Demo CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}

# gh_make_leaf DIR NAME [SAN...]: DIR/NAME.pem + DIR/NAME.key (P-256) signed by DIR/ca.*,
# unless they exist. SANs default to NAME.
gh_make_leaf() {
    local dir=$1 name=$2; shift 2
    local sans=("$@")
    ((${#sans[@]})) || sans=("$name")
    [ -s "$dir/$name.pem" ] && [ -s "$dir/$name.key" ] && return 0
    local san="" s
    for s in "${sans[@]}"; do san+="${san:+,}DNS:$s"; done
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$dir/$name.key" -out "$dir/$name.csr" -subj "/CN=$name" 2>/dev/null
    printf 'subjectAltName=%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' \
        "$san" >"$dir/$name.ext"
    openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
        -days 825 -sha256 -out "$dir/$name.pem" -extfile "$dir/$name.ext" 2>/dev/null
    rm -f "$dir/$name.csr" "$dir/$name.ext"
}
