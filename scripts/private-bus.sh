# Sourced by the demo, bench and package-check scripts: a private dbus-daemon (its own socket in a
# work folder, never the desktop's or the system's bus).
#   start_private_bus DIR   a permissive session-like bus; sets BUS (its address) and BUS_PID;
#                           fails if it does not come up in 5 s.
#   start_private_system_bus DIR POLICY   the same with the system bus's default rules and the
#                           policy file POLICY (scripts/system-bus.conf.in), as on a device.
start_private_bus() {
  local dir=$1
  dbus-daemon --session --address="unix:path=$dir/bus" --nofork --print-address=3 3>"$dir/bus.address" \
    >"$dir/dbus-daemon.log" 2>&1 &
  BUS_PID=$!
  _wait_private_bus "$dir"
}

start_private_system_bus() {
  local dir=$1 policy=$2 template
  template="$(dirname "${BASH_SOURCE[0]}")/system-bus.conf.in"
  sed -e "s|@SOCKET@|$dir/bus|" -e "s|@POLICY@|$policy|" "$template" >"$dir/system-bus.conf"
  dbus-daemon --config-file="$dir/system-bus.conf" --nofork --print-address=3 3>"$dir/bus.address" \
    >"$dir/dbus-daemon.log" 2>&1 &
  BUS_PID=$!
  _wait_private_bus "$dir"
}

_wait_private_bus() {
  local dir=$1
  for _ in $(seq 100); do [ -s "$dir/bus.address" ] && break; sleep 0.05; done
  if [ ! -s "$dir/bus.address" ]; then
    echo "error: the private dbus-daemon did not start:" >&2
    cat "$dir/dbus-daemon.log" >&2
    return 1
  fi
  BUS="unix:path=$dir/bus"
}
