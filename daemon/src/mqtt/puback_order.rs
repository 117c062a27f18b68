//! PUBACKs in the order the requests arrived. A request is acknowledged only once its final
//! reply is queued (at-least-once delivery), and requests finish in any order; but MQTT requires
//! a client to acknowledge QoS 1 messages in the order it received them ([MQTT-4.6.0-2]), and some
//! brokers drop a client that does not (rumqttd, the embedded broker, does). So a finished
//! request's acknowledgement waits here until every request received before it is acknowledged.

use std::collections::VecDeque;
use std::sync::Mutex;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Publish;

/// The acknowledgements still owed, oldest first, for the current session.
#[derive(Default)]
pub struct PubackOrder {
    pending: Mutex<Owed>,
}

#[derive(Default)]
struct Owed {
    /// Counts the sessions: a request of an earlier one is never acknowledged on a later one.
    generation: u64,
    queue: VecDeque<Pending>,
}

struct Pending {
    pkid: u16,
    done: bool,
    /// What `AsyncClient::ack` needs (packet id and QoS), without the payload.
    stub: Publish,
}

impl PubackOrder {
    /// A new session began (the broker kept none): the messages of the old one will never be
    /// acknowledged (the broker forgot them, and their packet ids are reused), so nothing owed
    /// for them may hold back or be mistaken for the new session's.
    pub fn new_session(&self) {
        let mut owed = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        owed.generation += 1;
        owed.queue.clear();
    }

    /// Records a message as received (in the order the event loop sees them); returns the
    /// session it belongs to, for [`PubackOrder::finished`]. QoS 0 needs no acknowledgement; a
    /// redelivery of a packet id still owed is the same acknowledgement.
    pub fn received(&self, p: &Publish) -> u64 {
        let mut owed = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if p.qos == QoS::AtMostOnce || owed.queue.iter().any(|e| e.pkid == p.pkid && !e.done) {
            return owed.generation;
        }
        let mut stub = p.clone();
        stub.payload = bytes::Bytes::new();
        stub.properties = None;
        owed.queue.push_back(Pending { pkid: p.pkid, done: false, stub });
        owed.generation
    }

    /// Marks `p` (received in session `generation`) finished; returns the acknowledgements now
    /// due, in order (those of `p` and of the finished ones after it, once nothing before them is
    /// owed). Nothing, for a message of an earlier session.
    pub fn finished(&self, p: &Publish, generation: u64) -> Vec<Publish> {
        let mut owed = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if owed.generation != generation {
            return Vec::new();
        }
        if let Some(e) = owed.queue.iter_mut().find(|e| e.pkid == p.pkid && !e.done) {
            e.done = true;
        }
        let mut due = Vec::new();
        while owed.queue.front().is_some_and(|e| e.done) {
            if let Some(e) = owed.queue.pop_front() {
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
        let g = order.received(&publish(2)); // a redelivery of a request still running
        assert!(order.finished(&publish(3), g).is_empty());
        assert!(order.finished(&publish(2), g).is_empty());
        let due: Vec<u16> = order.finished(&publish(1), g).iter().map(|p| p.pkid).collect();
        assert_eq!(due, [1, 2, 3]);
        let mut qos0 = publish(0);
        qos0.qos = QoS::AtMostOnce;
        order.received(&qos0);
        order.received(&publish(4));
        assert_eq!(order.finished(&publish(4), g).len(), 1);
    }

    #[test]
    fn a_new_session_forgets_what_the_old_one_owed() {
        let order = PubackOrder::default();
        let old = order.received(&publish(1)); // still running when the connection drops
        order.new_session();
        let new = order.received(&publish(1)); // the new session reuses packet id 1
        assert_ne!(old, new);
        // The old request finishing acknowledges nothing; the new one is not held behind it.
        assert!(order.finished(&publish(1), old).is_empty());
        let due: Vec<u16> = order.finished(&publish(1), new).iter().map(|p| p.pkid).collect();
        assert_eq!(due, [1]);
    }
}
