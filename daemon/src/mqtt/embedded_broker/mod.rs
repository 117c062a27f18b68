//! An MQTT broker inside the daemon (rumqttd) for demos and development: started on the
//! configured URL's loopback port when `mqtt.embedded_broker = true` and nothing listens there.
//! Production uses a real broker (Mosquitto).
//!
//! rumqttd speaks one protocol version per listener, and clients expect one port for both. The
//! broker gets one private loopback MQTT 5 listener; the public port is a small front that reads
//! the protocol level of each client's CONNECT packet and splices MQTT 5 clients straight
//! through, while MQTT 3.1.1 clients are translated packet by packet ([`v311`]: rumqttd's own
//! 3.1.1 listener panics on messages that carry MQTT 5 properties, which the daemon's do).

mod v311;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

/// How long a new client may take to send the start of its CONNECT packet.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts the broker on `port` of 127.0.0.1 unless something already answers there.
/// Returns whether a broker was started.
pub fn start_if_needed(port: u16, max_payload: usize) -> Result<bool, String> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
        return Ok(false);
    }
    let front = TcpListener::bind(addr).map_err(|e| format!("embedded broker: cannot listen on {addr}: {e}"))?;
    let v5 = free_loopback_port()?;
    let server = |name: &str, listen: SocketAddr| ServerSettings {
        name: name.to_string(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: max_payload,
            max_inflight_count: 500,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 1000,
            max_outgoing_packet_count: 500,
            max_segment_size: 64 * 1024 * 1024,
            max_segment_count: 10,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: None,
        v5: Some(HashMap::from([("v5".to_string(), server("v5", v5))])),
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    };
    std::thread::Builder::new()
        .name("embedded-broker".into())
        .spawn(move || {
            let mut broker = Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .map_err(|e| e.to_string())?;
    // Wait (bounded) until the listener accepts connections.
    let mut ready = false;
    for _ in 0..100 {
        if TcpStream::connect_timeout(&v5, Duration::from_millis(50)).is_ok() {
            ready = true;
            break;
        }
        std::thread::park_timeout(Duration::from_millis(20));
    }
    if !ready {
        return Err(format!("the embedded broker did not start listening on {v5}"));
    }
    std::thread::Builder::new()
        .name("embedded-broker-front".into())
        .spawn(move || accept(front, v5, max_payload))
        .map_err(|e| e.to_string())?;
    tracing::info!(%addr, "embedded MQTT broker listening (MQTT 3.1.1 and 5)");
    Ok(true)
}

/// A loopback port free now (bound and released; rumqttd binds it next).
fn free_loopback_port() -> Result<SocketAddr, String> {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("embedded broker: no free loopback port: {e}"))
}

fn accept(front: TcpListener, v5: SocketAddr, max_packet: usize) {
    for client in front.incoming() {
        let Ok(client) = client else { continue };
        let spawned = std::thread::Builder::new().name("embedded-broker-conn".into()).spawn(move || {
            if let Err(e) = splice(client, v5, max_packet) {
                tracing::debug!(error = %e, "embedded broker: connection closed");
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "embedded broker: cannot serve a connection");
        }
    }
}

/// Reads the CONNECT packet up to its protocol level, connects to the broker's MQTT 5 listener,
/// and replays what was read: as it is for an MQTT 5 client (then copies both ways), through the
/// 3.1.1 translator for a 3.1.1 client. Either way until one side closes.
fn splice(mut client: TcpStream, v5: SocketAddr, max_packet: usize) -> io::Result<()> {
    client.set_read_timeout(Some(CONNECT_TIMEOUT))?;
    let (head, level) = read_protocol_level(&mut client)?;
    client.set_read_timeout(None)?;
    let mut broker = TcpStream::connect(v5)?;
    client.set_nodelay(true)?;
    broker.set_nodelay(true)?;
    if level == 4 {
        return v311::serve(client, broker, head, max_packet);
    }
    broker.write_all(&head)?;
    let (mut from_client, mut to_broker) = (client.try_clone()?, broker.try_clone()?);
    let up = std::thread::Builder::new().name("embedded-broker-up".into()).spawn(move || {
        let _ = io::copy(&mut from_client, &mut to_broker);
        let _ = to_broker.shutdown(Shutdown::Write);
    })?;
    let _ = io::copy(&mut broker, &mut client);
    let _ = client.shutdown(Shutdown::Both);
    let _ = broker.shutdown(Shutdown::Both);
    let _ = up.join();
    Ok(())
}

/// The bytes of a CONNECT packet up to and including its protocol level byte, and the level
/// (4: MQTT 3.1.1, 5: MQTT 5). Anything else (MQTT 3.1's `MQIsdp` included) is an error: the
/// connection is closed.
fn read_protocol_level(stream: &mut impl Read) -> io::Result<(Vec<u8>, u8)> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let mut head = Vec::with_capacity(16);
    let mut byte = [0u8; 1];
    let mut next = |head: &mut Vec<u8>| -> io::Result<u8> {
        stream.read_exact(&mut byte)?;
        head.push(byte[0]);
        Ok(byte[0])
    };
    if next(&mut head)? != 0x10 {
        return Err(bad("the first packet is not CONNECT"));
    }
    // Remaining length: 1 to 4 bytes, 7 bits each.
    for i in 0.. {
        if next(&mut head)? & 0x80 == 0 {
            break;
        }
        if i == 3 {
            return Err(bad("malformed remaining length"));
        }
    }
    let name_len = usize::from(next(&mut head)?) << 8 | usize::from(next(&mut head)?);
    if !matches!(name_len, 4 | 6) {
        return Err(bad("not an MQTT protocol name"));
    }
    let mut name = Vec::with_capacity(name_len);
    for _ in 0..name_len {
        name.push(next(&mut head)?);
    }
    let level = next(&mut head)?;
    match (name.as_slice(), level) {
        (b"MQTT", 4 | 5) => Ok((head, level)),
        _ => Err(bad("unsupported MQTT protocol name or level")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_protocol_level_is_read_from_the_connect_packet() {
        let v311 = [0x10, 0x0c, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c];
        let (head, level) = read_protocol_level(&mut &v311[..]).unwrap();
        assert_eq!((level, head.len()), (4, 9));
        let v5 = [0x10, 0x80, 0x01, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05];
        assert_eq!(read_protocol_level(&mut &v5[..]).unwrap(), (v5.to_vec(), 5));
        let v31 = [0x10, 0x0e, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03];
        assert!(read_protocol_level(&mut &v31[..]).is_err());
        for bad in [
            &[0x30, 0x00][..],
            &[0x10, 0x80, 0x80, 0x80, 0x80, 0x01][..],
            &[0x10, 0x0c, 0x00, 0x05, b'M', b'Q', b'T', b'T', b'X', 0x04][..],
            &[0x10, 0x0c, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x06][..],
            &[0x10, 0x0c, 0x00][..],
        ] {
            assert!(read_protocol_level(&mut &bad[..]).is_err(), "{bad:?}");
        }
    }
}
