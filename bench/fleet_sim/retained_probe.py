#!/usr/bin/env python3
"""Retained status topics at fleet scale: publish R retained `edgeinfer/<node>/status` messages (one per
simulated node, about 200 bytes, QoS 1), then let a new client subscribe to `edgeinfer/+/status` (as a
dashboard or a fleet client listing the nodes would) and count how many it receives, at QoS 1 and QoS 0.

    retained_probe.py --port P [--counts 500,2000,5000]
"""
import argparse
import json
import time

import paho.mqtt.client as mqtt


def connect(port, name):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--counts", default="500,2000,5000")
    a = p.parse_args()
    print("retained status messages -> received by a new subscriber to edgeinfer-rp<R>/+/status:")
    for r in [int(x) for x in a.counts.split(",")]:
        prefix = f"edgeinfer-rp{r}"
        pub = connect(a.port, f"rp-pub-{r}")
        infos = [pub.publish(f"{prefix}/sim-{i}/status", json.dumps(
            {"state": "online", "node": f"sim-{i}", "version": "0.0.0", "pid": 1000 + i,
             "models": [{"id": "dino", "state": "ready", "family": "dinov2"}], "execution_providers": ["cpu"]}),
            qos=1, retain=True) for i in range(r)]
        for info in infos:
            info.wait_for_publish(30)
        pub.disconnect()
        pub.loop_stop()
        for qos in (1, 0):
            got = []
            sub = connect(a.port, f"rp-sub-{r}-{qos}")
            sub.on_message = lambda _c, _u, m, got=got: got.append(time.monotonic())
            t0 = time.monotonic()
            sub.subscribe(f"{prefix}/+/status", qos=qos)
            while time.monotonic() - (got[-1] if got else t0) < 3:
                time.sleep(0.1)
            sub.disconnect()
            sub.loop_stop()
            took = (got[-1] - t0) if got else 0
            print(f"   R = {r:5d}, subscriber QoS {qos}: received {len(got):5d} ({100 * len(got) / r:5.1f} %) in {took:.2f} s")


if __name__ == "__main__":
    main()
