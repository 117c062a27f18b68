#!/usr/bin/env python3
"""Does the broker keep to a subscriber's Receive Maximum (MQTT 5, 3.1.2.11.3 and 4.9)? A subscriber
connects with Receive Maximum R, subscribes QoS 1 (plain and shared), 30 messages are published, and
it acknowledges each one 50 ms after it arrives, in order. Prints the most messages it held
unacknowledged at once: at most R if the broker keeps to it.

    receive_max_probe.py --port P [--receive-max 1,3]
"""
import argparse
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions


def probe(port, rm, topic_filter, tag):
    lock = threading.Lock()
    state = {"unacked": 0, "peak": 0, "got": 0}
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"rm-probe-{tag}", protocol=mqtt.MQTTv5)
    sub.manual_ack_set(True)

    def ack_later(mid):
        time.sleep(0.05)
        with lock:
            state["unacked"] -= 1
        sub.ack(mid, 1)

    def on_message(_c, _u, m):
        with lock:
            state["unacked"] += 1
            state["got"] += 1
            state["peak"] = max(state["peak"], state["unacked"])
        threading.Thread(target=ack_later, args=(m.mid,)).start()

    sub.on_message = on_message
    props = Properties(PacketTypes.CONNECT)
    props.ReceiveMaximum = rm
    props.SessionExpiryInterval = 0
    sub.connect("127.0.0.1", port, properties=props)
    sub.loop_start()
    time.sleep(0.3)
    sub.subscribe(topic_filter, options=SubscribeOptions(qos=1))
    time.sleep(0.3)
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"rm-probe-pub-{tag}", protocol=mqtt.MQTTv5)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    for _ in range(30):
        pub.publish(f"rm-probe/{tag}/x", b"m", qos=1)
    time.sleep(3)
    pub.loop_stop()
    sub.loop_stop()
    return state


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--receive-max", default="1,3")
    a = p.parse_args()
    print("Receive Maximum R, 30 QoS 1 messages, each acknowledged 50 ms after arrival -> most unacknowledged at once:")
    for rm in [int(x) for x in a.receive_max.split(",")]:
        for kind, flt in (("plain", "rm-probe/{t}/#"), ("shared", "$share/g/rm-probe/{t}/#")):
            tag = f"{kind}{rm}"
            st = probe(a.port, rm, flt.format(t=tag), tag)
            print(f"   R = {rm}, {kind:6s} subscription: {st['peak']:2d} unacknowledged at once ({st['got']} received)")


if __name__ == "__main__":
    main()
