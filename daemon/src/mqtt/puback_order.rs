//! PUBACKs in the order the requests arrived. A request is acknowledged only once its final
//! reply is queued (at-least-once delivery), and requests finish in any order; but MQTT requires
//! a client to acknowledge QoS 1 messages in the order it received them ([MQTT-4.6.0-2]), and some
//! brokers drop a client that does not (rumqttd, the embedded broker, does). So a finished
//! request's acknowledgement waits here until every request received before it is acknowledged.

use std::collections::VecDeque;
use std::sync::Mutex;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Publish;

/// The acknowledgements still owed, oldest first.
#[derive(Default)]
pub struct PubackOrder {
    pending: Mutex<VecDeque<Pending>>,
}

struct Pending {
    pkid: u16,
    done: bool,
    /// What `AsyncClient::ack` needs (packet id and QoS), without the payload.
    stub: Publish,
}

impl PubackOrder {
    /// Records a message as received (in the order the event loop sees them). QoS 0 needs no
    /// acknowledgement; a redelivery of a packet id still owed is the same acknowledgement.
    pub fn received(&self, p: &Publish) {
        if p.qos == QoS::AtMostOnce {
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.iter().any(|e| e.pkid == p.pkid && !e.done) {
            return;
        }
        let mut stub = p.clone();
        stub.payload = bytes::Bytes::new();
        stub.properties = None;
        pending.push_back(Pending { pkid: p.pkid, done: false, stub });
    }

    /// Marks `p` finished; returns the acknowledgements now due, in order (those of `p` and of
    /// the finished ones after it, once nothing before them is owed).
    pub fn finished(&self, p: &Publish) -> Vec<Publish> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = pending.iter_mut().find(|e| e.pkid == p.pkid && !e.done) {
            e.done = true;
        }
        let mut due = Vec::new();
        while pending.front().is_some_and(|e| e.done) {
            if let Some(e) = pending.pop_front() {
                due.push(e.stub);
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(pkid: u16) -> Publish {
        let mut p = Publish::new("t", QoS::AtLeastOnce, vec![1u8; 8], None);
        p.pkid = pkid;
        p
    }

    #[test]
    fn acknowledgements_leave_in_arrival_order() {
        let order = PubackOrder::default();
        for id in [1, 2, 3] {
            order.received(&publish(id));
        }
        order.received(&publish(2)); // a redelivery of a request still running
        assert!(order.finished(&publish(3)).is_empty());
        assert!(order.finished(&publish(2)).is_empty());
        let due: Vec<u16> = order.finished(&publish(1)).iter().map(|p| p.pkid).collect();
        assert_eq!(due, [1, 2, 3]);
        let mut qos0 = publish(0);
        qos0.qos = QoS::AtMostOnce;
        order.received(&qos0);
        order.received(&publish(4));
        assert_eq!(order.finished(&publish(4)).len(), 1);
    }
}
