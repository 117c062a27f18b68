//! clap value parsers for the CLI's options whose types live in crates without clap (backends,
//! families, precision variants): `--help` lists the choices and a typo gets a suggestion.

use clap::builder::{PossibleValuesParser, TypedValueParser};
use edgeinfer_models::layout::Variant;
use edgeinfer_models::manifest::Family;
use edgeinfer_onnx::BackendKind;

// Only the listed names get through, and each parses with the type's own FromStr.

/// `tract` or `ort`.
pub fn backend() -> impl TypedValueParser<Value = BackendKind> {
    PossibleValuesParser::new(["tract", "ort"]).map(|s| s.parse::<BackendKind>().unwrap_or(BackendKind::Tract))
}

/// A precision variant (`fp32`, `fp16`, `int8`, ...).
pub fn variant() -> impl TypedValueParser<Value = Variant> {
    PossibleValuesParser::new(Variant::ALL.map(Variant::name)).map(|s| s.parse::<Variant>().unwrap_or_default())
}

/// `sam`, `sam2`, `dinov2` or `llama`.
pub fn family() -> impl TypedValueParser<Value = Family> {
    PossibleValuesParser::new(["sam", "sam2", "dinov2", "llama"]).map(|s| s.parse::<Family>().unwrap_or(Family::Sam))
}
