"""One member of an MQTT 5 shared subscription ($share/g/t), for mosquitto_shared.sh: prints each
message it gets; with "noack" it never acknowledges (a daemon still working on its requests)."""
import sys

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

port, cid, expiry, ack = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4] == "ack"
receive_maximum = int(sys.argv[5]) if len(sys.argv) > 5 else None
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5, manual_ack=True)


def on_connect(client, userdata, flags, rc, props):
    print(f"{cid} connected session_present={flags.session_present}", flush=True)
    client.subscribe("$share/g/t", qos=1)


def on_message(client, userdata, m):
    print(f"{cid} got {m.payload.decode()}", flush=True)
    if ack:
        client.ack(m.mid, m.qos)


c.on_connect = on_connect
c.on_message = on_message
p = Properties(PacketTypes.CONNECT)
p.SessionExpiryInterval = expiry
if receive_maximum:
    p.ReceiveMaximum = receive_maximum
c.connect("127.0.0.1", port, clean_start=False, properties=p)
c.loop_forever()
