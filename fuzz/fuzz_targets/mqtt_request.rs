//! MQTT requests as the daemon reads them: a v5 PUBLISH (topic, payload, response topic,
//! correlation data, user properties) through rumqttc's codec, then the reply envelope and
//! `decode_request` (topic, model, JSON or binary payload, `params` user property, task fields)
//! and the reply-topic guard.
//!
//! Input: header lines (`topic=`, `rt=`, `cd=`, `up=key=value`) up to the first NUL byte, then
//! the payload. The topic is relative to `edgeinfer/fuzz/` unless it starts with `/`.
#![no_main]

use bytes::{Bytes, BytesMut};
use edgeinfer_daemon::api::ApiError;
use edgeinfer_daemon::mqtt::server::{ReplyTo, Topics, decode_request};
use edgeinfer_daemon::mqtt::reply_topics::ReplyTopics;
use libfuzzer_sys::fuzz_target;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish, PublishProperties};

const MODELS: [&str; 4] = ["sam", "sam2", "dinov2", "llama"];

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (head, payload) = (&data[..split], data.get(split + 1..).unwrap_or_default());
    let mut topic = "edgeinfer/fuzz/models/dinov2/embed".to_string();
    let mut props = PublishProperties::default();
    for line in String::from_utf8_lossy(head).lines() {
        let Some((key, value)) = line.split_once('=') else { continue };
        match key {
            "topic" if value.starts_with('/') => topic = value[1..].to_string(),
            "topic" => topic = format!("edgeinfer/fuzz/{value}"),
            "rt" => props.response_topic = Some(value.to_string()),
            "cd" => props.correlation_data = Some(Bytes::copy_from_slice(value.as_bytes())),
            "up" => {
                let (k, v) = value.split_once('=').unwrap_or((value, ""));
                props.user_properties.push((k.to_string(), v.to_string()));
            }
            _ => {}
        }
    }
    // Through the wire codec, so the daemon sees exactly what rumqttc would hand it.
    let mut publish = Publish::new(topic, QoS::AtLeastOnce, payload.to_vec(), Some(props));
    publish.pkid = 1;
    let mut wire = BytesMut::new();
    if Packet::Publish(publish).write(&mut wire, None).is_err() {
        return;
    }
    let p = match Packet::read(&mut wire, Some(1 << 24)) {
        Ok(Packet::Publish(p)) => p,
        other => panic!("a publish we encoded did not decode as one: {other:?}"),
    };

    let reply = ReplyTo::of(&p);
    let _ = reply.request_key();
    if let Some(topic) = reply.topic() {
        // The confused-deputy guard reads any text a client sends (rumqttc's own matcher
        // panicked on a multi-byte first character).
        if let Ok(replies) = ReplyTopics::new("edgeinfer", &["apps/+/inbox".to_string()]) {
            let _ = replies.check(topic);
        }
    }
    let topics = Topics::new("edgeinfer/", "fuzz");
    let topic = String::from_utf8_lossy(&p.topic).into_owned();
    let props = p.properties.clone().unwrap_or_default();
    let known = |model: &str| {
        if MODELS.contains(&model) { Ok(()) } else { Err(ApiError::bad_input(format!("no model {model}"))) }
    };
    let _ = decode_request(&topics, &topic, &p.payload, &props, known);
});
