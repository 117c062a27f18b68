//! An MQTT broker inside the daemon (rumqttd) for demos and development: started on the
//! configured URL's loopback port when `mqtt.embedded_broker = true` and nothing listens there.
//! Production uses a real broker (Mosquitto).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

/// Starts the broker on `port` of 127.0.0.1 unless something already answers there.
/// Returns whether a broker was started.
pub fn start_if_needed(port: u16, max_payload: usize) -> Result<bool, String> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
        return Ok(false);
    }
    let server = |name: &str| ServerSettings {
        name: name.to_string(),
        listen: addr,
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
        v5: Some(HashMap::from([("v5".to_string(), server("v5"))])),
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
    // Wait (bounded) until it accepts connections.
    for _ in 0..100 {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(50)).is_ok() {
            tracing::info!(%addr, "embedded MQTT broker listening");
            return Ok(true);
        }
        std::thread::park_timeout(Duration::from_millis(20));
    }
    Err(format!("the embedded broker did not start listening on {addr}"))
}
