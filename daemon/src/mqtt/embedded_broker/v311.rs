//! MQTT 3.1.1 clients of the embedded broker: rumqttd's own 3.1.1 listener cannot forward a
//! message that carries MQTT 5 properties (it panics), and the daemon speaks MQTT 5. So a 3.1.1
//! client is served through the MQTT 5 listener, each packet translated on the way (rumqttc's
//! codecs for both versions): properties dropped towards the client, none added towards the
//! broker, reason codes mapped to 3.1.1's return codes.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;
use rumqttc::v5::mqttbytes::{self as mqtt5};

/// Translates between a 3.1.1 `client` and the broker's MQTT 5 listener (`broker`) until either
/// side closes. `head` holds what was already read from the client.
pub fn serve(client: TcpStream, broker: TcpStream, head: Vec<u8>, max_packet: usize) -> io::Result<()> {
    let (client_in, broker_out) = (client.try_clone()?, broker.try_clone()?);
    let up = std::thread::Builder::new()
        .name("embedded-broker-v311".into())
        .spawn(move || client_to_broker(client_in, broker_out, head, max_packet))?;
    let down = broker_to_client(broker.try_clone()?, client.try_clone()?, max_packet);
    let _ = client.shutdown(Shutdown::Both);
    let _ = broker.shutdown(Shutdown::Both);
    let up = up.join().unwrap_or_else(|_| Err(io::Error::other("translator thread panicked")));
    down.and(up)
}

fn invalid(e: impl std::fmt::Debug) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{e:?}"))
}

/// Reads more bytes into `buf`; false at end of stream.
fn fill(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<bool> {
    let mut chunk = [0u8; 16 * 1024];
    let n = stream.read(&mut chunk)?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n > 0)
}

fn client_to_broker(mut client: TcpStream, mut broker: TcpStream, head: Vec<u8>, max: usize) -> io::Result<()> {
    let mut buf = BytesMut::from(&head[..]);
    let mut out = BytesMut::new();
    loop {
        let packet = match v4::Packet::read(&mut buf, max) {
            Ok(p) => p,
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {
                if fill(&mut client, &mut buf)? {
                    continue;
                }
                return Ok(());
            }
            Err(e) => return Err(invalid(e)),
        };
        let last = matches!(packet, v4::Packet::Disconnect);
        to_v5(packet).write(&mut out, Some(u32::try_from(max).unwrap_or(u32::MAX))).map_err(invalid)?;
        broker.write_all(&out)?;
        out.clear();
        if last {
            return Ok(());
        }
    }
}

fn broker_to_client(mut broker: TcpStream, mut client: TcpStream, max: usize) -> io::Result<()> {
    let mut buf = BytesMut::new();
    let mut out = BytesMut::new();
    loop {
        let packet = match v5::Packet::read(&mut buf, Some(u32::try_from(max).unwrap_or(u32::MAX))) {
            Ok(p) => p,
            Err(mqtt5::Error::InsufficientBytes(_)) => {
                if fill(&mut broker, &mut buf)? {
                    continue;
                }
                return Ok(());
            }
            // An MQTT 5 DISCONNECT without a reason code (the codec wants one): the broker
            // closes; so do we (3.1.1 has no server DISCONNECT).
            Err(mqtt5::Error::PayloadRequired) => return Ok(()),
            Err(e) => return Err(invalid(e)),
        };
        let Some(packet) = to_v4(packet) else { return Ok(()) };
        packet.write(&mut out, max).map_err(invalid)?;
        client.write_all(&out)?;
        out.clear();
    }
}

fn qos5(q: rumqttc::mqttbytes::QoS) -> mqtt5::QoS {
    match q {
        rumqttc::mqttbytes::QoS::AtMostOnce => mqtt5::QoS::AtMostOnce,
        rumqttc::mqttbytes::QoS::AtLeastOnce => mqtt5::QoS::AtLeastOnce,
        rumqttc::mqttbytes::QoS::ExactlyOnce => mqtt5::QoS::ExactlyOnce,
    }
}

fn qos4(q: mqtt5::QoS) -> rumqttc::mqttbytes::QoS {
    match q {
        mqtt5::QoS::AtMostOnce => rumqttc::mqttbytes::QoS::AtMostOnce,
        mqtt5::QoS::AtLeastOnce => rumqttc::mqttbytes::QoS::AtLeastOnce,
        mqtt5::QoS::ExactlyOnce => rumqttc::mqttbytes::QoS::ExactlyOnce,
    }
}

/// A client's 3.1.1 packet as MQTT 5. A persistent 3.1.1 session (clean session off) lasts until
/// the client cleans it, so its MQTT 5 session never expires.
fn to_v5(packet: v4::Packet) -> v5::Packet {
    match packet {
        v4::Packet::Connect(c) => {
            let properties = (!c.clean_session)
                .then(|| v5::ConnectProperties { session_expiry_interval: Some(u32::MAX), ..Default::default() });
            let will = c.last_will.map(|w| v5::LastWill {
                topic: Bytes::from(w.topic),
                message: w.message,
                qos: qos5(w.qos),
                retain: w.retain,
                properties: None,
            });
            let login = c.login.map(|l| v5::Login { username: l.username, password: l.password });
            v5::Packet::Connect(
                v5::Connect {
                    keep_alive: c.keep_alive,
                    client_id: c.client_id,
                    clean_start: c.clean_session,
                    properties,
                },
                will,
                login,
            )
        }
        v4::Packet::Publish(p) => v5::Packet::Publish(v5::Publish {
            dup: p.dup,
            qos: qos5(p.qos),
            retain: p.retain,
            topic: Bytes::from(p.topic),
            pkid: p.pkid,
            payload: p.payload,
            properties: None,
        }),
        v4::Packet::PubAck(a) => {
            v5::Packet::PubAck(v5::PubAck { pkid: a.pkid, reason: v5::PubAckReason::Success, properties: None })
        }
        v4::Packet::PubRec(a) => {
            v5::Packet::PubRec(v5::PubRec { pkid: a.pkid, reason: v5::PubRecReason::Success, properties: None })
        }
        v4::Packet::PubRel(a) => {
            v5::Packet::PubRel(v5::PubRel { pkid: a.pkid, reason: v5::PubRelReason::Success, properties: None })
        }
        v4::Packet::PubComp(a) => {
            v5::Packet::PubComp(v5::PubComp { pkid: a.pkid, reason: v5::PubCompReason::Success, properties: None })
        }
        v4::Packet::Subscribe(s) => v5::Packet::Subscribe(v5::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| v5::Filter {
                    path: f.path,
                    qos: qos5(f.qos),
                    nolocal: false,
                    preserve_retain: false,
                    retain_forward_rule: v5::RetainForwardRule::OnEverySubscribe,
                })
                .collect(),
            properties: None,
        }),
        v4::Packet::Unsubscribe(u) => {
            v5::Packet::Unsubscribe(v5::Unsubscribe { pkid: u.pkid, filters: u.topics, properties: None })
        }
        v4::Packet::PingReq => v5::Packet::PingReq(v5::PingReq),
        v4::Packet::PingResp => v5::Packet::PingResp(v5::PingResp),
        v4::Packet::Disconnect => v5::Packet::Disconnect(v5::Disconnect {
            reason_code: v5::DisconnectReasonCode::NormalDisconnection,
            properties: None,
        }),
        // Packets only a server sends: refused by the broker as a protocol error.
        v4::Packet::ConnAck(_) | v4::Packet::SubAck(_) | v4::Packet::UnsubAck(_) => {
            v5::Packet::Disconnect(v5::Disconnect {
                reason_code: v5::DisconnectReasonCode::ProtocolError,
                properties: None,
            })
        }
    }
}

/// The broker's MQTT 5 packet for a 3.1.1 client; `None` ends the connection (a server
/// DISCONNECT, which 3.1.1 expresses by closing).
fn to_v4(packet: v5::Packet) -> Option<v4::Packet> {
    Some(match packet {
        v5::Packet::ConnAck(a) => v4::Packet::ConnAck(v4::ConnAck {
            session_present: a.session_present,
            code: match a.code {
                v5::ConnectReturnCode::Success => v4::ConnectReturnCode::Success,
                v5::ConnectReturnCode::UnsupportedProtocolVersion | v5::ConnectReturnCode::RefusedProtocolVersion => {
                    v4::ConnectReturnCode::RefusedProtocolVersion
                }
                v5::ConnectReturnCode::ClientIdentifierNotValid | v5::ConnectReturnCode::BadClientId => {
                    v4::ConnectReturnCode::BadClientId
                }
                v5::ConnectReturnCode::BadUserNamePassword => v4::ConnectReturnCode::BadUserNamePassword,
                v5::ConnectReturnCode::NotAuthorized | v5::ConnectReturnCode::Banned => {
                    v4::ConnectReturnCode::NotAuthorized
                }
                _ => v4::ConnectReturnCode::ServiceUnavailable,
            },
        }),
        v5::Packet::Publish(p) => v4::Packet::Publish(v4::Publish {
            dup: p.dup,
            qos: qos4(p.qos),
            retain: p.retain,
            topic: String::from_utf8_lossy(&p.topic).into_owned(),
            pkid: p.pkid,
            payload: p.payload,
        }),
        v5::Packet::PubAck(a) => v4::Packet::PubAck(v4::PubAck { pkid: a.pkid }),
        v5::Packet::PubRec(a) => v4::Packet::PubRec(v4::PubRec { pkid: a.pkid }),
        v5::Packet::PubRel(a) => v4::Packet::PubRel(v4::PubRel { pkid: a.pkid }),
        v5::Packet::PubComp(a) => v4::Packet::PubComp(v4::PubComp { pkid: a.pkid }),
        v5::Packet::SubAck(a) => v4::Packet::SubAck(v4::SubAck {
            pkid: a.pkid,
            return_codes: a
                .return_codes
                .into_iter()
                .map(|c| match c {
                    v5::SubscribeReasonCode::Success(q) => v4::SubscribeReasonCode::Success(qos4(q)),
                    _ => v4::SubscribeReasonCode::Failure,
                })
                .collect(),
        }),
        v5::Packet::UnsubAck(a) => v4::Packet::UnsubAck(v4::UnsubAck { pkid: a.pkid }),
        v5::Packet::PingResp(_) => v4::Packet::PingResp,
        v5::Packet::PingReq(_) => v4::Packet::PingReq,
        v5::Packet::Disconnect(_) | v5::Packet::Auth(_) => return None,
        // Client packets the broker does not send.
        v5::Packet::Connect(..) | v5::Packet::Subscribe(_) | v5::Packet::Unsubscribe(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_311_publish_becomes_mqtt_5_and_back_without_properties() {
        let p = v4::Publish::new("a/b", rumqttc::mqttbytes::QoS::AtLeastOnce, "hi");
        let v5::Packet::Publish(five) = to_v5(v4::Packet::Publish(p.clone())) else { panic!() };
        assert_eq!((five.topic.as_ref(), five.properties.is_none()), (&b"a/b"[..], true));
        let mut with_props = five.clone();
        with_props.properties = Some(v5::PublishProperties { content_type: Some("json".into()), ..Default::default() });
        assert_eq!(to_v4(v5::Packet::Publish(with_props)), Some(v4::Packet::Publish(p)));
        assert_eq!(
            to_v4(v5::Packet::Disconnect(v5::Disconnect {
                reason_code: v5::DisconnectReasonCode::ServerShuttingDown,
                properties: None
            })),
            None
        );
    }
}
