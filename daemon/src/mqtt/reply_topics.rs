//! Which topics the MQTT adapter may publish a reply on for a client: the confused-deputy guard.
//! A request names its reply topic (MQTT 5 response topic, or the JSON `reply_to`) and the daemon
//! publishes there with its own broker rights, so the topic is checked first: it must match
//! `<prefix>/replies/#` or one of the configured `mqtt.reply_topics` patterns, and never lie
//! under the daemon's own tree (`<prefix>/<node>/...`: requests, state, status) whatever the
//! patterns say. A request whose reply topic is refused is not run; the refusal goes to the
//! node's errors topic. Threat model: docs/security.md.

use rumqttc::v5::mqttbytes::valid_filter;

/// Longest reply topic accepted, in bytes.
pub const MAX_REPLY_TOPIC: usize = 1024;

/// The reply-topic policy of one daemon.
#[derive(Clone, Debug)]
pub struct ReplyTopics {
    prefix: String,
    /// `<prefix>/replies`.
    replies: String,
    patterns: Vec<String>,
}

impl ReplyTopics {
    /// `<prefix>/replies/#` plus the configured `extra` patterns (MQTT filters: `+` and `#`).
    pub fn new(prefix: &str, extra: &[String]) -> Result<ReplyTopics, String> {
        let prefix = prefix.trim_end_matches('/').to_string();
        let replies = format!("{prefix}/replies");
        let mut patterns = vec![format!("{replies}/#")];
        for p in extra {
            check_pattern(p)?;
            patterns.push(p.clone());
        }
        Ok(ReplyTopics { prefix, replies, patterns })
    }

    /// The patterns replies may go to.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Whether the daemon may publish a client's reply on `topic`; the reason when not (the
    /// topic in it shortened and escaped: it is the client's text, and it is logged).
    pub fn check(&self, topic: &str) -> Result<(), String> {
        let result = self.check_raw(topic);
        result.map_err(|why| why.replace(RAW, &shown(topic)))
    }

    fn check_raw(&self, topic: &str) -> Result<(), String> {
        if topic.is_empty() {
            return Err("the reply topic is empty".into());
        }
        if topic.len() > MAX_REPLY_TOPIC {
            return Err(format!("the reply topic is {} bytes, over {MAX_REPLY_TOPIC}", topic.len()));
        }
        if topic.contains(['+', '#', '\0']) {
            return Err(format!("reply topic '{RAW}': a topic to publish on cannot hold '+', '#' or NUL"));
        }
        if topic.starts_with('$') {
            return Err(format!("reply topic '{RAW}': broker topics ($SYS, $share...) are not reply topics"));
        }
        // Checked on every reply, streamed tokens included: no allocation on the way to Ok.
        let ours = topic.strip_prefix(&self.prefix).is_some_and(|rest| rest.starts_with('/'));
        let in_replies = topic.strip_prefix(&self.replies).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        if ours && !in_replies {
            return Err(format!(
                "reply topic '{RAW}': the daemon never publishes for a client under {}/<node>/ (its own \
                 requests, state and status); use {}/...",
                self.prefix, self.replies
            ));
        }
        if self.patterns.iter().any(|p| filter_matches(p, topic)) {
            return Ok(());
        }
        Err(format!(
            "reply topic '{RAW}' is not allowed: replies go to {} (set mqtt.reply_topics to allow more)",
            self.patterns.join(", ")
        ))
    }
}

/// Stands for the client's topic in a reason, until [`shown`] replaces it.
const RAW: &str = "\u{0}topic\u{0}";

/// A client's topic as shown in messages and logs: at most 120 characters, escaped (no newlines
/// or control characters to forge log lines with).
fn shown(topic: &str) -> String {
    let mut s: String = topic.chars().take(120).flat_map(char::escape_debug).collect();
    if topic.chars().count() > 120 {
        s.push('…');
    }
    s
}

/// Whether `topic` (no wildcards) matches the MQTT filter `filter`, level by level; a topic
/// starting with `$` matches no filter starting with a wildcard (MQTT 4.7.2). Written here
/// rather than taken from rumqttc, whose `matches` slices the topic's first byte and panics on
/// a multi-byte first character (fuzzed: `fuzz/fuzz_targets/mqtt_request.rs`).
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut levels = topic.split('/');
    for f in filter.split('/') {
        if f == "#" {
            return true;
        }
        match levels.next() {
            Some(t) if f == "+" || f == t => {}
            _ => return false,
        }
    }
    levels.next().is_none()
}

/// Checks one configured `mqtt.reply_topics` pattern.
pub fn check_pattern(p: &str) -> Result<(), String> {
    if !valid_filter(p) || p.contains('\0') {
        return Err(format!(
            "mqtt.reply_topics: '{p}' is not an MQTT topic filter ('+' and '#' take a whole level, '#' only last)"
        ));
    }
    if p.starts_with(['$', '+', '#', '/']) {
        return Err(format!(
            "mqtt.reply_topics: '{p}' would let clients aim replies at any top-level topic (or the broker's \
             $ topics); name the first level"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_go_under_prefix_replies_or_the_configured_patterns_only() {
        let t = ReplyTopics::new("edgeinfer", &["robots/+/inbox".into()]).unwrap();
        assert!(t.check("edgeinfer/replies/app-1").is_ok());
        assert!(t.check("edgeinfer/replies/app-1/deep/er").is_ok());
        assert!(t.check("robots/r7/inbox").is_ok());
        for refused in [
            "",
            "edgeinfer/other-node/models/llm/unload",
            "edgeinfer/n1/status",
            "edgeinfer/repliesX/a",
            "elsewhere/a",
            "robots/r7/inbox/more",
            "$SYS/broker",
            "edgeinfer/replies/+",
            "edgeinfer/replies/#",
        ] {
            assert!(t.check(refused).is_err(), "{refused}");
        }
        let long = format!("edgeinfer/replies/{}", "a".repeat(MAX_REPLY_TOPIC));
        assert!(t.check(&long).is_err());
    }

    #[test]
    fn any_text_is_checked_without_panicking_and_shown_escaped() {
        let t = ReplyTopics::new("edgeinfer", &["apps/+/inbox".into()]).unwrap();
        // rumqttc's matcher panicked on a multi-byte first character.
        let e = t.check("é/x").unwrap_err();
        assert!(e.contains("'é/x' is not allowed"), "{e}");
        assert!(t.check("edgeinfer/replies/é").is_ok());
        let e = t.check("a\nFAKE LOG LINE").unwrap_err();
        assert!(!e.contains('\n') && e.contains("a\\nFAKE"), "{e}");
        assert!(filter_matches("edgeinfer/replies/#", "edgeinfer/replies"));
        assert!(filter_matches("a/+/c", "a/b/c") && !filter_matches("a/+/c", "a/b/c/d") && !filter_matches("a/+", "a"));
        assert!(!filter_matches("#", "$SYS/x") && filter_matches("$SYS/#", "$SYS/x"));
    }

    #[test]
    fn patterns_cannot_reopen_the_daemon_tree_or_everything() {
        let t = ReplyTopics::new("edgeinfer", &["edgeinfer/#".into()]).unwrap();
        assert!(t.check("edgeinfer/n1/models/dino/embed").is_err());
        assert!(t.check("edgeinfer/replies/x").is_ok());
        for bad in ["#", "+/x", "$share/g/x", "a/#/b", "a/b+", "/#"] {
            assert!(check_pattern(bad).is_err(), "{bad}");
        }
    }
}
