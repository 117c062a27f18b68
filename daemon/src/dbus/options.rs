//! The `a{sv}` options of the D-Bus methods, read into the internal request types. Integer and
//! floating-point options accept any D-Bus numeric type that holds the value (a `busctl` user
//! writes `u 3` or `i 3`, a Python client sends what its binding picks); unknown keys and values
//! of the wrong type are refused with the option's name and expected signature.

use std::collections::HashMap;

use edgeinfer_models::sam::{BoxPrompt, Point};
use zbus::zvariant::{OwnedValue, Value};

use crate::api::{ApiError, EmbedParams, GenerateParams, MaskFormat, SegmentParams};
use crate::frame::FdRange;

/// The options argument as it arrives.
pub type Options = HashMap<String, OwnedValue>;

/// How an image argument is to be read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImageOptions {
    /// Raw RGB8 pixels of this size, instead of an encoded image.
    pub rgb8: Option<(u32, u32)>,
    /// Part of an fd to read.
    pub range: FdRange,
}

const IMAGE_KEYS: [&str; 5] = ["format", "width", "height", "offset", "size"];

fn bad(key: &str, expected: &str, got: &Value<'_>) -> ApiError {
    ApiError::bad_input(format!("option '{key}' must be {expected}, got a value of type '{}'", got.value_signature()))
}

/// Refuses keys that are not in `known` (or the image keys, when `image` is set).
fn check_keys(options: &Options, known: &[&str], image: bool) -> Result<(), ApiError> {
    for key in options.keys() {
        let allowed = known.contains(&key.as_str()) || (image && IMAGE_KEYS.contains(&key.as_str()));
        if !allowed {
            let mut all: Vec<&str> = known.to_vec();
            if image {
                all.extend(IMAGE_KEYS);
            }
            return Err(ApiError::bad_input(format!("unknown option '{key}' (options: {})", all.join(", "))));
        }
    }
    Ok(())
}

fn unwrap_variant<'a>(v: &'a Value<'a>) -> &'a Value<'a> {
    match v {
        Value::Value(inner) => unwrap_variant(inner),
        other => other,
    }
}

fn as_u64(v: &Value<'_>) -> Option<u64> {
    match unwrap_variant(v) {
        Value::U8(x) => Some(u64::from(*x)),
        Value::U16(x) => Some(u64::from(*x)),
        Value::U32(x) => Some(u64::from(*x)),
        Value::U64(x) => Some(*x),
        Value::I16(x) => u64::try_from(*x).ok(),
        Value::I32(x) => u64::try_from(*x).ok(),
        Value::I64(x) => u64::try_from(*x).ok(),
        _ => None,
    }
}

fn as_f64(v: &Value<'_>) -> Option<f64> {
    match unwrap_variant(v) {
        Value::F64(x) => Some(*x),
        Value::I16(x) => Some(f64::from(*x)),
        Value::I32(x) => Some(f64::from(*x)),
        Value::I64(x) => Some(*x as f64),
        other => as_u64(other).map(|x| x as f64),
    }
}

fn uint(options: &Options, key: &str) -> Result<Option<u64>, ApiError> {
    options.get(key).map(|v| as_u64(v).ok_or_else(|| bad(key, "a non-negative integer (u, t, i...)", v))).transpose()
}

fn float(options: &Options, key: &str) -> Result<Option<f64>, ApiError> {
    options.get(key).map(|v| as_f64(v).ok_or_else(|| bad(key, "a number (d, or an integer)", v))).transpose()
}

fn boolean(options: &Options, key: &str) -> Result<Option<bool>, ApiError> {
    options
        .get(key)
        .map(|v| match unwrap_variant(v) {
            Value::Bool(b) => Ok(*b),
            _ => Err(bad(key, "a boolean (b)", v)),
        })
        .transpose()
}

fn string(options: &Options, key: &str) -> Result<Option<String>, ApiError> {
    options
        .get(key)
        .map(|v| match unwrap_variant(v) {
            Value::Str(s) => Ok(s.to_string()),
            _ => Err(bad(key, "a string (s)", v)),
        })
        .transpose()
}

fn strings(options: &Options, key: &str) -> Result<Option<Vec<String>>, ApiError> {
    options
        .get(key)
        .map(|v| match unwrap_variant(v) {
            Value::Array(a) => a
                .iter()
                .map(|x| match unwrap_variant(x) {
                    Value::Str(s) => Ok(s.to_string()),
                    _ => Err(bad(key, "an array of strings (as)", v)),
                })
                .collect(),
            _ => Err(bad(key, "an array of strings (as)", v)),
        })
        .transpose()
}

fn usize_opt(options: &Options, key: &str) -> Result<Option<usize>, ApiError> {
    Ok(uint(options, key)?.map(|x| usize::try_from(x).unwrap_or(usize::MAX)))
}

/// The image options (`format`, `width`, `height`, `offset`, `size`).
pub fn image(options: &Options) -> Result<ImageOptions, ApiError> {
    let format = string(options, "format")?.unwrap_or_else(|| "encoded".into());
    let rgb8 = match format.as_str() {
        "encoded" => None,
        "rgb8" => {
            let dim = |k: &str| -> Result<u32, ApiError> {
                let v = uint(options, k)?.ok_or_else(|| ApiError::bad_input(format!("format 'rgb8' needs '{k}'")))?;
                u32::try_from(v).map_err(|_| ApiError::bad_input(format!("'{k}' {v} is out of range")))
            };
            Some((dim("width")?, dim("height")?))
        }
        other => return Err(ApiError::bad_input(format!("unknown image format '{other}' (formats: encoded, rgb8)"))),
    };
    Ok(ImageOptions {
        rgb8,
        range: FdRange { offset: uint(options, "offset")?.unwrap_or(0), size: uint(options, "size")? },
    })
}

/// Segmentation options.
pub fn segment(options: &Options) -> Result<SegmentParams, ApiError> {
    check_keys(options, &["points", "box", "multimask", "best_only", "mask_format", "mask_input"], true)?;
    let mut params = SegmentParams::default();
    if let Some(v) = options.get("points") {
        let expected = "an array of (x, y, positive) structs: a(ddb)";
        let Value::Array(list) = unwrap_variant(v) else { return Err(bad("points", expected, v)) };
        for p in list.iter() {
            let Value::Structure(s) = unwrap_variant(p) else { return Err(bad("points", expected, v)) };
            let f = s.fields();
            let (x, y) = match (f.first().and_then(as_f64), f.get(1).and_then(as_f64)) {
                (Some(x), Some(y)) => (x, y),
                _ => return Err(bad("points", expected, v)),
            };
            let positive = match f.get(2).map(unwrap_variant) {
                None => true,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(bad("points", expected, v)),
            };
            params.points.push(Point { x: x as f32, y: y as f32, positive });
        }
    }
    if let Some(v) = options.get("box") {
        let expected = "a struct (x0, y0, x1, y1): (dddd)";
        let Value::Structure(s) = unwrap_variant(v) else { return Err(bad("box", expected, v)) };
        let c: Vec<f64> = s.fields().iter().filter_map(as_f64).collect();
        if c.len() != 4 || s.fields().len() != 4 {
            return Err(bad("box", expected, v));
        }
        params.bbox = Some(BoxPrompt { x0: c[0] as f32, y0: c[1] as f32, x1: c[2] as f32, y1: c[3] as f32 });
    }
    if let Some(m) = boolean(options, "multimask")? {
        params.multimask = m;
    }
    params.best_only = boolean(options, "best_only")?.unwrap_or(false);
    if let Some(f) = string(options, "mask_format")? {
        params.mask_format = match f.as_str() {
            "rle" => MaskFormat::Rle,
            "png" => MaskFormat::Png,
            "png8" => MaskFormat::Png8,
            "none" => MaskFormat::None,
            other => {
                return Err(ApiError::bad_input(format!(
                    "unknown mask_format '{other}' (formats: rle, png, png8, none)"
                )));
            }
        };
    }
    params.mask_input = string(options, "mask_input")?;
    Ok(params)
}

/// Embedding options.
pub fn embed(options: &Options) -> Result<EmbedParams, ApiError> {
    check_keys(options, &["pooling", "normalize"], true)?;
    let mut params = EmbedParams::default();
    if let Some(p) = string(options, "pooling")? {
        params.pooling = serde_json::from_value(serde_json::Value::String(p.clone()))
            .map_err(|_| ApiError::bad_input(format!("unknown pooling '{p}' (cls, mean, pooler, cls_mean)")))?;
    }
    params.normalize = boolean(options, "normalize")?.unwrap_or(false);
    Ok(params)
}

/// Classification options: `k`.
pub fn classify(options: &Options) -> Result<usize, ApiError> {
    check_keys(options, &["k"], true)?;
    Ok(usize_opt(options, "k")?.unwrap_or(5))
}

/// Options of methods that take only an image.
pub fn image_only(options: &Options) -> Result<(), ApiError> {
    check_keys(options, &[], true)
}

/// Generation options.
pub fn generate(options: &Options) -> Result<GenerateParams, ApiError> {
    check_keys(
        options,
        &["max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "seed", "stop", "ignore_eos"],
        false,
    )?;
    Ok(GenerateParams {
        max_new_tokens: usize_opt(options, "max_new_tokens")?,
        temperature: float(options, "temperature")?.map(|x| x as f32),
        top_k: usize_opt(options, "top_k")?,
        top_p: float(options, "top_p")?.map(|x| x as f32),
        repetition_penalty: float(options, "repetition_penalty")?.map(|x| x as f32),
        seed: uint(options, "seed")?,
        stop: strings(options, "stop")?.unwrap_or_default(),
        ignore_eos: boolean(options, "ignore_eos")?.unwrap_or(false),
        ..GenerateParams::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::zvariant::{Structure, StructureBuilder};

    fn opts(pairs: Vec<(&str, Value<'static>)>) -> Options {
        pairs.into_iter().map(|(k, v)| (k.to_string(), OwnedValue::try_from(v).unwrap())).collect()
    }

    #[test]
    fn segment_options_read_prompts_of_any_numeric_type() {
        let point = |x: f64, y: i32, p: bool| -> Value<'static> {
            Value::Structure(StructureBuilder::new().add_field(x).add_field(y).add_field(p).build().unwrap())
        };
        let bbox: Structure<'static> = (1.0f64, 2.0f64, 30.0f64, 40.0f64).into();
        let o = opts(vec![
            ("points", Value::Array(vec![point(10.0, 20, true), point(5.5, 6, false)].try_into().unwrap())),
            ("box", Value::Structure(bbox)),
            ("best_only", Value::Bool(true)),
            ("mask_format", Value::from("png")),
        ]);
        let p = segment(&o).unwrap();
        assert_eq!(p.points.len(), 2);
        assert!(!p.points[1].positive && p.points[0].y == 20.0);
        assert_eq!(p.bbox.unwrap().x1, 30.0);
        assert!(p.best_only && p.mask_format == MaskFormat::Png);
    }

    #[test]
    fn wrong_types_and_unknown_keys_are_named() {
        let e = segment(&opts(vec![("points", Value::from("here"))])).unwrap_err();
        assert!(e.message.contains("'points'") && e.message.contains("a(ddb)"), "{e}");
        let e = generate(&opts(vec![("max_tokens", Value::U32(3))])).unwrap_err();
        assert!(e.message.contains("unknown option 'max_tokens'"), "{e}");
        let e = generate(&opts(vec![("max_new_tokens", Value::I32(-1))])).unwrap_err();
        assert!(e.message.contains("non-negative"), "{e}");
        let g = generate(&opts(vec![("max_new_tokens", Value::I32(4)), ("temperature", Value::U32(0))])).unwrap();
        assert_eq!((g.max_new_tokens, g.temperature), (Some(4), Some(0.0)));
        let i = image(&opts(vec![("format", Value::from("rgb8")), ("width", Value::U32(4))])).unwrap_err();
        assert!(i.message.contains("needs 'height'"), "{i}");
    }
}
