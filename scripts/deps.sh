# Shared by the scripts: install what is missing, say what is being done.
# shellcheck shell=bash

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

apt_install() {
  local missing=()
  for package in "$@"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]} (apt-get)"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

require_cargo() {
  if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is not installed: install Rust with rustup (https://rustup.rs) and rerun" >&2
    exit 1
  fi
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy >/dev/null 2>&1 || true
}

ensure_nextest() {
  if ! cargo nextest --version >/dev/null 2>&1; then
    log "installing cargo-nextest (cargo install)"
    cargo install --locked cargo-nextest >/dev/null
  fi
}

# moto's server mode (PyPI `moto[server]`): the EC2 client's tests run against
# it (`palisade_testkit::moto::Moto` finds `moto_server` on PATH). Installed with
# pip only when missing; pyenv needs a rehash to put the new script on PATH.
ensure_moto() {
  command -v moto_server >/dev/null 2>&1 && return 0
  log "installing moto[server] (pip)"
  python3 -m pip install --quiet 'moto[server]' >/dev/null
  if command -v pyenv >/dev/null 2>&1; then
    pyenv rehash
  fi
  if ! command -v moto_server >/dev/null 2>&1; then
    echo "moto_server is not on PATH after installing moto[server]: add pip's script directory to PATH" >&2
    exit 1
  fi
}
