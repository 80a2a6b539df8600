#!/usr/bin/env bash
# The test suite starts its own mosquitto brokers; make sure the binary exists.
set -euo pipefail
find_mosquitto() {
  command -v mosquitto 2>/dev/null || { [ -x /usr/sbin/mosquitto ] && echo /usr/sbin/mosquitto; }
}
if [ -n "$(find_mosquitto)" ]; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  echo "mosquitto not found: installing it with apt-get"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients
  systemctl disable --now mosquitto >/dev/null 2>&1 || true
  exit 0
fi
echo "The tests need the mosquitto broker binary. Install it with:" >&2
echo "    sudo apt-get install mosquitto mosquitto-clients" >&2
exit 1
