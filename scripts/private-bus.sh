# Sourced by the demo and bench scripts: a private dbus-daemon (its own socket in a work folder,
# never the desktop's or the system's bus).
#   start_private_bus DIR   sets BUS (its address) and BUS_PID; fails if it does not come up in 5 s.
start_private_bus() {
  local dir=$1
  dbus-daemon --session --address="unix:path=$dir/bus" --nofork --print-address=3 3>"$dir/bus.address" \
    >"$dir/dbus-daemon.log" 2>&1 &
  BUS_PID=$!
  for _ in $(seq 100); do [ -s "$dir/bus.address" ] && break; sleep 0.05; done
  if [ ! -s "$dir/bus.address" ]; then
    echo "error: the private dbus-daemon did not start:" >&2
    cat "$dir/dbus-daemon.log" >&2
    return 1
  fi
  BUS="unix:path=$dir/bus"
}
