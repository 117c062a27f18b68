//! Chat-template rendering with hostile messages (template syntax, control characters, special
//! tokens, huge or empty fields), through the fixture's template and an upstream-style one that
//! uses `raise_exception`, `namespace` and filters; the rendered prompt is then tokenized and
//! decoded as a generate request would be.
//!
//! Input: messages separated by NUL bytes; each message's first byte picks the role (system,
//! user, assistant, or the rest of its first line), the remainder is the content.
#![no_main]

use std::sync::OnceLock;

use edgeinfer_models::fixtures::fixtures_dir;
use edgeinfer_models::llama::tokenizer::{Message, Tokenizer};
use libfuzzer_sys::fuzz_target;

/// Shaped like the Llama 3 / Qwen templates users download: alternation checked with
/// `raise_exception`, a namespace counter, `trim` and string concatenation.
const UPSTREAM_STYLE: &str = r#"{%- set ns = namespace(turns=0) -%}
{%- if messages[0]['role'] == 'system' -%}{%- set system = messages[0]['content'] | trim -%}{%- set loop_messages = messages[1:] -%}
{%- else -%}{%- set system = '' -%}{%- set loop_messages = messages -%}{%- endif -%}
{{- bos_token -}}{%- if system -%}{{- '<|start_header_id|>system<|end_header_id|>\n\n' + system + '<|eot_id|>' -}}{%- endif -%}
{%- for message in loop_messages -%}
{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}{{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') -}}{%- endif -%}
{%- set ns.turns = ns.turns + 1 -%}
{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}{%- endif -%}"#;

fn tokenizers() -> &'static [Tokenizer; 2] {
    static TOKENIZERS: OnceLock<[Tokenizer; 2]> = OnceLock::new();
    TOKENIZERS.get_or_init(|| {
        let fixture = fixtures_dir().join("llama");
        let upstream = std::env::temp_dir().join(format!("edgeinfer-fuzz-chat-{}", std::process::id()));
        std::fs::create_dir_all(&upstream).unwrap();
        std::fs::copy(fixture.join("tokenizer.json"), upstream.join("tokenizer.json")).unwrap();
        let config = serde_json::json!({"chat_template": UPSTREAM_STYLE, "bos_token": "<s>", "eos_token": "</s>"});
        std::fs::write(upstream.join("tokenizer_config.json"), config.to_string()).unwrap();
        let loaded = [Tokenizer::load(&fixture).unwrap(), Tokenizer::load(&upstream).unwrap()];
        // Read into memory: the folder is not needed any more.
        let _ = std::fs::remove_dir_all(&upstream);
        loaded
    })
}

fuzz_target!(|data: &[u8]| {
    let messages: Vec<Message> = data
        .split(|&b| b == 0)
        .map(|part| {
            let (selector, rest) = part.split_first().unwrap_or((&0, &[]));
            let text = String::from_utf8_lossy(rest).into_owned();
            match selector % 4 {
                0 => Message { role: "system".into(), content: text },
                1 => Message { role: "user".into(), content: text },
                2 => Message { role: "assistant".into(), content: text },
                _ => {
                    let (role, content) = text.split_once('\n').unwrap_or((&text, ""));
                    Message { role: role.to_string(), content: content.to_string() }
                }
            }
        })
        .collect();
    for tokenizer in tokenizers() {
        for add_generation_prompt in [false, true] {
            let Ok(prompt) = tokenizer.apply_chat_template(&messages, add_generation_prompt) else { continue };
            let Ok(ids) = tokenizer.encode(&prompt, false) else { continue };
            let _ = tokenizer.decode(&ids, false);
        }
    }
});
