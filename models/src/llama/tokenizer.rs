//! Text ↔ token ids with HF `tokenizers` (`tokenizer.json`), the chat template of
//! `tokenizer_config.json` (or `chat_template.jinja`) rendered with minijinja configured as
//! transformers configures Jinja2, and incremental detokenisation that never splits a UTF-8
//! character.

use std::path::Path;

use minijinja::{Environment, Value, context};
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result, read_json};

/// A chat message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant`...
    pub role: String,
    /// The text.
    pub content: String,
}

#[derive(Deserialize, Default)]
struct TokenizerConfigJson {
    chat_template: Option<serde_json::Value>,
    bos_token: Option<serde_json::Value>,
    eos_token: Option<serde_json::Value>,
}

fn token_string(v: &Option<serde_json::Value>) -> Option<String> {
    match v {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        // {"content": "<s>", ...} (AddedToken form)
        Some(serde_json::Value::Object(o)) => o.get("content").and_then(|c| c.as_str()).map(str::to_string),
        _ => None,
    }
}

/// Tokenizer and chat template of a model.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    chat: Option<Environment<'static>>,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

impl Tokenizer {
    /// Loads `tokenizer.json`, and `tokenizer_config.json` / `chat_template.jinja` when present.
    pub fn load(dir: &Path) -> Result<Tokenizer> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(ModelError::Config(format!("{} not found", path.display())));
        }
        let inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| ModelError::Config(format!("{}: {e}", path.display())))?;
        let config: TokenizerConfigJson = match dir.join("tokenizer_config.json") {
            p if p.is_file() => read_json(&p)?,
            _ => TokenizerConfigJson::default(),
        };
        let template = match &config.chat_template {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            // A list of named templates: take "default".
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .and_then(|t| t.get("template")?.as_str().map(str::to_string)),
            _ => None,
        };
        let template = match template {
            Some(t) => Some(t),
            None => match dir.join("chat_template.jinja") {
                p if p.is_file() => {
                    Some(std::fs::read_to_string(&p).map_err(|source| ModelError::Io { path: p.clone(), source })?)
                }
                _ => None,
            },
        };
        let chat = template.map(|t| chat_environment(&t)).transpose()?;
        Ok(Tokenizer {
            inner,
            chat,
            bos_token: token_string(&config.bos_token),
            eos_token: token_string(&config.eos_token),
        })
    }

    /// Token ids of `text`.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc =
            self.inner.encode(text, add_special_tokens).map_err(|e| ModelError::BadInput(format!("tokenizer: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner.decode(ids, skip_special_tokens).map_err(|e| ModelError::BadInput(format!("tokenizer: {e}")))
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Id of a token string.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The EOS token string from `tokenizer_config.json`.
    pub fn eos_token(&self) -> Option<&str> {
        self.eos_token.as_deref()
    }

    /// Whether the model ships a chat template.
    pub fn has_chat_template(&self) -> bool {
        self.chat.is_some()
    }

    /// Renders the chat template like transformers' `apply_chat_template(tokenize=False)`.
    pub fn apply_chat_template(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let env = self
            .chat
            .as_ref()
            .ok_or_else(|| ModelError::BadInput("this model has no chat template; send a plain prompt".into()))?;
        let template = env.get_template("chat").map_err(|e| ModelError::Config(format!("chat template: {e}")))?;
        template
            .render(context! {
                messages => Value::from(minijinja::value::Serde(messages)),
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos_token.clone().unwrap_or_default(),
                eos_token => self.eos_token.clone().unwrap_or_default(),
            })
            .map_err(|e| ModelError::BadInput(format!("chat template: {e:#}")))
    }
}

/// minijinja set up as transformers sets up Jinja2 for chat templates: trim_blocks,
/// lstrip_blocks, loop controls, Python string/dict methods, `raise_exception`, `strftime_now`,
/// and a `tojson` that writes like Python's `json.dumps(ensure_ascii=False)`.
fn chat_environment(template: &str) -> Result<Environment<'static>> {
    let mut env = Environment::new();
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
        .map_err(|e| ModelError::Config(format!("chat template syntax: {e}")))?;
    env.set_syntax(syntax);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> std::result::Result<Value, minijinja::Error> {
        Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
    });
    env.add_function("strftime_now", |format: String| -> String { strftime_now(&format) });
    env.add_filter("tojson", |v: Value, indent: Option<usize>| -> std::result::Result<String, minijinja::Error> {
        let json: serde_json::Value = serde_json::to_value(&v)
            .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string()))?;
        Ok(python_json(&json, indent, 0))
    });
    env.add_template_owned("chat", template.to_string())
        .map_err(|e| ModelError::Config(format!("chat template does not parse: {e}")))?;
    Ok(env)
}

/// `json.dumps(v, ensure_ascii=False, indent=indent)` as Python writes it.
fn python_json(v: &serde_json::Value, indent: Option<usize>, level: usize) -> String {
    use serde_json::Value as J;
    let (sep, open_pad, close_pad) = match indent {
        Some(n) => {
            (",".to_string(), format!("\n{}", " ".repeat(n * (level + 1))), format!("\n{}", " ".repeat(n * level)))
        }
        None => (", ".to_string(), String::new(), String::new()),
    };
    match v {
        J::Array(a) if a.is_empty() => "[]".into(),
        J::Object(o) if o.is_empty() => "{}".into(),
        J::Array(a) => {
            let items: Vec<String> = a.iter().map(|x| python_json(x, indent, level + 1)).collect();
            format!("[{open_pad}{}{close_pad}]", items.join(&format!("{sep}{open_pad}")))
        }
        J::Object(o) => {
            let items: Vec<String> = o
                .iter()
                .map(|(k, x)| {
                    format!("{}: {}", serde_json::Value::String(k.clone()), python_json(x, indent, level + 1))
                })
                .collect();
            format!("{{{open_pad}{}{close_pad}}}", items.join(&format!("{sep}{open_pad}")))
        }
        other => other.to_string(),
    }
}

/// The current UTC date for templates that print it (`strftime_now("%d %b %Y")`); supports the
/// common `%d %m %Y %b %B` directives.
fn strftime_now(format: &str) -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let days = (secs / 86_400) as i64;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let name = MONTHS[(month - 1) as usize];
    format
        .replace("%d", &format!("{day:02}"))
        .replace("%m", &format!("{month:02}"))
        .replace("%Y", &year.to_string())
        .replace("%B", name)
        .replace("%b", &name[..3])
}

/// Turns a growing list of token ids into text deltas that never end inside a UTF-8 character
/// (byte-level BPE tokens can be partial characters; those are held back until complete).
///
/// Each step decodes only a short window (from the last emitted boundary), comparing against the
/// window's previous text, so the cost per token stays constant and decoders that treat the
/// start of a sequence specially (SentencePiece's leading space) stay consistent.
pub struct TextStreamer {
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
    skip_special_tokens: bool,
}

impl TextStreamer {
    /// A streamer; special tokens are left out of the text when `skip_special_tokens`.
    pub fn new(skip_special_tokens: bool) -> Self {
        TextStreamer { ids: Vec::new(), prefix_offset: 0, read_offset: 0, skip_special_tokens }
    }

    /// Adds a token; returns the new complete text (possibly empty).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let prefix = tokenizer.decode(&self.ids[self.prefix_offset..self.read_offset], self.skip_special_tokens)?;
        let text = tokenizer.decode(&self.ids[self.prefix_offset..], self.skip_special_tokens)?;
        if text.len() > prefix.len() && !text.ends_with('\u{FFFD}') && text.is_char_boundary(prefix.len()) {
            let delta = text[prefix.len()..].to_string();
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            Ok(delta)
        } else {
            Ok(String::new())
        }
    }

    /// The ids pushed so far.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_json_matches_json_dumps() {
        let v = serde_json::json!({"a": [1, "é", {"b": null}], "c": true});
        assert_eq!(python_json(&v, None, 0), r#"{"a": [1, "é", {"b": null}], "c": true}"#);
        assert_eq!(python_json(&serde_json::json!({"a": [1]}), Some(2), 0), "{\n  \"a\": [\n    1\n  ]\n}");
    }

    #[test]
    fn chat_templates_render_like_jinja2() {
        let t = "{% for m in messages %}{{ m['role'] | upper }}: {{ m.content.strip() }}\n{% endfor %}\
                 {% if add_generation_prompt %}ASSISTANT:{% endif %}";
        let env = chat_environment(t).unwrap();
        let out = env
            .get_template("chat")
            .unwrap()
            .render(context! { messages => Value::from(minijinja::value::Serde(vec![Message { role: "user".into(), content: " hi ".into() }])), add_generation_prompt => true })
            .unwrap();
        assert_eq!(out, "USER: hi\nASSISTANT:");
        let failing = chat_environment("{{ raise_exception('no system role') }}").unwrap();
        let err = failing.get_template("chat").unwrap().render(context! {}).unwrap_err();
        assert!(err.to_string().contains("no system role"));
        assert!(strftime_now("%d %b %Y").len() >= 10);
    }
}
