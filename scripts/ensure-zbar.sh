#!/usr/bin/env bash
# pyzbar, the optional barcode backend the tests and benchmarks exercise, loads the system zbar
# library; make sure it is there.
set -euo pipefail
have_zbar() {
  if command -v ldconfig >/dev/null 2>&1 && ldconfig -p 2>/dev/null | grep -q 'libzbar\.so'; then return 0; fi
  compgen -G '/usr/lib/*/libzbar.so*' >/dev/null || compgen -G '/usr/lib/libzbar.so*' >/dev/null \
    || compgen -G '/usr/local/lib/libzbar.so*' >/dev/null
}
if have_zbar; then exit 0; fi
if command -v apt-get >/dev/null 2>&1; then
  run_as_root=()
  if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then run_as_root=(sudo -n); fi
  fi
  if [ "$(id -u)" = "0" ] || [ ${#run_as_root[@]} -gt 0 ]; then
    echo "libzbar not found: installing libzbar0 with apt-get"
    "${run_as_root[@]}" apt-get update -qq
    "${run_as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libzbar0
    exit 0
  fi
fi
echo "The pyzbar barcode backend needs the zbar library. Install it with:" >&2
echo "    sudo apt-get install --no-install-recommends libzbar0" >&2
exit 1
