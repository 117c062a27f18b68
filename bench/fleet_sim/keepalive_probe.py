#!/usr/bin/env python3
"""How long a broker takes to notice a silent death: clients with keep-alive K (one process each) connect
with a Last Will and publish a QoS 0 message every 0.1 s, then are SIGSTOPped (socket open, nothing sent
from then on); prints the time from the stop until each will arrives. MQTT 5 (3.1.2.10): the server
disconnects a client from which it has received no packet for 1.5 x keep-alive.

    keepalive_probe.py --port P [--keepalives 1,2,3,5,10,20]
"""
import argparse
import signal
import subprocess
import sys
import time

import paho.mqtt.client as mqtt


def client(port, ka):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"ka-probe-{ka}", protocol=mqtt.MQTTv5)
    c.will_set(f"ka-probe/{ka}", "dead", qos=1)
    c.connect("127.0.0.1", port, keepalive=ka)
    c.loop_start()
    while True:  # the broker's last packet from us is at most 0.1 s before the stop
        c.publish(f"ka-probe-alive/{ka}", b"", qos=0)
        time.sleep(0.1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--keepalives", default="1,2,3,5,10,20")
    p.add_argument("--client", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.client:
        return client(a.port, a.client)
    kas = [int(x) for x in a.keepalives.split(",")]
    wills = {}
    w = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ka-probe-watch", protocol=mqtt.MQTTv5)
    w.on_message = lambda _c, _u, m: wills.setdefault(int(m.topic.split("/")[1]), time.monotonic())
    w.connect("127.0.0.1", a.port)
    w.subscribe("ka-probe/#", qos=1)
    w.loop_start()
    procs = [subprocess.Popen([sys.executable, __file__, "--port", str(a.port), "--client", str(ka)]) for ka in kas]
    time.sleep(2.5)
    t0 = time.monotonic()
    for q in procs:
        q.send_signal(signal.SIGSTOP)
    while len(wills) < len(kas) and time.monotonic() - t0 < 2 * max(kas) + 15:
        time.sleep(0.05)
    for q in procs:
        q.kill()
    print("silent death (SIGSTOP; last packet <= 0.1 s before it) -> Last Will delivered:")
    for ka in kas:
        print(f"   keep-alive {ka:3d} s (1.5 x = {1.5 * ka:5.1f} s): {wills.get(ka, float('nan')) - t0:6.2f} s")


if __name__ == "__main__":
    main()
